"""The SAE benchmark suite: one standard answer to "is this SAE good?", for one run or a sweep.

Per run (schema "monosemantic-benchmark/1", see README):
    core      spliced evaluation: FVU, normalised MSE, L0, dead / dense fractions, CE loss recovered, KL
    toy       MMCS on the synthetic superposition data, for an SAE of this architecture, width and k
    probing   per binary property of the math corpus (language, operation, exact vs approximate):
              test accuracy of the best single feature, the best k features, the best single neuron,
              a linear probe on all neurons (document-level: activations averaged over a document)
    labels    the automatic labels (needs `analyze`): how many, dense, concepts, the share of non-dense
              features with a concept or token label at precision >= 0.8, precision and recall quantiles
    concepts  the labelling benchmark against the corpus' token roles, SAE beside neurons (`concept_bench.py`)
    absorption  feature absorption of the corpus' token-role concepts, SAEBench's full-absorption rate
              (`absorption.py`)
Across runs at the same hookpoint: feature splitting between each width and the next.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from monosemantic.config import to_dict
from monosemantic.data.corpora import document_meta, kept_tokens, open_corpus, pack
from monosemantic.eval.absorption import absorption_benchmark
from monosemantic.eval.concept_bench import concept_benchmark
from monosemantic.eval.probing import linear_probe, sparse_probe
from monosemantic.eval.splitting import find_splits, match_fraction
from monosemantic.formats import load_sae
from monosemantic.sae import SAE
from monosemantic.sae.signed import require_unsigned

SCHEMA = "monosemantic-benchmark/1"
PROBE_PROPERTIES = ("language", "operation", "result")


@dataclass
class BenchmarkConfig:
    eval_tokens: int = 50_000
    """tokens of the spliced evaluation"""
    probe_documents: int = 3000
    """held-out documents for sparse probing"""
    probe_k: int = 8
    """k of the best-k-features probe"""
    toy_tokens: int = 500_000
    """training samples of the toy-recovery SAE"""
    concept_tokens: int = 20_000
    """held-out tokens of the labelling benchmark (corpora with token roles: the math corpus, .jsonl with roles)"""
    absorption_tokens: int = 20_000
    """held-out tokens of the feature-absorption measure (corpora with token roles; half fit the probes)"""
    seed: int = 0
    """seed of the probe splits and the toy SAE"""


def document_activations(run_dir: str | Path, n_docs: int) -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
    """Per held-out document: mean hookpoint activation [n, d_in], mean latents [n, d_sae], metadata."""
    from monosemantic.eval.splice import default_eval_corpus
    from monosemantic.hooks import run_and_capture
    from monosemantic.runmodel import RunModel

    src = RunModel.of_run(run_dir)
    corpus = open_corpus(default_eval_corpus(src.corpus_spec))
    docs = sorted(corpus.documents(limit=n_docs), key=lambda d: d.id)
    row_of = torch.full((max((d.id for d in docs), default=0) + 1,), -1, dtype=torch.long)
    row_of[torch.tensor([d.id for d in docs], dtype=torch.long)] = torch.arange(len(docs))
    sums_x = torch.zeros(len(docs), src.sae.d_in)
    sums_z = torch.zeros(len(docs), src.sae.d_sae)
    counts = torch.zeros(len(docs))
    with torch.inference_mode():
        for batch in pack(docs, src.tokenizer, src.seq_len, 4096):
            keep = kept_tokens(batch, src.tokenizer)
            x = run_and_capture(src.model, batch.input_ids, src.hookpoint, batch.attention_mask)[src.hookpoint][keep]
            rows = row_of[batch.doc_ids[keep]]  # [n_kept] each token's document
            sums_x.index_add_(0, rows, x.float())
            sums_z.index_add_(0, rows, src.sae.encode(x.float()))
            counts.index_add_(0, rows, torch.ones(rows.numel()))
    seen = counts > 0
    means = counts[seen, None]
    return sums_x[seen] / means, sums_z[seen] / means, [document_meta(d) for d, s in zip(docs, seen.tolist()) if s]


def probe_properties(x: torch.Tensor, z: torch.Tensor, meta: list[dict], k: int, seed: int) -> list[dict]:
    """One row per (property, value) with enough documents of each class."""
    rows = []
    for prop in PROBE_PROPERTIES:
        values = sorted({m[prop] for m in meta if prop in m})
        for value in values if len(values) > 2 else values[:1]:
            y = torch.tensor([m.get(prop) == value for m in meta])
            if min(int(y.sum()), int((~y).sum())) < 20:
                continue
            latents, neurons = sparse_probe(z, y, k, seed), sparse_probe(x, y, 1, seed)
            rows.append(
                {
                    "property": prop,
                    "value": value,
                    "positives": int(y.sum()),
                    "best_feature": latents.single,
                    "best_feature_index": latents.single_index,
                    f"best_{k}_features": latents.top_k,
                    "best_neuron": neurons.single,
                    "best_neuron_index": neurons.single_index,
                    "linear_probe_neurons": linear_probe(x, y, seed),
                }
            )
    return rows


def toy_recovery(sae: SAE, cfg: BenchmarkConfig) -> dict:
    from monosemantic.eval.toy import ToyConfig, ToyData, run_toy_benchmark
    from monosemantic.train.trainer import TrainConfig

    train = TrainConfig(
        batch_size=1024,
        total_tokens=cfg.toy_tokens,
        lr=3e-3,
        dead_window=100_000,
        log_every=50,
        b_dec_init="mean",
        seed=cfg.seed,
    )
    data = ToyData(ToyConfig())
    [r] = run_toy_benchmark(
        data,
        [sae.cfg.arch],
        d_sae=sae.d_sae,
        k=sae.cfg.k,
        train=train,  # and its sparsity knob
        l1_coefficient=sae.cfg.l1_coefficient,
        l0_coefficient=sae.cfg.l0_coefficient,
        matryoshka_prefixes=sae.cfg.matryoshka_prefixes,
    )
    return {"toy": to_dict(data.cfg), "mmcs": r.mmcs, "fvu": r.fvu, "l0": r.l0, "dead_fraction": r.dead_fraction}


def label_quality(run_dir: str | Path) -> dict | None:
    from monosemantic.analysis.label_text import CONCEPT_KINDS, TOKEN_KINDS
    from monosemantic.analysis.store import FeatureStore, StoreError

    try:
        store = FeatureStore.open(run_dir)
    except StoreError:
        return None
    query = "SELECT precision, recall, label_kind FROM features WHERE label IS NOT NULL AND dense = 0"
    rows = store.db.execute(query).fetchall()
    p = torch.tensor([r[0] for r in rows], dtype=torch.float64)
    r = torch.tensor([r[1] for r in rows], dtype=torch.float64)
    q = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9], dtype=torch.float64)
    dense = store.db.execute("SELECT COUNT(*) FROM features WHERE dense = 1").fetchone()[0]
    named = sum(1 for row in rows if row[2] in CONCEPT_KINDS + TOKEN_KINDS and row[0] >= 0.8)
    return {
        "features": store.n_latents,
        "labelled": len(rows),
        "dense": dense,
        "concept_labels": sum(1 for row in rows if row[2] in CONCEPT_KINDS),
        # the concepts issue's yardstick: non-dense features with a concept or token label at precision >= 0.8
        "concept_or_token_at_0.8_share": named / max(store.n_latents - dense, 1),
        "precision_at_least_0.9": int((p >= 0.9).sum()),
        "precision_quantiles": p.quantile(q).tolist() if p.numel() else [],
        "recall_quantiles": r.quantile(q).tolist() if r.numel() else [],
        "quantiles": q.tolist(),
    }


def benchmark_run(
    run_dir: str | Path, cfg: BenchmarkConfig | None = None, *, toy: bool = True, progress: bool = False
) -> dict:
    from monosemantic.eval.splice import evaluate_run

    cfg = cfg or BenchmarkConfig()
    sae = load_sae(run_dir)
    require_unsigned(sae, f"{run_dir}: the benchmark (probing, concepts, absorption)")  # before the long eval
    core = evaluate_run(run_dir, tokens=cfg.eval_tokens, progress=progress).to_dict()
    x, z, meta = document_activations(run_dir, cfg.probe_documents)
    return {
        "schema": SCHEMA,
        "run": str(Path(run_dir).resolve()),
        "name": Path(run_dir).name,
        "sae": {
            "arch": sae.cfg.arch,
            "d_in": sae.d_in,
            "d_sae": sae.d_sae,
            "k": sae.cfg.k,
            "hookpoint": sae.cfg.hookpoint,
            "model": sae.cfg.model,
        },
        "config": to_dict(cfg),
        "core": core,
        "toy": toy_recovery(sae, cfg) if toy else None,
        "probing": probe_properties(x, z, meta, cfg.probe_k, cfg.seed),
        "labels": label_quality(run_dir),
        "concepts": concept_benchmark(run_dir, cfg.concept_tokens, progress=progress),
        "absorption": absorption_benchmark(run_dir, cfg.absorption_tokens, progress=progress),
    }


def splitting_between(runs: list[str | Path], threshold: float = 0.6, examples: int = 5) -> list[dict]:
    """For SAEs of one hookpoint ordered by width: splits between each width and the next."""
    saes = sorted(((load_sae(r), str(r)) for r in runs), key=lambda s: s[0].d_sae)
    out = []
    for (narrow, a), (wide, b) in zip(saes, saes[1:]):
        if narrow.cfg.hookpoint != wide.cfg.hookpoint or narrow.d_sae == wide.d_sae:
            continue
        splits = find_splits(narrow.W_dec.detach(), wide.W_dec.detach(), threshold)
        out.append(
            {
                "narrow": a,
                "wide": b,
                "d_narrow": narrow.d_sae,
                "d_wide": wide.d_sae,
                "threshold": threshold,
                "wide_matched_fraction": match_fraction(narrow.W_dec.detach(), wide.W_dec.detach(), threshold),
                "split_features": len(splits),
                "examples": [
                    {"parent": s.parent, "children": s.children[:6], "cosines": s.cosines[:6]}
                    for s in splits[:examples]
                ],
            }
        )
    return out
