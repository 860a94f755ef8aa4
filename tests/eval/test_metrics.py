"""monosemantic.eval.metrics against numbers worked out by hand from the definitions in PRODUCT.md."""

import math

import pytest
import torch

from monosemantic.data.activations import ActivationDataError
from monosemantic.eval.metrics import (
    ReconstructionStats,
    dead_fraction,
    dense_fraction,
    density_histogram,
    evaluate,
    explained_variance,
    fvu,
    l0,
    mmcs,
    normalized_mse,
)
from monosemantic.sae import SAEConfig, create_sae

X = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
X_HAT = torch.tensor([[1.0, 1.0], [3.0, 3.0], [6.0, 6.0]])
# errors (0,1), (0,1), (-1,0): sum of squares 3. mean (3,4): deviations (-2,-2), (0,0), (2,2): 16.
# sum ||x||^2 = 1+4+9+16+25+36 = 91.


def test_fvu_explained_variance_and_normalised_mse_by_hand():
    assert fvu(X, X_HAT).item() == pytest.approx(3 / 16)
    assert explained_variance(X, X_HAT).item() == pytest.approx(13 / 16)
    assert normalized_mse(X, X_HAT).item() == pytest.approx(3 / 91)


def test_leading_dimensions_are_tokens():
    assert fvu(X.reshape(3, 1, 2), X_HAT.reshape(3, 1, 2)).item() == pytest.approx(3 / 16)


def test_l0_by_hand():
    z = torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.0, 0.0], [3.0, 0.0, -1.0]])
    assert l0(z).item() == pytest.approx(4 / 3)


def test_dead_and_dense_fractions_by_hand():
    assert dead_fraction(torch.tensor([0, 5, 10, 100]), window=10) == 0.5  # 10 and 100 tokens: dead
    assert dense_fraction(torch.tensor([0.05, 0.2, 0.1, 0.11])) == 0.5  # strictly above 10%


def test_density_histogram_counts():
    h = density_histogram(torch.tensor([0.0, 1e-3, 1e-3, 0.5, 0.0, 1e-9]), bins=7, low=1e-7)
    assert h["never_fired"] == 2
    assert len(h["counts"]) == 7 and len(h["edges"]) == 8
    assert sum(h["counts"]) == 4  # 1e-9 is clamped into the lowest bin, not dropped
    edges = h["edges"]  # -7 .. 0 in steps of 1
    assert edges == pytest.approx([-7, -6, -5, -4, -3, -2, -1, 0])
    assert h["counts"][4] == 2  # log10(1e-3) = -3 lies in [-3, -2)
    assert h["counts"][6] == 1 and h["counts"][0] == 1


def test_mmcs_by_hand():
    true = torch.eye(3)[:2]  # e1, e2
    W_dec = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.6, 0.8], [0.0, -3.0, 0.0]])  # norms must not matter
    # e1 -> 1 (row 0); e2 -> max(0.6, -1) = 0.6
    assert mmcs(true, W_dec) == pytest.approx(0.8)


def test_streaming_stats_equal_the_one_shot_formula_even_with_a_large_mean():
    torch.manual_seed(1)
    x = torch.randn(1000, 8, dtype=torch.float64) * 0.01 + 1e4  # spread tiny next to the mean
    x_hat = x + torch.randn_like(x) * 0.001
    z = (torch.rand(1000, 5) < 0.3).float()
    stats = ReconstructionStats(5)
    for start, stop in [(0, 1), (1, 300), (300, 301), (301, 1000)]:  # uneven batches
        stats.update(x[start:stop], x_hat[start:stop], z[start:stop])
    direct = ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    assert stats.sse / stats.m2 == pytest.approx(direct.item(), rel=1e-9)
    assert stats.n == 1000 and stats.active == int((z != 0).sum())
    assert torch.equal(stats.fire_counts, (z != 0).sum(0))


def test_evaluate_equals_the_metric_functions_on_all_data():
    torch.manual_seed(2)
    sae = create_sae(SAEConfig(arch="relu", d_in=6, d_sae=10))
    with torch.no_grad():
        sae.b_enc.copy_(torch.linspace(-3, 0.5, 10))  # a few latents can never fire
    x = torch.randn(500, 6) + 2
    result = evaluate(sae, (x[i : i + 64] for i in range(0, 500, 64)))
    z = sae.encode(x).detach()
    x_hat = sae.decode(z).detach()
    assert result.n_tokens == 500
    assert result.fvu == pytest.approx(fvu(x, x_hat).item(), rel=1e-6)
    assert result.explained_variance == pytest.approx(1 - result.fvu)
    assert result.normalized_mse == pytest.approx(normalized_mse(x, x_hat).item(), rel=1e-6)
    assert result.l0 == pytest.approx(l0(z).item())
    never = (z != 0).sum(0) == 0
    assert result.dead_fraction == pytest.approx(never.double().mean().item())
    assert result.density_histogram["never_fired"] == int(never.sum())
    density = (z != 0).double().mean(0)
    assert result.dense_fraction == pytest.approx((density > 0.1).double().mean().item())


def test_evaluate_respects_max_tokens_and_refuses_no_data():
    sae = create_sae(SAEConfig(arch="topk", d_in=4, d_sae=8, k=2))
    result = evaluate(sae, iter([torch.randn(30, 4), torch.randn(30, 4)]), max_tokens=40)
    assert result.n_tokens == 40
    for batches, max_tokens in ((iter([]), None), (iter([torch.randn(30, 4)]), 0)):
        with pytest.raises(ActivationDataError, match="no activations"):
            evaluate(sae, batches, max_tokens=max_tokens)
    assert not math.isnan(result.fvu)


def test_empty_batches_change_nothing():
    x, x_hat, z = torch.randn(50, 3), torch.randn(50, 3), torch.rand(50, 4)
    with_empty, plain = ReconstructionStats(4), ReconstructionStats(4)
    for stats, pieces in ((with_empty, [(0, 20), (20, 20), (20, 50), (50, 50)]), (plain, [(0, 20), (20, 50)])):
        for a, b in pieces:
            stats.update(x[a:b], x_hat[a:b], z[a:b])
    assert with_empty.n == plain.n == 50
    assert with_empty.m2 == pytest.approx(plain.m2) and with_empty.sse == pytest.approx(plain.sse)
