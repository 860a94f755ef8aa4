"""`monosemantic analyze` throughput vs model + SAE encode alone, on the same tokens.

One run times side by side (interleaved rounds, medians):
- encode only: the same packed batches run through the model up to the hookpoint and the SAE's
  encoder, BOS and padding dropped: the least any analysis must compute;
- analyze:     the whole `analyze` of the run into a fresh directory: statistics, histograms, top and
  quantile contexts, label counting and scoring, logit effects, neighbours, the SQLite and
  safetensors writes.
Bookkeeping overhead = analyze time / encode-only time - 1 (target <= 25%).

    python benchmarks/analyze_throughput.py --run runs/demo
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from monosemantic.analysis.analyze import AnalyzeConfig, analyze
from monosemantic.data.corpora import kept_tokens, pack
from monosemantic.runmodel import RunModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="runs/demo", help="run directory of a model-trained SAE")
    parser.add_argument("--tokens", type=int, default=100_000, help="tokens analysed per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved measurement rounds")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = AnalyzeConfig(tokens=args.tokens)
    src = RunModel.of_run(args.run)
    batches, n = [], 0
    for b in pack(src.corpus.documents(), src.tokenizer, src.seq_len, cfg.batch_tokens):
        batches.append(b)
        n += int(kept_tokens(b, src.tokenizer).sum())
        if n >= args.tokens:
            break

    def encode_only():
        with torch.inference_mode():
            for b in batches:
                src.latents(b.input_ids, b.attention_mask, kept_tokens(b, src.tokenizer))

    def full_analysis():
        with tempfile.TemporaryDirectory() as tmp:
            for name in ("cfg.json", "sae.safetensors", "train_config.json"):
                shutil.copy(Path(args.run) / name, tmp)
            analyze(tmp, cfg, progress=False)

    variants = {"encode_only": encode_only, "analyze": full_analysis}
    times = {name: [] for name in variants}
    encode_only()  # warm-up
    for _ in range(args.rounds):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    overhead = med["analyze"] / med["encode_only"] - 1
    print(
        f"analyze throughput: run={args.run} (d_sae={src.sae.d_sae}, {src.hookpoint}), {n} tokens, "
        f"{args.threads} threads, medians of {args.rounds} interleaved rounds"
    )
    print(f"{'encode only tok/s':>18} {'analyze tok/s':>14} {'overhead':>9}")
    verdict = "ok" if overhead <= 0.25 else "MISSED (target <= 25%)"
    print(f"{n / med['encode_only']:>18.0f} {n / med['analyze']:>14.0f} {overhead:>9.1%}  {verdict}")


if __name__ == "__main__":
    main()
