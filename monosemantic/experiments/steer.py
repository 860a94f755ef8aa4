"""Steering: add a feature's decoder direction inside the model and follow what it does to the next
token, against the strength alpha; and greedy continuations without and with interventions.

    curve = steer("runs/demo", feature=123, alphas=[-4, -2, 0, 2, 4, 8])
    print(curve.table()); curve.plot("steer_123.png")

Per alpha: the mean probability of the target token next after each of the task's prompts, and
KL(clean || steered) of the next-token distributions, each with a bootstrap 95% confidence interval.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from monosemantic.analysis.store import FeatureStore
from monosemantic.data.corpora import prompt_ids
from monosemantic.experiments.interventions import Intervention, intervene
from monosemantic.experiments.interventions import steer as steer_latents
from monosemantic.experiments.scoring import AFTER_BOS, ExperimentError, bootstrap_ci, select_features
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

    def table(self) -> str:
        lines = [
            f"steering feature {self.feature} on {self.n_prompts} prompts; target token {self.target!r} "
            f"({self.target_reason}), P of the next token after each prompt",
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


def steering_curve(
    model, tokenizer, sae, feature: int, alphas: list[float], prompts: list[str], target_id: int, target: str
) -> SteeringResult:
    clean = prompt_logprobs(model, tokenizer, prompts)
    p_target, kl = [], []
    for alpha in alphas:
        with intervene(model, sae, [steer_latents(feature, alpha, positions=AFTER_BOS)]):
            logp = prompt_logprobs(model, tokenizer, prompts)
        p_target.append(bootstrap_ci(logp[:, target_id].exp().numpy()))
        kl.append(bootstrap_ci((clean.exp() * (clean - logp)).sum(-1).numpy()))
    return SteeringResult(feature, target, len(prompts), [float(a) for a in alphas], p_target, kl)


def most_raised_token(model, tokenizer, sae, feature: int, alpha: float, prompts: list[str]) -> int:
    """The token whose next-token probability, averaged over the prompts, steering by `alpha` raises most."""
    clean = prompt_logprobs(model, tokenizer, prompts)
    with intervene(model, sae, [steer_latents(feature, alpha, positions=AFTER_BOS)]):
        steered = prompt_logprobs(model, tokenizer, prompts)
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
    seed: int = 0,
    device: str = "cpu",
) -> SteeringResult:
    """Dose-response of steering `feature` on a task's prompts: P(target next token) and KL against
    alpha; the target defaults to the token whose mean probability the strongest alpha (largest |alpha|)
    raises most on these prompts (a feature's top direct logit effect is often a token the model never
    emits there)."""
    store = FeatureStore.open(run_dir)
    select_features(store, [feature], None)
    if target is not None and target not in store.vocab:
        raise ExperimentError(f"target token {target!r} is not a token of this model's vocabulary")
    task = load_task(task, n, seed) if isinstance(task, str) else task
    run = RunModel.of_run(run_dir, store.settings["corpus"], device)
    prompts = [i.prompt for i in task.items]
    reason = "given"
    if target is None:
        strongest = max(alphas, key=lambda a: (abs(a), a))  # the positive end on a tie
        target = store.vocab[most_raised_token(run.model, run.tokenizer, run.sae, feature, strongest, prompts)]
        reason = f"raised most at alpha {strongest:g}"
    result = steering_curve(
        run.model, run.tokenizer, run.sae, feature, alphas, prompts, store.vocab.index(target), target
    )
    result.target_reason = reason
    return result
