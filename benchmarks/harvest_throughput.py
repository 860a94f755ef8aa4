"""Activation harvesting throughput vs the bare model forward on the same batches.

For each hookpoint, one run times side by side (interleaved rounds, medians):
- full forward:   model(input_ids) on pre-packed batches, logits and all;
- forward to hook: the same batches, run only as far as the hookpoint (what harvesting must run);
- harvest:        `ActivationStream` producing the same tokens' activations: tokenizing and packing
                  the documents, the forward to the hookpoint, dropping BOS/padding, provenance,
                  and the shuffle of the chunk.
Overhead = harvest time / forward-to-hook time - 1 (target <= 15%); tokens/s counts all tokens fed
to the model. The harvest of the built-in corpus reads its packed batches from a disk cache
(`data/pack_cache.py`), so it is timed three ways: warm (the cache holds them: every run after the
first on the same corpus and settings), cold (an empty cache each round: generating the corpus,
tokenizing, packing whole segments of 32 batches and writing them) and uncached (cache off, as
before the cache). The benchmark's cache is a temporary folder unless $MONOSEMANTIC_PACK_CACHE is set.
(The harvest's forward already stops at the deepest hookpoint: hooks.capture(stop=True).)

Then, end to end: the `train` command's own code (`train_on_model`, the demo's SAE: layers.0.resid.pre,
expansion 4, k 8, batch 4096) for --e2e-tokens tokens, its rate from the run's timing.json (wall time
of the fit, initialisation included) against min(bare harvest rate, bare SAE-step rate), both
measured here on the same settings (the bare step: the run's own training configuration and number
of steps, so AuxK works as it does in the run once latents fall dead): target >= 70% (the two
overlap, or the slower one dominates). `train` runs twice: first with the packed-token cache as the
harvest measurements left it (the rest of its batches generated and cached: a first run), then warm.
Each run's time breakdown (harvest, SAE step, checkpoint, logging, other) is printed beside it.

    python benchmarks/harvest_throughput.py                      # the built-in model
    python benchmarks/harvest_throughput.py --model path/to/hf_model --hookpoints layers.6.mlp.neurons
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from itertools import islice
from pathlib import Path

import torch

from monosemantic.data.corpora import kept_tokens, pack
from monosemantic.data.stream import ActivationStream, HarvestConfig
from monosemantic.hooks import run_and_capture
from monosemantic.mathlm.corpus import MathCorpus
from monosemantic.models import load_model
from monosemantic.sae import SAEConfig, create_sae
from monosemantic.train.config import DataConfig, RunConfig, SAEOptions
from monosemantic.train.pipeline import train_on_model
from monosemantic.train.timing import TIMING_FILE
from monosemantic.train.trainer import TrainConfig, Trainer

PACK_CACHE = "MONOSEMANTIC_PACK_CACHE"
E2E = {"hookpoint": "layers.0.resid.pre", "expansion_factor": 4, "k": 8, "batch_size": 4096}  # `make demo`'s SAE


def measure(model, tok, hookpoint: str, n_batches: int, batch_tokens: int, seq_len: int, rounds: int) -> dict:
    read = [0]  # documents pack reads to fill n_batches (whole pools of rows)

    def counted():
        for doc in MathCorpus("train").documents():
            read[0] += 1
            yield doc

    batches = list(islice(pack(counted(), tok, seq_len, batch_tokens), n_batches))
    fed = sum(b.input_ids.numel() for b in batches)
    kept = sum(int(kept_tokens(b, tok).sum()) for b in batches)
    cfg = HarvestConfig(seq_len=seq_len, batch_tokens=batch_tokens, chunk_tokens=kept)

    def full():
        for b in batches:
            model(input_ids=b.input_ids, attention_mask=b.attention_mask)

    def to_hook():
        for b in batches:
            run_and_capture(model, b.input_ids, hookpoint, b.attention_mask)

    def harvest():  # warm: the cache filled by the warm-up round
        stream = ActivationStream(model, tok, hookpoint, MathCorpus("train"), 1, cfg)
        acts, prov = next(stream.chunks())
        assert acts.shape[0] == kept and prov.shape == (kept, 3)

    def harvest_with(setting: str):
        saved = os.environ.get(PACK_CACHE)
        os.environ[PACK_CACHE] = setting
        try:
            harvest()
        finally:
            os.environ[PACK_CACHE] = saved or ""

    def harvest_cold():
        folder = tempfile.mkdtemp(prefix="pack-cold-")
        try:
            harvest_with(folder)
        finally:
            shutil.rmtree(folder)

    def corpus():  # the documents alone: the built-in corpus generates each one
        list(islice(MathCorpus("train").documents(), read[0]))

    def packing():  # documents -> tokenized, packed batches, no model
        list(islice(pack(MathCorpus("train").documents(), tok, seq_len, batch_tokens), n_batches))

    variants = {
        "full_forward": full,
        "forward_to_hook": to_hook,
        "harvest": harvest,
        "harvest_cold": harvest_cold,
        "harvest_uncached": lambda: harvest_with("off"),
        "corpus": corpus,
        "corpus_and_packing": packing,
    }
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
        "overhead_cold": med["harvest_cold"] / med["forward_to_hook"] - 1,
        "overhead_uncached": med["harvest_uncached"] / med["forward_to_hook"] - 1,
        "overhead_vs_full_forward": med["harvest"] / med["full_forward"] - 1,
        "seconds": med,
    }


def bare_rates(model, tok, n_batches: int, tokens: int) -> tuple[float, float]:
    """Tokens/s of our harvest alone (the stream `train` reads, without training) and of the SAE step
    alone (on those activations, already in memory, cycled), at the E2E settings: the configuration
    `train` gets for `tokens` tokens and as many steps, so that the step does what it does there (AuxK
    once latents fall dead: the dead window of a short run is a quarter of its tokens)."""
    stream = ActivationStream(model, tok, E2E["hookpoint"], MathCorpus("train"), E2E["batch_size"], HarvestConfig())
    start = time.perf_counter()
    with torch.inference_mode():
        batches = [next(stream) for _ in range(n_batches)]
    harvest = n_batches * E2E["batch_size"] / (time.perf_counter() - start)
    d_in = batches[0].shape[1]
    torch.manual_seed(0)
    sae = create_sae(SAEConfig(arch="topk", d_in=d_in, d_sae=E2E["expansion_factor"] * d_in, k=E2E["k"]))
    trainer = Trainer(sae, TrainConfig(batch_size=E2E["batch_size"], total_tokens=tokens), progress=False)
    scale = d_in**0.5 / torch.cat(batches).norm(dim=1).mean().item()
    scaled = [x * scale for x in batches]
    steps = tokens // E2E["batch_size"]
    start = time.perf_counter()
    for i in range(steps):
        trainer.step(scaled[i % n_batches])
    return harvest, steps * E2E["batch_size"] / (time.perf_counter() - start)


def end_to_end(tokens: int) -> dict:
    """The `train` command's code on the built-in model; its timing.json."""
    sae = SAEOptions(arch="topk", expansion_factor=E2E["expansion_factor"], k=E2E["k"])
    train = TrainConfig(batch_size=E2E["batch_size"], total_tokens=tokens)
    with tempfile.TemporaryDirectory() as tmp:
        run = RunConfig(DataConfig(hookpoint=E2E["hookpoint"]), sae=sae, train=train)
        train_on_model(Path(tmp) / "run", run, progress=False)
        return json.loads((Path(tmp) / "run" / TIMING_FILE).read_text())


