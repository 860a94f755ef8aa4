"""Sweeps: several SAEs of one hookpoint trained from one pass of activations.

    monosemantic sweep --model builtin --hookpoint layers.3.resid.post --arch topk,relu --k 8,16,32,64 \\
        --l1-coefficient 2,5 --expansion-factor 8,32 --tokens 2M --out runs/sweep
        runs/sweep/sweep.json          the grid and the shared configuration
        runs/sweep/topk_x8_k8/         one run directory per SAE (train_config.json, sae.safetensors, ...)
        runs/sweep/relu_x8_l1-2/       (each architecture sweeps its own sparsity knob: k, L1 or L0 coefficient)

Every SAE takes every batch of one activation stream, in lockstep (`multi_sae.fit_together`), so
the model runs once per batch, not once per SAE; each SAE is initialised with the seed a solo run
would use, so a member of a sweep equals the same SAE trained alone.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import torch

from monosemantic.atomic import atomic_write_json
from monosemantic.config import ConfigError, to_dict
from monosemantic.data.stream import HarvestConfig
from monosemantic.distributed.multi_sae import fit_together, init_batches
from monosemantic.distributed.world import World
from monosemantic.models import load_model
from monosemantic.plots import plot_training
from monosemantic.sae import SAE, SAEConfig, create_sae
from monosemantic.train.pipeline import DataConfig, _batches, _sae_config, _stream
from monosemantic.train.rundir import check_new_run_dir, create_run_dir
from monosemantic.train.trainer import TrainConfig, Trainer

SWEEP_FILE = "sweep.json"
SPARSITY_KNOB = {
    "topk": "k",
    "batchtopk": "k",
    "relu": "l1_coefficient",
    "gated": "l1_coefficient",
    "jumprelu": "l0_coefficient",
}
"""the option that sets each architecture's sparsity, swept as its own axis of the grid"""
_SHORT = {"k": "k", "l1_coefficient": "l1-", "l0_coefficient": "l0-"}
DEFAULTS = {"k": 32, "l1_coefficient": SAEConfig.l1_coefficient, "l0_coefficient": SAEConfig.l0_coefficient}


def grid(archs: list[str], expansions: list[int], knobs: dict[str, list | None]) -> list[dict]:
    """Every (arch, expansion factor, sparsity value) combination, where each architecture takes the
    values of its own knob (`SPARSITY_KNOB`: k, l1_coefficient or l0_coefficient; None: the default)."""
    for knob, values in knobs.items():
        users = [a for a in archs if SPARSITY_KNOB.get(a) == knob]
        if values is not None and not users:
            takers = ", ".join(a for a, k in SPARSITY_KNOB.items() if k == knob)
            raise ConfigError(
                f"--{knob.replace('_', '-')} sets {takers}, but the sweep's architectures are "
                f"{','.join(archs)}; add one of them to --arch or drop the option"
            )
    out = []
    for arch, expansion in itertools.product(archs, expansions):
        knob = SPARSITY_KNOB[arch]
        for value in knobs.get(knob) or [DEFAULTS[knob]]:
            out.append({"arch": arch, "expansion_factor": expansion, knob: value})
    if len(out) < 2:
        raise ConfigError(
            f"a sweep needs at least two SAEs; the grid {archs} x {expansions} x "
            f"{ {k: v for k, v in knobs.items() if v} } has {len(out)}"
        )
    return out


def run_name(options: dict) -> str:
    name = f"{options['arch']}_x{options['expansion_factor']}"
    for knob, short in _SHORT.items():
        if options.get(knob) is not None:
            name += f"_{short}{options[knob]:g}"
    return name


def sweep_on_model(
    out: str | Path,
    data: DataConfig,
    sae_options: dict,
    points: list[dict],
    train: TrainConfig,
    harvest: HarvestConfig | None = None,
    *,
    progress: bool = True,
) -> dict[str, SAE]:
    """Train one SAE per grid point (options over `sae_options`) from one activation stream into
    OUT/<name>/; returns {name: SAE}."""
    out, harvest, world = Path(out), harvest or HarvestConfig(), World()
    check_new_run_dir(out)
    model, tokenizer = load_model(data.model, dtype=data.model_dtype, device=train.device)
    stream, source = _stream(model, tokenizer, data.hookpoint, data, train, harvest, world)
    trainers, configs = {}, {}
    for i, point in enumerate(points):
        cfg = _sae_config({**sae_options, **point}, stream.d, data, stream.hook.name)
        torch.manual_seed(train.seed)  # the initialisation of a solo run
        trainers[i] = Trainer(create_sae(cfg), train, out / run_name(point), progress=progress and i == 0)
        configs[i] = {
            "sae": to_dict(cfg),
            "train": to_dict(train),
            "data": to_dict(data),
            "harvest": to_dict(harvest),
            "source": source,
            "sweep": str(out.resolve()),
        }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        out / SWEEP_FILE,
        {
            "points": points,
            "runs": [run_name(p) for p in points],
            "data": to_dict(data),
            "train": to_dict(train),
            "harvest": to_dict(harvest),
            "source": source,
        },
    )
    for i, t in trainers.items():
        create_run_dir(t.run_dir, configs[i])
    same_batch = lambda x: dict.fromkeys(trainers, x)  # noqa: E731  every SAE sees the whole batch
    saes = fit_together(
        trainers,
        _batches(stream, data, train, progress, world),
        same_batch,
        world,
        n_init=init_batches([stream.d], train.batch_size),
    )
    for t in trainers.values():
        plot_training(t.run_dir)
    return {run_name(points[i]): sae for i, sae in saes.items()}
