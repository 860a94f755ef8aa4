"""The TopK training step as the trainer runs it (fast sparse path, fused Adam, decoder constraint)
against a slow, obviously correct eager step: dense encode, top-k, dense decode, MSE + AuxK as
`monosemantic.sae.topk` defines them, torch.optim.Adam (for-loop implementation). N steps, with dead
latents so that AuxK is active; losses and the weights after every step agree, the fired latents exactly."""

import pytest
import torch
import torch.nn.functional as F

from monosemantic.sae import SAEConfig, create_sae
from monosemantic.sae.topk import chunked_topk
from monosemantic.train.trainer import TrainConfig, Trainer

D_IN, D_SAE, K, B, STEPS, LR = 16, 512, 4, 32, 6, 3e-3  # 512 latents: top-k in chunks (see chunked_topk)
# float64: only summation order differs, so agreement is to ~1e-12; float32: ~1e-5 after 6 Adam steps
TOLERANCE = {"float64": dict(rtol=1e-9, atol=1e-10), "float32": dict(rtol=2e-4, atol=2e-5)}


def eager_step(p: dict[str, torch.Tensor], opt: torch.optim.Optimizer, x: torch.Tensor, dead: torch.Tensor, cfg):
    """One step by the definitions; returns (mse, auxk, fired [D_SAE])."""
    pre = (x - p["b_dec"]) @ p["W_enc"] + p["b_enc"]
    vals, idx = pre.topk(K, dim=-1)
    z = torch.zeros_like(pre).scatter(-1, idx, F.relu(vals))
    x_hat = z @ p["W_dec"] + p["b_dec"]
    mse = (x_hat - x).pow(2).sum(-1).mean()
    n = min(cfg.k_aux or D_IN // 2, int(dead.sum()))  # k_aux: sparsify's default d_in / 2
    a_vals, a_idx = pre.masked_fill(~dead, float("-inf")).topk(n, dim=-1)
    z_aux = torch.zeros_like(pre).scatter(-1, a_idx, F.relu(a_vals))
    auxk = cfg.auxk_coef * (z_aux @ p["W_dec"] - (x - x_hat).detach()).pow(2).sum(-1).mean()
    opt.zero_grad()
    (mse + auxk).backward()
    with torch.no_grad():
        W, g = p["W_dec"], p["W_dec"].grad
        g -= (g * W).sum(1, keepdim=True) * W  # gradient parallel to each decoder row removed
        opt.step()
        W /= W.norm(dim=1, keepdim=True)
    return mse.detach(), auxk.detach(), (z > 0).any(0)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_trainer_step_matches_the_eager_reference_over_steps(dtype):
    torch.manual_seed(0)
    sae = create_sae(SAEConfig(arch="topk", d_in=D_IN, d_sae=D_SAE, k=K, dtype=dtype))
    with torch.no_grad():  # nonzero biases so that their gradients and b_dec's subtraction are tested
        sae.b_dec.normal_(0, 0.1)
        sae.b_enc.normal_(0, 0.1)
    cfg = TrainConfig(batch_size=B, total_tokens=B * 100, lr=LR, lr_warmup=0, lr_decay=0, dead_window=B)
    trainer = Trainer(sae, cfg, progress=False)
    p = {n: t.detach().clone().requires_grad_() for n, t in sae.named_parameters()}
    opt = torch.optim.Adam(p.values(), lr=LR, foreach=False, fused=False)
    since_fired = torch.zeros(D_SAE, dtype=torch.long)
    tol = TOLERANCE[dtype]
    for step in range(STEPS):
        x = torch.randn(B, D_IN, dtype=sae.W_enc.dtype)
        dead = since_fired >= B
        assert step == 0 or dead.any(), "AuxK must be exercised"
        mse, auxk, fired = eager_step(p, opt, x, dead, sae.cfg)
        out = trainer.step(x)
        since_fired += B
        since_fired[fired] = 0
        torch.testing.assert_close(out.losses["mse"], mse, **tol)
        if dead.any():
            torch.testing.assert_close(out.losses["auxk"], auxk, **tol)
        assert torch.equal(out.fired, fired)
        for name, t in sae.named_parameters():
            torch.testing.assert_close(t.detach(), p[name].detach(), **tol, msg=f"{name} after step {step}")


@pytest.mark.parametrize("n", [4096, 6144, 1000])  # two levels of chunks, one level, aten's topk directly
def test_chunked_topk_selects_what_topk_selects(n):
    torch.manual_seed(1)
    pre = torch.randn(64, n)
    vals, idx = chunked_topk(pre, 8)
    ref_vals, ref_idx = pre.topk(8, dim=-1)
    assert torch.equal(vals.sort(-1).values, ref_vals.sort(-1).values)
    assert torch.equal(idx.sort(-1).values, ref_idx.sort(-1).values)  # no ties in random floats here
    assert torch.equal(pre.gather(1, idx), vals)


def test_chunked_topk_at_ties_gives_the_same_values_and_valid_latents():
    pre = torch.randint(0, 5, (32, 4096)).float()  # every value is tied hundreds of times
    vals, idx = chunked_topk(pre, 8)
    assert torch.equal(vals.sort(-1).values, pre.topk(8, dim=-1).values.sort(-1).values)
    assert torch.equal(pre.gather(1, idx), vals)
    assert all(len(set(row)) == 8 for row in idx.tolist())  # distinct latents per token
