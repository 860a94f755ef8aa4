"""Activation harvesting throughput vs the bare model forward on the same batches.

For each hookpoint, one run times side by side (interleaved rounds, medians):
- full forward:   model(input_ids) on pre-packed batches, logits and all;
- forward to hook: the same batches, run only as far as the hookpoint (what harvesting must run);
- harvest:        `ActivationStream` producing the same tokens' activations: tokenizing and packing
                  the documents, the forward to the hookpoint, dropping BOS/padding, provenance,
                  and the shuffle of the chunk.
Overhead = harvest time / forward-to-hook time - 1 (target <= 15%); tokens/s counts all tokens fed
to the model.

    python benchmarks/harvest_throughput.py                      # the built-in model
    python benchmarks/harvest_throughput.py --model path/to/hf_model --hookpoints layers.6.mlp.neurons
"""

from __future__ import annotations

import argparse
import statistics
import time
from itertools import islice

import torch

from monosemantic.data.corpora import kept_tokens, pack
from monosemantic.data.stream import ActivationStream, HarvestConfig
from monosemantic.hooks import run_and_capture
from monosemantic.mathlm.corpus import MathCorpus
from monosemantic.models import load_model


def measure(model, tok, hookpoint: str, n_batches: int, batch_tokens: int, seq_len: int, rounds: int) -> dict:
    batches = list(islice(pack(MathCorpus("train").documents(), tok, seq_len, batch_tokens), n_batches))
    fed = sum(b.input_ids.numel() for b in batches)
    kept = sum(int(kept_tokens(b, tok).sum()) for b in batches)
    cfg = HarvestConfig(seq_len=seq_len, batch_tokens=batch_tokens, chunk_tokens=kept)

    def full():
        for b in batches:
            model(input_ids=b.input_ids, attention_mask=b.attention_mask)

    def to_hook():
        for b in batches:
            run_and_capture(model, b.input_ids, hookpoint, b.attention_mask)

    def harvest():
        stream = ActivationStream(model, tok, hookpoint, MathCorpus("train"), 1, cfg)
        acts, prov = next(stream.chunks())
        assert acts.shape[0] == kept and prov.shape == (kept, 3)

    variants = {"full_forward": full, "forward_to_hook": to_hook, "harvest": harvest}
    times = {name: [] for name in variants}
    with torch.inference_mode():
        for fn in variants.values():  # warm-up
            fn()
        for _ in range(rounds):
            for name, fn in variants.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    return {
        "hookpoint": hookpoint,
        "tokens_fed": fed,
        "tokens_kept": kept,
        **{f"{name}_tokens_per_s": fed / t for name, t in med.items()},
        "overhead_vs_forward_to_hook": med["harvest"] / med["forward_to_hook"] - 1,
        "overhead_vs_full_forward": med["harvest"] / med["full_forward"] - 1,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="builtin", help="model directory, or 'builtin'")
    parser.add_argument(
        "--hookpoints", default="layers.4.mlp.neurons,layers.7.resid.post", help="comma-separated hookpoints"
    )
    parser.add_argument("--batches", type=int, default=24, help="batches per measurement")
    parser.add_argument("--batch-tokens", type=int, default=4096, help="tokens per batch (rows x width)")
    parser.add_argument("--seq-len", type=int, default=64, help="longest row")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved measurement rounds")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load_model(args.model)
    print(
        f"harvest throughput: model={args.model}, {args.batches} batches of <= {args.batch_tokens} tokens, "
        f"{args.threads} threads, medians of {args.rounds} interleaved rounds"
    )
    print(
        f"{'hookpoint':<22} {'full fwd tok/s':>14} {'fwd-to-hook':>12} {'harvest':>10} "
        f"{'overhead vs fwd-to-hook':>24} {'vs full fwd':>12}"
    )
    for hookpoint in args.hookpoints.split(","):
        r = measure(model, tok, hookpoint, args.batches, args.batch_tokens, args.seq_len, args.rounds)
        verdict = "ok" if r["overhead_vs_forward_to_hook"] <= 0.15 else "MISSED (target <= 15%)"
        print(
            f"{hookpoint:<22} {r['full_forward_tokens_per_s']:>14.0f} {r['forward_to_hook_tokens_per_s']:>12.0f} "
            f"{r['harvest_tokens_per_s']:>10.0f} {r['overhead_vs_forward_to_hook']:>23.1%} "
            f"{r['overhead_vs_full_forward']:>12.1%}  {verdict}"
        )


if __name__ == "__main__":
    main()
