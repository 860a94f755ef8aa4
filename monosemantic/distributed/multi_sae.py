"""Several SAEs, one per hookpoint, trained at once from one model forward.

    monosemantic train --model DIR --hookpoint 'layers.*.mlp.neurons' --out RUNS ...
        RUNS/hookpoints.json            the shared configuration (for --resume)
        RUNS/layers.0.mlp.neurons/      one run directory per hookpoint
        RUNS/layers.1.mlp.neurons/

The activation stream captures every hookpoint in one forward and yields their concatenation
[b, d_1 + ... + d_H]. Under torchrun every rank harvests its own corpus shard, and the SAEs are
spread over the W ranks (`assign`): with H >= W, rank r trains hookpoints r, r + W, ... alone; with
H < W (W a multiple of H), hookpoint h is trained data-parallel by ranks h, h + H, ... After each
forward one all-to-all (`Exchange`) hands every SAE the rows of the global batch (the ranks' batches
side by side, in rank order) that it trains on, so each sees the tokens it would see if one process
had harvested the whole batch. `fit_together` steps the trainers in lockstep.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.distributed as dist
from torch import Tensor

from monosemantic.config import ConfigError
from monosemantic.distributed.world import World
from monosemantic.sae.base import SAE
from monosemantic.train.checkpoint import checkpoint_dirs
from monosemantic.train.trainer import SCALE_FLOATS, SCALE_TOKENS, Trainer, TrainingError


def assign(n_hooks: int, world_size: int) -> list[list[int]]:
    """The ranks that train each hookpoint; see the module docstring."""
    if n_hooks >= world_size:
        return [[h % world_size] for h in range(n_hooks)]
    if world_size % n_hooks:
        raise ConfigError(
            f"{n_hooks} hookpoints cannot be spread evenly over {world_size} ranks: use a number of "
            f"ranks that is a multiple of {n_hooks}, or at most {n_hooks} ranks"
        )
    return [list(range(h, world_size, n_hooks)) for h in range(n_hooks)]


def sources(owners: list[int], index: int, world_size: int) -> range:
    """Ranks whose rows of the global batch go to the `index`-th owner of a hookpoint."""
    per_owner = world_size // len(owners)
    return range(index * per_owner, (index + 1) * per_owner)


class Exchange:
    """Cuts this rank's batch [b, sum(widths)] into the batches of the SAEs it trains ({hookpoint
    index: [rows, d_h]}) with one all-to-all over the world (a collective: every rank, every step)."""

    def __init__(self, widths: list[int], owners: list[list[int]], rank: int, world_size: int):
        self.widths, self.rank, self.world_size = widths, rank, world_size
        self.offsets = [sum(widths[:h]) for h in range(len(widths))]
        # send[r] / recv[s]: hookpoints whose columns go to rank r / come from rank s, in order
        self.send: list[list[int]] = [[] for _ in range(world_size)]
        self.recv: list[list[int]] = [[] for _ in range(world_size)]
        self.mine = [h for h, ranks in enumerate(owners) if rank in ranks]
        for h, ranks in enumerate(owners):
            for i, r in enumerate(ranks):
                for s in sources(ranks, i, world_size):
                    if s == rank:
                        self.send[r].append(h)
                    if r == rank:
                        self.recv[s].append(h)

    def __call__(self, x: Tensor) -> dict[int, Tensor]:
        b = x.shape[0]
        cols = lambda h: x[:, self.offsets[h] : self.offsets[h] + self.widths[h]]  # noqa: E731
        if self.world_size == 1:
            return {h: cols(h) for h in self.mine}
        out_sizes = [b * sum(self.widths[h] for h in hs) for hs in self.recv]
        send = [cols(h).reshape(-1) for hs in self.send for h in hs]
        out = x.new_empty(sum(out_sizes))
        dist.all_to_all_single(
            out,
            torch.cat(send) if send else x.new_empty(0),
            out_sizes,
            [b * sum(self.widths[h] for h in hs) for hs in self.send],
        )
        parts: dict[int, list[Tensor]] = {h: [] for h in self.mine}
        for piece, hs in zip(out.split(out_sizes), self.recv):
            for h, block in zip(hs, piece.split([b * self.widths[h] for h in hs])):
                parts[h].append(block.view(b, self.widths[h]))
        return {h: torch.cat(blocks) for h, blocks in parts.items()}


def hookpoint_worlds(world: World, owners: list[list[int]]) -> dict[int, World]:
    """The `World` of each SAE this rank trains: a process group of its owners (every rank creates
    every group, in the same order, as torch.distributed requires), or one process."""
    worlds = {}
    for h, ranks in enumerate(owners):
        group = dist.new_group(ranks) if world.distributed and len(ranks) > 1 else None
        if world.rank not in ranks:
            continue
        if group is None:
            worlds[h] = World(device=world.device)
        else:
            i = ranks.index(world.rank)
            worlds[h] = World(
                device=world.device,
                distributed=True,
                rank=world.rank,
                size=len(ranks),
                group=group,
                writer_rank=ranks[0],
                data_rank=i,
                data_size=len(ranks),
                data_group=group,
            )
    return worlds


def init_batches(widths: list[int], batch_size: int) -> int:
    """Batches the trainers read to initialise (`Trainer._initialise`), the most any SAE needs."""
    return max(max(1, -(-min(SCALE_TOKENS, SCALE_FLOATS // d) // batch_size)) for d in widths)


def _next(stream: Iterator[Tensor], step: int) -> Tensor:
    try:
        return next(stream)
    except StopIteration:
        raise TrainingError(f"the data ran out at step {step}; provide more data or lower total_tokens") from None


def common_step(trainers: dict[int, Trainer], world: World) -> int:
    """The newest step that every SAE (of every rank) has a checkpoint of: a kill between two
    SAEs' checkpoints leaves them one apart, and they must resume together."""
    newest = min(
        int(dirs[-1].name.removeprefix("step_")) if (dirs := checkpoint_dirs(t.run_dir)) else 0
        for t in trainers.values()
    )
    if world.distributed:
        box = torch.tensor([newest], device=world.device)
        dist.all_reduce(box, op=dist.ReduceOp.MIN)
        newest = int(box)
    if newest == 0:
        raise ConfigError("some SAE of this run has no checkpoint to resume from")
    return newest


