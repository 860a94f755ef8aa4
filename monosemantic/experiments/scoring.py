"""What ablation and steering studies share: per-item scores of a model on a task, bootstrap
confidence intervals, choosing the features to intervene on, and saving results.

Per task item (prompt, target, contrast) the scores are: greedy answer accuracy (the greedy
continuation starts with the target), whether the greedy answer is the contrast instead (on the
relation task: the other relation's answer, the rounded result after `=`, the exact one after `≈`),
next-token accuracy on the target tokens (teacher forced), logit difference of target against
contrast at the first token where they differ (teacher forced on their common prefix), CE loss on
the target tokens, and KL(clean || condition) of the next-token distributions there. Means come
with bootstrap 95% confidence intervals over items (percentile method).
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
    "contrast": "answer = contrast (greedy)",
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
    contrast: np.ndarray
    next_token: np.ndarray
    logit_diff: np.ndarray
    ce: np.ndarray
    kl: np.ndarray

    @classmethod
    def empty(cls, n: int) -> Scores:
        return cls(**{m: np.full(n, np.nan) for m in METRICS})

    @classmethod
    def mean_of(cls, runs: list[Scores]) -> Scores:
        return cls(**{m: np.mean([getattr(r, m) for r in runs], axis=0) for m in METRICS})

    def take(self, idx: list[int]) -> Scores:
        return Scores(**{m: getattr(self, m)[idx] for m in METRICS})

    def put(self, idx: list[int], part: Scores) -> None:
        for m in METRICS:
            getattr(self, m)[idx] = getattr(part, m)


def _ids(tokenizer, text: str | None) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []


def first_difference(target: list[int], contrast: list[int]) -> int | None:
    """The first token index where the two answers differ, None if one is a prefix of the other."""
    for k, (a, b) in enumerate(zip(target, contrast)):
        if a != b:
            return k
    return None


def score(model, tokenizer, task: Task, clean: list[torch.Tensor] | None = None) -> tuple[Scores, list[torch.Tensor]]:
    """Scores of the model as it runs now (inside `intervene` for a condition); `clean` = the clean
    model's target log-probabilities, for the KL."""
    prompts = [prompt_ids(tokenizer, i.prompt) for i in task.items]
    targets = [_ids(tokenizer, i.target) for i in task.items]
    contrasts = [_ids(tokenizer, i.contrast) for i in task.items]
    logp = target_logprobs(model, list(zip(prompts, targets)), tokenizer.pad_token_id or 0)
    max_new = max(len(t) for t in targets + contrasts)
    with torch.inference_mode():
        completions = greedy_complete(model, tokenizer, [i.prompt for i in task.items], max_new)
    s = Scores.empty(len(prompts))
    for i, (target, contrast, lp, item) in enumerate(zip(targets, contrasts, logp, task.items)):
        t = torch.tensor(target)
        s.greedy[i] = float(completions[i][: len(item.target)] == item.target)
        s.next_token[i] = (lp.argmax(-1) == t).float().mean().item()
        s.ce[i] = -lp.gather(1, t[:, None]).mean().item()
        s.kl[i] = 0.0 if clean is None else (clean[i].exp() * (clean[i] - lp)).sum(-1).mean().item()
        if item.contrast:
            s.contrast[i] = float(completions[i][: len(item.contrast)] == item.contrast)
            k = first_difference(target, contrast)
            if k is not None:  # lp[k] is teacher forced on target[:k], the answers' common prefix
                s.logit_diff[i] = (lp[k, target[k]] - lp[k, contrast[k]]).item()
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
