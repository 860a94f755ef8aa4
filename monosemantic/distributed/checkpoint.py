"""Checkpoints of runs under torchrun, through torch.distributed.checkpoint (DCP), in safetensors files.

    RUN_DIR/checkpoints/step_000001000/
        shard-00001-model-00001-of-00001.safetensors   rank 0's tensors; one such file per rank that
        shard-00002-model-00001-of-00001.safetensors   holds something no other rank wrote (DCP writes
        ...                                            each replicated tensor once)
        trainer.json                                   step, tokens, scale, configs, the data position
                                                       of each data-parallel rank, the mesh
        sha256.json                                    the sha256 of every file above (train/checkpoint.py)

The tensors are those of a one-process checkpoint (`train/checkpoint.py`), under the same names
("W_enc", "W_enc.exp_avg", "W_enc.step", "tokens_since_fired", "rng.torch", ...). Latent-sharded
ones are DTensors: each rank writes its slice, with its offsets in the safetensors header
(DCP_SHARDING_INFO). The directory is built under a temporary name and renamed into place by rank 0
once every rank has written (`atomic_directory`), so a kill leaves the previous checkpoint intact.

Loading uses DCP's `HuggingFaceStorageReader`, which takes names, shapes and offsets from the
safetensors headers (JSON) and the data through safetensors: nothing is unpickled. (DCP's default
`FileSystemReader` is not used: it reads its `.metadata` file with `pickle.load`, which would run
code from a crafted checkpoint.) The same reader reads one-process checkpoints (same names, no
offsets), and DCP reshards every tensor to the current layout: a run resumes at any world size and
any number of latent shards, from either kind of checkpoint, and a one-process run resumes a
distributed checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import warnings
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch import Tensor
from torch.distributed.checkpoint import HuggingFaceStorageReader, HuggingFaceStorageWriter

from monosemantic.atomic import atomic_directory
from monosemantic.distributed.sharded import SHARD_DIMS
from monosemantic.distributed.world import World, all_gather_json, broadcast_json
from monosemantic.sae.base import SAE
from monosemantic.train.checkpoint import (
    CHECKPOINTS_DIR,
    CheckpointError,
    TrainerState,
    checkpoint_dirs,
    load_optimizer_tensors,
    seal_checkpoint,
    verify_checkpoint,
)

COUNTERS = "tokens_since_fired"


def is_distributed_checkpoint(path: str | Path) -> bool:
    return not (Path(path) / "sae.safetensors").exists()


def _shard_dim(key: str, ndim: int) -> int | None:
    """The d_sae dimension of a tensor of the checkpoint (a weight, its Adam moments, the dead-latent
    counters), None if it is not split over latents (b_dec, Adam's step counts, RNG states)."""
    dim = 0 if key == COUNTERS else SHARD_DIMS.get(key.split(".", 1)[0])
    return dim if dim is not None and dim < ndim else None


def _to_checkpoint(tensors: dict[str, Tensor], world: World) -> dict[str, Tensor]:
    """Latent-sharded tensors as DTensors over the (data x latent) mesh: replicated over data
    ranks, split along d_sae over latent ranks. Everything else is the same on every rank."""
    if world.latent_size == 1:
        return tensors
    from torch.distributed.tensor import DTensor, Replicate, Shard

    return {
        key: DTensor.from_local(t, world.mesh, [Replicate(), Shard(dim)], run_check=False)
        if (dim := _shard_dim(key, t.ndim)) is not None
        else t
        for key, t in tensors.items()
    }


def _local(t) -> Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


def _tensors(sae: SAE, optimizer: torch.optim.Optimizer, state: TrainerState) -> dict[str, Tensor]:
    names = {id(p): n for n, p in sae.named_parameters()}
    out = {k: v.detach() for k, v in sae.state_dict().items()}
    out.update(
        {
            f"{names[id(p)]}.{key}": value
            for p, entries in optimizer.state.items()
            for key, value in entries.items()
            if isinstance(value, Tensor)
        }
    )
    out[COUNTERS] = state.tokens_since_fired
    out.update({f"rng.{k}": v for k, v in state.rng.items()})
    return out


def save_distributed_checkpoint(
    run_dir: str | Path, sae: SAE, optimizer: torch.optim.Optimizer, state: TrainerState, keep: int, world: World
) -> Path:
    """Write checkpoint `step_<state.step>` from every rank (a collective); rank 0 publishes it and
    deletes all but the newest `keep`."""
    path = Path(run_dir) / CHECKPOINTS_DIR / f"step_{state.step:09d}"
    positions = all_gather_json(state.data_state, world.group) if world.distributed else [state.data_state]
    meta = {
        "step": state.step,
        "tokens_seen": state.tokens_seen,
        "scale": state.scale,
        "data_states": [positions[d * world.latent_size] for d in range(world.data_size)],
        "configs": state.configs,
        "mesh": {"data": world.data_size, "latent": world.latent_size},
    }
    tensors = _to_checkpoint(_tensors(sae, optimizer, state), world)
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(atomic_directory(path)) if world.writer else None
        tmp = broadcast_json(str(tmp) if tmp is not None else None, world)
        dcp.save(
            tensors,
            storage_writer=HuggingFaceStorageWriter(tmp, save_distributed=True),
            process_group=world.group,
            no_dist=not world.distributed,
        )
        if world.writer:
            (Path(tmp) / "trainer.json").write_text(json.dumps(meta, indent=2))
            seal_checkpoint(Path(tmp))  # dcp.save returned on every rank: all their files are there
    if world.writer:
        for old in checkpoint_dirs(run_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old)
    world.barrier()
    return path


def _targets(sae: SAE, stored: dict, world: World, source: Path) -> dict[str, Tensor]:
    """Empty tensors, in this rank's layout, for every tensor of the checkpoint that the run needs
    (weights, the optimizer's state of each parameter, counters, RNG states); shapes and dtypes are
    checked against what the checkpoint holds."""
    device = sae.W_enc.device
    wanted = {k: torch.empty_like(v) for k, v in sae.state_dict().items()}
    wanted[COUNTERS] = torch.empty(sae.d_sae, dtype=torch.long, device=device)
    params = dict(sae.named_parameters())
    for key, meta in stored.items():
        name, _, entry = key.partition(".")
        if (name in params and entry and "." not in entry) or name == "rng":
            shape = list(meta.size)
            if (dim := _shard_dim(key, len(shape))) is not None:
                shape[dim] //= world.latent_size
            wanted[key] = torch.empty(shape, dtype=meta.properties.dtype, device="cpu" if name == "rng" else device)
    for key, t in wanted.items():
        shape = list(t.shape)
        if (dim := _shard_dim(key, len(shape))) is not None:
            shape[dim] *= world.latent_size
        if key not in stored:
            raise CheckpointError(f"{source}: no tensor {key!r} in the checkpoint")
        if list(stored[key].size) != shape or stored[key].properties.dtype != t.dtype:
            raise CheckpointError(
                f"{source}: tensor {key!r} is {list(stored[key].size)} "
                f"{stored[key].properties.dtype}, this run needs {shape} {t.dtype}"
            )
    return wanted


def load_any_checkpoint(path: str | Path, sae: SAE, optimizer: torch.optim.Optimizer, world: World) -> TrainerState:
    """Restore `sae` and `optimizer` in place from a distributed or one-process checkpoint, in this
    rank's layout; return the trainer state with this rank's data position."""
    path = Path(path)
    verify_checkpoint(path)
    try:
        meta = json.loads((path / "trainer.json").read_text())
        stored = HuggingFaceStorageReader(str(path)).read_metadata().state_dict_metadata
    except (OSError, json.JSONDecodeError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable checkpoint ({e})") from e
    targets = _targets(sae, stored, world, path)
    loaded = _to_checkpoint(targets, world)
    with warnings.catch_warnings():  # one process: DCP warns that it "assumes" so, which is what we mean
        warnings.filterwarnings("ignore", message=".*single process", category=UserWarning)
        dcp.load(
            loaded,
            storage_reader=HuggingFaceStorageReader(str(path)),
            process_group=world.group,
            no_dist=not world.distributed,
        )
    local = {k: _local(v) for k, v in loaded.items()}
    weights = {k: local[k] for k in sae.state_dict()}
    for name, t in weights.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{path}: tensor {name!r} contains NaN or inf")
    sae.load_state_dict(weights)
    params = dict(sae.named_parameters())
    load_optimizer_tensors(
        optimizer,
        params.items(),
        {k: v for k, v in local.items() if k.partition(".")[0] in params and "." in k},
        str(path),
    )
    return TrainerState(
        step=meta["step"],
        tokens_seen=meta["tokens_seen"],
        scale=meta["scale"],
        data_state=pick_data_state(meta, world, path),
        tokens_since_fired=local[COUNTERS],
        rng={k.removeprefix("rng."): v for k, v in local.items() if k.startswith("rng.")},
        configs=meta.get("configs", {}),
    )


def pick_data_state(meta: dict, world: World, source: Path) -> dict:
    """This rank's data position. Sources that every rank reads whole (`RankRows`) saved the same
    position on every rank, and any world size resumes it; per-rank sources (each rank harvests its
    own corpus shard) resume only with the same number of data-parallel ranks."""
    states = meta.get("data_states", [meta.get("data_state", {})])
    if len(states) == world.data_size:
        return states[world.data_rank]
    if all(s == states[0] for s in states):
        return states[0]
    raise CheckpointError(
        f"{source}: the run read its data per data-parallel rank ({len(states)} ranks, each its "
        f"own corpus shard), and this run has {world.data_size}; resume it with {len(states)} "
        "data-parallel ranks (the number of latent shards may change)"
    )
