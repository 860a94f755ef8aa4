"""Command line for sweeps and the benchmark suite: `sweep`, `benchmark` (wired in by cli/main.py).

    monosemantic sweep --model builtin --hookpoint layers.3.resid.post --arch topk,relu --k 8,16,32,64 \
        --l1-coefficient 2,5 --expansion-factor 8,32 --tokens 2M --out runs/sweep
    monosemantic benchmark runs/sweep/*/ --out reports/sweep
"""

from __future__ import annotations

import argparse
from pathlib import Path

from monosemantic.config import add_arguments, from_args, positive_int
from monosemantic.data.stream import HarvestConfig
from monosemantic.eval.benchmark import SCHEMA, BenchmarkConfig, benchmark_run, splitting_between
from monosemantic.eval.report import frontier_rows, write_report
from monosemantic.experiments.scoring import save_json
from monosemantic.sae import ARCHITECTURES
from monosemantic.train.config import DataConfig, RunConfig, SAEOptions
from monosemantic.train.trainer import TrainConfig


def labelled_examples(run_dir: str, n: int = 5) -> list[dict]:
    from monosemantic.analysis.store import FeatureStore, StoreError

    try:
        store = FeatureStore.open(run_dir)
    except StoreError:
        return []
    return [
        {"feature": s.index, "label": s.label, "precision": s.precision, "recall": s.recall, "density": s.density}
        for s in store.list(order="f1", limit=n, labelled=True)
    ]


def cmd_benchmark(args: argparse.Namespace) -> int:
    """Benchmark SAEs (core metrics, toy recovery, sparse probing, label quality, concept recall
    against the corpus' token roles beside the neurons, feature absorption, feature splitting) and write
    OUT/benchmark.json, OUT/report.md and a self-contained OUT/report.html."""
    cfg = from_args(BenchmarkConfig, args)
    results = [benchmark_run(run, cfg, toy=not args.no_toy, progress=not args.quiet) for run in args.runs]
    splits = splitting_between(args.runs)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_json(out / "benchmark.json", {"schema": SCHEMA, "runs": results, "splitting": splits})
    md, page = write_report(results, splits, {Path(r).name: labelled_examples(r) for r in args.runs}, out)
    print(f"{'run':<40} {'L0':>7} {'FVU':>7} {'CE rec.':>8} {'dead':>6} frontier")
    for row in frontier_rows(results):
        print(
            f"{row['run']:<40} {row['l0']:>7.1f} {row['fvu']:>7.3f} {row['ce_loss_recovered']:>8.3f} "
            f"{row['dead_fraction']:>6.1%} {'yes' if row['on_frontier'] else ''}"
        )
    for r in results:
        if r.get("concepts"):
            c = r["concepts"]
            print(
                f"{r['name']}: concept recall {_num(c['sae']['concept_recall'])} (neurons "
                f"{_num(c['neurons']['concept_recall'])}) over {c['concepts']} concepts; features whose best "
                f"concept has P >= 0.8, R >= 0.5: {c['sae']['concept_labelled_share']:.1%} (neurons "
                f"{c['neurons']['concept_labelled_share']:.1%})"
            )
    for r in results:
        if r.get("absorption") and r["absorption"]["concepts"]:
            a = r["absorption"]
            print(
                f"{r['name']}: feature absorption {a['mean_absorption']:.3f} (mean over {a['concepts']} concepts), "
                f"{a['pooled_absorption']:.3f} pooled, at L0 {r['core']['l0']:.1f}"
            )
    print(f"wrote {out / 'benchmark.json'}, {md}, {page}")
    return 0


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def int_list(text: str) -> list[int]:
    try:
        values = [positive_int(x) for x in text.split(",") if x.strip()]
    except argparse.ArgumentTypeError:
        values = []
    if not values:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, e.g. 8,16,32; got {text!r}")
    return values


def float_list(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        values = []
    if not values or not all(v > 0 and v != float("inf") for v in values):
        raise argparse.ArgumentTypeError(f"expected positive numbers separated by commas, e.g. 1,2.5,5; got {text!r}")
    return values


def arch_list(text: str) -> list[str]:
    archs = [a.strip() for a in text.split(",") if a.strip()]
    unknown = [a for a in archs if a not in ARCHITECTURES]
    if unknown or not archs:
        raise argparse.ArgumentTypeError(
            f"unknown architecture(s) {unknown or text!r}; expected some of {', '.join(sorted(ARCHITECTURES))}"
        )
    return archs


def cmd_sweep(args: argparse.Namespace) -> int:
    """Train several SAEs of one hookpoint (a grid of architectures, expansion factors and k) from one
    pass of activations: the model runs once per batch for all of them. One run directory each."""
    from monosemantic.train.sweep import SPARSITY_KNOB, grid, sweep_on_model

    knobs = {"k": args.k, "l1_coefficient": args.l1_coefficient, "l0_coefficient": args.l0_coefficient}
    points = grid(args.arch, args.expansion_factor, knobs)
    harvest = from_args(HarvestConfig, args, seed=args.seed)
    run = RunConfig(from_args(DataConfig, args), harvest, SAEOptions(), from_args(TrainConfig, args))
    saes = sweep_on_model(args.out, run, points, progress=not args.quiet)
    for name, sae in saes.items():
        knob = SPARSITY_KNOB[sae.cfg.arch]
        print(
            f"saved {sae.cfg.arch} SAE (d_sae={sae.d_sae}, {knob}={getattr(sae.cfg, knob):g}) "
            f"to {Path(args.out) / name}"
        )
    print(f"next: monosemantic benchmark {args.out}/*/ --out {args.out}/report")
    return 0


def add_benchmark_commands(sub, command) -> None:
    p = command(sub, "sweep", cmd_sweep)
    p.add_argument("--out", required=True, metavar="DIR", help="new directory for the sweep's run directories")
    p.add_argument(
        "--arch", type=arch_list, default=["topk"], metavar="LIST", help="architectures, e.g. topk,batchtopk"
    )
    p.add_argument(
        "--k", type=int_list, metavar="LIST", help="k values of topk and batchtopk, e.g. 8,16,32,64 (default: 32)"
    )
    p.add_argument(
        "--l1-coefficient",
        "--l1_coefficient",
        type=float_list,
        metavar="LIST",
        help="L1 coefficients of relu and gated, e.g. 1,2,5 (default: 5)",
    )
    p.add_argument(
        "--l0-coefficient",
        "--l0_coefficient",
        type=float_list,
        metavar="LIST",
        help="L0 coefficients of jumprelu, e.g. 0.5,1,2 (default: 1)",
    )
    p.add_argument(
        "--expansion-factor",
        "--expansion_factor",
        type=int_list,
        default=[8],
        metavar="LIST",
        help="expansion factors (d_sae = factor x d_in), e.g. 8,32",
    )
    add_arguments(p, DataConfig, aliases={"model": ["--model_path", "--model-path"]})
    add_arguments(p, HarvestConfig, exclude=("seed",))
    add_arguments(p, TrainConfig, aliases={"total_tokens": ["--tokens"]})

    p = command(sub, "benchmark", cmd_benchmark)
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories of model-trained SAEs")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for benchmark.json and the report")
    p.add_argument("--no-toy", action="store_true", help="skip the toy-recovery training (the slowest part)")
    add_arguments(p, BenchmarkConfig)
