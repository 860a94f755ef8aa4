"""Command line for training: `train` (on a model's activations) and `train-tensors` (on saved
activation vectors), new or `--resume`d (wired in by main.py).

    monosemantic train --model builtin --hookpoint layers.3.resid.post --expansion-factor 16 --k 32 \\
        --tokens 2M --out runs/x
    monosemantic train --out runs/x --resume
    monosemantic train --out runs/x --resume-from step_1000   # an older checkpoint (the newest is damaged)
    monosemantic train-tensors ACTS.npy --out runs/y --arch topk --k 32
    monosemantic mathlm train-saes --out runs/builtin_saes     # the shipped SAEs, one per layer

The flags compose a `RunConfig` (train/config.py); train/pipeline.py does the rest. `--resume` takes
the saved configuration, and refuses flags that would change it (only operational ones may).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from monosemantic.config import ConfigError, add_arguments, from_args, from_dict, non_negative_int, parse_int, to_dict
from monosemantic.data.activations import ActivationDataError, load_activation_file
from monosemantic.data.stream import HarvestConfig
from monosemantic.distributed.world import check_same_config, session
from monosemantic.mathlm.pretrained import PRETRAINED_DIR, PretrainedConfig, export_pretrained, train_pretrained
from monosemantic.sae import SAEConfig
from monosemantic.sae.config import SAE_ARCHS, TRANSCODER_ARCHS
from monosemantic.train.checkpoint import OPERATIONAL_FIELDS
from monosemantic.train.config import DataConfig, RunConfig, SAEOptions, read_saved_run, saved_train_config
from monosemantic.train.rundir import PARENT_FILE, TRAIN_CONFIG_FILE, read_train_config
from monosemantic.train.trainer import TrainConfig

# input_norm comes only with SAEs of other tools, which the trainer refuses
SAE_FLAGS_FROM_ELSEWHERE = ("arch", "d_in", "d_sae", "activation_scale", "hookpoint", "model", "input_norm", "origin")
K_ARCHS = ("topk", "batchtopk", "matryoshka", "routed")


# ---- flags ------------------------------------------------------------------------------------


def add_sae_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", choices=sorted(SAE_ARCHS), default="topk", help="SAE architecture")
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


def add_transcoder_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--transcoder",
        action="store_true",
        help="train TopK transcoders instead of SAEs: --hookpoint names MLPs ('layers.*.mlp', one transcoder "
        "per layer from one forward); each reads its MLP's input (layers.L.mlp.in, after the norm) and "
        "reconstructs its output (layers.L.mlp.out)",
    )
    parser.add_argument(
        "--skip-transcoder",
        action="store_true",
        help="as --transcoder, with a linear skip path x W_skip beside the latents (Paulo et al. 2025)",
    )


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


def sae_options(args: argparse.Namespace) -> SAEOptions:
    """The SAE flags (k only for the architectures that take it; d_in comes from the data);
    `--transcoder` / `--skip-transcoder` make the TopK architecture a transcoder's."""
    options = from_args(SAEOptions, args)
    if args.arch != "matryoshka":
        options = dataclasses.replace(options, matryoshka_prefixes=None)
    skip = getattr(args, "skip_transcoder", False)
    if getattr(args, "transcoder", False) or skip:
        if args.arch != "topk":
            raise ConfigError(f"--transcoder trains TopK transcoders; --arch {args.arch} is not available for them")
        options = dataclasses.replace(options, arch="skip_transcoder" if skip else "transcoder")
    return options if options.arch in (*K_ARCHS, *TRANSCODER_ARCHS) else dataclasses.replace(options, k=None)


def run_config(args: argparse.Namespace) -> RunConfig:
    harvest = from_args(HarvestConfig, args, seed=args.seed)  # the stream shuffles with the trainer's seed
    data, train = from_args(DataConfig, args), from_args(TrainConfig, args)
    return RunConfig(data, harvest, sae_options(args), train)


def checkpoint_step(text: str) -> int:
    """`--resume-from`: a checkpoint directory's name (step_1000, step_000001000) or its step."""
    digits = text.removeprefix("step_")
    if not digits.isdigit():
        raise argparse.ArgumentTypeError(
            f"expected a checkpoint such as step_1000 (under RUN_DIR/checkpoints/), got {text!r}"
        )
    return int(digits)


