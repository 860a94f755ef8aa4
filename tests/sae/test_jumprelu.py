"""monosemantic.sae.jumprelu: the forward pass against the formula by hand, the straight-through
gradients against Rajamanoharan et al. (2024, sec. 4) written out element by element (its recovery
of the toy dictionary is in tests/eval/test_toy.py)."""

import pytest
import torch

from monosemantic.config import ConfigError
from monosemantic.sae import JumpReLUSAE, SAEConfig, create_sae


def make(d_in=6, d_sae=10, **kw) -> JumpReLUSAE:
    sae = create_sae(SAEConfig(arch="jumprelu", d_in=d_in, d_sae=d_sae, dtype="float64", **kw))
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.2)
        sae.b_dec.normal_(0, 0.5)
        sae.threshold.uniform_(0.05, 0.6)
    return sae


def test_forward_matches_the_formula_by_hand():
    sae = make(l0_coefficient=0.3)
    with torch.no_grad():
        sae.threshold[0] = -0.2  # a negative threshold acts as 0: ReLU, as in every peer
    x = torch.randn(7, 6, dtype=torch.float64)
    out = sae(x, penalty_scale=0.5)
    W_enc, b_enc, W_dec, b_dec, theta = (
        p.detach() for p in (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec, sae.threshold)
    )
    l0 = 0.0
    for i in range(7):
        pre = (x[i] - b_dec) @ W_enc + b_enc
        z = torch.tensor([pre[j] if pre[j] > max(theta[j], 0) else 0.0 for j in range(10)], dtype=torch.float64)
        torch.testing.assert_close(out.latents[i], z)
        torch.testing.assert_close(out.x_hat[i], z @ W_dec + b_dec)
        l0 += sum(1.0 for j in range(10) if pre[j] > max(theta[j], 0))
    torch.testing.assert_close(out.losses["l0"], torch.tensor(0.5 * 0.3 * l0 / 7, dtype=torch.float64))
    torch.testing.assert_close(sae.encode(x), out.latents)


def test_straight_through_gradients_match_the_paper():
    """d loss / d threshold_j = sum_i g_ij * -(theta_j / eps) K((pre_ij - theta_j) / eps)  (JumpReLU)
                               + lambda / N * sum_i -(1 / eps) K((pre_ij - theta_j) / eps)  (L0),
    with g the gradient of the MSE with respect to the latents; and the encoder sees only the
    true derivative H(pre - theta) of the JumpReLU (the L0's pseudo-derivative wrt pre is 0)."""
    eps, lam = 0.4, 0.7  # a wide kernel so that many pre-activations fall inside it
    sae = make(jumprelu_bandwidth=eps, l0_coefficient=lam)
    x = torch.randn(50, 6, dtype=torch.float64)
    out = sae(x)
    grad_theta, grad_b_enc = torch.autograd.grad(out.loss, [sae.threshold, sae.b_enc])
    pre = sae.pre_acts(x).detach()
    theta = sae.threshold.detach()
    z = out.latents.detach()
    g = 2 * ((z @ sae.W_dec + sae.b_dec - x) @ sae.W_dec.T).detach() / 50  # d mse / d z
    expected_theta = torch.zeros(10, dtype=torch.float64)
    expected_b_enc = torch.zeros(10, dtype=torch.float64)
    for i in range(50):
        for j in range(10):
            inside = 1.0 if abs((pre[i, j] - theta[j]) / eps) < 0.5 else 0.0
            expected_theta[j] += g[i, j] * -(theta[j] / eps) * inside + lam / 50 * -(1 / eps) * inside
            expected_b_enc[j] += g[i, j] * (1.0 if pre[i, j] > theta[j] else 0.0)
    assert (expected_theta != 0).sum() >= 5  # the test exercises the kernel
    torch.testing.assert_close(grad_theta, expected_theta)
    torch.testing.assert_close(grad_b_enc, expected_b_enc)


def test_training_keeps_the_threshold_non_negative():
    sae = make()
    with torch.no_grad():
        sae.threshold[:3] = -1.0
    sae.training_forward(torch.randn(4, 6, dtype=torch.float64))
    assert float(sae.threshold.detach().min()) == 0.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(l0_coefficient=-1.0), r"l0_coefficient must be >= 0"),
        (dict(jumprelu_bandwidth=0.0), r"jumprelu_bandwidth must be > 0"),
    ],
)
def test_bad_configs_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        SAEConfig(arch="jumprelu", d_in=4, d_sae=8, **kwargs)
