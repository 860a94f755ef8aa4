"""monosemantic.eval.toy: the synthetic data has the statistics it claims, and SAEs recover its features."""

import pytest
import torch

from monosemantic.eval.metrics import mmcs
from monosemantic.eval.toy import ToyBatches, ToyConfig, ToyData, format_table, run_toy_benchmark
from monosemantic.sae import SAEConfig, create_sae
from monosemantic.train.trainer import TrainConfig

pytestmark = pytest.mark.integration  # trains or analyses whole runs: see tests/conftest.py

SMALL = ToyConfig(d=32, n_features=64, avg_active=3.0, seed=0)


def test_data_statistics_match_the_config():
    data = ToyData(SMALL)
    torch.testing.assert_close(data.features.norm(dim=1), torch.ones(64))
    assert data.probs.sum().item() == pytest.approx(3.0, rel=1e-5)
    assert (data.probs[0] / data.probs[1]).item() == pytest.approx(2**0.5, rel=1e-5)  # (rank+1)^-0.5
    assert torch.equal(data.sample(100, 7), data.sample(100, 7))
    assert not torch.equal(data.sample(100, 7), data.sample(100, 8))


def test_samples_are_sparse_combinations_of_the_features():
    """Without noise, each sample is sum_i c_i f_i with c_i in [0, 1] on ~avg_active features."""
    data = ToyData(ToyConfig(d=64, n_features=48, avg_active=3.0, noise=0.0))  # fewer features than d:
    x = data.sample(20000, 0)  # coefficients are unique
    coef = torch.linalg.lstsq(data.features.T, x.T).solution.T  # [20000, 48]
    torch.testing.assert_close(coef @ data.features, x, atol=1e-4, rtol=1e-4)
    active = coef.abs() > 1e-4
    assert coef.min() > -1e-4 and coef.max() <= 1 + 1e-4
    assert active.sum(1).float().mean().item() == pytest.approx(3.0, rel=0.03)
    freq = active.float().mean(0)
    assert freq[:8].mean() > 2 * freq[-8:].mean()  # power-law: frequent head, rare tail


def test_batches_resume_exactly():
    a = ToyBatches(ToyData(SMALL), 16)
    for _ in range(3):
        next(a)
    b = ToyBatches(ToyData(SMALL), 16)
    b.load_state_dict(a.state_dict())
    assert torch.equal(next(a), next(b))


def test_an_untrained_sae_does_not_recover_the_features():
    """The control: MMCS of random decoder directions must be far below the recovery bar."""
    data = ToyData(SMALL)
    sae = create_sae(SAEConfig(arch="topk", d_in=32, d_sae=128, k=3))
    assert mmcs(data.features, sae.W_dec) < 0.7


@pytest.mark.parametrize(
    "arch, penalty",
    [
        ("topk", {}),
        # the other architectures train the same toy for as long: the slow tier (CI) runs them
        pytest.param("relu", {"l1_coefficient": 3.0}, marks=pytest.mark.slow),
        pytest.param("batchtopk", {}, marks=pytest.mark.slow),
        # measured 2026-12-02: MMCS 0.887, FVU 0.130, 28% dead with the default prefixes 2 8 32 128 (the
        # 2-latent prefix starves); strict, so that a fix shows
        pytest.param(
            "matryoshka",
            {},
            marks=[pytest.mark.slow, pytest.mark.xfail(strict=True, reason="MMCS 0.887 < 0.9 at default prefixes")],
        ),
        pytest.param("jumprelu", {"l0_coefficient": 10.0}, marks=pytest.mark.slow),
        pytest.param("gated", {"l1_coefficient": 6.0}, marks=pytest.mark.slow),
    ],
)
def test_sae_recovers_the_true_features(arch, penalty):
    train = TrainConfig(
        batch_size=1024, total_tokens=1_000_000, lr=3e-3, dead_window=50_000, log_every=100, b_dec_init="mean"
    )
    [result] = run_toy_benchmark(ToyData(SMALL), [arch], d_sae=128, k=3, train=train, **penalty)
    assert result.mmcs >= 0.9, format_table([result])
    assert result.fvu < 0.35
    if arch == "topk":
        assert result.l0 <= 3.0 + 1e-6
    if arch == "jumprelu":  # the L0 penalty, not a k, keeps it sparse
        assert result.l0 < 4.5, format_table([result])


@pytest.mark.parametrize("k", [4, 8])
def test_a_short_batchtopk_run_fires_about_k_latents_at_inference(k):
    # the inference threshold must come from the trained weights, not the first batches: with a slow
    # EMA (0.999) a 300-step run kept most of the untrained threshold and fired on far fewer than k;
    # the 0.99 EMA alone still trailed (6.6 for k = 8); calibrated at the end of training: 7.8
    train = TrainConfig(
        batch_size=1024, total_tokens=300 * 1024, lr=3e-3, dead_window=100_000, log_every=50, b_dec_init="mean"
    )
    [r] = run_toy_benchmark(ToyData(ToyConfig()), ["batchtopk"], d_sae=256, k=k, train=train)
    assert abs(r.l0 - k) < 0.1 * k, r  # held-out tokens, the eval-mode threshold
