"""Plots as PNG files (matplotlib, headless): training curves and histograms.

Each function takes plain rows or arrays and a path, so that the CLI and the report code can call
them without knowing where the numbers came from.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: render to files only
import matplotlib.pyplot as plt  # noqa: E402


def plot_curves(
    rows: list[dict], x: str, ys: list[str], path: str | Path, *, title: str = "", ylabel: str = "", logy: bool = False
) -> Path:
    """One line per key in `ys` against `x`, from rows that may lack some keys (e.g. eval-only)."""
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for key in ys:
        pts = [(r[x], r[key]) for r in rows if r.get(key) is not None and r.get(x) is not None]
        if pts:
            xs, vs = zip(*pts)
            ax.plot(xs, vs, label=key.replace("_", " "), marker="o" if len(pts) < 40 else None, markersize=3)
    ax.set_xlabel(x.replace("_", " "))
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def plot_training(run_dir: str | Path) -> Path | None:
    """RUN_DIR/plots/training.png: loss terms, FVU, L0 and dead fraction against tokens seen."""
    from monosemantic.train.rundir import read_metrics

    rows = read_metrics(run_dir)
    if not rows:
        return None
    panels = [
        ([k for k in ("loss", "mse", "l1", "auxk", "l0", "aux") if any(k in r for r in rows)], "loss terms", True),
        (["fvu"], "FVU (batch)", True),
        (["l0"], "L0 (active latents per token)", False),
        (["dead_fraction"], f"dead fraction (no activation in {rows[-1].get('dead_window', '?')} tokens)", False),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.5), dpi=110)
    for ax, (keys, title, logy) in zip(axes.flat, panels):
        for key in keys:
            pts = [(r["tokens"], r[key]) for r in rows if r.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts), label=key)
        ax.set_title(title)
        ax.set_xlabel("tokens")
        if logy:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend()
    return save_figure(fig, Path(run_dir) / "plots" / "training.png")


def plot_feature_density(densities: list[float], path: str | Path) -> Path:
    """Histogram of log10(feature density) over all features, dead ones counted apart ("Towards
    Monosemanticity"'s feature density plot)."""
    import math

    alive = [math.log10(d) for d in densities if d > 0]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.hist(alive, bins=50, color="tab:blue")
    ax.set_xlabel("log10(feature density): fraction of tokens a feature fires on")
    ax.set_ylabel("features")
    ax.set_title(f"{len(densities)} features, {len(densities) - len(alive)} never fired")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_label_precision(precisions: list[float], path: str | Path) -> Path:
    """Histogram of the held-out precision of every feature's label."""
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.hist(precisions, bins=20, range=(0, 1), color="tab:green")
    ax.set_xlabel("label precision on held-out tokens: P(fires | rule holds)")
    ax.set_ylabel("features")
    ax.set_title(f"{len(precisions)} labelled features, {sum(p >= 0.9 for p in precisions)} with precision >= 0.9")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def save_figure(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_ablation(summary: dict, metrics: list[str], names: list[str], title: str, path: str | Path) -> Path:
    """Bars with 95% CI whiskers per metric for the clean model, the ablation and the random control."""
    conditions = [("clean", "tab:gray"), ("ablated", "tab:red"), ("control", "tab:blue")]
    fig, ax = plt.subplots(figsize=(8.5, 4), dpi=110)
    width = 0.8 / len(conditions)
    for j, (cond, color) in enumerate(conditions):
        means = [summary[cond][m][0] for m in metrics]
        err = [
            [summary[cond][m][0] - summary[cond][m][1] for m in metrics],
            [summary[cond][m][2] - summary[cond][m][0] for m in metrics],
        ]
        ax.bar(
            [i + (j - 1) * width for i in range(len(metrics))],
            means,
            width,
            yerr=err,
            capsize=4,
            color=color,
            label={"control": "random features (control)"}.get(cond, cond),
        )
    ax.set_xticks(range(len(metrics)), names)
    ax.set_ylim(0, 1.05)
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)  # beside the axes: bars reach 1
    return save_figure(fig, path)


def plot_dose_response(
    alphas: list[float], p_target: list, kl: list, p_name: str, title: str, path: str | Path
) -> Path:
    """Target-token probability and KL against the steering strength, with 95% CI bands."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    for ax, values, name, color in (
        (ax1, p_target, p_name, "tab:green"),
        (ax2, kl, "KL(clean || steered)", "tab:purple"),
    ):
        ax.plot(alphas, [v[0] for v in values], marker="o", color=color)
        ax.fill_between(alphas, [v[1] for v in values], [v[2] for v in values], color=color, alpha=0.2)
        ax.set_xlabel("steering strength alpha (x decoder direction)")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return save_figure(fig, path)
