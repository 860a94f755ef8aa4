"""Text tables of the ablation and locate experiments, for the terminal and for pasting into a paper.

Every effect is a difference to the clean model, written `mean [low, high]` with its 95% bootstrap
interval; a control's as `mean ± sd [low, high]` (sd over the draws; the interval over items and
draws, `controls.py`). The results are passed in (`ablate.AblationResult`, `locate.LocateResult`),
never imported: those modules import this one.
"""

from __future__ import annotations

import math

from monosemantic.experiments.relation import ANSWER_KINDS
from monosemantic.experiments.scoring import METRICS, bootstrap_ci

GROUP_METRICS = ("greedy", "contrast")  # the metrics shown per group: where the answers go


def item_groups(groups: list[str | None]) -> list[tuple[str | None, list[int]]]:
    """(group, its items) to report: every item first (named by its group when all share one),
    then each group apart when there are several."""
    named = list(dict.fromkeys(g for g in groups if g is not None))
    everything = list(range(len(groups)))
    if len(named) == 1 and None not in groups:
        return [(named[0], everything)]
    apart = [(g, [i for i, h in enumerate(groups) if h == g]) for g in named] if len(named) > 1 else []
    return [(None, everything), *apart]


def ci(t: tuple[float, float, float] | None) -> str:
    if t is None:
        return "-"
    return "{:.3g} [{:.3g}, {:.3g}]".format(*t)


def group_title(group: str | None, n: int) -> str:
    if group is None:
        return f"all {n} prompts"
    if group in ANSWER_KINDS:
        target, contrast = ANSWER_KINDS[group]
        return f"the {n} {group!r} prompts (target: the {target} result, contrast: the {contrast} one)"
    return f"the {n} prompts of group {group!r}"


def _ratio(features: float, bound: float) -> str:
    if not (math.isfinite(features) and math.isfinite(bound)) or bound == 0:
        return "-"
    return f"{100 * features / bound:.0f}%"


def _ablation_block(result, metric: str, group: str | None, items: list[int]) -> list[str]:
    clean = ci(bootstrap_ci(getattr(result.clean, metric)[items]))
    lines = [f"{METRICS[metric]}, {group_title(group, len(items))}: clean {clean}"]
    head = ["positions", "features Δ", "control Δ: mean ± sd [CI]", "features − control"]
    with_bound = any(s.bound is not None for s in result.sites.values())
    head += ["bound Δ", "features / bound"] if with_bound else []
    rows = [head]
    for name in result.sites:
        e = result.effects(name, metric, items)
        c = e["control"]
        row = [name, ci(e["features"]), f"{c.mean:.3g} ± {c.sd:.2g} [{c.low:.3g}, {c.high:.3g}]", ci(c.excess)]
        if with_bound:
            row += [ci(e["bound"]), _ratio(e["features"][0], e["bound"][0] if e["bound"] else math.nan)]
        rows.append(row)
    return lines + _columns(rows)


def _columns(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[j]) for r in rows) for j in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]


def ablation_table(result) -> str:
    shown = result.features[:12]
    more = " ..." if len(result.features) > 12 else ""
    header = [
        f"task {result.task} ({result.n_items} prompts): {result.mode}-ablating {len(result.features)} features "
        f"{shown}{more} at {result.hookpoint}, error term kept",
        f"control: {len(result.controls)} draws of as many random features of similar density",
    ]
    if result.bound_note:
        header.append(f"bound: the whole activation replaced by its {result.bound_note}")
    for name, site in result.sites.items():
        count = "" if site.touched is None else f" ({site.touched} of {result.n_items} prompts have one)"
        header.append(f"positions {name}: {site.description}{count}")
    header.append("Δ = condition − clean, mean over prompts [95% bootstrap CI]; control: over draws and prompts")
    blocks = []
    for k, (group, items) in enumerate(item_groups(result.groups)):
        for metric in GROUP_METRICS if k else METRICS:
            blocks.append("\n".join(_ablation_block(result, metric, group, items)))
    return "\n".join(header) + "\n\n" + "\n\n".join(blocks)


def locate_table(result, metric: str = "greedy") -> str:
    """Hookpoints down, position sets across: the bound's effect on `metric` in each cell."""
    header = [
        f"task {result.task} ({result.n_items} prompts): the whole activation replaced by its {result.mean_note}",
        *(f"positions {name}: {desc}" for name, desc in result.descriptions.items()),
        "Δ = bound − clean, mean over prompts [95% bootstrap CI]",
    ]
    blocks = []
    for group, items in item_groups(result.groups):
        rows = [["hookpoint", *result.descriptions]]
        for hook in result.hookpoints:
            rows.append([hook, *(ci(result.effect(hook, site, metric, items)) for site in result.descriptions)])
        title = f"{METRICS[metric]}, {group_title(group, len(items))}: clean {ci(result.clean_ci(metric, items))}"
        blocks.append("\n".join([title, *_columns(rows)]))
    return "\n".join(header) + "\n\n" + "\n\n".join(blocks)
