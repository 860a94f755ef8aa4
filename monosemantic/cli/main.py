"""Command line: thin subcommands that parse config dataclasses and call one library function each.

    monosemantic train --model builtin --hookpoint layers.3.resid.post --expansion-factor 16 --k 32 \\
        --tokens 2M --out runs/x
    monosemantic train --out runs/x --resume
    monosemantic eval runs/x                    # spliced into the model: CE loss recovered, KL, FVU, ...
    monosemantic train-tensors ACTS.npy --out runs/y --arch topk --k 32
    monosemantic eval runs/y ACTS.npy           # SAE-level metrics on saved activations
    monosemantic mathlm eval                    # the built-in model's accuracy per category
    monosemantic convert gemma-scope/layer_12/width_16k/average_l0_71 --out runs/gemmascope_l12
    monosemantic export runs/x --format saelens --out exported/x
    monosemantic analyze runs/x --tokens 200k    # every feature: statistics, contexts, labels -> runs/x/features
    monosemantic feature runs/x 123             # one feature, readable; `features --search '='` finds them
    monosemantic ablate runs/x --label '=' --task equality   # vs random features of similar density
    monosemantic steer runs/x --feature 123 --alpha=-4..8    # dose-response curve
    monosemantic view runs/x                    # the dashboard: http://127.0.0.1:8000/
    monosemantic bench toy
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import torch

from monosemantic import __version__
from monosemantic.analysis.store import StoreError
from monosemantic.atomic import atomic_write_json
from monosemantic.cli.benchmark import add_benchmark_commands
from monosemantic.cli.experiments import add_experiment_commands
from monosemantic.cli.features import add_feature_commands
from monosemantic.cli.view import add_view_command
from monosemantic.config import (
    ConfigError,
    HelpFormatter,
    add_arguments,
    from_args,
    from_dict,
    non_negative_int,
    parse_int,
    positive_int,
    to_dict,
)
from monosemantic.data.activations import ActivationDataError, TensorBatches, load_activation_file
from monosemantic.data.cache import CacheError
from monosemantic.data.corpora import CorpusError
from monosemantic.data.stream import HarvestConfig
from monosemantic.distributed.multi_sae import PARENT_FILE
from monosemantic.distributed.world import RankRows, check_same_config, create_rank_sae, session
from monosemantic.eval.metrics import evaluate
from monosemantic.eval.tables import format_eval, format_spliced
from monosemantic.eval.toy import ToyConfig, ToyData, format_table, results_to_json, run_toy_benchmark
from monosemantic.experiments.ablate import ExperimentError
from monosemantic.experiments.interventions import InterventionError
from monosemantic.experiments.tasks import TaskError
from monosemantic.formats import WRITERS, detect_format, export_sae, load_sae
from monosemantic.mathlm.config import MathLMConfig
from monosemantic.models import ModelError
from monosemantic.sae import ARCHITECTURES, SAEConfig, SAEFormatError
from monosemantic.train.checkpoint import CheckpointError
from monosemantic.train.pipeline import DataConfig, start_run_dir
from monosemantic.train.rundir import EVAL_FILE, TRAIN_CONFIG_FILE, RunDirError, read_train_config
from monosemantic.train.trainer import OPERATIONAL_FIELDS, TrainConfig, Trainer, TrainingError

USER_ERRORS = (
    ConfigError,
    SAEFormatError,
    ActivationDataError,
    RunDirError,
    CheckpointError,
    TrainingError,
    ModelError,
    CorpusError,
    CacheError,
    StoreError,
    ExperimentError,
    InterventionError,
    TaskError,
    FileNotFoundError,
)
# input_norm comes only with SAEs of other tools, which the trainer refuses
SAE_FLAGS_FROM_ELSEWHERE = ("arch", "d_in", "d_sae", "activation_scale", "hookpoint", "model", "input_norm")
K_ARCHS = ("topk", "batchtopk")


# ---- shared flags -----------------------------------------------------------------------------


def add_sae_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES), default="topk", help="SAE architecture")
    parser.add_argument(
        "--expansion-factor",
        "--expansion_factor",
        type=parse_int,
        default=32,
        metavar="INT",
        help="d_sae = expansion factor x d_in",
    )
    parser.add_argument(
        "--d-sae", type=parse_int, default=None, metavar="INT", help="number of latents; overrides --expansion-factor"
    )
    add_arguments(parser, SAEConfig, exclude=SAE_FLAGS_FROM_ELSEWHERE, defaults={"k": 32})


def add_parallel_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("under torchrun (see README, Scaling out)")
    group.add_argument(
        "--shard-latents",
        type=non_negative_int,
        nargs="?",
        const=0,
        default=1,
        metavar="N",
        help="split W_enc and W_dec along d_sae over N ranks (the flag alone: over all ranks), for "
        "dictionaries larger than one device; the other factor of the world size trains "
        "data-parallel, on a (data x latent) mesh; topk only",
    )


def sae_options(args: argparse.Namespace) -> dict:
    """SAEConfig fields from the flags (d_in comes from the data)."""
    options = {
        f: getattr(args, f)
        for f in (
            "arch",
            "k",
            "dtype",
            "apply_b_dec_to_input",
            "l1_coefficient",
            "l0_coefficient",
            "jumprelu_bandwidth",
            "k_aux",
            "auxk_coef",
        )
    }
    options["k"] = args.k if args.arch in K_ARCHS else None
    options["d_sae"] = args.d_sae
    options["expansion_factor"] = args.expansion_factor
    return options


def sae_config_from_args(args: argparse.Namespace, d_in: int) -> SAEConfig:
    options = sae_options(args)
    expansion, d_sae = options.pop("expansion_factor"), options.pop("d_sae")
    return SAEConfig(d_in=d_in, d_sae=d_sae or expansion * d_in, **options)


def changed_on_resume(args: argparse.Namespace, saved: dict, source: Path) -> dict:
    """Flags given now whose value differs from their default and from the saved run: operational
    ones are returned to apply, any other is refused (resuming keeps the saved configuration)."""
    flat = {k: v for section in saved.values() if isinstance(section, dict) for k, v in section.items()}
    changed, refused = {}, []
    for name, saved_value in flat.items():
        if not hasattr(args, name):
            continue
        value = getattr(args, name)
        value = tuple(value) if isinstance(value, list) else value
        if value != args.parser.get_default(name) and value != saved_value:
            (changed.__setitem__(name, value) if name in OPERATIONAL_FIELDS else refused.append(name))
    sae = saved.get("sae", {})
    expansion = getattr(args, "expansion_factor", None)
    if (
        expansion not in (None, args.parser.get_default("expansion_factor"))
        and "d_in" in sae
        and expansion * sae["d_in"] != sae["d_sae"]
    ):
        refused.append("expansion_factor")
    if refused:
        flags = ", ".join("--" + n.replace("_", "-") for n in refused)
        allowed = ", ".join(sorted("--" + n.replace("_", "-") for n in OPERATIONAL_FIELDS))
        raise ConfigError(
            f"--resume continues {source} with its saved configuration; {flags} cannot change (only {allowed} can)"
        )
    return changed


# ---- commands ---------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    """Train an SAE on a model's activations at a hookpoint (harvested on the fly, or via --cache);
    several hookpoints (a comma-separated list, or a glob) train one SAE each from one forward."""
    from monosemantic.train.pipeline import resume_on_model, train_on_model

    out = Path(args.out)
    if args.resume:
        saved = (
            read_train_config(out) if not (out / PARENT_FILE).is_file() else json.loads((out / PARENT_FILE).read_text())
        )
        changes = changed_on_resume(args, saved, out)
        config = {"resume": str(out.resolve()), **changes}
        device = changes.get("device", saved["train"]["device"])
    else:
        harvest = from_args(HarvestConfig, args, seed=args.seed)
        data, train = from_args(DataConfig, args), from_args(TrainConfig, args)
        config = {"data": to_dict(data), "harvest": to_dict(harvest), "sae": sae_options(args), "train": to_dict(train)}
        device = train.device
    with session(device, args.shard_latents) as world:
        check_same_config(world, {**config, "shard_latents": args.shard_latents})
        if args.resume:
            result = resume_on_model(out, progress=not args.quiet, world=world, **changes)
        else:
            result = train_on_model(out, data, sae_options(args), train, harvest, progress=not args.quiet, world=world)
        if not world.writer:
            return 0
        if isinstance(result, dict):
            names = json.loads((out / PARENT_FILE).read_text())["hookpoints"]
            print(f"saved {len(names)} SAEs, one per hookpoint, to {out}/<hookpoint>: {', '.join(names)}")
            print(f"next: monosemantic eval {out / names[0]}")
            return 0
        print(
            f"saved {result.cfg.arch} SAE (d_in={result.d_in}, d_sae={result.d_sae}) at {result.cfg.hookpoint} "
            f"to {args.out}"
        )
        print(f"next: monosemantic eval {args.out}")
    return 0


def cmd_train_tensors(args: argparse.Namespace) -> int:
    """Train an SAE on activation vectors saved in a file."""
    out = Path(args.out)
    if args.resume:
        saved = read_train_config(out)
        changes = changed_on_resume(args, saved, out)
        sae_cfg = from_dict(SAEConfig, saved["sae"], source=f"{out}/{TRAIN_CONFIG_FILE}")
        train_cfg = from_dict(TrainConfig, {**saved["train"], **changes}, source=f"{out}/{TRAIN_CONFIG_FILE}")
        acts_path = args.acts or saved["data"]["path"]
        acts = load_activation_file(acts_path, saved["data"].get("key"))
        if list(acts.shape) != saved["data"]["shape"]:
            raise ActivationDataError(
                f"{acts_path}: shape {list(acts.shape)} differs from the {saved['data']['shape']} this run trained on"
            )
        data = {**saved["data"], "path": str(Path(acts_path).resolve())}
    else:
        if args.acts is None:
            raise ConfigError("give the activation file to train on (ACTS), or --resume an existing run")
        acts = load_activation_file(args.acts, args.key)
        sae_cfg = sae_config_from_args(args, acts.shape[1])
        train_cfg = from_args(TrainConfig, args)
        data = {"path": str(Path(args.acts).resolve()), "key": args.key, "shape": list(acts.shape)}
    config = {"sae": to_dict(sae_cfg), "train": to_dict(train_cfg), "data": data}
    with session(train_cfg.device, args.shard_latents) as world:
        check_same_config(world, {**config, "resume": args.resume, "shard_latents": args.shard_latents})
        # everything that can refuse the input does so before a new run directory exists
        torch.manual_seed(train_cfg.seed)
        batches = TensorBatches(acts, train_cfg.batch_size, seed=train_cfg.seed)
        if world.distributed:
            batches = RankRows(batches, world.data_rank, world.data_size)
        sae, shards = create_rank_sae(world, sae_cfg, train_cfg.seed)
        trainer = Trainer(sae, train_cfg, out, progress=not args.quiet, world=world, shards=shards)
        if not args.resume:
            start_run_dir(out, config, world)
        trainer.fit(batches, resume=args.resume)
        if world.writer:
            from monosemantic.plots import plot_training

            plot_training(out)
            print(f"saved {sae_cfg.arch} SAE (d_in={sae_cfg.d_in}, d_sae={sae_cfg.d_sae}) to {out}")
    return 0


def activation_batches(paths: list[str], key: str | None, d_in: int, batch_size: int):
    """Batches of the activation files, in file order; checks every file before the first batch."""
    tensors = [load_activation_file(p, key) for p in paths]
    for path, x in zip(paths, tensors):
        if x.shape[1] != d_in:
            raise ActivationDataError(f"{path}: activations have width {x.shape[1]}, the SAE expects d_in={d_in}")
    for x in tensors:
        for start in range(0, x.shape[0], batch_size):
            yield x[start : start + batch_size].float()


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate a run's SAE: spliced into its model (CE loss recovered, KL, FVU, L0, ...), or, given
    activation files, on those. Writes RUN_DIR/eval.json."""
    if args.acts:
        sae = load_sae(args.run_dir, device=args.device)
        batches = activation_batches(args.acts, args.key, sae.d_in, args.batch_size)
        result = evaluate(sae, batches, max_tokens=args.max_tokens)
        atomic_write_json(
            Path(args.run_dir) / EVAL_FILE,
            {"data": [str(Path(p).resolve()) for p in args.acts], "metrics": result.to_dict()},
        )
        print(format_eval(result))
        return 0
    from monosemantic.train.pipeline import evaluate_run

    result = evaluate_run(
        args.run_dir,
        tokens=args.max_tokens or 50_000,
        corpus=args.corpus,
        model=args.model,
        hookpoint=args.hookpoint,
        device=args.device,
        progress=not args.quiet,
    )
    print(format_spliced(result))
    return 0


