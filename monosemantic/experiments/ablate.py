"""Causal experiments with controls: ablate features on a task set, steer a feature.

    result = ablate("runs/demo", label="=", task="equality")      # mean-ablate the features labelled '='
    print(result.table()); result.plot("equality.png")
    curve = steer("runs/demo", feature=123, alphas=[-4, -2, 0, 2, 4, 8])

Per task item (prompt, target, contrast) and condition (clean model; the features ablated; as many
random features of similar density ablated, the control) the scores are: greedy answer accuracy
(exact match of the greedy continuation), next-token accuracy on the target tokens (teacher forced),
logit difference of the target's first token against the contrast's, CE loss on the target tokens,
and KL(clean || condition) of the next-token distributions there. Means come with bootstrap 95%
confidence intervals over items (percentile method), differences to clean with paired ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from monosemantic.data.corpora import prompt_ids
from monosemantic.errors import MonosemanticError
from monosemantic.experiments.interventions import Intervention, intervene, mean_ablate, zero
from monosemantic.experiments.interventions import steer as steer_latents
from monosemantic.experiments.tasks import Task
from monosemantic.models import greedy_complete

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


def _target_logprobs(model, tokenizer, seqs, batch_size: int = 64) -> list[torch.Tensor]:
    """Per item [len(target), vocab] log-probabilities of the next token at the target positions."""
    out = []
    pad = tokenizer.pad_token_id or 0
    for start in range(0, len(seqs), batch_size):
        chunk = seqs[start : start + batch_size]
        width = max(len(p) + len(t) for p, t, _ in chunk)
        ids = torch.full((len(chunk), width), pad)
        mask = torch.zeros(len(chunk), width, dtype=torch.long)
        for r, (p, t, _) in enumerate(chunk):
            ids[r, : len(p) + len(t)] = torch.tensor(p + t)
            mask[r, : len(p) + len(t)] = 1
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
        for r, (p, t, _) in enumerate(chunk):
            out.append(F.log_softmax(logits[r, len(p) - 1 : len(p) - 1 + len(t)], -1))
    return out


def score(model, tokenizer, task: Task, clean: list[torch.Tensor] | None = None) -> tuple[Scores, list[torch.Tensor]]:
    """Scores of the model as it runs now (inside `intervene` for a condition); `clean` = the clean
    model's target log-probabilities, for the KL."""
    seqs = _sequences(tokenizer, task)
    logp = _target_logprobs(model, tokenizer, seqs)
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


@dataclass
class AblationResult:
    task: str
    n_items: int
    mode: str
    features: list[int]
    controls: list[list[int]]
    scores: dict[str, Scores] = field(repr=False)

    def summary(self) -> dict[str, dict[str, tuple[float, float, float]]]:
        """condition -> metric -> (mean, low, high); plus 'Δ ablated' and 'Δ control' paired differences."""
        out = {c: {m: bootstrap_ci(getattr(s, m)) for m in METRICS} for c, s in self.scores.items()}
        for cond in ("ablated", "control"):
            out[f"Δ {cond}"] = {
                m: bootstrap_ci(getattr(self.scores[cond], m) - getattr(self.scores["clean"], m)) for m in METRICS
            }
        return out

    def table(self) -> str:
        summary = self.summary()
        cols = ["clean", "ablated", "Δ ablated", "control", "Δ control"]
        head = (
            f"task {self.task} ({self.n_items} prompts): {self.mode}-ablating {len(self.features)} features "
            f"{self.features[:12]}{' ...' if len(self.features) > 12 else ''}; control: as many random "
            f"features of similar density ({len(self.controls)} draws)\n"
        )
        lines = [f"{'metric':<28}" + "".join(f"  {c:>26}" for c in cols)]
        for m, name in METRICS.items():
            cells = ["{:.3g} [{:.3g}, {:.3g}]".format(*summary[c][m]) for c in cols]
            lines.append(f"{name:<28}" + "".join(f"  {x:>26}" for x in cells))
        return head + "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "task": self.task,
            "n_items": self.n_items,
            "mode": self.mode,
            "features": self.features,
            "controls": self.controls,
            "summary": {
                c: {m: dict(zip(("mean", "low", "high"), v)) for m, v in d.items()} for c, d in self.summary().items()
            },
        }

    def plot(self, path) -> str:
        from monosemantic.plots import plot_ablation

        return str(
            plot_ablation(
                self.summary(),
                ["greedy", "next_token"],
                [METRICS["greedy"], METRICS["next_token"]],
                f"{self.task}: {self.mode}-ablating {len(self.features)} features",
                path,
            )
        )


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


def run_ablation(
    model,
    tokenizer,
    sae,
    task: Task,
    features: list[int],
    controls: list[list[int]],
    mode: str,
    means: dict[int, float],
) -> AblationResult:
    """Score the task clean, with `features` ablated, and with each control set ablated."""

    def ablation(ids: list[int]) -> list[Intervention]:
        if mode == "zero":
            return [zero(ids, positions=AFTER_BOS)]
        return [mean_ablate(ids, [float(means[i]) for i in ids], positions=AFTER_BOS)]

    clean, clean_logp = score(model, tokenizer, task)
    runs = {}
    for name, ids in [("ablated", features), *[(f"control_{d}", c) for d, c in enumerate(controls)]]:
        with intervene(model, sae, ablation(ids)):
            runs[name] = score(model, tokenizer, task, clean_logp)[0]
    scores = {
        "clean": clean,
        "ablated": runs["ablated"],
        "control": Scores.mean_of([runs[f"control_{d}"] for d in range(len(controls))]),
    }
    return AblationResult(task.name, len(task.items), mode, list(features), controls, scores)


