"""Training throughput of our TopK SAE beside the peers' own training steps, on the same batches.

For d_in=512, k=32, batch 4096 and each d_sae, one run measures side by side, interleaved in rounds
(median step time, so that machine noise hits every library alike), each library's own step with
its default settings:

- ours: `Trainer.step` (fast path, fp32 master weights, the default matmul dtype "auto": bf16
  selection where the CPU has native bf16), and "ours fp32" (`--matmul-dtype float32`) for reference;
- sparsify 1.3.3 `SparseCoder`, as its `Trainer.fit` steps it: decoder renormalised, forward, FVU
  (+ multi-TopK term, 0 by default) backward, gradient parallel to the decoder removed, optimiser step.
  Its default optimiser is signum (`ScheduleFreeWrapper(SignSGD)`); Adam is measured too;
- SAELens 6.54 `TopKTrainingSAE`, as its `SAETrainer._train_step` steps it: `training_forward_pass`,
  backward, gradient-norm clipping at 1, Adam step.

It prints tokens/s for each, our speed-up over the fastest peer (target >= 2.0x at every width:
"ok"/"MISSED") and each one's peak memory (max RSS of a separate process that builds it and runs
three steps; its RSS before building is subtracted). The peers come with
the `peers` extra (`pip install -e .[peers] -c constraints.txt`); a peer that does not import is
reported as missing.

    python benchmarks/peer_throughput.py                      # d_sae 4096, 16384, 65536
    python benchmarks/peer_throughput.py --sizes 4096 --rounds 2 --no-memory
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch

from monosemantic.sae import SAEConfig, create_sae
from monosemantic.train.trainer import TrainConfig, Trainer

D_IN, K, BATCH = 512, 32, 4096
TARGET = 2.0
Step = Callable[[torch.Tensor], None]


def ours(d_sae: int, matmul_dtype: str = "auto") -> Step:
    sae = create_sae(SAEConfig(arch="topk", d_in=D_IN, d_sae=d_sae, k=K))
    cfg = TrainConfig(batch_size=BATCH, total_tokens=BATCH * 10**6, matmul_dtype=matmul_dtype)  # type: ignore[arg-type]
    trainer = Trainer(sae, cfg, progress=False)
    return trainer.step


def sparsify(d_sae: int, optimizer: str) -> Step:
    from schedulefree import ScheduleFreeWrapper
    from sparsify import SparseCoder, SparseCoderConfig
    from sparsify.sign_sgd import SignSGD

    sae = SparseCoder(D_IN, SparseCoderConfig(num_latents=d_sae, k=K))
    lr = 2e-4 / (d_sae / 2**14) ** 0.5  # sparsify's default learning rate for this width
    if optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(sae.parameters(), lr=lr)
    else:
        opt = ScheduleFreeWrapper(SignSGD(sae.parameters(), lr=lr), momentum=0.95)
        opt.train()

    def step(x: torch.Tensor) -> None:
        sae.set_decoder_norm_to_unit_norm()
        out = sae(x)
        (out.fvu + out.multi_topk_fvu / 8).backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad()

    return step


def saelens(d_sae: int) -> Step:
    from sae_lens.saes.sae import TrainStepInput
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=D_IN, d_sae=d_sae, k=K, device="cpu"))
    opt = torch.optim.Adam(sae.parameters(), lr=3e-4, betas=(0.9, 0.999))  # SAETrainer's defaults
    since_fired = torch.zeros(d_sae)

    def step(x: torch.Tensor) -> None:
        sae.train()
        out = sae.training_forward_pass(
            TrainStepInput(
                sae_in=x,
                coefficients={},
                dead_neuron_mask=since_fired > 1000,
                n_training_steps=0,
                is_logging_step=False,
            )
        )
        with torch.no_grad():  # SAETrainer's firing bookkeeping
            fired = out.feature_acts.bool().float().sum(-2).bool()
            since_fired.add_(1)
            since_fired[fired] = 0
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        opt.step()
        opt.zero_grad()

    return step


LIBRARIES: dict[str, Callable[[int], Step]] = {
    "ours": ours,  # the default: matmul_dtype "auto"
    "ours fp32": lambda d: ours(d, "float32"),  # --matmul-dtype float32, for reference (not a peer)
    "sparsify signum": lambda d: sparsify(d, "signum"),
    "sparsify adam": lambda d: sparsify(d, "adam"),
    "saelens topk": saelens,
}


def build(name: str, d_sae: int) -> Step | str:
    """The library's step, or why it is missing."""
    torch.manual_seed(0)
    try:
        return LIBRARIES[name](d_sae)
    except ImportError as e:
        return f"not installed ({e.name}): pip install -e .[peers] -c constraints.txt"


