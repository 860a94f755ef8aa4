"""The spread of random-feature controls against a computation by hand: mean and sd of the draws'
effects, the bootstrap over items and draws written as loops, and the degenerate case where it is a
plain bootstrap over draws (scipy)."""

import numpy as np
import pytest

from monosemantic.experiments.controls import control_stats

CLEAN = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 1.0])
FEATURES = np.array([0.0, 0.0, 1.0, 0.0, 0.0, 1.0])
DRAWS = np.array(
    [
        [1.0, 0.0, 1.0, 0.0, 0.0, 1.0],
        [1.0, 1.0, 1.0, 1.0, 0.0, 1.0],
        [0.0, 0.0, 1.0, 1.0, 0.0, 0.0],
        [1.0, 0.0, 0.0, 1.0, 0.0, 1.0],
    ]
)


def test_mean_and_sd_over_draws_by_hand():
    stats = control_stats(CLEAN, FEATURES, DRAWS)
    effects = [sum(d - c for d, c in zip(draw, CLEAN)) / len(CLEAN) for draw in DRAWS]  # -1/6, 1/6, -2/6, -1/6
    mean = sum(effects) / len(effects)
    sd = (sum((e - mean) ** 2 for e in effects) / (len(effects) - 1)) ** 0.5
    assert stats.mean == pytest.approx(mean) and mean == pytest.approx(-0.125)
    assert stats.sd == pytest.approx(sd)
    features_effect = sum(f - c for f, c in zip(FEATURES, CLEAN)) / len(CLEAN)  # -3/6
    assert stats.excess[0] == pytest.approx(features_effect - mean)


def test_bootstrap_over_items_and_draws_by_hand():
    n_resamples = 300
    stats = control_stats(CLEAN, FEATURES, DRAWS, n_resamples=n_resamples, seed=5)
    rng = np.random.default_rng(5)
    items = rng.integers(0, len(CLEAN), size=(n_resamples, len(CLEAN)))  # the documented order: items, then draws
    picks = rng.integers(0, len(DRAWS), size=(n_resamples, len(DRAWS)))
    control, excess = [], []
    for r in range(n_resamples):
        cells = [DRAWS[d][i] - CLEAN[i] for d in picks[r] for i in items[r]]
        control.append(sum(cells) / len(cells))
        feature = sum(FEATURES[i] - CLEAN[i] for i in items[r]) / len(items[r])
        excess.append(feature - control[-1])
    assert (stats.low, stats.high) == pytest.approx(tuple(np.percentile(control, [2.5, 97.5])))
    assert stats.excess[1:] == pytest.approx(tuple(np.percentile(excess, [2.5, 97.5])))
    assert stats.low < stats.mean < stats.high


def test_with_identical_items_the_interval_is_a_bootstrap_over_draws():
    stats_module = pytest.importorskip("scipy.stats")
    effects = np.random.default_rng(0).normal(-0.03, 0.01, size=30)
    clean = np.zeros(5)
    draws = np.repeat(effects[:, None], 5, axis=1)  # every item moves by its draw's effect
    stats = control_stats(clean, clean, draws, n_resamples=20_000)
    ref = stats_module.bootstrap(
        (effects,), np.mean, n_resamples=20_000, method="percentile", rng=np.random.default_rng(1)
    ).confidence_interval
    assert stats.low == pytest.approx(ref.low, abs=5e-4) and stats.high == pytest.approx(ref.high, abs=5e-4)


def test_nan_items_are_left_out_and_one_draw_has_no_sd():
    clean = np.array([0.5, np.nan, 1.5])
    stats = control_stats(clean, clean + 1.0, (clean + 2.0)[None, :])
    assert stats.mean == pytest.approx(2.0) and np.isnan(stats.sd)
    assert stats.excess == pytest.approx((-1.0, -1.0, -1.0))
    empty = control_stats(clean * np.nan, clean, clean[None, :])
    assert all(np.isnan(v) for v in (empty.mean, empty.sd, empty.low, empty.high))
