"""`monosemantic analyze` throughput vs the reading, model and SAE encoder it cannot avoid, on the same tokens.

One run times side by side (interleaved rounds, medians):
- encode only:  batches packed beforehand run through the model up to the hookpoint and the SAE's
  encoder, BOS and padding dropped (the baseline of earlier measurements);
- read+encode:  the same, reading the corpus as the analysis does (generating or loading its
  documents and tokenizing them into packed batches): no analysis can skip reading its tokens, and
  at an early hookpoint (the demo's layers.0.resid.pre: the forward stops after the embedding) this
  reading costs more than the forward and the encoder;
- predicted:    alone, the full-model forwards of the predicted-token set (`analysis/predicted.py`:
  the model's argmax next token on the corpus' first PREDICTED_TOKENS tokens), model work the
  analysis does by default;
- bare:         read+encode and predicted together, with the parallelism the analysis has: reading
  on this thread, the forward to the hookpoint and the encoder one batch ahead on a worker thread,
  the predicted set's forwards on another (on a copy of the model: the capture hooks are the
  model's). All of the analysis' work but its bookkeeping;
- analyze:      the whole `analyze` of the run into a fresh directory: loading the model and the SAE,
  statistics, histograms, top and quantile contexts, label counting and scoring, co-occurrences,
  logit effects, the predicted set, neighbours, the SQLite and safetensors writes (without the
  opt-in --loss-effects).
Bookkeeping overhead = analyze / bare - 1 (target <= 25%); also printed against encode only.

    python benchmarks/analyze_throughput.py --run runs/demo --tokens 200000
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from monosemantic.analysis.analyze import AnalyzeConfig, analyze
from monosemantic.analysis.predicted import PREDICTED_TOKENS, argmax_counts
from monosemantic.data.corpora import kept_tokens, pack
from monosemantic.runmodel import RunModel

TARGET = 0.25


def packed(src: RunModel, cfg: AnalyzeConfig, tokens: int) -> tuple[list, int]:
    batches, n = [], 0
    for b in pack(src.corpus.documents(), src.tokenizer, src.seq_len, cfg.batch_tokens):
        batches.append(b)
        n += int(kept_tokens(b, src.tokenizer).sum())
        if n >= tokens:
            break
    return batches, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="runs/demo", help="run directory of a model-trained SAE")
    parser.add_argument("--tokens", type=int, default=200_000, help="tokens analysed per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved measurement rounds")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = AnalyzeConfig(tokens=args.tokens)
    src = RunModel.of_run(args.run)
    batches, n = packed(src, cfg, args.tokens)

    def encode(bs) -> None:
        with torch.inference_mode():
            for b in bs:
                src.latents(b.input_ids, b.attention_mask, kept_tokens(b, src.tokenizer))

    def predicted() -> None:
        texts = (doc.text for doc in src.corpus.documents() if doc.text.strip())
        argmax_counts(src.model, src.tokenizer, texts, PREDICTED_TOKENS, limit=src.seq_len)

    def full_analysis() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            for name in ("cfg.json", "sae.safetensors", "train_config.json"):
                shutil.copy(Path(args.run) / name, tmp)
            analyze(tmp, cfg, progress=False)

    model_copy = copy.deepcopy(src.model)

    def bare() -> None:
        texts = (doc.text for doc in src.corpus.documents() if doc.text.strip())
        with ThreadPoolExecutor(1) as encoder, ThreadPoolExecutor(1) as other:
            forwards = other.submit(argmax_counts, model_copy, src.tokenizer, texts, PREDICTED_TOKENS, src.seq_len)
            pending, n_read = [], 0
            for b in pack(src.corpus.documents(), src.tokenizer, src.seq_len, cfg.batch_tokens):
                keep = kept_tokens(b, src.tokenizer)
                pending.append(encoder.submit(encode, [b]))
                n_read += int(keep.sum())
                if len(pending) == 2:
                    pending.pop(0).result()
                if n_read >= args.tokens:
                    break
            for f in [*pending, forwards]:
                f.result()

    variants = {
        "encode_only": lambda: encode(batches),
        "read_encode": lambda: encode(packed(src, cfg, args.tokens)[0]),
        "predicted": predicted,
        "bare": bare,
        "analyze": full_analysis,
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    encode(batches)  # warm-up
    for _ in range(args.rounds):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    overhead, old = med["analyze"] / med["bare"] - 1, med["analyze"] / med["encode_only"] - 1
    print(
        f"analyze throughput: run={args.run} (d_sae={src.sae.d_sae}, {src.hookpoint}), {n} tokens, "
        f"{args.threads} threads, medians of {args.rounds} interleaved rounds, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print("  ".join(f"{name} {med[name]:.2f} s" for name in variants))
    print(f"{'bare tok/s':>12} {'analyze tok/s':>14} {'overhead':>9}")
    verdict = "ok" if overhead <= TARGET else "MISSED"
    print(f"{n / med['bare']:>12.0f} {n / med['analyze']:>14.0f} {overhead:>9.1%}  {verdict} (target <= {TARGET:.0%})")
    print(f"(against encode only, batches packed beforehand: {n / med['encode_only']:.0f} tok/s, overhead {old:.1%})")


if __name__ == "__main__":
    main()
