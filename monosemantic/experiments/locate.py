"""Where a task's information lives: the ablation bound (`bound.py`) at every hookpoint and position
set, before any SAE is trained. A cell is the task's scores with the whole activation at that
hookpoint replaced by its mean at those positions; no set of features there is expected to cost more,
so a study of features belongs where the bound is large.

    result = locate("builtin", task="relation", positions=["relation", "answer_start"])
    print(result.table("greedy"))

The hookpoints default to the embedding (`layers.0.resid.pre`) and every layer's residual stream
(`layers.*.resid.post`); the positions to `all`, `prompt`, `answer_start`, `answer` and, for built-in
tasks, the relation's tokens (`relation|relation_word`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tqdm.auto import tqdm

from monosemantic.data.corpora import open_corpus
from monosemantic.experiments.bound import activation_means, first_documents, mean_replaced
from monosemantic.experiments.positions import PositionError, PositionSet, parse_positions, resolve, score_at
from monosemantic.experiments.report import item_groups, locate_table
from monosemantic.experiments.scoring import METRICS, ExperimentError, Scores, bootstrap_ci, score
from monosemantic.experiments.tasks import Task, load_task
from monosemantic.models import load_model, resolve_hookpoints

DEFAULT_HOOKPOINTS = ("layers.0.resid.pre", "layers.*.resid.post")
DEFAULT_POSITIONS = ("all", "prompt", "answer_start", "answer")
RELATION_POSITIONS = "relation|relation_word"


@dataclass
class LocateResult:
    task: str
    n_items: int
    hookpoints: list[str]
    descriptions: dict[str, str]
    """position set -> what it holds"""
    clean: Scores = field(repr=False)
    cells: dict[tuple[str, str], Scores] = field(repr=False)
    """(hookpoint, position set) -> the scores with the bound there"""
    groups: list[str | None] = field(repr=False)
    mean_note: str = "mean"

    def clean_ci(self, metric: str, items: list[int]) -> tuple[float, float, float]:
        return bootstrap_ci(getattr(self.clean, metric)[items])

    def effect(self, hookpoint: str, positions: str, metric: str, items: list[int]) -> tuple[float, float, float]:
        """Mean over `items` of (bound − clean), with its paired 95% bootstrap interval."""
        cell = getattr(self.cells[hookpoint, positions], metric)[items]
        return bootstrap_ci(cell - getattr(self.clean, metric)[items])

    def table(self, metric: str = "greedy") -> str:
        return locate_table(self, metric)

    def to_dict(self) -> dict:
        out = {}
        for group, items in item_groups(self.groups):
            out[group or "all"] = {
                metric: {
                    "clean": dict(zip(("mean", "low", "high"), self.clean_ci(metric, items))),
                    "bound": {
                        hook: {
                            site: dict(zip(("mean", "low", "high"), self.effect(hook, site, metric, items)))
                            for site in self.descriptions
                        }
                        for hook in self.hookpoints
                    },
                }
                for metric in METRICS
            }
        return {
            "task": self.task,
            "n_items": self.n_items,
            "mean": self.mean_note,
            "hookpoints": self.hookpoints,
            "positions": self.descriptions,
            "effects": out,
        }


def run_locate(
    model, tokenizer, task: Task, hookpoints: list[str], sites: list[PositionSet], means: dict, progress: bool = False
) -> LocateResult:
    """Score the task clean, then with the bound at each (hookpoint, position set); `means` holds each
    hookpoint's mean activation (`bound.activation_means`)."""
    if any(site.name == "firing" for site in sites):
        raise PositionError("locate measures the bound by position, before any SAE: 'firing' needs features")
    clean, clean_logp = score(model, tokenizer, task)
    where = {site.name: resolve(site, task, tokenizer) for site in sites}
    cells = {}
    with tqdm(total=len(hookpoints) * len(sites), desc="locate", disable=not progress) as bar:
        for hook in hookpoints:
            for site in sites:
                condition = lambda p, hook=hook: mean_replaced(model, hook, means[hook], p)  # noqa: E731
                at = where[site.name]
                cells[hook, site.name] = score_at(model, tokenizer, task, at, condition, clean, clean_logp)
                bar.update()
    descriptions = {site.name: site.describe() for site in sites}
    groups = [item.group for item in task.items]
    return LocateResult(task.name, len(task.items), hookpoints, descriptions, clean, cells, groups)


def default_sites(task: Task, tokenizer) -> list[PositionSet]:
    """`DEFAULT_POSITIONS`, and the relation's tokens where the task's prompts have some."""
    sites = [PositionSet(name) for name in DEFAULT_POSITIONS]
    if task.items and all(item.sample is not None for item in task.items):
        relation = parse_positions(RELATION_POSITIONS)
        try:
            resolve(relation, task, tokenizer)
            sites.append(relation)
        except PositionError:
            pass  # no prompt of this task has a relation token
    return sites


def locate(
    model: str = "builtin",
    *,
    task: str | Task = "equality",
    hookpoints: list[str] = DEFAULT_HOOKPOINTS,
    positions: list[str] | None = None,
    n: int = 200,
    corpus: str = "mathlm",
    mean_documents: int = 1000,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = False,
) -> LocateResult:
    """The bound of `model` ('builtin' or a directory) on a task, per hookpoint and position set; each
    hookpoint's mean is taken over the first `mean_documents` documents of `corpus`."""
    net, tokenizer = load_model(model, device=device)
    task = load_task(task, n, seed) if isinstance(task, str) else task
    hooks = [h.name for h in resolve_hookpoints(net, list(hookpoints))]
    if not task.items:
        raise ExperimentError(f"task {task.name!r} has no items")
    if positions is None:
        sites = default_sites(task, tokenizer)
    else:
        sites = [parse_positions(p) for p in dict.fromkeys(positions)]
    texts = first_documents(open_corpus(corpus, seed=seed), mean_documents)
    means = activation_means(net, tokenizer, hooks, texts)
    result = run_locate(net, tokenizer, task, hooks, sites, means, progress)
    result.mean_note = f"mean over the {len(texts)} first documents of {corpus}"
    return result
