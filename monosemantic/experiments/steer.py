"""Steering: add a feature's decoder direction inside the model and follow what it does to the next
token and to the answers, against the strength alpha; and greedy continuations without and with
interventions.

    curve = steer("runs/demo", feature=123, alphas=[-4, -2, 0, 2, 4, 8])
    print(curve.table()); curve.plot("steer_123.png")
    shift = steer_answers("runs/demo", 123, [0, 4, 8], task="relation_approximate", positions="relation")
    print(shift.table())   # per alpha: the share of '≈' prompts answered with the rounded / the exact result

Per alpha: the mean probability of the target token next after each of the task's prompts, and
KL(clean || steered) of the next-token distributions; and (`steer_answers`) where the greedy answers
go: the share that is the item's target, its contrast (on the relation task: the other relation's
answer) or something else. Each with a bootstrap 95% confidence interval over prompts. The direction
is added at the position set `positions` (`positions.py`; default: every position after BOS).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from monosemantic.analysis.store import FeatureStore
from monosemantic.data.corpora import prompt_ids
from monosemantic.experiments.interventions import Intervention, Positions, intervene
from monosemantic.experiments.interventions import steer as steer_latents
from monosemantic.experiments.positions import PositionSet, parse_positions, resolve, same_positions, score_at
from monosemantic.experiments.report import ci, group_title, item_groups
from monosemantic.experiments.scoring import AFTER_BOS, ExperimentError, bootstrap_ci, score, select_features
from monosemantic.experiments.tasks import Task, load_task
from monosemantic.models import greedy_complete, last_logprobs
from monosemantic.runmodel import RunModel


@dataclass
class SteeringResult:
    feature: int
    target: str
    n_prompts: int
    alphas: list[float]
    p_target: list[tuple[float, float, float]]  # per alpha: mean P(target next) over prompts, 95% CI
    kl: list[tuple[float, float, float]]  # per alpha: KL(clean || steered) of the next token, 95% CI
    target_reason: str = "given"
    """why this target: given, or chosen as the token the steering raises most"""
    positions: str = "all"
    """the position set the direction is added at"""

    def table(self) -> str:
        lines = [
            f"steering feature {self.feature} at positions {self.positions} on {self.n_prompts} prompts; target "
            f"token {self.target!r} ({self.target_reason}), P of the next token after each prompt",
            f"{'alpha':>7} {'P(target)':>26} {'KL(clean || steered)':>26}",
        ]
        for a, p, k in zip(self.alphas, self.p_target, self.kl):
            lines.append(
                f"{a:>7.2f} {'{:.4f} [{:.4f}, {:.4f}]'.format(*p):>26} {'{:.4f} [{:.4f}, {:.4f}]'.format(*k):>26}"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "feature": self.feature,
            "target": self.target,
            "target_reason": self.target_reason,
            "positions": self.positions,
            "n_prompts": self.n_prompts,
            "alphas": self.alphas,
            "p_target": [dict(zip(("mean", "low", "high"), p)) for p in self.p_target],
            "kl": [dict(zip(("mean", "low", "high"), k)) for k in self.kl],
        }

    def plot(self, path) -> str:
        from monosemantic.plots import plot_dose_response

        return str(
            plot_dose_response(
                self.alphas, self.p_target, self.kl, f"P({self.target!r})", f"steering feature {self.feature}", path
            )
        )


def prompt_logprobs(model, tokenizer, prompts: list[str]) -> torch.Tensor:
    """[n, vocab] next-token log-probabilities after each prompt (read with BOS, as the analysis reads text)."""
    return last_logprobs(model, [prompt_ids(tokenizer, p) for p in prompts])


def steered_logprobs(
    model, tokenizer, sae, feature: int, alpha: float, prompts: list[str], where: list[Positions] | None = None
) -> torch.Tensor:
    """[n, vocab] next-token log-probabilities after each prompt with `feature` steered by `alpha` at
    the prompt's positions `where[i]` (default: every position after BOS)."""
    where = where or [AFTER_BOS] * len(prompts)
    rows: dict[int, torch.Tensor] = {}
    for idx in same_positions(where):
        with intervene(model, sae, [steer_latents(feature, alpha, positions=where[idx[0]])]):
            rows.update(zip(idx, prompt_logprobs(model, tokenizer, [prompts[i] for i in idx])))
    return torch.stack([rows[i] for i in range(len(prompts))])


def steering_curve(
    model,
    tokenizer,
    sae,
    feature: int,
    alphas: list[float],
    prompts: list[str],
    target_id: int,
    target: str,
    where: list[Positions] | None = None,
    progress: bool = False,
) -> SteeringResult:
    clean = prompt_logprobs(model, tokenizer, prompts)
    p_target, kl = [], []
    for alpha in tqdm(alphas, desc="steer", unit="alpha", disable=not progress):
        logp = steered_logprobs(model, tokenizer, sae, feature, alpha, prompts, where)
        p_target.append(bootstrap_ci(logp[:, target_id].exp().numpy()))
        kl.append(bootstrap_ci((clean.exp() * (clean - logp)).sum(-1).numpy()))
    return SteeringResult(feature, target, len(prompts), [float(a) for a in alphas], p_target, kl)


def most_raised_token(
    model, tokenizer, sae, feature: int, alpha: float, prompts: list[str], where: list[Positions] | None = None
) -> int:
    """The token whose next-token probability, averaged over the prompts, steering by `alpha` raises most."""
    clean = prompt_logprobs(model, tokenizer, prompts)
    steered = steered_logprobs(model, tokenizer, sae, feature, alpha, prompts, where)
    return int((steered.exp() - clean.exp()).mean(0).argmax())


