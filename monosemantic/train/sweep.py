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

import dataclasses
import itertools
from pathlib import Path

from monosemantic.config import ConfigError, to_dict
from monosemantic.distributed.multi_sae import init_batches
from monosemantic.distributed.world import World
from monosemantic.models import model_name
from monosemantic.sae import SAE, SAEConfig
from monosemantic.train.config import RunConfig
from monosemantic.train.pipeline import Job, NewSAE, activation_stream, harvesting, train_saes, training_batches
from monosemantic.train.rundir import SWEEP_FILE, check_new_run_dir

SPARSITY_KNOB = {
    "topk": "k",
    "batchtopk": "k",
    "matryoshka": "k",
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


def sweep_on_model(out: str | Path, run: RunConfig, points: list[dict], *, progress: bool = True) -> dict[str, SAE]:
    """Train one SAE per grid point (`points`: options over `run.sae`) from one activation stream
    into OUT/<name>/; returns {name: SAE}."""
    out = Path(out)
    check_new_run_dir(out)
    job = Job.open(out, run, World(), progress)
    stream, source = activation_stream(job, run, run.data.hookpoint)
    saes = {}
    for i, point in enumerate(points):
        cfg = dataclasses.replace(run.sae, **point).sae_config(
            stream.d, hookpoint=stream.hook.name, model=model_name(run.data.model)
        )
        record = {**run.record(cfg, source), "sweep": str(out.resolve())}
        saes[i] = NewSAE(cfg, out / run_name(point), job.world, progress and i == 0, record)
    sweep = {
        "points": points,
        "runs": [run_name(p) for p in points],
        "data": to_dict(run.data),
        "train": to_dict(run.train),
        "harvest": to_dict(run.harvest),
        "source": source,
    }
    with harvesting(stream, run.train):
        done = train_saes(
            saes,
            run.train,
            lambda: training_batches(job, stream, run),
            job.world,
            parent=(out / SWEEP_FILE, sweep),
            split=lambda x: dict.fromkeys(saes, x),  # every SAE sees the whole batch
            n_init=init_batches([stream.d], run.train.batch_size),
        )
    return {run_name(points[i]): sae for i, sae in done.items() if sae is not None}  # one process: all
