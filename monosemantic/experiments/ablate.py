"""Ablation studies with controls and the bound: ablate features on a task set, at several sets of
positions, against random features of similar density and against the whole activation.

    result = ablate("runs/demo", label="=", task="equality", positions=["relation"], bound=True)
    print(result.table()); result.plot("equality.png")

Each task item is scored (`scoring.py`) clean, then at each position set ("site": `all`, `firing`
and those named in `positions`; `positions.py` says what each holds) in these conditions:

- features: the chosen features mean- (or zero-) ablated at the site's positions, error term kept;
- control: each of `controls` draws of as many random features of similar density, ablated the same
  way (at `firing`: where the control's own features fire);
- bound (`bound=True`): the whole activation at the hookpoint replaced by its mean at the positions
  the features' ablation touches (`bound.py`): the most any features there are expected to cost.

Effects are differences to clean. The features' and the bound's come with paired bootstrap intervals
over items; the control's is the mean ± sd over the draws with an interval over items and draws,
beside the features' excess over it (`controls.py`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from torch import Tensor
from tqdm.auto import tqdm

from monosemantic.analysis.store import FeatureStore
from monosemantic.experiments.bound import activation_means, first_documents, mean_replaced
from monosemantic.experiments.controls import control_stats, matched_controls
from monosemantic.experiments.interventions import intervene, mean_ablate, zero
from monosemantic.experiments.positions import PositionSet, parse_positions, resolve, score_at, touched
from monosemantic.experiments.report import ablation_table, item_groups
from monosemantic.experiments.scoring import (
    METRICS,
    ExperimentError,
    Scores,
    bootstrap_ci,
    score,
    select_features,
)
from monosemantic.experiments.tasks import Task, load_task
from monosemantic.runmodel import RunModel

logger = logging.getLogger(__name__)

__all__ = ["AblationResult", "Site", "ablate", "matched_controls", "run_ablation"]

DEFAULT_SITES = ("all", "firing")


@dataclass
class Site:
    """The scores at one position set."""

    positions: str
    description: str
    touched: int | None
    """items with a position to touch (None at `firing`: that depends on the forward)"""
    ablated: Scores = field(repr=False)
    controls: list[Scores] = field(repr=False)
    bound: Scores | None = field(default=None, repr=False)


@dataclass
class AblationResult:
    task: str
    n_items: int
    mode: str
    features: list[int]
    controls: list[list[int]]
    hookpoint: str
    clean: Scores = field(repr=False)
    sites: dict[str, Site] = field(repr=False)
    groups: list[str | None] = field(repr=False)
    """per item: its group in the task (the relation task's '=' and '≈'), or None"""
    bound_note: str | None = None
    """what the bound's mean was taken over"""

    @property
    def scores(self) -> dict[str, Scores]:
        """At every position after BOS: clean, the features ablated, the control's mean over draws."""
        site = self.sites["all"]
        return {"clean": self.clean, "ablated": site.ablated, "control": Scores.mean_of(site.controls)}

    def summary(self) -> dict[str, dict[str, tuple[float, float, float]]]:
        """At every position after BOS: condition -> metric -> (mean, low, high); plus 'Δ ablated' and
        'Δ control' paired differences (the control averaged over draws per item)."""
        scores = self.scores
        out = {c: {m: bootstrap_ci(getattr(s, m)) for m in METRICS} for c, s in scores.items()}
        for cond in ("ablated", "control"):
            out[f"Δ {cond}"] = {
                m: bootstrap_ci(getattr(scores[cond], m) - getattr(scores["clean"], m)) for m in METRICS
            }
        return out

    def effects(self, site: str, metric: str, items: list[int]) -> dict:
        """One metric's effects at one site over some items: clean, features, control, bound."""
        s = self.sites[site]
        clean = getattr(self.clean, metric)[items]

        def delta(scores: Scores) -> tuple[float, float, float]:
            return bootstrap_ci(getattr(scores, metric)[items] - clean)

        draws = np.stack([getattr(c, metric)[items] for c in s.controls])
        return {
            "clean": bootstrap_ci(clean),
            "features": delta(s.ablated),
            "control": control_stats(clean, getattr(s.ablated, metric)[items], draws),
            "bound": delta(s.bound) if s.bound is not None else None,
        }

    def _effects_dict(self, site: str, metric: str, items: list[int]) -> dict:
        out = {}
        for k, v in self.effects(site, metric, items).items():
            out[k] = v.as_dict() if k == "control" else None if v is None else dict(zip(("mean", "low", "high"), v))
        return out

    def table(self) -> str:
        return ablation_table(self)

    def to_dict(self) -> dict:
        def triple(t):
            return None if t is None else dict(zip(("mean", "low", "high"), t))

        sites = {}
        for name, s in self.sites.items():
            per_group = {}
            for group, items in item_groups(self.groups):
                per_group[group or "all"] = {m: self._effects_dict(name, m, items) for m in METRICS}
            sites[name] = {"description": s.description, "touched": s.touched, "effects": per_group}
        return {
            "task": self.task,
            "n_items": self.n_items,
            "mode": self.mode,
            "hookpoint": self.hookpoint,
            "features": self.features,
            "controls": self.controls,
            "bound": self.bound_note,
            "summary": {c: {m: triple(v) for m, v in d.items()} for c, d in self.summary().items()},
            "sites": sites,
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


def run_ablation(
    model,
    tokenizer,
    sae,
    task: Task,
    features: list[int],
    controls: list[list[int]],
    mode: str,
    means: dict[int, float],
    *,
    sites: list[PositionSet] | None = None,
    bound_mean: Tensor | None = None,
    progress: bool = False,
) -> AblationResult:
    """Score the task clean, then at each site (`all` first, always) with `features` ablated, with each
    control set ablated, and (given the hookpoint's mean activation `bound_mean`) with the bound."""
    sites = [PositionSet(name) for name in DEFAULT_SITES] if sites is None else list(sites)
    if all(site.name != "all" for site in sites):
        sites.insert(0, PositionSet("all"))  # the summary, the plot and `scores` read it
    hookpoint = sae.cfg.hookpoint

    def ablation(ids: list[int]):
        def at(positions):
            if mode == "zero":
                return intervene(model, sae, [zero(ids, positions)])
            return intervene(model, sae, [mean_ablate(ids, [float(means[i]) for i in ids], positions)])

        return at

    runs = 1 + len(sites) * (1 + len(controls) + (bound_mean is not None))  # the clean run first
    bar = tqdm(total=runs, desc="ablate", unit="run", disable=not progress)
    clean, clean_logp = score(model, tokenizer, task)
    bar.update()
    out: dict[str, Site] = {}

    def run(at, condition):
        bar.update()
        return score_at(model, tokenizer, task, at, condition, clean, clean_logp)

    for site in sites:
        where = resolve(site, task, tokenizer, features)
        ablated = run(where, ablation(features))
        control_runs = [  # at `firing`, each control set where its own features fire
            run(resolve(site, task, tokenizer, ids) if site.name == "firing" else where, ablation(ids))
            for ids in controls
        ]
        bound = None
        if bound_mean is not None:
            bound = run(where, lambda p: mean_replaced(model, hookpoint, bound_mean, p, sae))
        out[site.name] = Site(site.name, site.describe(), touched(where), ablated, control_runs, bound)
    bar.close()
    groups = [item.group for item in task.items]
    return AblationResult(task.name, len(task.items), mode, list(features), controls, hookpoint, clean, out, groups)


def ablate(
    run_dir,
    features: list[int] | None = None,
    *,
    label: str | None = None,
    task: str | Task = "equality",
    mode: str = "mean",
    n: int = 200,
    controls: int = 10,
    positions: list[str] = (),
    bound: bool = False,
    mean_documents: int = 1000,
    seed: int = 0,
    max_features: int = 20,
    min_precision: float = 0.5,
    device: str = "cpu",
    progress: bool = False,
) -> AblationResult:
    """Ablate features (ids, or those labelled `label`) on a task, at every position after BOS, where
    they fire and at the named `positions`, against `controls` draws of random features of similar
    density; `bound`: also the whole activation replaced by its mean over the first `mean_documents`
    documents of the run's corpus."""
    if mode not in ("mean", "zero"):
        raise ExperimentError(f"ablation mode {mode!r}; expected 'mean' or 'zero'")
    sites = [parse_positions(p) for p in dict.fromkeys([*DEFAULT_SITES, *positions])]
    store = FeatureStore.open(run_dir)
    chosen = select_features(store, features, label, max_features, min_precision)
    task = load_task(task, n, seed) if isinstance(task, str) else task
    if not task.items:
        raise ExperimentError(f"task {task.name!r} has no items")
    control_sets = matched_controls(np.array(store.column("density")), chosen, controls, seed)
    ids = sorted(set(chosen).union(*control_sets))
    means = dict(zip(ids, store.mean_activation(ids)))  # over all tokens, zeros included
    run = RunModel.of_run(run_dir, store.settings["corpus"], device)
    bound_mean, note = None, None
    if bound:
        if progress:
            logger.info("bound: the mean activation at %s over %d documents ...", run.hookpoint, mean_documents)
        texts = first_documents(run.corpus, mean_documents)
        bound_mean = activation_means(run.model, run.tokenizer, [run.hookpoint], texts)[run.hookpoint]
        note = f"mean over the {len(texts)} first documents of {run.corpus_spec}"
    result = run_ablation(
        run.model,
        run.tokenizer,
        run.sae,
        task,
        chosen,
        control_sets,
        mode,
        means,
        sites=sites,
        bound_mean=bound_mean,
        progress=progress,
    )
    result.bound_note = note
    return result