def measure(d_sae: int, rounds: int, steps: int, names: list[str] | None = None) -> dict[str, float | str]:
    batches = [torch.randn(BATCH, D_IN) for _ in range(4)]
    built = {name: build(name, d_sae) for name in names or LIBRARIES}
    times: dict[str, list[float]] = {name: [] for name, s in built.items() if callable(s)}
    for name in times:  # warm-up: allocations, optimiser state, first-touch pages
        for x in batches[:2]:
            built[name](x)  # type: ignore[operator]
    for r in range(rounds):
        for name in times:
            for i in range(steps):
                x = batches[(r * steps + i) % len(batches)]
                start = time.perf_counter()
                built[name](x)  # type: ignore[operator]
                times[name].append(time.perf_counter() - start)
    row: dict[str, float | str] = {name: s for name, s in built.items() if isinstance(s, str)}
    row |= {name: BATCH / statistics.median(ts) for name, ts in times.items()}
    return row


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def peak_in_process(name: str, d_sae: int) -> float:
    """MB by which this process's peak RSS grows while it builds `name` and runs three steps (the
    peak is reset first through /proc/self/clear_refs, so imports' transient peaks do not count)."""
    x = torch.randn(BATCH, D_IN)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM (peak RSS) to the current RSS
    base = _status_kb("VmRSS")
    step = build(name, d_sae)
    for _ in range(3):
        step(x)  # type: ignore[operator]
    return (_status_kb("VmHWM") - base) / 1024


def peak_memory_mb(name: str, d_sae: int, threads: int) -> float:
    """`peak_in_process` in a fresh process."""
    code = (
        "import sys, torch; sys.path.insert(0, 'benchmarks'); import peer_throughput as p;"
        f"torch.set_num_threads({threads}); print(p.peak_in_process({name!r}, {d_sae}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ)
    return float(out.stdout.split()[-1])


def print_table(rows: list[dict], memory: dict[tuple[int, str], float]) -> None:
    load = os.getloadavg()
    print(f"TopK SAE training, d_in={D_IN}, k={K}, batch={BATCH}, torch threads={torch.get_num_threads()}, ", end="")
    print(f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    default = TrainConfig()
    print(f"ours = the default settings; its matmul dtype here: {default.matmul_dtype} ({default.matmul_dtype_reason})")
    print(f"{'d_sae':>6} {'library':<16} {'tokens/s':>10} {'peak MB':>8}")
    for row in rows:
        d_sae = row["d_sae"]
        for name in LIBRARIES:
            if name not in row:
                continue
            value = row[name]
            mem = f"{memory[(d_sae, name)]:8.0f}" if (d_sae, name) in memory else f"{'-':>8}"
            shown = f"{value:>10.0f}" if isinstance(value, float) else f"{'-':>10}  {value}"
            print(f"{d_sae:>6} {name:<16} {shown} {mem}")
        peers = {n: v for n, v in row.items() if not n.startswith("ours") and n != "d_sae" and isinstance(v, float)}
        if peers and isinstance(row["ours"], float):
            best = max(peers, key=peers.__getitem__)
            ratio = row["ours"] / peers[best]
            verdict = "ok" if ratio >= TARGET else "MISSED"
            print(f"{'':>6} ours / fastest peer ({best}): {ratio:.2f}x (target >= {TARGET}x)  {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="4096,16384,65536", help="comma-separated d_sae values")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved measurement rounds")
    parser.add_argument("--steps", type=int, default=3, help="steps per library per round")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    parser.add_argument(
        "--libraries", default=",".join(LIBRARIES), help="comma-separated subset of: " + ", ".join(LIBRARIES)
    )
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    names = args.libraries.split(",")
    if "ours" not in names or not set(names) <= set(LIBRARIES):
        parser.error(f"--libraries must include 'ours' and name only: {', '.join(LIBRARIES)}")
    rows = [{"d_sae": d, **measure(d, args.rounds, args.steps, names)} for d in sizes]
    memory = {}
    if not args.no_memory:
        memory = {
            (d, n): peak_memory_mb(n, d, args.threads)
            for d, row in zip(sizes, rows)
            for n in names
            if isinstance(row[n], float)
        }
    print_table(rows, memory)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "memory_mb": {f"{d} {n}": v for (d, n), v in memory.items()}}, f, indent=2)


if __name__ == "__main__":
    main()
