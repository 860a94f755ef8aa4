"""The benchmark report: report.md and a self-contained report.html (images embedded), with the
FVU-vs-L0 frontier, dead fraction, CE loss recovered, probing accuracies, label quality, concept
recall against the corpus' token roles (SAE and neurons), density histograms, feature splitting and a
few labelled features of each run."""

from __future__ import annotations

import base64
import html
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from monosemantic.plots import save_figure  # noqa: E402


def _name(r: dict) -> str:
    s = r["sae"]
    return f"{r['name']} ({s['arch']}, {s['d_sae']}" + (f", k={s['k']})" if s["k"] else ")")


def frontier_rows(results: list[dict]) -> list[dict]:
    rows = [
        {
            "run": _name(r),
            "arch": r["sae"]["arch"],
            "d_sae": r["sae"]["d_sae"],
            "k": r["sae"]["k"],
            "l0": r["core"]["l0"],
            "fvu": r["core"]["fvu"],
            "ce_loss_recovered": r["core"]["ce_loss_recovered"],
            "kl": r["core"]["kl_spliced"],
            "dead_fraction": r["core"]["dead_fraction"],
            "toy_mmcs": (r["toy"] or {}).get("mmcs"),
        }
        for r in results
    ]
    for row in rows:  # Pareto frontier: no other run is at least as sparse and as faithful, and better in one
        row["on_frontier"] = not any(
            (o["l0"] <= row["l0"] and o["fvu"] < row["fvu"]) or (o["l0"] < row["l0"] and o["fvu"] <= row["fvu"])
            for o in rows
            if o is not row
        )
    return rows


def plots(results: list[dict], out: Path) -> list[Path]:
    rows = frontier_rows(results)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for arch in sorted({r["arch"] for r in rows}):
        pts = sorted((r["l0"], r["fvu"], r["run"]) for r in rows if r["arch"] == arch)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=arch)
        for x, y, name in pts:
            ax.annotate(name.split(" (")[0], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("L0 (active features per token)")
    ax.set_ylabel("FVU (spliced evaluation tokens)")
    ax.set_title("sparsity-fidelity frontier")
    ax.grid(alpha=0.3)
    ax.legend()
    paths = [save_figure(fig, out / "frontier.png")]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    names = [r["run"].split(" (")[0] for r in rows]
    axes[0].bar(names, [r["dead_fraction"] for r in rows], color="tab:gray")
    axes[0].set_title("dead fraction")
    axes[1].bar(names, [r["ce_loss_recovered"] for r in rows], color="tab:green")
    axes[1].set_title("CE loss recovered (zero ablation)")
    for ax in axes:
        ax.tick_params(axis="x", rotation=45, labelsize=7)
        ax.grid(alpha=0.3, axis="y")
    paths.append(save_figure(fig, out / "dead_and_ce.png"))
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for r in results:
        h = r["core"]["density_histogram"]
        centres = [(a + b) / 2 for a, b in zip(h["edges"], h["edges"][1:])]
        ax.plot(centres, h["counts"], label=_name(r))
    ax.set_xlabel("log10(feature density)")
    ax.set_ylabel("features")
    ax.set_title("feature density")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    paths.append(save_figure(fig, out / "density.png"))
    paths.append(_probing_plot(results, out / "probing.png"))
    return paths


def _probing_plot(results: list[dict], path: Path) -> Path:
    r = results[-1]
    rows = r["probing"]
    fig, ax = plt.subplots(figsize=(9, 4), dpi=110)
    keys = (
        [k for k in rows[0] if k.startswith("best_") and not k.endswith("index")] + ["linear_probe_neurons"]
        if rows
        else []
    )
    width = 0.8 / max(len(keys), 1)
    for j, key in enumerate(keys):
        ax.bar(
            [i + j * width for i in range(len(rows))], [row[key] for row in rows], width, label=key.replace("_", " ")
        )
    ax.set_xticks(
        [i + 0.4 - width / 2 for i in range(len(rows))],
        [f"{x['property']}: {x['value']}" for x in rows],
        rotation=30,
        fontsize=7,
        ha="right",
    )
    ax.set_ylim(0.4, 1.02)
    ax.set_ylabel("test accuracy (balanced; chance 0.5)")
    ax.set_title(f"sparse probing: {_name(r)}")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def _table(
    rows: list[dict], fmt: Callable[[object], str] = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)
) -> list[list[str]]:
    if not rows:
        return []
    return [list(rows[0])] + [[fmt(v) if v is not None else "" for v in row.values()] for row in rows]