def fit_together(
    trainers: dict[int, Trainer],
    stream,
    exchange: Callable[[Tensor], dict[int, Tensor]],
    world: World,
    *,
    resume: bool = False,
    step: int | None = None,
    n_init: int = 1,
    started: Callable[[], None] | None = None,
) -> dict[int, SAE | None]:
    """Train every SAE of this rank on its part (`exchange`: an `Exchange`, or any batch -> {SAE:
    rows} map) of each batch of `stream` (this rank's source, with `state_dict`), in lockstep;
    returns the exported SAEs (see `Trainer.export`). A resume goes on from the checkpoints of `step`,
    by default the newest that every SAE has. `started` is called once every trainer has read and
    checked its first batches, before the first step."""
    if resume:
        step = common_step(trainers, world) if step is None else step
        for t in trainers.values():
            t.setup(None, resume=True, step=step)
        stream.load_state_dict(next(iter(trainers.values())).state.data_state)
    else:
        start = stream.state_dict()
        first = [exchange(_next(stream, 0)) for _ in range(n_init)]
        stream.load_state_dict(start)
        for h, t in trainers.items():
            t.setup(iter([parts[h] for parts in first]))
    if started is not None:
        started()
    for t in trainers.values():
        t.start()
    lead = next(iter(trainers.values()))
    while not lead.done:
        parts = exchange(_next(stream, lead.state.step))
        for h, t in trainers.items():
            t.advance(parts[h], stream)
    return {h: t.finish(stream) for h, t in trainers.items()}
