"""Command line: thin subcommands that parse config dataclasses and call one library function each.

    monosemantic train --model builtin --hookpoint layers.3.resid.post --expansion-factor 16 --k 32 \\
        --tokens 2M --out runs/x
    monosemantic train --out runs/x --resume
    monosemantic eval runs/x                    # spliced into the model: CE loss recovered, KL, FVU, ...
    monosemantic train-tensors ACTS.npy --out runs/y --arch topk --k 32
    monosemantic eval runs/y ACTS.npy           # SAE-level metrics on saved activations
    monosemantic mathlm eval                    # the built-in model's accuracy per category
    monosemantic mathlm ablate-layers           # CE cost of zero-/mean-ablating each MLP and attention layer
    monosemantic mathlm train-saes --out runs/s # the shipped SAEs: one per layer, exported in bf16
    monosemantic convert gemma-scope/layer_12/width_16k/average_l0_71 --out runs/gemmascope_l12
    monosemantic export runs/x --format saelens --out exported/x
    monosemantic analyze runs/x --tokens 200k    # every feature: statistics, contexts, labels -> runs/x/features
    monosemantic feature runs/x 123             # one feature, readable; `features --search '='` finds them
    monosemantic ablate runs/x --label '=' --task equality   # vs random features of similar density
    monosemantic steer runs/x --feature 123 --alpha=-4..8    # dose-response curve
    monosemantic view runs/x                    # the dashboard: http://127.0.0.1:8000/
    monosemantic view builtin --layer 3         # the dashboard on a shipped SAE (analysed on first use)
    monosemantic bench toy
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import torch

from monosemantic import __version__
from monosemantic.atomic import atomic_write_json, os_error_message
from monosemantic.cli.benchmark import add_benchmark_commands
from monosemantic.cli.experiments import add_experiment_commands
from monosemantic.cli.features import add_feature_commands
from monosemantic.cli.progress import announce
from monosemantic.cli.trace import add_trace_commands
from monosemantic.cli.train import add_train_commands, add_train_saes_command
from monosemantic.cli.view import add_view_command
from monosemantic.config import ConfigError, HelpFormatter, add_arguments, from_args, parse_int, positive_int, to_dict
from monosemantic.data.activations import ActivationDataError, load_activation_file
from monosemantic.errors import MonosemanticError
from monosemantic.eval.metrics import evaluate
from monosemantic.eval.tables import format_eval, format_spliced
from monosemantic.eval.toy import ToyConfig, ToyData, format_table, results_to_json, run_toy_benchmark
from monosemantic.formats import WRITERS, detect_format, export_sae, load_sae
from monosemantic.mathlm.config import MathLMConfig
from monosemantic.sae import ARCHITECTURES
from monosemantic.sae.signed import split_signed
from monosemantic.train.rundir import EVAL_FILE
from monosemantic.train.trainer import TrainConfig

# ---- commands ---------------------------------------------------------------------------------


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
    from monosemantic.eval.splice import evaluate_run

    if not args.quiet:  # the progress bar starts only once all three are loaded
        print(f"loading the model, the SAE and the corpus of {args.run_dir} ...", file=sys.stderr, flush=True)
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
    sae = load_sae(args.src, allow_square=args.allow_square, dtype=args.dtype, activation_scale=args.activation_scale)
    if args.split_signed:
        sae = split_signed(sae)
    sae.save(new_output_dir(args.out))
    print(f"converted {fmt} {sae.cfg.arch} SAE (d_in={sae.d_in}, d_sae={sae.d_sae}) from {args.src} to {args.out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write a run's SAE in another tool's format, for that tool to load."""
    sae = load_sae(args.run_dir, dtype=args.dtype)
    written = export_sae(sae, new_output_dir(args.out), args.format)
    print(f"exported {sae.cfg.arch} SAE (d_in={sae.d_in}, d_sae={sae.d_sae}) as {args.format} to {written}")
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
    """Greedy answer accuracy per category on distinct held-out problems of the math corpus, with the
    operators written as symbols and as ASCII (approximate answers: within one unit of the last digit)."""
    from monosemantic.mathlm.evaluate import answer_accuracy, format_scores
    from monosemantic.models import load_model

    model, tokenizer = load_model(args.model, device=args.device)
    scores = answer_accuracy(model, tokenizer, per_category=args.per_category, seed=args.seed, progress=not args.quiet)
    print(format_scores(scores))
    if args.json:
        atomic_write_json(
            args.json,
            [
                {
                    "category": s.category,
                    "n": s.n,
                    "correct": s.correct,
                    "accuracy": s.accuracy,
                    "n_ascii": s.n_ascii,
                    "correct_ascii": s.correct_ascii,
                    "accuracy_ascii": s.accuracy_ascii if s.n_ascii else None,
                }
                for s in scores
            ],
        )
    return 0