def _md(table: list[list[str]]) -> str:
    if not table:
        return "(none)\n"
    head, *body = table
    return (
        "\n".join(
            ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in body)]
        )
        + "\n"
    )


def _html(table: list[list[str]]) -> str:
    if not table:
        return "<p>(none)</p>"
    head, *body = table
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body)
    return f"<table><tr>{cells}</tr>{rows}</table>"


def sections(results: list[dict], splits: list[dict], features: dict[str, list[dict]]) -> list[tuple[str, list]]:
    probing = [
        {"run": _name(r), **{k: v for k, v in row.items() if not k.endswith("index")}}
        for r in results
        for row in r["probing"]
    ]
    labels = [
        {
            "run": _name(r),
            **{k: v for k, v in r["labels"].items() if not k.endswith("quantiles")},
            "median precision": (r["labels"]["precision_quantiles"] or [None] * 5)[2],
        }
        for r in results
        if r["labels"]
    ]
    concepts = [
        {
            "run": _name(r),
            "concepts": r["concepts"]["concepts"],
            "tokens": r["concepts"]["tokens"],
            **{
                f"{what} {key}": r["concepts"][what][key]
                for what in ("sae", "neurons")
                for key in ("concept_recall", "concept_labelled_share")
            },
        }
        for r in results
        if r.get("concepts")
    ]
    absorption = [
        {
            "run": _name(r),
            "L0": r["core"]["l0"],
            "concepts": r["absorption"]["concepts"],
            "mean absorption": r["absorption"]["mean_absorption"],
            "pooled absorption": r["absorption"]["pooled_absorption"],
        }
        for r in results
        if r.get("absorption")
    ]
    split_rows = [{k: v for k, v in s.items() if k not in ("examples", "narrow", "wide")} for s in splits]
    feature_rows = [{"run": run, **f} for run, fs in features.items() for f in fs]
    return [
        ("Sparsity-fidelity frontier", _table(frontier_rows(results))),
        ("Sparse probing", _table(probing)),
        ("Label quality", _table(labels)),
        ("Concept recall (labelling benchmark)", _table(concepts)),
        ("Feature absorption (SAEBench's full-absorption rate on the token roles)", _table(absorption)),
        ("Feature splitting", _table(split_rows)),
        ("Labelled features", _table(feature_rows)),
    ]


def write_report(
    results: list[dict], splits: list[dict], features: dict[str, list[dict]], out: str | Path
) -> tuple[Path, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images = plots(results, out)
    parts = sections(results, splits, features)
    md = ["# SAE benchmark report\n"] + [f"## {title}\n\n{_md(table)}" for title, table in parts]
    md += [f"![{p.stem}]({p.name})\n" for p in images]
    (out / "report.md").write_text("\n".join(md), encoding="utf-8")
    embedded = "".join(
        f'<figure><img alt="{p.stem}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}"></figure>'
        for p in images
    )
    body = "".join(f"<h2>{html.escape(t)}</h2>{_html(table)}" for t, table in parts)
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}table{border-collapse:collapse;"
        "font-size:13px;margin-bottom:1em}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
        "th{background:#f3f3f3}img{max-width:100%}"
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>SAE benchmark report</title>"
        f"<style>{style}</style></head><body><h1>SAE benchmark report</h1>{body}{embedded}</body></html>"
    )
    (out / "report.html").write_text(page, encoding="utf-8")
    return out / "report.md", out / "report.html"
