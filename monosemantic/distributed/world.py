"""Running under torchrun: the process group, the device mesh, and the collectives the trainer needs.

    torchrun --nproc_per_node 4 -m monosemantic train ... [--shard-latents 2]

- `launched_by_torchrun()`: whether this process is one rank of a torchrun job.
- `session(device, shard_latents)`: the process group (NCCL for CUDA devices, gloo for the CPU) and
  a 2-D device mesh (data x latent) as a `World`; on leaving, a barrier, then the group is
  destroyed, so that no rank tears down while another still talks to it. Outside torchrun it
  yields the one-process `World()`, whose collectives are the identity.
- `check_same_config(world, config)`: every rank must run the same configuration.
- `all_gather_json` / `broadcast_json`: small JSON values between ranks (never pickle).
- `RankRows`, `ReplicaBatches`: each data-parallel rank's part of the batches.

Ranks of one latent group are consecutive (rank = data_rank * latent_size + latent_rank), so on a
cluster the heavy latent traffic stays inside a node.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor

from monosemantic.config import ConfigError
from monosemantic.distributed.sharded import ShardSpec, init_shard, sharded_training_forward
from monosemantic.eval.metrics import dead_fraction
from monosemantic.sae import SAE, SAEConfig, create_sae
from monosemantic.sae.base import DTYPES, TrainOutput

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched_by_torchrun() -> bool:
    return all(name in os.environ for name in TORCHRUN_ENV)


def rank_device(device: str) -> torch.device:
    """This rank's device: a CUDA device is the one of its LOCAL_RANK (torchrun's convention)."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return dev
    if dev.index is not None and int(os.environ.get("LOCAL_WORLD_SIZE", "1")) > 1:
        raise ConfigError(
            f"device {device!r}: under torchrun each rank uses the GPU of its LOCAL_RANK; pass --device cuda"
        )
    if not torch.cuda.is_available():
        raise ConfigError(f"device {device!r}: CUDA is not available on this machine; use --device cpu")
    return torch.device("cuda", dev.index if dev.index is not None else int(os.environ["LOCAL_RANK"]))


@dataclass
class World:
    """This process's place among the ranks that train one SAE (`group`: all ranks, or those of one
    hookpoint, see multi_sae.py); the defaults are one process, no process group."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    distributed: bool = False
    rank: int = 0
    size: int = 1
    group: dist.ProcessGroup | None = None
    writer_rank: int = 0
    data_rank: int = 0
    data_size: int = 1
    data_group: dist.ProcessGroup | None = None
    latent_rank: int = 0
    latent_size: int = 1
    latent_group: dist.ProcessGroup | None = None
    mesh: object | None = None  # torch.distributed.device_mesh.DeviceMesh, for DTensor checkpoints

    @property
    def writer(self) -> bool:
        """One rank (the group's first) alone writes logs, checkpoint metadata and the exported SAE."""
        return self.rank == self.writer_rank

    # ---- reductions over the data-parallel ranks (identities in one process) -------------------

    def data_any(self, t: Tensor) -> Tensor:
        """Elementwise OR of a bool tensor over the data-parallel ranks."""
        if self.data_size == 1:
            return t
        flags = t.to(torch.uint8)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=self.data_group)
        return flags.bool()

    def data_sum(self, t: Tensor) -> Tensor:
        if self.data_size == 1:
            return t
        t = t.clone()
        dist.all_reduce(t, group=self.data_group)
        return t

    def data_gather(self, t: Tensor) -> Tensor:
        """Concatenation along dim 0 of every data-parallel rank's t, in rank order."""
        if self.data_size == 1:
            return t
        parts = [torch.empty_like(t) for _ in range(self.data_size)]
        dist.all_gather(parts, t.contiguous(), group=self.data_group)
        return torch.cat(parts)

    def batch_metrics(self, x: Tensor, out: TrainOutput) -> dict[str, float]:
        """Loss terms, FVU and L0 of the global batch (x [b, d] is this rank's part of it)."""
        terms = self.data_sum(torch.stack([out.loss, *out.losses.values(), out.l0]).double()) / self.data_size
        xd = x.double()
        sums = torch.cat([(xd - out.x_hat.double()).pow(2).sum()[None], xd.pow(2).sum()[None], xd.sum(0)])
        sums = self.data_sum(sums)
        n = x.shape[0] * self.data_size
        centred = sums[1] - sums[2:].pow(2).sum() / n  # sum ||x - mu||^2 = sum ||x||^2 - n ||mu||^2
        names = ["loss", *out.losses, "l0"]
        row = dict(zip(names, terms.tolist()))
        l0 = row.pop("l0")
        return {**row, "fvu": (sums[0] / centred.clamp_min(1e-30)).item(), "l0": l0}

    def dead_fraction(self, tokens_since_fired: Tensor, window: int) -> float:
        """Fraction of all latents (every shard's) dead over the last `window` tokens."""
        if self.latent_size == 1:
            return dead_fraction(tokens_since_fired, window)
        counts = torch.tensor(
            [(tokens_since_fired >= window).sum(), tokens_since_fired.numel()], device=tokens_since_fired.device
        )
        dist.all_reduce(counts, group=self.latent_group)
        return (counts[0] / counts[1]).item()

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier(group=self.group)


