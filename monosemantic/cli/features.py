"""Command line for feature analysis: `analyze`, `features`, `feature`, `inspect` (wired in by cli/main.py).

monosemantic analyze runs/demo --tokens 200k
monosemantic features runs/demo --search '='
monosemantic feature runs/demo 123
monosemantic inspect runs/demo "12 + 7 = 19"
"""

from __future__ import annotations

import argparse
import sys

from monosemantic.analysis.analyze import AnalyzeConfig, analyze
from monosemantic.analysis.store import FeatureStore, StoreError
from monosemantic.analysis.terminal import format_feature, format_summaries, format_token_features
from monosemantic.config import add_arguments, from_args, positive_int
from monosemantic.plots import plot_feature_density, plot_label_precision
from monosemantic.runmodel import RunModel, token_features

MAX_TEXT = 4096  # characters `inspect` accepts


def cmd_analyze(args: argparse.Namespace) -> int:
    """Analyse every feature of a run's SAE on text: statistics, top contexts, labels, logit effects;
    written to RUN_DIR/features (resumes an interrupted analysis)."""
    analyze(args.run_dir, from_args(AnalyzeConfig, args), device=args.device, progress=not args.quiet)
    store = FeatureStore.open(args.run_dir)
    rows = store.db.execute("SELECT density, precision FROM features").fetchall()
    density = plot_feature_density(
        [r["density"] for r in rows], store.directory.parent / "plots" / "feature_density.png"
    )
    precision = plot_label_precision(
        [r["precision"] for r in rows if r["precision"] is not None],
        store.directory.parent / "plots" / "label_precision.png",
    )
    n, good = store.count(), store.count(min_precision=0.9)
    multi = store.db.execute("SELECT COUNT(*) FROM features WHERE multilingual = 1").fetchone()[0]
    print(
        f"analysed {n} features on {store.tokens} tokens of {store.settings['corpus']}: {good} labelled with "
        f"precision >= 0.9, {multi} multilingual"
    )
    print(f"plots: {density}, {precision}")
    print("some labelled features:")
    print(format_summaries(store.list(order="f1", limit=args.show, labelled=True)))
    print(f"next: monosemantic feature {args.run_dir} N  |  monosemantic features {args.run_dir} --search TEXT")
    store.close()
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    """List features: matching a search (label, label rules, top tokens, contexts), or sorted."""
    store = FeatureStore.open(args.run_dir)
    if args.search is not None:
        rows = store.search(args.search, limit=args.limit)
    else:
        rows = store.list(order=args.sort, limit=args.limit, labelled=args.labelled)
    print(format_summaries(rows))
    return 0


def cmd_feature(args: argparse.Namespace) -> int:
    """Show one feature: label, statistics, histogram, logit effects, top contexts and samples."""
    store = FeatureStore.open(args.run_dir)
    color = sys.stdout.isatty() if args.color == "auto" else args.color == "always"
    print(format_feature(store.feature(args.index), color=color, examples=args.examples))
    if args.trace:
        print("documents behind it:")
        for t in store.trace(args.index, args.examples):
            print(f"  doc {t.doc} @ {t.position} ({t.value:.3f}): {t.text}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    """Run the model and SAE on a text; print the top features of every token with their labels."""
    if len(args.text) > MAX_TEXT:
        raise StoreError(f"text of {len(args.text)} characters; inspect takes at most {MAX_TEXT}")
    store = FeatureStore.open(args.run_dir)
    run = RunModel.of_run(args.run_dir, store.settings["corpus"], args.device)
    print(format_token_features(token_features(run, args.text, args.k, store.labels)))
    return 0


def add_feature_commands(sub, command) -> None:
    """Register the commands on the subparsers `sub`; `command(sub, name, func)` makes a parser."""
    p = command(sub, "analyze", cmd_analyze)
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory of a model-trained SAE")
    add_arguments(p, AnalyzeConfig)
    p.add_argument("--device", default="cpu", metavar="DEVICE", help="device to run model and SAE on")
    p.add_argument("--show", type=positive_int, default=8, metavar="INT", help="labelled features to print at the end")

    p = command(sub, "features", cmd_features)
    p.add_argument("run_dir", metavar="RUN_DIR", help="analysed run directory")
    p.add_argument("--search", default=None, metavar="TEXT", help="word or symbol to look for, e.g. '=' or Spanish")
    p.add_argument(
        "--sort",
        default="f1",
        choices=("f1", "precision", "density", "max_act", "latent"),
        help="order of the list without --search (descending, latent ascending)",
    )
    p.add_argument("--labelled", action="store_true", help="only features with a label")
    p.add_argument("--limit", type=positive_int, default=20, metavar="INT", help="features to list")

    p = command(sub, "feature", cmd_feature)
    p.add_argument("run_dir", metavar="RUN_DIR", help="analysed run directory")
    p.add_argument("index", type=int, metavar="N", help="feature (latent) number")
    p.add_argument("--examples", type=positive_int, default=8, metavar="INT", help="top contexts to show")
    p.add_argument("--trace", action="store_true", help="also print the full documents of the top contexts")
    p.add_argument(
        "--color",
        default="auto",
        choices=("auto", "always", "never"),
        help="highlight active tokens with terminal colours",
    )

    p = command(sub, "inspect", cmd_inspect)
    p.add_argument("run_dir", metavar="RUN_DIR", help="analysed run directory")
    p.add_argument("text", metavar="TEXT", help=f"text to run through model and SAE (at most {MAX_TEXT} characters)")
    p.add_argument("--k", type=positive_int, default=5, metavar="INT", help="features per token")
    p.add_argument("--device", default="cpu", metavar="DEVICE", help="device to run model and SAE on")
