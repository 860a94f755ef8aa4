"""Command line for the benchmark suite: `benchmark` (wired in by cli.py).

    monosemantic benchmark runs/sweep/* --out reports/sweep
"""

from __future__ import annotations

import argparse
from pathlib import Path

from monosemantic.benchmark import SCHEMA, BenchmarkConfig, benchmark_run, splitting_between
from monosemantic.config import add_arguments, from_args
from monosemantic.experiments import save_json
from monosemantic.report import frontier_rows, write_report


def labelled_examples(run_dir: str, n: int = 5) -> list[dict]:
    from monosemantic.store import FeatureStore, StoreError

    try:
        store = FeatureStore.open(run_dir)
    except StoreError:
        return []
    return [{"feature": s.index, "label": s.label, "precision": s.precision, "recall": s.recall,
             "density": s.density} for s in store.list(order="f1", limit=n, labelled=True)]


def cmd_benchmark(args: argparse.Namespace) -> int:
    """Benchmark SAEs (core metrics, toy recovery, sparse probing, label quality, feature splitting)
    and write OUT/benchmark.json, OUT/report.md and a self-contained OUT/report.html."""
    cfg = from_args(BenchmarkConfig, args)
    results = [benchmark_run(run, cfg, toy=not args.no_toy, progress=not args.quiet) for run in args.runs]
    splits = splitting_between(args.runs)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_json(out / "benchmark.json", {"schema": SCHEMA, "runs": results, "splitting": splits})
    md, page = write_report(results, splits, {Path(r).name: labelled_examples(r) for r in args.runs}, out)
    print(f"{'run':<40} {'L0':>7} {'FVU':>7} {'CE rec.':>8} {'dead':>6} frontier")
    for row in frontier_rows(results):
        print(f"{row['run']:<40} {row['l0']:>7.1f} {row['fvu']:>7.3f} {row['ce_loss_recovered']:>8.3f} "
              f"{row['dead_fraction']:>6.1%} {'yes' if row['on_frontier'] else ''}")
    print(f"wrote {out / 'benchmark.json'}, {md}, {page}")
    return 0


def add_benchmark_commands(sub, command) -> None:
    p = command(sub, "benchmark", cmd_benchmark)
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories of model-trained SAEs")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for benchmark.json and the report")
    p.add_argument("--no-toy", action="store_true", help="skip the toy-recovery training (the slowest part)")
    add_arguments(p, BenchmarkConfig)