class _TrainingStep(torch.nn.Module):
    """`forward(sae, x, ...)` as a module, for DistributedDataParallel to wrap (it hooks the
    gradients of the parameters of the module it wraps, and must be the one called)."""

    def __init__(self, sae: SAE, forward):
        super().__init__()
        self.sae, self.fn = sae, forward

    def forward(self, x: Tensor, **kwargs) -> TrainOutput:
        return self.fn(self.sae, x, **kwargs)


def distributed_forward(world: World, sae: SAE, shards: ShardSpec | None, dense_reference: bool = False):
    """This rank's training forward `f(x, dead=..., ...)`: its latent shard's (with `shards`), in
    DistributedDataParallel, which averages the gradients over the data-parallel ranks during the
    backward pass."""
    from torch.nn.parallel import DistributedDataParallel

    if shards is not None:
        if dense_reference:
            raise ConfigError("dense_reference has no latent-sharded version")
        forward = lambda sae, x, **kw: sharded_training_forward(sae, x, spec=shards, **kw)  # noqa: E731
    else:
        forward = SAE.training_forward if dense_reference else type(sae).training_forward
    if world.data_size == 1:
        return lambda x, **kw: forward(sae, x, **kw)
    ids = [world.device] if world.device.type == "cuda" else None
    return DistributedDataParallel(_TrainingStep(sae, forward), device_ids=ids, process_group=world.data_group)