def print_end_to_end(model, tok, tokens: int, n_batches: int) -> None:
    """`train` twice: first reading the packed-token cache as this benchmark left it (the batches
    past those measured above are generated: a first run), then warm (every later run)."""
    harvest, step = bare_rates(model, tok, n_batches, tokens)
    print(
        f"\nend to end ({E2E}, {tokens} tokens): bare harvest {harvest:.0f} tok/s, bare SAE step {step:.0f} tok/s "
        f"(the same configuration and number of steps, activations in memory)"
    )
    for what in ("first run (cache filling)", "warm cache"):
        timing = end_to_end(tokens)
        ratio = timing["tokens_per_s"] / min(harvest, step)
        print(
            f"  {what}: train {timing['tokens_per_s']:.0f} tok/s; train / min = {ratio:.1%} "
            f"{'ok' if ratio >= 0.7 else 'MISSED'} (target >= 70%); where its {timing['wall_s']:.1f} s went: "
            + ", ".join(f"{k} {s:.1f} s ({timing['share'][k]:.0%})" for k, s in timing["seconds"].items())
        )


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
    parser.add_argument("--e2e-tokens", type=int, default=400_000, help="tokens of the end-to-end `train` (0: skip)")
    parser.add_argument("--e2e-batches", type=int, default=16, help="batches of 4096 for the bare harvest/step rates")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    own_cache = None if os.environ.get(PACK_CACHE) else tempfile.mkdtemp(prefix="pack-cache-")
    os.environ[PACK_CACHE] = os.environ.get(PACK_CACHE) or str(own_cache)
    model, tok = load_model(args.model)
    print(
        f"harvest throughput: model={args.model}, {args.batches} batches of <= {args.batch_tokens} tokens, "
        f"{args.threads} threads, medians of {args.rounds} interleaved rounds; load average {load()}"
    )
    print(
        f"{'hookpoint':<22} {'full fwd tok/s':>14} {'fwd-to-hook':>12} {'harvest':>10} "
        f"{'overhead vs fwd-to-hook':>24} {'vs full fwd':>12}   (harvest: warm packed-token cache)"
    )
    for hookpoint in args.hookpoints.split(","):
        r = measure(model, tok, hookpoint, args.batches, args.batch_tokens, args.seq_len, args.rounds)
        verdict = "ok" if r["overhead_vs_forward_to_hook"] <= 0.15 else "MISSED (target <= 15%)"
        print(
            f"{hookpoint:<22} {r['full_forward_tokens_per_s']:>14.0f} {r['forward_to_hook_tokens_per_s']:>12.0f} "
            f"{r['harvest_tokens_per_s']:>10.0f} {r['overhead_vs_forward_to_hook']:>23.1%} "
            f"{r['overhead_vs_full_forward']:>12.1%}  {verdict}"
        )
        sec = r["seconds"]
        print(
            f"{'':<22} cold (empty cache, filling it): {r['harvest_cold_tokens_per_s']:.0f} tok/s, overhead "
            f"{r['overhead_cold']:.1%}; uncached (cache off, the harvest before the cache): "
            f"{r['harvest_uncached_tokens_per_s']:.0f} tok/s, overhead {r['overhead_uncached']:.1%}"
        )
        print(
            f"{'':<22} of the uncached harvest's {sec['harvest_uncached']:.2f} s: corpus {sec['corpus']:.2f} s, "
            f"tokenizing + packing {sec['corpus_and_packing'] - sec['corpus']:.2f} s, "
            f"forward to hook {sec['forward_to_hook']:.2f} s, rest (kept tokens, provenance, shuffle) "
            f"{sec['harvest_uncached'] - sec['corpus_and_packing'] - sec['forward_to_hook']:.2f} s"
        )
    if args.e2e_tokens:
        print_end_to_end(model, tok, args.e2e_tokens, args.e2e_batches)
    print(f"load average at the end: {load()}")
    if own_cache:
        shutil.rmtree(own_cache)


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()
