"""Ablation studies with controls: ablate features on a task set, against random features of similar
density.

    result = ablate("runs/demo", label="=", task="equality")      # mean-ablate the features labelled '='
    print(result.table()); result.plot("equality.png")

Each task item is scored (`scoring.py`) in three conditions: the clean model; the features ablated;
as many random features of similar density ablated, the control (the mean over several draws).
Differences to clean come with paired bootstrap confidence intervals.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from monosemantic.analysis.store import FeatureStore
from monosemantic.experiments.interventions import Intervention, intervene, mean_ablate, zero
from monosemantic.experiments.scoring import (
    AFTER_BOS,
    METRICS,
    ExperimentError,
    Scores,
    bootstrap_ci,
    score,
    select_features,
)
from monosemantic.experiments.tasks import Task, load_task
from monosemantic.runmodel import RunModel


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
    run = RunModel.of_run(run_dir, store.settings["corpus"], device)
    return run_ablation(run.model, run.tokenizer, run.sae, task, chosen, control_sets, mode, means)
