"""A million latents on 2 cores: the routed (Switch) TopK SAE at 1,048,576 latents against a dense
16,384-latent TopK SAE, on the built-in model's residual stream (layers.3.resid.post, d_in 192).

Both train with the trainer's own step (`Trainer.step`: forward, backward, Adam (lazy Adam for the
routed SAE), decoder renormalisation) on the same real activations, k 32, batch 4096. Each variant
runs in its own process (so that its peak memory is its own), alternating, --rounds times; medians.
Printed: tokens/s, peak RSS, and the training state that cannot be avoided (parameters + optimiser
state + one batch), with the targets of issue 20: routed >= 50% of the dense tokens/s, and its peak
memory <= 1.2x that state (read so: 1M latents cannot fit in 1.2x of a 16k SAE's memory; the RSS
includes the interpreter and torch, some 300 MB); the load average is printed before and after.

    python benchmarks/routed_throughput.py                  # 1M latents in 64 experts vs dense 16k
    python benchmarks/routed_throughput.py --experts 128 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HOOKPOINT, K, BATCH = "layers.3.resid.post", 32, 4096


def harvest(path: Path, n_batches: int) -> None:
    """Real activations of the built-in model, saved for the workers."""
    from monosemantic.data.stream import ActivationStream, HarvestConfig
    from monosemantic.mathlm.corpus import MathCorpus
    from monosemantic.models import load_model

    model, tok = load_model("builtin")
    stream = ActivationStream(model, tok, HOOKPOINT, MathCorpus("train"), BATCH, HarvestConfig())
    with torch.inference_mode():
        acts = torch.cat([next(stream) for _ in range(n_batches)])
    torch.save((acts * acts.shape[1] ** 0.5 / acts.norm(dim=1).mean()).clone(), path)  # E||x|| = sqrt(d_in)


def worker(variant: str, acts_path: str, d_sae: int, experts: int, steps: int) -> dict:
    """Train `steps` steps (after one warm-up) in this process; tokens/s, peak RSS, state size."""
    from monosemantic.sae import SAEConfig, create_sae
    from monosemantic.train.trainer import TrainConfig, Trainer

    acts = torch.load(acts_path)
    batches = acts.split(BATCH)
    torch.manual_seed(0)
    extra = {"experts": experts} if variant == "routed" else {}
    cfg = SAEConfig(arch=variant, d_in=acts.shape[1], d_sae=d_sae, k=K, **extra)
    trainer = Trainer(create_sae(cfg), TrainConfig(batch_size=BATCH, total_tokens=BATCH * 10**6), progress=False)
    trainer.step(batches[0])
    start = time.perf_counter()
    for i in range(steps):
        trainer.step(batches[i % len(batches)])
    seconds = time.perf_counter() - start
    tensors = list(trainer.sae.parameters())
    tensors += [t for s in trainer.optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
    state = sum(t.numel() * t.element_size() for t in tensors) + batches[0].numel() * 4
    return {
        "tokens_per_s": steps * BATCH / seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "state_mb": state / 2**20,
    }


def run_worker(variant: str, acts: Path, args: argparse.Namespace) -> dict:
    d_sae = args.routed_latents if variant == "routed" else args.dense_latents
    cmd = [sys.executable, __file__, "--worker", variant, "--acts", str(acts), "--steps", str(args.steps)]
    cmd += ["--experts", str(args.experts), "--d-sae", str(d_sae), "--threads", str(args.threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--routed-latents", type=int, default=1 << 20, help="latents of the routed SAE")
    parser.add_argument("--experts", type=int, default=64, help="experts of the routed SAE")
    parser.add_argument("--dense-latents", type=int, default=16384, help="latents of the dense TopK SAE")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating measurements of each variant")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--worker", choices=["topk", "routed"], help=argparse.SUPPRESS)
    parser.add_argument("--acts", help=argparse.SUPPRESS)
    parser.add_argument("--d-sae", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(worker(args.worker, args.acts, args.d_sae, args.experts, args.steps)))
        return
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        acts = Path(tmp) / "acts.pt"
        harvest(acts, 4)
        results: dict[str, list[dict]] = {"topk": [], "routed": []}
        for _ in range(args.rounds):
            for variant in results:
                results[variant].append(run_worker(variant, acts, args))
    for i, (dense, routed) in enumerate(zip(results["topk"], results["routed"])):  # the spread: load moves them
        ratio = routed["tokens_per_s"] / dense["tokens_per_s"]
        print(
            f"  round {i}: dense {dense['tokens_per_s']:.0f}, routed {routed['tokens_per_s']:.0f} tok/s = {ratio:.1%}"
        )
    med = {v: {key: statistics.median(r[key] for r in rs) for key in rs[0]} for v, rs in results.items()}
    print(
        f"routed {args.routed_latents} latents / {args.experts} experts vs dense TopK {args.dense_latents}, d_in 192 "
        f"({HOOKPOINT}), k {K}, batch {BATCH}, {args.threads} threads; medians of {args.rounds} rounds; "
        f"load average {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after"
    )
    for v, m in med.items():
        rss, state = m["peak_rss_mb"], m["state_mb"]
        print(f"  {v:<7} {m['tokens_per_s']:>8.0f} tok/s  peak RSS {rss:>7.0f} MB  state {state:>7.0f} MB")
    speed = med["routed"]["tokens_per_s"] / med["topk"]["tokens_per_s"]
    print(f"  speed routed / dense = {speed:.1%} {'ok' if speed >= 0.5 else 'MISSED'} (target >= 50%)")
    memory = med["routed"]["peak_rss_mb"] / med["routed"]["state_mb"]
    print(f"  routed peak RSS / state = {memory:.2f}x {'ok' if memory <= 1.2 else 'MISSED'} (target <= 1.2x)")


if __name__ == "__main__":
    main()
