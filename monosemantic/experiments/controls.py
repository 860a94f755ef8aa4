"""Random-feature controls: drawing sets of random latents of similar density, and the spread of their
effect over the draws.

An ablation's effect on a metric is Δ = mean over items of (condition − clean). A control is D draws
of as many random latents; draw d has the per-item differences δ[d, i] and the effect e_d = mean_i
δ[d, i]. Reported: the mean and the standard deviation (ddof 1) of e_d over the draws, and a 95%
percentile-bootstrap interval that resamples both the items (paired: the same items in every draw and
in the features' condition) and the draws; the features' excess over the control, Δ_features − mean_d
e_d, gets its interval from the same resamples. NaN items (a logit difference without a contrast) are
left out of every mean.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np


def matched_controls(
    densities: np.ndarray, chosen: list[int], draws: int, seed: int = 0, window: int = 25
) -> list[list[int]]:
    """`draws` sets of random latents, one per chosen latent, each drawn among the `window` live
    latents nearest to it in density (never a chosen one, never twice in a set)."""
    rng = np.random.default_rng(seed)
    order = [i for i in np.argsort(densities, kind="stable").tolist() if densities[i] > 0 and i not in set(chosen)]
    rank_of = {latent: r for r, latent in enumerate(np.argsort(densities, kind="stable").tolist())}
    live_ranks = np.array([rank_of[i] for i in order])
    sets = []
    for _ in range(draws):
        picked: list[int] = []
        for c in chosen:
            nearest = np.argsort(np.abs(live_ranks - rank_of[c]), kind="stable")
            pool = [order[j] for j in nearest[: window + len(picked)] if order[j] not in picked][:window]
            picked.append(int(rng.choice(pool)))
        sets.append(picked)
    return sets


@dataclass(frozen=True)
class ControlStats:
    """One metric's control effect over D draws, and the features' excess over it."""

    mean: float
    sd: float  # over the draws' effects (ddof 1); NaN with one draw
    low: float
    high: float
    excess: tuple[float, float, float]  # Δ_features − control mean, with its 95% interval

    def as_dict(self) -> dict:
        return {
            "mean": self.mean,
            "sd": self.sd,
            "low": self.low,
            "high": self.high,
            "excess": dict(zip(("mean", "low", "high"), self.excess)),
        }


def control_stats(
    clean: np.ndarray,
    features: np.ndarray,
    draws: np.ndarray,
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> ControlStats:
    """clean [n], features [n], draws [D, n]: per-item scores of one metric (see the module docstring).
    The bootstrap draws the item indices [n_resamples, n] first, then the draw indices [n_resamples, D]."""
    delta = np.asarray(draws, dtype=np.float64) - clean  # [D, n]
    feature_delta = np.asarray(features, dtype=np.float64) - clean  # [n]
    n_draws, n = delta.shape
    nan = float("nan")
    if np.isnan(delta).all():
        return ControlStats(nan, nan, nan, nan, (nan, nan, nan))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN resamples: NaN, dropped below
        per_draw = np.nanmean(delta, axis=1)  # [D]
        rng = np.random.default_rng(seed)
        items = rng.integers(0, n, size=(n_resamples, n))
        picks = rng.integers(0, n_draws, size=(n_resamples, n_draws))
        chunks = range(100, n_resamples, 100)  # the mean of each resample's [D, n] matrix, 100 resamples at a time
        control = np.concatenate(
            [
                np.nanmean(delta[p[:, :, None], i[:, None, :]].reshape(len(p), -1), axis=1)
                for p, i in zip(np.split(picks, chunks), np.split(items, chunks))
            ]
        )
        excess = np.nanmean(feature_delta[items], axis=1) - control
    q = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    low, high = np.nanpercentile(control, q)
    ex_low, ex_high = np.nanpercentile(excess, q)
    mean = float(per_draw.mean())
    return ControlStats(
        mean,
        float(per_draw.std(ddof=1)) if n_draws > 1 else nan,
        float(low),
        float(high),
        (float(np.nanmean(feature_delta)) - mean, float(ex_low), float(ex_high)),
    )