def new_output_dir(path: str) -> Path:
    out = Path(path)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} already exists and is not empty; choose a new directory")
    return out


def cmd_convert(args: argparse.Namespace) -> int:
    """Convert an SAE made by another tool (format detected from its files) to cfg.json + sae.safetensors."""
    fmt = detect_format(args.src)
    sae = load_sae(args.src, allow_square=args.allow_square)
    sae.save(new_output_dir(args.out))
    print(f"converted {fmt} {sae.cfg.arch} SAE (d_in={sae.d_in}, d_sae={sae.d_sae}) from {args.src} to {args.out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write a run's SAE in another tool's format, for that tool to load."""
    sae = load_sae(args.run_dir)
    export_sae(sae, new_output_dir(args.out), args.format)
    print(f"exported {sae.cfg.arch} SAE (d_in={sae.d_in}, d_sae={sae.d_sae}) as {args.format} to {args.out}")
    return 0


def cmd_bench_toy(args: argparse.Namespace) -> int:
    """Train SAEs on synthetic superposition data and report recovery of the true features."""
    data = ToyData(from_args(ToyConfig, args))
    train = TrainConfig(
        batch_size=args.batch_size,
        total_tokens=args.tokens,
        lr=args.lr,
        dead_window=args.dead_window,
        log_every=50,
        b_dec_init="mean",
        seed=args.seed,
    )
    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    unknown = sorted(set(archs) - set(ARCHITECTURES))
    if unknown:
        raise ConfigError(f"unknown architecture(s) {unknown}; expected some of {sorted(ARCHITECTURES)}")
    results = run_toy_benchmark(
        data,
        archs,
        d_sae=args.d_sae,
        k=args.k,
        l1_coefficient=args.l1_coefficient,
        l0_coefficient=args.l0_coefficient,
        train=train,
        progress=not args.quiet,
    )
    print(
        f"toy data: d={data.cfg.d}, {data.cfg.n_features} true features, "
        f"{data.cfg.avg_active} active per sample on average; MMCS = recovery of the true features "
        f"(1 = all found); dead = no activation on {8 * 4096} held-out samples"
    )
    print(format_table(results))
    if args.json:
        atomic_write_json(args.json, {"toy": to_dict(data.cfg), "results": results_to_json(results)})
    return 0


def cmd_mathlm_train(args: argparse.Namespace) -> int:
    """Train (or resume) the built-in math language model into OUT/model."""
    from monosemantic.mathlm.train import train_mathlm

    model_dir = train_mathlm(from_args(MathLMConfig, args), args.out, progress=not args.quiet)
    print(f"model written to {model_dir}")
    return 0


def cmd_mathlm_eval(args: argparse.Namespace) -> int:
    """Greedy exact-match answer accuracy per category on the held-out math corpus."""
    from monosemantic.mathlm.evaluate import answer_accuracy, format_scores
    from monosemantic.models import load_model

    model, tokenizer = load_model(args.model, device=args.device)
    scores = answer_accuracy(model, tokenizer, per_category=args.per_category, seed=args.seed)
    print(format_scores(scores))
    if args.json:
        atomic_write_json(
            args.json,
            [{"category": s.category, "n": s.n, "correct": s.correct, "accuracy": s.accuracy} for s in scores],
        )
    return 0


# ---- the parser -------------------------------------------------------------------------------


def _command(sub, name: str, func, **kwargs) -> argparse.ArgumentParser:
    doc = func.__doc__.split("\n")[0]
    p = sub.add_parser(
        name, help=doc, description=" ".join(func.__doc__.split()), formatter_class=HelpFormatter, **kwargs
    )
    p.set_defaults(func=func, parser=p)
    return p


def add_interop_commands(sub) -> None:
    """`convert` and `export`: SAEs of other tools in, ours out."""
    p = _command(sub, "convert", cmd_convert)
    p.add_argument(
        "src",
        metavar="SRC",
        help="SAE of another tool: a SAELens, sparsify, dictionary_learning or "
        "Gemma Scope directory, an OpenAI sparse_autoencoder .pt, a Gemma Scope params.npz",
    )
    p.add_argument(
        "--out", required=True, metavar="DIR", help="directory to write cfg.json + sae.safetensors into (new or empty)"
    )
    p.add_argument(
        "--allow-square",
        action="store_true",
        help="accept d_in == d_sae, where a transposed weight "
        "matrix cannot be detected; only for files known to follow their tool's layout",
    )
    p = _command(sub, "export", cmd_export)
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory (or any SAE that convert reads)")
    p.add_argument(
        "--format",
        required=True,
        choices=sorted(WRITERS),
        help="saelens: cfg.json + sae_weights.safetensors (any architecture); sparsify: cfg.json + "
        "sae.safetensors (topk only)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="directory to write into (new or empty)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="monosemantic",
        formatter_class=HelpFormatter,
        description="Sparse autoencoders for language models: train, evaluate, benchmark. Every command has --help.",
    )
    parser.add_argument("--version", action="version", version=f"monosemantic {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        metavar="INT",
        help="CPU threads for torch (default: one per core)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _command(sub, "train", cmd_train)
    p.add_argument(
        "--out", required=True, metavar="RUN_DIR", help="run directory to create (or continue with --resume)"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its newest checkpoint, with its saved configuration",
    )
    add_arguments(p, DataConfig, aliases={"model": ["--model_path", "--model-path"]})
    add_arguments(p, HarvestConfig, exclude=("seed",))
    add_sae_arguments(p)
    add_arguments(p, TrainConfig, aliases={"total_tokens": ["--tokens"]})
    add_parallel_arguments(p)

    p = _command(sub, "train-tensors", cmd_train_tensors)
    p.add_argument(
        "acts",
        nargs="?",
        metavar="ACTS",
        help="activations, [N, d_in] (or [..., d_in]) in .npy or .safetensors; optional with --resume",
    )
    p.add_argument(
        "--out", required=True, metavar="RUN_DIR", help="run directory to create (or continue with --resume)"
    )
    p.add_argument("--key", default=None, metavar="NAME", help="tensor name inside a .safetensors file holding several")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its newest checkpoint, with its saved configuration",
    )
    add_sae_arguments(p)
    add_arguments(p, TrainConfig, aliases={"total_tokens": ["--tokens"]})
    add_parallel_arguments(p)

    p = _command(sub, "eval", cmd_eval)
    p.add_argument(
        "run_dir", metavar="RUN_DIR", help="run directory (or any directory with cfg.json + sae.safetensors)"
    )
    p.add_argument(
        "acts",
        nargs="*",
        metavar="ACTS",
        help="activation files (.npy / .safetensors); without them the SAE is spliced into its model",
    )
    p.add_argument(
        "--max-tokens",
        "--tokens",
        type=positive_int,
        default=None,
        metavar="INT",
        help="evaluate at most this many tokens (spliced evaluation: default 50000)",
    )
    p.add_argument(
        "--corpus",
        default=None,
        metavar="SPEC",
        help="spliced evaluation: the text to run (default: the run's corpus, its held-out split for mathlm)",
    )
    p.add_argument("--model", default=None, metavar="PATH", help="spliced evaluation: override the run's model")
    p.add_argument("--hookpoint", default=None, metavar="NAME", help="spliced evaluation: override the SAE's hookpoint")
    p.add_argument("--key", default=None, metavar="NAME", help="tensor name inside .safetensors files holding several")
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=4096,
        metavar="INT",
        help="activation vectors per forward pass (with ACTS)",
    )
    p.add_argument("--device", default="cpu", metavar="DEVICE", help="device to run on")

    add_interop_commands(sub)
    add_feature_commands(sub, _command)
    add_experiment_commands(sub, _command)
    add_benchmark_commands(sub, _command)
    add_view_command(sub, _command)

    mathlm = sub.add_parser(
        "mathlm",
        help="the built-in math language model",
        formatter_class=HelpFormatter,
        description="The built-in math language model: train it, evaluate it.",
    )
    actions = mathlm.add_subparsers(dest="mathlm", required=True, metavar="ACTION")
    p = _command(actions, "train", cmd_mathlm_train)
    p.add_argument("--out", required=True, metavar="DIR", help="training directory (resumes if it holds checkpoints)")
    add_arguments(p, MathLMConfig)
    p = _command(actions, "eval", cmd_mathlm_eval)
    p.add_argument("--model", default="builtin", metavar="PATH", help="model directory, or 'builtin'")
    p.add_argument(
        "--per-category", type=positive_int, default=200, metavar="INT", help="held-out samples per category"
    )
    p.add_argument("--seed", type=int, default=0, metavar="INT", help="corpus seed")
    p.add_argument("--device", default="cpu", metavar="DEVICE", help="device to run the model on")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the scores to this JSON file")

    bench = sub.add_parser("bench", help="benchmarks", description="Benchmarks.", formatter_class=HelpFormatter)
    benches = bench.add_subparsers(dest="bench", required=True, metavar="BENCH")
    p = _command(benches, "toy", cmd_bench_toy)
    add_arguments(p, ToyConfig)
    p.add_argument(
        "--archs", default="topk,batchtopk,relu", metavar="LIST", help="comma-separated architectures to train"
    )
    p.add_argument(
        "--d-sae", type=parse_int, default=None, metavar="INT", help="latents per SAE (default: 2 x n_features)"
    )
    p.add_argument(
        "--k", type=parse_int, default=None, metavar="INT", help="topk/batchtopk k (default: avg_active rounded)"
    )
    p.add_argument("--l1-coefficient", type=float, default=3.0, metavar="FLOAT", help="relu, gated: L1 penalty weight")
    p.add_argument("--l0-coefficient", type=float, default=10.0, metavar="FLOAT", help="jumprelu: L0 penalty weight")
    p.add_argument("--tokens", type=parse_int, default=2_000_000, metavar="INT", help="training samples per SAE")
    p.add_argument("--batch-size", type=parse_int, default=1024, metavar="INT", help="samples per training step")
    p.add_argument("--lr", type=float, default=3e-3, metavar="FLOAT", help="Adam learning rate")
    p.add_argument(
        "--dead-window",
        type=parse_int,
        default=100_000,
        metavar="INT",
        help="tokens without firing that make a latent dead",
    )
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results to this JSON file")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.INFO
    if int(os.environ.get("RANK", "0")) > 0:  # under torchrun rank 0 speaks for all; the others only warn
        level = logging.WARNING
    logging.basicConfig(level=level, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return args.func(args)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