# ---- steering ------------------------------------------------------------------------------------


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


def _last_logprobs(model, tokenizer, prompts: list[str]) -> torch.Tensor:
    """[n, vocab] next-token log-probabilities after each prompt (prompts of one length run together)."""
    out = [None] * len(prompts)
    by_length: dict[int, list[int]] = {}
    encoded = []
    for i, p in enumerate(prompts):
        ids = prompt_ids(tokenizer, p)
        encoded.append(ids)
        by_length.setdefault(len(ids), []).append(i)
    with torch.inference_mode():
        for members in by_length.values():
            logits = model(input_ids=torch.tensor([encoded[i] for i in members])).logits[:, -1].float()
            for i, row in zip(members, F.log_softmax(logits, -1)):
                out[i] = row
    return torch.stack(out)


def steering_curve(
    model, tokenizer, sae, feature: int, alphas: list[float], prompts: list[str], target_id: int, target: str
) -> SteeringResult:
    clean = _last_logprobs(model, tokenizer, prompts)
    p_target, kl = [], []
    for alpha in alphas:
        with intervene(model, sae, [steer_latents(feature, alpha, positions=AFTER_BOS)]):
            logp = _last_logprobs(model, tokenizer, prompts)
        p_target.append(bootstrap_ci(logp[:, target_id].exp().numpy()))
        kl.append(bootstrap_ci((clean.exp() * (clean - logp)).sum(-1).numpy()))
    return SteeringResult(feature, target, len(prompts), [float(a) for a in alphas], p_target, kl)


def most_raised_token(model, tokenizer, sae, feature: int, alpha: float, prompts: list[str]) -> int:
    """The token whose next-token probability, averaged over the prompts, steering by `alpha` raises most."""
    clean = _last_logprobs(model, tokenizer, prompts)
    with intervene(model, sae, [steer_latents(feature, alpha, positions=AFTER_BOS)]):
        steered = _last_logprobs(model, tokenizer, prompts)
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


# ---- on a run --------------------------------------------------------------------------------------


def select_features(
    store, features: list[int] | None, label: str | None, max_features: int = 20, min_precision: float = 0.5
) -> list[int]:
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


def ablate(
    run_dir,
    features: list[int] | None = None,
    *,
    label: str | None = None,
    task: str | Task = "equality",
    mode: str = "mean",
    n: int = 200,
    controls: int = 3,
    seed: int = 0,
    max_features: int = 20,
    min_precision: float = 0.5,
    device: str = "cpu",
) -> AblationResult:
    """Ablate features (ids, or those labelled `label`) on a task, against random features of similar density."""
    from monosemantic.analysis.store import FeatureStore
    from monosemantic.experiments.tasks import load_task
    from monosemantic.runmodel import RunModel

    if mode not in ("mean", "zero"):
        raise ExperimentError(f"ablation mode {mode!r}; expected 'mean' or 'zero'")
    store = FeatureStore.open(run_dir)
    chosen = select_features(store, features, label, max_features, min_precision)
    task = load_task(task, n, seed) if isinstance(task, str) else task
    if not task.items:
        raise ExperimentError(f"task {task.name!r} has no items")
    control_sets = matched_controls(np.array(store.column("density")), chosen, controls, seed)
    ids = sorted(set(chosen).union(*control_sets))
    means = dict(zip(ids, store.mean_activation(ids)))  # over all tokens, zeros included
    src = RunModel.of_run(run_dir, store.settings["corpus"], device)
    return run_ablation(src.model, src.tokenizer, src.sae, task, chosen, control_sets, mode, means)


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
    from monosemantic.analysis.store import FeatureStore
    from monosemantic.experiments.tasks import load_task
    from monosemantic.runmodel import RunModel

    store = FeatureStore.open(run_dir)
    select_features(store, [feature], None)
    if target is not None and target not in store.vocab:
        raise ExperimentError(f"target token {target!r} is not a token of this model's vocabulary")
    task = load_task(task, n, seed) if isinstance(task, str) else task
    src = RunModel.of_run(run_dir, store.settings["corpus"], device)
    prompts = [i.prompt for i in task.items]
    reason = "given"
    if target is None:
        strongest = max(alphas, key=lambda a: (abs(a), a))  # the positive end on a tie
        target = store.vocab[most_raised_token(src.model, src.tokenizer, src.sae, feature, strongest, prompts)]
        reason = f"raised most at alpha {strongest:g}"
    result = steering_curve(
        src.model, src.tokenizer, src.sae, feature, alphas, prompts, store.vocab.index(target), target
    )
    result.target_reason = reason
    return result


def save_json(path, obj) -> None:
    from monosemantic.atomic import atomic_write_json

    atomic_write_json(path, json.loads(json.dumps(obj, default=float)))