def side_by_side(
    model, tokenizer, sae, interventions: list[Intervention], prompt: str, max_new: int = 20
) -> tuple[str, str]:
    """Greedy continuations of `prompt` without and with the interventions."""
    with torch.inference_mode():
        before = greedy_complete(model, tokenizer, [prompt], max_new)[0]
        with intervene(model, sae, interventions):
            after = greedy_complete(model, tokenizer, [prompt], max_new)[0]
    return before, after


def steer(
    run_dir,
    feature: int,
    alphas: list[float],
    *,
    task: str | Task = "equality",
    n: int = 100,
    target: str | None = None,
    positions: str = "all",
    seed: int = 0,
    device: str = "cpu",
    progress: bool = False,
) -> SteeringResult:
    """Dose-response of steering `feature` on a task's prompts: P(target next token) and KL against
    alpha; the target defaults to the token whose mean probability the strongest alpha (largest |alpha|)
    raises most on these prompts (a feature's top direct logit effect is often a token the model never
    emits there). The direction is added at the position set `positions` of each prompt."""
    store = FeatureStore.open(run_dir)
    select_features(store, [feature], None)
    if target is not None and target not in store.vocab:
        raise ExperimentError(f"target token {target!r} is not a token of this model's vocabulary")
    site = parse_positions(positions)
    task = load_task(task, n, seed) if isinstance(task, str) else task
    run = RunModel.of_run(run_dir, store.settings["corpus"], device)
    prompts = [i.prompt for i in task.items]
    where = resolve(site, task, run.tokenizer, [feature])
    reason = "given"
    if target is None:
        strongest = max(alphas, key=lambda a: (abs(a), a))  # the positive end on a tie
        raised = most_raised_token(run.model, run.tokenizer, run.sae, feature, strongest, prompts, where)
        target = store.vocab[raised]
        reason = f"raised most at alpha {strongest:g}"
    result = steering_curve(
        run.model, run.tokenizer, run.sae, feature, alphas, prompts, store.vocab.index(target), target, where, progress
    )
    result.target_reason, result.positions = reason, site.name
    return result


@dataclass
class AnswerShift:
    """Where the greedy answers go as a feature is steered: per alpha and item, whether the answer is
    the item's target, and whether it is its contrast."""

    feature: int
    task: str
    positions: str
    alphas: list[float]
    target: list[np.ndarray] = field(repr=False)  # per alpha: [n_items] 1.0 where the answer is the target
    contrast: list[np.ndarray] = field(repr=False)  # per alpha: [n_items] 1.0 where it is the contrast
    groups: list[str | None] = field(repr=False)

    def shares(self, k: int, items: list[int]) -> dict[str, tuple[float, float, float]]:
        """At alphas[k], over `items`: the shares answered with the target, the contrast, neither."""
        target, contrast = self.target[k][items], self.contrast[k][items]
        return {
            "target": bootstrap_ci(target),
            "contrast": bootstrap_ci(contrast),
            "other": bootstrap_ci(1.0 - np.maximum(target, contrast)),  # both: one answer a prefix of the other
        }

    def table(self) -> str:
        lines = [f"steering feature {self.feature} on task {self.task} at positions {self.positions}: greedy answers"]
        for group, items in item_groups(self.groups):
            rows = [["alpha", "answer = target", "answer = contrast", "other answer"]]
            for k, alpha in enumerate(self.alphas):
                s = self.shares(k, items)
                rows.append([f"{alpha:g}", ci(s["target"]), ci(s["contrast"]), ci(s["other"])])
            widths = [max(len(r[j]) for r in rows) for j in range(4)]
            lines += ["", group_title(group, len(items))]
            lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        out = {}
        for group, items in item_groups(self.groups):
            out[group or "all"] = [
                {"alpha": a, **{k: dict(zip(("mean", "low", "high"), v)) for k, v in self.shares(i, items).items()}}
                for i, a in enumerate(self.alphas)
            ]
        return {"feature": self.feature, "task": self.task, "positions": self.positions, "answers": out}


def answer_shift(
    model, tokenizer, sae, feature: int, alphas: list[float], task: Task, site: PositionSet, progress: bool = False
) -> AnswerShift:
    """Greedy answers of the task with `feature` steered by each alpha at `site`'s positions."""
    clean, clean_logp = score(model, tokenizer, task)
    where = resolve(site, task, tokenizer, [feature])
    target, contrast = [], []
    for alpha in tqdm(alphas, desc="answers", unit="alpha", disable=not progress):
        condition = lambda p, alpha=alpha: intervene(model, sae, [steer_latents(feature, alpha, p)])  # noqa: E731
        scores = score_at(model, tokenizer, task, where, condition, clean, clean_logp)
        target.append(scores.greedy)
        contrast.append(np.nan_to_num(scores.contrast))  # items without a contrast: never "the contrast"
    groups = [item.group for item in task.items]
    return AnswerShift(feature, task.name, site.name, [float(a) for a in alphas], target, contrast, groups)


def steer_answers(
    run_dir,
    feature: int,
    alphas: list[float],
    *,
    task: str | Task = "relation_approximate",
    n: int = 100,
    positions: str = "all",
    seed: int = 0,
    device: str = "cpu",
    progress: bool = False,
) -> AnswerShift:
    """Steer `feature` on a task's prompts and follow where the greedy answers go (the double
    dissociation: on `≈` prompts, does steering an exact-equality feature turn rounded answers exact?)."""
    store = FeatureStore.open(run_dir)
    select_features(store, [feature], None)
    site = parse_positions(positions)
    task = load_task(task, n, seed) if isinstance(task, str) else task
    if not task.items:
        raise ExperimentError(f"task {task.name!r} has no items")
    run = RunModel.of_run(run_dir, store.settings["corpus"], device)
    return answer_shift(run.model, run.tokenizer, run.sae, feature, alphas, task, site, progress)