def cmd_mathlm_ablate_layers(args: argparse.Namespace) -> int:
    """CE cost (nats/token) of zero- and mean-ablating each MLP and attention layer, on held-out text.

    Each layer's sublayer output is replaced at every position by zeros, or by its mean over as many
    other distinct documents; the scored documents are distinct and each is read alone."""
    from monosemantic.data.corpora import open_corpus
    from monosemantic.eval.layer_ablation import (
        ablate_layers,
        answer_spans,
        distinct_documents,
        format_layer_ablation,
        texts,
    )
    from monosemantic.models import load_model, model_name

    corpus = open_corpus(args.corpus, seed=args.seed)
    model, tokenizer = load_model(args.model, device=args.device)
    scored, for_means = distinct_documents(corpus, args.documents, progress=not args.quiet)
    result = ablate_layers(
        model,
        tokenizer,
        texts(scored),
        texts(for_means),
        answer_spans(scored),
        batch_tokens=args.batch_tokens,
        progress=not args.quiet,
    )
    print(format_layer_ablation(result))
    if args.json:
        atomic_write_json(
            args.json,
            {"model": model_name(args.model), "corpus": args.corpus, "seed": args.seed, **result.to_dict()},
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
    add_dtype_argument(p)
    p.add_argument(
        "--activation-scale",
        type=float,
        metavar="S",
        help="SAELens expected_average_only_in SAEs without activation_scaler.json: the dataset-wide input "
        "factor sqrt(d_in) / mean ||x|| they were trained with",
    )
    p.add_argument(
        "--split-signed",
        action="store_true",
        help="abstopk (signed latents): write the equal topk SAE with 2 x d_sae latents, latent i's positive "
        "side then its negative side, which feature analysis and the dashboard read",
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
    add_dtype_argument(p)


def add_dtype_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16", "float64"],
        help="dtype of the weights; default: as the file's own tool computes (OpenAI, dictionary_learning, Gemma "
        "Scope: half-precision files in float32; SAELens, sparsify and ours: as stored); cfg.json's origin says which",
    )


def add_eval_command(sub) -> None:
    """`eval`: a run's SAE spliced into its model, or on activation files."""
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


def add_mathlm_commands(sub) -> None:
    """`mathlm train`, `mathlm eval`, `mathlm ablate-layers`: the built-in model."""
    mathlm = sub.add_parser(
        "mathlm",
        help="the built-in math language model",
        formatter_class=HelpFormatter,
        description="The built-in math language model: train, evaluate, ablate its layers, train its shipped SAEs.",
    )
    actions = mathlm.add_subparsers(dest="mathlm", required=True, metavar="ACTION")
    p = _command(actions, "train", cmd_mathlm_train)
    p.add_argument("--out", required=True, metavar="DIR", help="training directory (resumes if it holds checkpoints)")
    add_arguments(p, MathLMConfig)
    p = _command(actions, "eval", cmd_mathlm_eval)
    p.add_argument("--model", default="builtin", metavar="PATH", help="model directory, or 'builtin'")
    p.add_argument(
        "--per-category",
        type=positive_int,
        default=200,
        metavar="INT",
        help="distinct held-out problems per category (fewer where the category has fewer)",
    )
    p.add_argument("--seed", type=int, default=0, metavar="INT", help="corpus seed")
    p.add_argument("--device", default="cpu", metavar="DEVICE", help="device to run the model on")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the scores to this JSON file")
    p = _command(actions, "ablate-layers", cmd_mathlm_ablate_layers)
    p.add_argument("--model", default="builtin", metavar="PATH", help="model directory, or 'builtin'")
    p.add_argument(
        "--documents",
        type=positive_int,
        default=2000,
        metavar="INT",
        help="distinct documents to score (as many others give the means)",
    )
    p.add_argument(
        "--corpus",
        default="mathlm:heldout",
        metavar="SPEC",
        help="the text: mathlm:heldout, a .txt / .jsonl file or a saved dataset (answer columns: mathlm only)",
    )
    p.add_argument("--seed", type=int, default=0, metavar="INT", help="corpus seed (mathlm)")
    p.add_argument(
        "--batch-tokens",
        type=positive_int,
        default=2048,
        metavar="INT",
        help="tokens per forward pass, padding included",
    )
    p.add_argument("--device", default="cpu", metavar="DEVICE", help="device to run the model on")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results to this JSON file")
    add_train_saes_command(actions, _command)


def add_bench_commands(sub) -> None:
    """`bench toy`: SAEs on synthetic data with known features."""
    bench = sub.add_parser("bench", help="benchmarks", description="Benchmarks.", formatter_class=HelpFormatter)
    benches = bench.add_subparsers(dest="bench", required=True, metavar="BENCH")
    p = _command(benches, "toy", cmd_bench_toy)
    add_arguments(p, ToyConfig)
    p.add_argument(
        "--archs",
        default="topk,batchtopk,relu",
        metavar="LIST",
        help="comma-separated architectures to train (also: matryoshka, which at its default prefixes "
        "recovers the toy dictionary at MMCS 0.887, under the 0.9 the others reach)",
    )
    p.add_argument(
        "--d-sae", type=parse_int, default=None, metavar="INT", help="latents per SAE (default: 2 x n_features)"
    )
    p.add_argument(
        "--k",
        type=parse_int,
        default=None,
        metavar="INT",
        help="topk/batchtopk/matryoshka k (default: avg_active rounded)",
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

    add_train_commands(sub, _command)

    add_eval_command(sub)
    add_interop_commands(sub)
    add_feature_commands(sub, _command)
    add_experiment_commands(sub, _command)
    add_benchmark_commands(sub, _command)
    add_view_command(sub, _command)
    add_trace_commands(sub, _command)

    add_mathlm_commands(sub)
    add_bench_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.INFO
    if int(os.environ.get("RANK", "0")) > 0:  # under torchrun rank 0 speaks for all; the others only warn
        level = logging.WARNING
    logging.basicConfig(level=level, format="%(message)s")
    # "Token indices sequence length is longer than ... indexing errors": every command checks lengths
    # against the model's context itself, with a message that says what to do
    logging.getLogger("transformers.tokenization_utils_base").setLevel(logging.ERROR)
    if args.quiet:  # -q: results and errors only, not where a training's time went (still in timing.json)
        logging.getLogger("monosemantic.train.timing").setLevel(logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        announce(args)
        return args.func(args)
    except MonosemanticError as e:  # every error of ours derives from MonosemanticError
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a read-only directory, a missing file: its path and what to do
        print(f"error: {os_error_message(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