def add_resume_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its newest checkpoint, with its saved configuration",
    )
    parser.add_argument(
        "--resume-from",
        type=checkpoint_step,
        default=None,
        metavar="step_N",
        help="continue the run in --out from its checkpoint of step N (e.g. when the newest is damaged); "
        "implies --resume",
    )


def changed_on_resume(args: argparse.Namespace, saved: dict, source: Path) -> dict:
    """Flags given now whose value differs from their default and from the saved run: operational
    ones are returned to apply, any other is refused (resuming keeps the saved configuration)."""
    flat = {k: v for section in saved.values() if isinstance(section, dict) for k, v in section.items()}
    changed: dict[str, object] = {}
    refused: list[str] = []
    for name, saved_value in flat.items():
        if not hasattr(args, name):
            continue
        value = getattr(args, name)
        value = tuple(value) if isinstance(value, list) else value
        saved_value = tuple(saved_value) if isinstance(saved_value, list) else saved_value  # JSON lists
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
    args.resume = args.resume or args.resume_from is not None
    if args.resume:
        saved = read_saved_run(out)
        changes = changed_on_resume(args, saved.saved, out)
        config, device = {"resume": str(out.resolve()), **changes}, changes.get("device", saved.run.train.device)
    else:
        run = run_config(args)
        config, device = to_dict(run), run.train.device
    if not args.quiet:  # the progress bar starts only once the model and the first activations are ready
        print(f"loading the model and the corpus for {out} ...", file=sys.stderr, flush=True)
    with session(device, args.shard_latents) as world:
        check_same_config(world, {**config, "shard_latents": args.shard_latents})
        if args.resume:
            result = resume_on_model(saved, progress=not args.quiet, world=world, step=args.resume_from, **changes)
        else:
            result = train_on_model(out, run, progress=not args.quiet, world=world)
        if not world.writer:
            return 0
        if isinstance(result, dict):
            names = json.loads((out / PARENT_FILE).read_text())["hookpoints"]  # every rank's, not only ours
            if run_is_transcoders(args, out):
                print(f"saved {len(names)} transcoders, one per MLP, to {out}/<mlp>: {', '.join(names)}")
                print(f"next: monosemantic eval-transcoders {out}; monosemantic trace {out} PROMPT --target TOKEN")
                return 0
            print(f"saved {len(names)} SAEs, one per hookpoint, to {out}/<hookpoint>: {', '.join(names)}")
            print(f"next: monosemantic eval {out / names[0]}")
            return 0
        print(
            f"saved {result.cfg.arch} SAE (d_in={result.d_in}, d_sae={result.d_sae}) at {result.cfg.hookpoint} "
            f"to {args.out}"
        )
        print(f"next: monosemantic eval {args.out}")
    return 0


def run_is_transcoders(args: argparse.Namespace, out: Path) -> bool:
    saved = json.loads((out / PARENT_FILE).read_text())
    return saved.get("sae_options", {}).get("arch") in TRANSCODER_ARCHS


def saved_tensor_run(args: argparse.Namespace, out: Path):
    """(activations, SAE config, trainer config, data record) of the train-tensors run in `out`, with
    the operational flags given now applied; the activations must have the shape it trained on."""
    saved = read_train_config(out)
    changes = changed_on_resume(args, saved, out)
    sae_cfg = from_dict(SAEConfig, saved["sae"], source=f"{out}/{TRAIN_CONFIG_FILE}")
    train_cfg = saved_train_config(saved["train"], f"{out}/{TRAIN_CONFIG_FILE}", **changes)
    acts_path = args.acts or saved["data"]["path"]
    acts = load_activation_file(acts_path, saved["data"].get("key"))
    if list(acts.shape) != saved["data"]["shape"]:
        raise ActivationDataError(
            f"{acts_path}: shape {list(acts.shape)} differs from the {saved['data']['shape']} this run trained on"
        )
    return acts, sae_cfg, train_cfg, {**saved["data"], "path": str(Path(acts_path).resolve())}


