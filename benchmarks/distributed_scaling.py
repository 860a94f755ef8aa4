"""Training throughput under torchrun: 1 rank vs 2 ranks, data-parallel and latent-sharded.

Each configuration is a real `monosemantic train-tensors` run (a subprocess, under
`python -m torch.distributed.run` for the ranked ones) on the same random activations, TopK SAE
with d_in=512, k=32, global batch 4096, one CPU thread per rank (OMP_NUM_THREADS=1, --threads 1),
gloo on the CPU. Tokens/s is what the run itself logs in metrics.jsonl at its last step (global
tokens over the wall time of the training loop, initialisation excluded). Also shown: one process
with as many threads as two ranks have cores, the other way to use the same cores.

    python benchmarks/distributed_scaling.py                        # d_sae 4096 and 16384
    python benchmarks/distributed_scaling.py --sizes 16384 --steps 40

On a machine with C cores, 2 ranks can at best double 1 rank's throughput when C >= 2, and only
if nothing else runs there; the table states the cores it used.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

D_IN, K, BATCH = 512, 32, 4096


def run(
    acts: Path, out: Path, d_sae: int, steps: int, *, ranks: int = 0, threads: int = 1, shard: bool = False
) -> float:
    """Tokens/s of one training run; ranks=0: a plain process, no torchrun."""
    cli = [
        "-m",
        "monosemantic",
        "-q",
        "--threads",
        str(threads),
        "train-tensors",
        str(acts),
        "--out",
        str(out),
        "--arch",
        "topk",
        "--k",
        str(K),
        "--d-sae",
        str(d_sae),
        "--batch-size",
        str(BATCH),
        "--total-tokens",
        str(BATCH * steps),
        "--checkpoint-every",
        "0",
        "--log-every",
        str(steps),
    ]
    if shard:
        cli.append("--shard-latents")
    launcher = [sys.executable]
    if ranks:
        launcher += [
            "-m",
            "torch.distributed.run",
            f"--nproc-per-node={ranks}",
            "--rdzv-backend=c10d",
            "--rdzv-endpoint=127.0.0.1:0",
        ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MASTER_ADDR": "127.0.0.1"}
    done = subprocess.run(launcher + cli, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"run failed ({' '.join(launcher + cli)}):\n{done.stderr[-3000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return rows[-1]["tokens_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="4096,16384", help="comma-separated d_sae values")
    parser.add_argument("--steps", type=int, default=30, help="training steps per run")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    load_before = os.getloadavg()[0]  # other work on the machine competes for the same cores
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        acts = Path(tmp) / "acts.npy"
        np.save(acts, np.random.default_rng(0).standard_normal((4 * BATCH, D_IN), dtype=np.float32))
        for d_sae in sizes:
            runs = {
                "1 rank": run(acts, Path(tmp) / f"one_{d_sae}", d_sae, args.steps),
                "2 ranks, data-parallel": run(acts, Path(tmp) / f"ddp_{d_sae}", d_sae, args.steps, ranks=2),
                "2 ranks, latent-sharded": run(
                    acts, Path(tmp) / f"shard_{d_sae}", d_sae, args.steps, ranks=2, shard=True
                ),
                "1 rank, 2 threads": run(acts, Path(tmp) / f"two_threads_{d_sae}", d_sae, args.steps, threads=2),
            }
            results.append((d_sae, runs))
    print(
        f"TopK SAE, d_in={D_IN}, k={K}, global batch {BATCH}, {args.steps} steps per run; one thread per rank; "
        f"this machine has {os.cpu_count()} cores: 1 rank uses 1, 2 ranks use 2; 1-minute load average before "
        f"the runs: {load_before:.2f} (after: {os.getloadavg()[0]:.2f})"
    )
    names = list(results[0][1])
    print("| d_sae | " + " | ".join(f"{n}: tokens/s" for n in names) + " |")
    print("|---|" + "---|" * len(names))
    for d_sae, runs in results:
        base = runs["1 rank"]
        cells = [f"{runs[n]:,.0f}" + ("" if n == "1 rank" else f" ({runs[n] / base:.2f}x)") for n in names]
        print(f"| {d_sae} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