def _mesh_world(device: torch.device, shard_latents: int) -> World:
    from torch.distributed.device_mesh import init_device_mesh

    size, rank = dist.get_world_size(), dist.get_rank()
    latent = size if shard_latents == 0 else shard_latents
    if latent < 1 or size % latent:
        raise ConfigError(
            f"--shard-latents {shard_latents} does not divide the {size} ranks; the ranks form a "
            "(data x latent) mesh, so use a divisor of the world size (or 0: all ranks)"
        )
    mesh = init_device_mesh(device.type, (size // latent, latent), mesh_dim_names=("data", "latent"))
    return World(
        device=device,
        distributed=True,
        rank=rank,
        size=size,
        data_rank=rank // latent,
        data_size=size // latent,
        data_group=mesh.get_group("data"),
        latent_rank=rank % latent,
        latent_size=latent,
        latent_group=mesh.get_group("latent"),
        mesh=mesh,
    )


@contextlib.contextmanager
def session(device: str, shard_latents: int = 1) -> Iterator[World]:
    """The `World` of this process for the duration of a command; see the module docstring."""
    if not launched_by_torchrun():
        if shard_latents != 1:
            raise ConfigError(
                f"--shard-latents {shard_latents} needs several ranks: start the command with "
                "torchrun --nproc_per_node N -m monosemantic ..."
            )
        yield World(device=torch.device(device))
        return
    dev = rank_device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", device_id=dev if dev.type == "cuda" else None)
    try:
        world = _mesh_world(dev, shard_latents)
        yield world
    except BaseException:
        dist.destroy_process_group()  # the other ranks may be gone: no barrier
        raise
    dist.barrier()
    dist.destroy_process_group()


def create_rank_sae(world: World, cfg: SAEConfig, seed: int) -> tuple[SAE, ShardSpec | None]:
    """This rank's SAE: the whole SAE (from the global RNG, seeded by the caller), or its latent
    shard and where the shard lies."""
    if world.latent_size == 1:
        return create_sae(cfg), None
    spec = ShardSpec(cfg, world.latent_rank, world.latent_size, world.latent_group)
    return init_shard(spec, seed), spec


# ---- small JSON values between ranks ----------------------------------------------------------


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_gather_json(obj, group: dist.ProcessGroup | None = None) -> list:
    """Every rank's JSON-able `obj`, in rank order."""
    dev = _collective_device()
    data = torch.tensor(bytearray(json.dumps(obj).encode()), dtype=torch.uint8, device=dev)
    n = dist.get_world_size(group)
    sizes = [torch.zeros(1, dtype=torch.long, device=dev) for _ in range(n)]
    dist.all_gather(sizes, torch.tensor([data.numel()], device=dev), group=group)
    longest = max(int(s) for s in sizes)
    parts = [torch.empty(longest, dtype=torch.uint8, device=dev) for _ in range(n)]
    dist.all_gather(parts, torch.cat([data, data.new_zeros(longest - data.numel())]), group=group)
    return [json.loads(bytes(p[: int(s)].tolist()).decode()) for p, s in zip(parts, sizes)]


def broadcast_json(obj, world: World):
    """The JSON-able `obj` of the world's first rank, on every rank of its group."""
    return all_gather_json(obj, world.group)[0] if world.distributed else obj


def _flatten(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def check_same_config(world: World, config: dict) -> None:
    """Raise ConfigError on every rank if some rank was started with a different configuration."""
    if not world.distributed:
        return
    gathered = [
        {k: tuple(v) if isinstance(v, list) else v for k, v in flat.items()}
        for flat in all_gather_json(_flatten(config))
    ]
    ours = gathered[0]
    for r, theirs in enumerate(gathered[1:], 1):
        diffs = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
        if diffs:
            key = diffs[0]
            raise ConfigError(
                f"ranks disagree on the configuration: {key} is {ours.get(key)!r} on rank 0 but "
                f"{theirs.get(key)!r} on rank {r} ({len(diffs)} setting(s) differ: {', '.join(diffs)}); "
                "start every rank with the same command and files"
            )


# ---- each data-parallel rank's batches -----------------------------------------------------------


class RankRows:
    """This data-parallel rank's rows [r * b, (r + 1) * b) of every global batch [size * b, d] of
    `source`. Every rank reads the same global batches, so the position (`state_dict`) does not
    depend on the number of ranks: a run resumes at any world size."""

    def __init__(self, source, rank: int, size: int):
        self.source, self.rank, self.size = source, rank, size

    def __iter__(self) -> RankRows:
        return self

    def __next__(self) -> Tensor:
        x = next(self.source)
        if x.shape[0] % self.size:
            raise ConfigError(
                f"a batch of {x.shape[0]} rows does not split over {self.size} data-parallel ranks; "
                f"choose a --batch-size divisible by {self.size}"
            )
        b = x.shape[0] // self.size
        return x[self.rank * b : (self.rank + 1) * b]

    def state_dict(self) -> dict:
        return self.source.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.source.load_state_dict(state)


class RankStream:
    """A source that this rank alone reads (its own corpus shard): its position is tagged with the
    rank and the number of ranks, and a position saved under another number is refused."""

    def __init__(self, source, rank: int, size: int):
        self.source, self.rank, self.size = source, rank, size

    def __iter__(self) -> RankStream:
        return self

    def __next__(self) -> Tensor:
        return next(self.source)

    def state_dict(self) -> dict:
        return {"data_rank": self.rank, "data_ranks": self.size, **self.source.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        state = dict(state)
        saved = (state.pop("data_rank", 0), state.pop("data_ranks", 1))
        if saved != (self.rank, self.size):
            raise ConfigError(
                f"this position was saved by data rank {saved[0]} of {saved[1]}, each harvesting its own "
                f"corpus shard; this is data rank {self.rank} of {self.size}: resume with {saved[1]} "
                "data-parallel ranks"
            )
        self.source.load_state_dict(state)


class ReplicaBatches:
    """The batches of one data-parallel replica: read from `source` on the first rank of the latent
    group and broadcast to the others (every latent shard must see the same tokens; the others
    pass source=None and never run the model)."""

    def __init__(self, source, world: World):
        self.source, self.world = source, world
        self.root = dist.get_global_rank(world.latent_group, 0)

    def __iter__(self) -> ReplicaBatches:
        return self

    def __next__(self) -> Tensor:
        dtypes = list(DTYPES.values())
        header = torch.zeros(3, dtype=torch.long, device=self.world.device)  # rows (0: exhausted), cols, dtype
        if self.world.latent_rank == 0:
            x = next(self.source, None)
            if x is not None:
                header = torch.tensor([x.shape[0], x.shape[1], dtypes.index(x.dtype)], device=self.world.device)
        dist.broadcast(header, self.root, group=self.world.latent_group)
        if int(header[0]) == 0:
            raise StopIteration
        if self.world.latent_rank != 0:
            x = torch.empty(int(header[0]), int(header[1]), dtype=dtypes[int(header[2])], device=self.world.device)
        x = x.to(self.world.device).contiguous()
        dist.broadcast(x, self.root, group=self.world.latent_group)
        return x

    def state_dict(self) -> dict:
        return self.source.state_dict() if self.source is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.source is not None:
            self.source.load_state_dict(state)