def cmd_train_tensors(args: argparse.Namespace) -> int:
    """Train an SAE on activation vectors saved in a file."""
    from monosemantic.train.pipeline import train_on_tensors

    out = Path(args.out)
    args.resume = args.resume or args.resume_from is not None
    if args.resume:
        acts, sae_cfg, train_cfg, data = saved_tensor_run(args, out)
    else:
        if args.acts is None:
            raise ConfigError("give the activation file to train on (ACTS), or --resume an existing run")
        acts = load_activation_file(args.acts, args.key)
        sae_cfg = sae_options(args).sae_config(acts.shape[1])
        train_cfg = from_args(TrainConfig, args)
        data = {"path": str(Path(args.acts).resolve()), "key": args.key, "shape": list(acts.shape)}
    config = {"sae": to_dict(sae_cfg), "train": to_dict(train_cfg), "data": data}
    with session(train_cfg.device, args.shard_latents) as world:
        check_same_config(world, {**config, "resume": args.resume, "shard_latents": args.shard_latents})
        train_on_tensors(
            out,
            acts,
            sae_cfg,
            train_cfg,
            data,
            resume=args.resume,
            step=args.resume_from,
            progress=not args.quiet,
            world=world,
        )
        if world.writer:
            print(f"saved {sae_cfg.arch} SAE (d_in={sae_cfg.d_in}, d_sae={sae_cfg.d_sae}) to {out}")
    return 0


def cmd_train_saes(args: argparse.Namespace) -> int:
    """Train the pretrained SAEs of the built-in model (one TopK SAE per layer on layers.*.resid.post,
    from one harvest) into OUT, going on from its newest checkpoint if OUT holds them already; then
    round them to bf16, measure FVU and L0 on held-out text, and export the set with its manifest."""
    cfg = from_args(PretrainedConfig, args)
    saes = train_pretrained(args.out, cfg, model=args.model, progress=not args.quiet)
    export = args.export or PRETRAINED_DIR
    manifest = export_pretrained(args.out, export, heldout_tokens=cfg.heldout_tokens)
    print(f"trained {len(saes)} SAEs in {args.out}; exported in bf16 to {export}:")
    for name, entry in manifest["saes"].items():
        m = entry["heldout"]
        print(f"  {name}: FVU {m['fvu']:.4f}, L0 {m['l0']:.1f}, dead {m['dead_fraction']:.1%} on {m['tokens']} tokens")
    print(f"next: monosemantic view builtin{'' if args.export is None else ' --saes ' + args.export}")
    return 0


# ---- the parsers ------------------------------------------------------------------------------


def add_train_commands(sub, command) -> None:
    """`train` and `train-tensors`."""
    p = command(sub, "train", cmd_train)
    p.add_argument(
        "--out", required=True, metavar="RUN_DIR", help="run directory to create (or continue with --resume)"
    )
    add_resume_arguments(p)
    add_arguments(p, DataConfig, aliases={"model": ["--model_path", "--model-path"]})
    add_arguments(p, HarvestConfig, exclude=("seed",))
    add_sae_arguments(p)
    add_transcoder_arguments(p)
    add_arguments(p, TrainConfig, aliases={"total_tokens": ["--tokens"]})
    add_parallel_arguments(p)

    p = command(sub, "train-tensors", cmd_train_tensors)
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
    add_resume_arguments(p)
    add_sae_arguments(p)
    add_arguments(p, TrainConfig, aliases={"total_tokens": ["--tokens"]})
    add_parallel_arguments(p)


def add_train_saes_command(sub, command) -> None:
    """`mathlm train-saes` (on the subparsers of `mathlm`)."""
    p = command(sub, "train-saes", cmd_train_saes)
    p.add_argument(
        "--out", required=True, metavar="DIR", help="training directory (goes on from its checkpoints if it has some)"
    )
    p.add_argument(
        "--export",
        default=None,
        metavar="DIR",
        help="where the bf16 set and its manifest go, replaced in one step (default: monosemantic/mathlm/saes/ "
        "in the package, the set `monosemantic view builtin` opens)",
    )
    p.add_argument("--model", default="builtin", metavar="PATH", help="model directory, or 'builtin'")
    add_arguments(p, PretrainedConfig)
