"""What ablation and steering studies share: per-item scores of a model on a task, bootstrap
confidence intervals, choosing the features to intervene on, and saving results.

Per task item (prompt, target, contrast) the scores are: greedy answer accuracy (exact match of the
greedy continuation), next-token accuracy on the target tokens (teacher forced), logit difference
of the target's first token against the contrast's, CE loss on the target tokens, and KL(clean ||
condition) of the next-token distributions there. Means come with bootstrap 95% confidence
intervals over items (percentile method).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from monosemantic.atomic import atomic_write_json
from monosemantic.data.corpora import prompt_ids
from monosemantic.errors import MonosemanticError
from monosemantic.experiments.tasks import Task
from monosemantic.models import greedy_complete, target_logprobs

if TYPE_CHECKING:
    from monosemantic.analysis.store import FeatureStore

METRICS = {
    "greedy": "answer accuracy (greedy)",
    "next_token": "next-token accuracy",
    "logit_diff": "logit diff (target - contrast)",
    "ce": "CE loss on target",
    "kl": "KL(clean || condition)",
}
AFTER_BOS = slice(1, None)  # interventions skip the BOS position, which the SAE never saw in training


class ExperimentError(MonosemanticError, ValueError):
    """An experiment that cannot run: no features chosen, bad ids, bad settings."""


def bootstrap_ci(values, n_resamples: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the percentile bootstrap interval of the mean; NaN entries are left out."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    means = v[np.random.default_rng(seed).integers(0, v.size, size=(n_resamples, v.size))].mean(1)
    low, high = np.percentile(means, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(v.mean()), float(low), float(high)


@dataclass
class Scores:
    """Per-item scores of one condition (arrays of length n_items)."""

    greedy: np.ndarray
    next_token: np.ndarray
    logit_diff: np.ndarray
    ce: np.ndarray
    kl: np.ndarray

    @classmethod
    def mean_of(cls, runs: list[Scores]) -> Scores:
        return cls(*(np.mean([getattr(r, m) for r in runs], axis=0) for m in METRICS))


def _sequences(tokenizer, task: Task) -> list[tuple[list[int], list[int], int | None]]:
    """(prompt ids with BOS, target ids, contrast's first token id or None) per item."""
    out = []
    for item in task.items:
        prompt = prompt_ids(tokenizer, item.prompt)
        target = tokenizer(item.target, add_special_tokens=False)["input_ids"]
        contrast = tokenizer(item.contrast, add_special_tokens=False)["input_ids"][0] if item.contrast else None
        out.append((prompt, target, contrast))
    return out


def score(model, tokenizer, task: Task, clean: list[torch.Tensor] | None = None) -> tuple[Scores, list[torch.Tensor]]:
    """Scores of the model as it runs now (inside `intervene` for a condition); `clean` = the clean
    model's target log-probabilities, for the KL."""
    seqs = _sequences(tokenizer, task)
    logp = target_logprobs(model, [(p, t) for p, t, _ in seqs], tokenizer.pad_token_id or 0)
    max_new = max(len(t) for _, t, _ in seqs)
    with torch.inference_mode():
        completions = greedy_complete(model, tokenizer, [i.prompt for i in task.items], max_new)
    n = len(seqs)
    s = Scores(*(np.zeros(n) for _ in METRICS))
    for i, ((_, target, contrast), lp, item) in enumerate(zip(seqs, logp, task.items)):
        t = torch.tensor(target)
        s.greedy[i] = float(completions[i][: len(item.target)] == item.target)
        s.next_token[i] = (lp.argmax(-1) == t).float().mean().item()
        s.ce[i] = -lp.gather(1, t[:, None]).mean().item()
        s.logit_diff[i] = (lp[0, target[0]] - lp[0, contrast]).item() if contrast is not None else np.nan
        s.kl[i] = 0.0 if clean is None else (clean[i].exp() * (clean[i] - lp)).sum(-1).mean().item()
    return s, logp


def select_features(
    store: FeatureStore,
    features: list[int] | None,
    label: str | None,
    max_features: int = 20,
    min_precision: float = 0.5,
) -> list[int]:
    """The features to intervene on: the ids given (checked), or those whose label mentions `label`."""
    if (features is None) == (label is None):
        raise ExperimentError("choose the features: give feature ids, or a label to select them by")
    if features is not None:
        bad = [i for i in features if not 0 <= i < store.n_latents]
        if bad:
            raise ExperimentError(f"feature(s) {bad} do not exist; this SAE has features 0-{store.n_latents - 1}")
        return list(features)
    found = [s.index for s in store.with_label(label, min_precision, max_features)]
    if not found:
        raise ExperimentError(
            f"no feature has a label mentioning {label!r} with precision >= {min_precision}; "
            f"see `monosemantic features {store.run_dir} --search {label!r}`"
        )
    return found


def save_json(path, obj) -> None:
    """Write a result's dict atomically; numpy scalars become floats."""
    atomic_write_json(path, json.loads(json.dumps(obj, default=float)))
