"""Command line for feature analysis: `analyze`, `features`, `feature`, `inspect` (wired in by cli/main.py).

monosemantic analyze runs/demo --tokens 200k
monosemantic features runs/demo --search '='
monosemantic feature runs/demo 123
monosemantic inspect runs/demo "12 + 7 = 19"
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from monosemantic.analysis.analyze import AnalyzeConfig, analyze
from monosemantic.analysis.label_text import CONCEPT_KINDS
from monosemantic.analysis.labels import MIN_SUPPORT, PRECISION_FLOOR
from monosemantic.analysis.store import FeatureStore, StoreError
from monosemantic.analysis.terminal import format_feature, format_summaries, format_token_features
from monosemantic.config import add_arguments, from_args, positive_int
from monosemantic.data.corpora import prompt_ids
from monosemantic.plots import plot_feature_density, plot_label_precision
from monosemantic.runmodel import RunModel, RunModelError, token_features
from monosemantic.train.rundir import locked_run_dir

MAX_TEXT = 4096  # characters `inspect` accepts


def cmd_analyze(args: argparse.Namespace) -> int:
    """Analyse every feature of a run's SAE on text: statistics, top contexts, labels, logit effects;
    written to RUN_DIR/features (resumes an interrupted analysis)."""
    exists = Path(args.run_dir).is_dir()  # if not, analyze says what the run directory lacks
    with locked_run_dir(args.run_dir) if exists else contextlib.nullcontext():  # one writer at a time
        config = from_args(AnalyzeConfig, args)
        analyze(args.run_dir, config, device=args.device, progress=not args.quiet, loss_effects=args.loss_effects)
    store = FeatureStore.open(args.run_dir)
    rows = store.db.execute("SELECT density, precision FROM features").fetchall()
    density = plot_feature_density(
        [r["density"] for r in rows], store.directory.parent / "plots" / "feature_density.png"
    )
    precision = plot_label_precision(
        [r["precision"] for r in rows if r["precision"] is not None],
        store.directory.parent / "plots" / "label_precision.png",
    )
    count = {
        name: store.db.execute(f"SELECT COUNT(*) FROM features WHERE {where}").fetchone()[0]
        for name, where in (
            ("labelled", "label IS NOT NULL AND dense = 0"),
            ("concepts", f"label_kind IN ({', '.join(repr(k) for k in CONCEPT_KINDS)})"),
            ("dense", "dense = 1"),
            ("multilingual", "multilingual = 1"),
        )
    }
    print(
        f"analysed {store.count()} features on {store.tokens} tokens of {store.settings['corpus']}: "
        f"{count['labelled']} labelled (held-out precision >= {PRECISION_FLOOR} on >= {MIN_SUPPORT} tokens; "
        f"{count['concepts']} by a "
        f"concept, {store.count(min_precision=0.9)} at precision >= 0.9), {count['dense']} dense, "
        f"{count['multilingual']} multilingual"
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
        rows = store.list(
            order=args.sort, limit=args.limit, labelled=args.labelled, kinds=CONCEPT_KINDS if args.concepts else ()
        )
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
    n = len(prompt_ids(run.tokenizer, args.text))
    if n > run.seq_len:  # the model's context: beyond it the positions do not exist (it was cut silently)
        raise RunModelError(
            f"text of {n} tokens; the model reads at most {run.seq_len} at once (its context): "
            f"inspect a shorter text, or the text in parts"
        )
    print(format_token_features(token_features(run, args.text, args.k, store.labels, store.dense_latents())))
    return 0


def add_feature_commands(sub, command) -> None:
    """Register the commands on the subparsers `sub`; `command(sub, name, func)` makes a parser."""
    p = command(sub, "analyze", cmd_analyze)
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory of a model-trained SAE")
    add_arguments(p, AnalyzeConfig)
    p.add_argument("--device", default="cpu", metavar="DEVICE", help="device to run model and SAE on")
    p.add_argument(
        "--loss-effects",
        action="store_true",
        help="also record which next tokens' loss rises most when each feature is ablated on its top "
        "examples (about 50 ms per feature on 2 cores; the feature pages show them)",
    )
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
    p.add_argument("--labelled", action="store_true", help="only features with a label (dense ones have none)")
    p.add_argument(
        "--concepts",
        action="store_true",
        help="only features whose label is a concept (from token roles: concept, concept+token, next concept)",
    )
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
