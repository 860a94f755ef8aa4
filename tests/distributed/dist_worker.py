"""Scenarios that tests/distributed/test_distributed.py runs under torchrun, one process per rank:

    python -m torch.distributed.run --nproc-per-node 2 ... tests/dist_worker.py SCENARIO OUT [ARGS...]

shards    a random full TopK SAE, split over the ranks: the sharded top k of random pre-activations,
          the sharded reconstruction of random inputs, and the SAE gathered back and saved; rank 0
          writes them (and the full SAE) to OUT for the test to compare in one process.
disagree  the CLI with one flag that differs on rank 1 (ARGS: the CLI arguments).
"""

import os
import sys
from pathlib import Path

import safetensors.torch
import torch

from monosemantic.distributed.sharded import ShardSpec, gather_sae, shard_sae, sharded_reconstruct, sharded_topk
from monosemantic.distributed.world import session
from monosemantic.sae import SAEConfig
from monosemantic.sae.topk import TopKSAE

D_IN, D_SAE, K, ROWS = 8, 64, 5, 32


def full_sae() -> TopKSAE:
    torch.manual_seed(0)
    sae = TopKSAE(SAEConfig(arch="topk", d_in=D_IN, d_sae=D_SAE, k=K))
    with torch.no_grad():  # biases that matter, so that a wrong offset or a lost b_dec shows
        sae.b_enc.copy_(0.1 * torch.randn(D_SAE))
        sae.b_dec.copy_(torch.randn(D_IN))
    return sae


def shards(out: Path) -> None:
    with session("cpu", shard_latents=0) as world:
        full = full_sae()
        spec = ShardSpec(full.cfg, world.latent_rank, world.latent_size, world.latent_group)
        g = torch.Generator().manual_seed(1)
        pre, x = torch.randn(ROWS, D_SAE, generator=g), 3 * torch.randn(ROWS, D_IN, generator=g)
        vals, ids = sharded_topk(pre[:, spec.lo : spec.hi], K, spec)
        x_hat = sharded_reconstruct(shard_sae(full, spec), x, spec)
        gathered = gather_sae(shard_sae(full, spec), spec)
        safetensors.torch.save_file({"vals": vals, "ids": ids, "x_hat": x_hat}, out / f"rank{world.rank}.safetensors")
        if world.rank == 0:
            gathered.save(out / "gathered")
            full.save(out / "full")
            safetensors.torch.save_file({"pre": pre, "x": x}, out / "inputs.safetensors")


def disagree(out: Path, argv: list[str]) -> int:
    from monosemantic.cli.main import main

    if os.environ["RANK"] == "1":
        argv = [*argv, "--lr", "0.002"]
    return main([*argv, "--out", str(out)])


if __name__ == "__main__":
    scenario, out = sys.argv[1], Path(sys.argv[2])
    if scenario == "shards":
        shards(out)
    elif scenario == "disagree":
        sys.exit(disagree(out, sys.argv[3:]))
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")
