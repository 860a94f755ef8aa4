"""The checks before a training job allocates (issue 18, cases 3 and 4): the memory estimate against what
an SAE and Adam really hold after a step, and the refusals of a missing device and of an SAE too large."""

import pytest
import torch

from monosemantic.config import ConfigError
from monosemantic.sae import SAEConfig, create_sae
from monosemantic.train.preflight import available_bytes, check_device, check_memory, training_bytes


@pytest.mark.parametrize("arch", ["topk", "relu", "gated", "jumprelu"])
def test_the_estimate_counts_what_an_sae_and_adam_hold_after_a_step(arch):
    cfg = SAEConfig(arch=arch, d_in=16, d_sae=48, k=4 if arch == "topk" else None)
    sae = create_sae(cfg)
    optimizer = torch.optim.Adam(sae.parameters(), lr=1e-3)
    out = sae.training_forward(torch.randn(32, 16))
    out.loss.backward()
    optimizer.step()
    weights = sum(p.nbytes for p in sae.parameters())
    grads = sum(p.grad.nbytes for p in sae.parameters() if p.grad is not None)
    moments = sum(s[key].nbytes for s in optimizer.state.values() for key in ("exp_avg", "exp_avg_sq"))
    estimate = training_bytes(cfg, batch_size=32)
    assert estimate["parameters"] == weights
    assert estimate["gradients and Adam"] == grads + moments == 3 * weights
    assert estimate["one batch of latents"] == 32 * 48 * 4  # the [batch, d_sae] float32 pre-activations


def test_an_sae_larger_than_the_memory_is_refused_with_both_figures():
    have = available_bytes(torch.device("cpu"))
    assert have is not None and 0 < have[0] <= have[1]
    check_memory([SAEConfig(arch="topk", d_in=16, d_sae=64, k=4)], 4096, torch.device("cpu"))  # fits
    huge = SAEConfig(arch="topk", d_in=128, d_sae=10**12, k=4)  # 256e12 weights: 1 PB in float32
    with pytest.raises(ConfigError, match=r"d_sae=1000000000000\) needs at least .* PB of memory \(parameters 1\.0 PB"):
        check_memory([huge], 4096, torch.device("cpu"))


def test_a_device_this_machine_lacks_is_refused():
    assert check_device("cpu") == torch.device("cpu")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(ConfigError, match=rf"device 'cuda:{count}': .*--device cpu|this machine has {count} CUDA"):
        check_device(f"cuda:{count}")


def test_a_routed_sae_is_sized_without_full_gradients_or_a_batch_of_all_its_latents():
    from monosemantic.sae.routed import TOPK_ROWS

    cfg = SAEConfig(arch="routed", d_in=192, d_sae=1 << 20, k=32, experts=64)
    params = 2 * 192 * (1 << 20) + (1 << 20) + 192 + 192 * 64
    assert training_bytes(cfg, 4096) == {
        "parameters": 4 * params,
        "gradients and Adam": 2 * 4 * params,  # Adam's moments; the gradients are rows (sae/row_grads.py)
        "one batch of latents": 4 * TOPK_ROWS * (1 << 14),
    }
