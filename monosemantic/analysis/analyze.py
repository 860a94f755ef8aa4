"""Feature analysis: one pass of a corpus through model + SAE computes, for every latent, what a
researcher needs to read it, and writes it to the run's feature store (`store.py`).

    analyze("runs/demo", AnalyzeConfig(tokens=200_000))
    FeatureStore.open("runs/demo").feature(123)

Latents are analysed in shards of `shard_latents` (one pass over the tokens each, so memory stays
bounded for any dictionary size); each finished shard is on disk for good, and a restarted analysis
goes on with the next one. Per latent: statistics, histogram, top and quantile examples in context
(`latent_stats.py`), labels with held-out precision and recall (`labels.py`), logit effects along
the direct path, next-token statistics, nearest latents by decoder cosine, and a multilingual flag;
on the built-in math corpus, the token role of every example (`mathlm/roles.py`).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from monosemantic.analysis.labels import KeySpace, LabelStats, MetaVocab, Scored, rule_keys
from monosemantic.analysis.latent_stats import Batch, Examples, LatentStats
from monosemantic.analysis.store import features_dir
from monosemantic.analysis.writer import StoreWriter
from monosemantic.config import ConfigError, derive_seed, to_dict
from monosemantic.data.corpora import Corpus, document_meta, kept_tokens, pack
from monosemantic.mathlm.roles import document_roles, math_corpus
from monosemantic.models import direct_logit_path
from monosemantic.runmodel import RunModel

LANGUAGE, CONCEPT = "language", "operation"  # metadata fields of the multilingual flag


@dataclass
class AnalyzeConfig:
    tokens: int = 200_000
    """tokens of the corpus to analyse (the first part chooses label rules, the rest scores them)"""
    corpus: str | None = None
    """corpus to analyse (default: the run's training corpus)"""
    top_k: int = 16
    """top activating contexts kept per feature"""
    samples: int = 4
    """examples kept per activation range (2 ranges per decade): the quantile samples"""
    window: int = 32
    """tokens of context kept around each example (3/4 of them before it)"""
    shard_latents: int = 8192
    """latents per shard; each shard is one pass over the tokens, written to disk when done"""
    label_fit: float = 0.5
    """fraction of the tokens on which label rules are chosen; they are scored on the rest"""
    batch_tokens: int = 4096
    """tokens per model forward"""
    seed: int = 0
    """seed of the quantile sampling"""

    def check(self) -> None:
        for name in ("tokens", "top_k", "samples", "window", "shard_latents", "batch_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if not 0 < self.label_fit < 1:
            raise ConfigError(f"label_fit must be between 0 and 1 (exclusive), got {self.label_fit}")


def analysis_settings(run: RunModel, cfg: AnalyzeConfig) -> dict:
    """Everything the results depend on: a resumed analysis must match it."""
    return {
        "analysis": to_dict(cfg),
        "model": run.model_spec,
        "hookpoint": run.hookpoint,
        "corpus": run.corpus_spec,
        "seq_len": run.seq_len,
        "sae": {"arch": run.sae.cfg.arch, "d_in": run.sae.d_in, "d_sae": run.sae.d_sae},
    }


def analyze(
    run_dir: str | Path, cfg: AnalyzeConfig | None = None, *, device: str = "cpu", progress: bool = True
) -> Path:
    """Analyse every latent of the run's SAE into RUN_DIR/features; returns that directory."""
    cfg = cfg or AnalyzeConfig()
    cfg.check()
    run = RunModel.of_run(run_dir, cfg.corpus, device)
    settings = analysis_settings(run, cfg)
    writer = StoreWriter(features_dir(run_dir), settings, run.sae.d_sae, cfg.shard_latents, run.vocab)
    to_logits = direct_logit_path(run.model, run.hookpoint)
    for lo, hi in writer.pending_shards():
        writer.write_shard(lo, hi, *analyze_shard(run, cfg, lo, hi, to_logits, progress=progress))
    writer.finish()
    return writer.directory


def _documents(corpus: Corpus, meta: MetaVocab, doc_meta: dict, doc_words: dict) -> Iterator:
    for doc in corpus.documents():
        words = document_meta(doc)
        doc_meta[doc.id], doc_words[doc.id] = meta.keys(words), words
        yield doc


def _latent_batches(run: RunModel, batches: Iterator, lo: int, hi: int) -> Iterator[tuple]:
    """(batch, kept tokens, latents [n_kept, hi - lo]) of each packed batch. The model and the SAE
    run one batch ahead on a worker thread while the caller does its bookkeeping on the previous
    batch (the torch kernels of both release the GIL); everything else, the packing and all state
    the caller keeps, stays on the caller's thread, so the results are those of a plain loop."""

    def latents(batch, keep):
        with torch.inference_mode():
            return run.latents(batch.input_ids, batch.attention_mask, keep)[:, lo:hi]

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="analyze-encode") as worker:
        pending = []  # (batch, keep, future of its latents), at most two
        try:
            for batch in batches:
                keep = kept_tokens(batch, run.tokenizer)
                pending.append((batch, keep, worker.submit(latents, batch, keep)))
                if len(pending) == 2:
                    batch, keep, z = pending.pop(0)
                    yield batch, keep, z.result()
            for batch, keep, z in pending:
                yield batch, keep, z.result()
        finally:
            for _, _, z in pending:
                z.cancel()  # the caller stopped early: no need to encode what is queued


def analyze_shard(run: RunModel, cfg: AnalyzeConfig, lo: int, hi: int, to_logits, *, progress: bool = True):
    """One pass over the tokens for latents [lo, hi): (tokens, tensors for the shard file, feature rows,
    label rows, example roles)."""
    n = hi - lo
    stats = LatentStats(
        n, len(run.vocab), top_k=cfg.top_k, samples=cfg.samples, window=cfg.window, seed=derive_seed(cfg.seed, lo)
    )
    space, meta = KeySpace(len(run.vocab), n), MetaVocab()
    labels = LabelStats(n, space, meta, fit_tokens=int(cfg.tokens * cfg.label_fit))
    doc_meta: dict[int, list[int]] = {}
    doc_words: dict[int, dict[str, str]] = {}
    docs = _documents(run.corpus, meta, doc_meta, doc_words)
    languages = LanguageCounts(n)
    with (
        tqdm(
            total=cfg.tokens, unit="tok", unit_scale=True, desc=f"analyse latents {lo}-{hi - 1}", disable=not progress
        ) as bar,
        torch.inference_mode(),
    ):
        for batch, keep, z in _latent_batches(run, pack(docs, run.tokenizer, run.seq_len, cfg.batch_tokens), lo, hi):
            tok, lat = stats.update(Batch(z, keep, batch.input_ids, batch.doc_ids, batch.positions))
            labels.update(rule_keys(space, meta, batch.input_ids, batch.doc_ids, keep, doc_meta), tok, lat)
            languages.update(batch.doc_ids[keep], doc_words, tok, lat)
            bar.update(z.shape[0])
            if stats.tokens >= cfg.tokens:
                break
    if stats.tokens < cfg.tokens:
        raise ConfigError(
            f"the corpus {run.corpus_spec!r} ran out after {stats.tokens} tokens, fewer than --tokens {cfg.tokens}"
        )
    scored = labels.scored()
    rows = feature_rows(run, stats, scored, space, meta, doc_words, languages, lo, to_logits)
    roles = example_roles(run.corpus, run.tokenizer, [stats.top, stats.samples])
    return stats.tokens, stats.tensors(), rows, label_rows(run.vocab, scored, space, meta, lo), roles


def example_roles(corpus: Corpus, tokenizer, examples: list[Examples]) -> list[tuple[int, int, str]]:
    """(document, position, role in words) of the token of every example, each document read once;
    none unless the corpus is the built-in math corpus (the only one whose tokens have roles)."""
    if math_corpus(corpus) is None:
        return []
    positions: dict[int, set[int]] = {}
    for ex in examples:
        for doc, pos in zip(ex.doc.flatten().tolist(), ex.pos.flatten().tolist()):
            if doc >= 0:
                positions.setdefault(doc, set()).add(pos)
    out = []
    for doc in sorted(positions):
        roles = document_roles(corpus, doc, tokenizer) or []
        out += [(doc, pos, roles[pos].describe()) for pos in sorted(positions[doc])]
    return out


def rule_text(vocab: list[str], space: KeySpace, meta: MetaVocab, keys: list[int]) -> tuple[str, str, str]:
    """(kind, label text, plain tokens for search) of a rule given by its keys."""
    if len(keys) > 1:
        tokens = [vocab[space.kind(k)[1][0]] for k in keys]
        return "any of", " or ".join(quote(t) for t in tokens), " ".join(tokens)
    kind, value = space.kind(keys[0])
    if kind == "meta":
        field, word = meta.name(value)
        return "meta", f"{field}: {word}", f"{field} {word}"
    tokens = [vocab[t] if t < len(vocab) else "" for t in value]
    return kind, quote("".join(tokens)), " ".join(tokens)


def quote(text: str) -> str:
    """A token's text made visible: quoted, with spaces and newlines shown."""
    return '"' + text.replace(" ", "␣").replace("\n", "⏎") + '"'


def label_rows(
    vocab: list[str], scored: Scored, space: KeySpace, meta: MetaVocab, lo: int, per_latent: int = 8
) -> list[tuple]:
    """(latent, kind, text, precision, recall, f1, support, hits) of each latent's `per_latent` best
    candidate rules (by F1) that hold somewhere in the held-out tokens."""
    out, texts = [], {}
    keys = scored.keys.tolist()
    f1 = 2 * scored.precision * scored.recall / (scored.precision + scored.recall).clamp(min=1e-12)
    usable = (scored.keys >= 0).any(-1) & (scored.support > 0)
    best = torch.where(usable, f1, -1.0).topk(min(per_latent, f1.shape[1]), dim=1)
    chosen = torch.zeros_like(usable).scatter_(1, best.indices, True) & usable
    for i, c in torch.nonzero(chosen).tolist():
        rule = tuple(k for k in keys[i][c] if k >= 0)
        if rule not in texts:
            texts[rule] = rule_text(vocab, space, meta, list(rule))
        kind, text, _ = texts[rule]
        p, r = scored.precision[i, c].item(), scored.recall[i, c].item()
        out.append(
            (
                lo + i,
                kind,
                text,
                p,
                r,
                2 * p * r / (p + r) if p + r else 0.0,
                int(scored.support[i, c]),
                int(scored.hits[i, c]),
            )
        )
    return out


class LanguageCounts:
    """Tokens per document language, and each latent's firings per language."""

    def __init__(self, n_latents: int):
        self.names: list[str] = []
        self.fires = torch.zeros(n_latents, 0, dtype=torch.long)
        self.tokens = torch.zeros(0, dtype=torch.long)

    def update(self, kept_docs: Tensor, doc_words: dict[int, dict[str, str]], tok: Tensor, lat: Tensor) -> None:
        docs, inverse = torch.unique(kept_docs, return_inverse=True)
        names = [doc_words.get(d, {}).get(LANGUAGE) for d in docs.tolist()]
        for name in names:
            if name is not None and name not in self.names:
                self.names.append(name)
                self.fires = torch.cat([self.fires, torch.zeros(self.fires.shape[0], 1, dtype=torch.long)], 1)
                self.tokens = torch.cat([self.tokens, torch.zeros(1, dtype=torch.long)])
        if not self.names:
            return
        lang = torch.tensor([-1 if n is None else self.names.index(n) for n in names])[inverse]  # [n_kept]
        has = lang >= 0
        self.tokens += torch.bincount(lang[has], minlength=len(self.names))
        fired = lang[tok] >= 0
        self.fires.view(-1).index_add_(
            0, (lat * len(self.names) + lang[tok])[fired], torch.ones(int(fired.sum()), dtype=torch.long)
        )


def multilingual(
    latent_docs: list[int],
    active: list[int],
    doc_words: dict[int, dict[str, str]],
    rates: dict[str, float],
    min_share: float = 0.75,
    min_rate: float = 0.2,
    min_language_share: float = 0.25,
) -> dict:
    """Is a latent one concept across languages (fires on "plus", "más" and "+")? Yes when its top
    contexts include two or more languages (each in >= `min_language_share` of them, and at least two)
    in which it fires at a comparable
    rate (>= `min_rate` x its highest per-language rate), on different tokens in different languages,
    and >= `min_share` of the contexts share one concept (the same operation). None without languages."""
    words = [(doc_words.get(d, {}), t) for d, t in zip(latent_docs, active) if d >= 0]
    languages = Counter(w[LANGUAGE] for w, _ in words if LANGUAGE in w)
    if not languages:
        return {"languages": {}, "concept": None, "multilingual": None}
    concepts = Counter(w[CONCEPT] for w, _ in words if CONCEPT in w)
    concept, count = concepts.most_common(1)[0] if concepts else (None, 0)
    shared = count >= min_share * len(words)
    top_rate = max(rates.values(), default=0.0)
    enough = max(2, math.ceil(min_language_share * len(words)))
    present = [lang for lang, c in languages.items() if c >= enough and rates.get(lang, 0.0) >= min_rate * top_rate > 0]
    tokens = {lang: Counter(t for w, t in words if w.get(LANGUAGE) == lang).most_common(1)[0][0] for lang in present}
    return {
        "languages": dict(languages),
        "concept": concept if shared else None,
        "multilingual": len(present) >= 2 and shared and len(set(tokens.values())) >= 2,
    }


def feature_rows(
    run: RunModel,
    stats: LatentStats,
    scored: Scored,
    space: KeySpace,
    meta: MetaVocab,
    doc_words: dict,
    languages: LanguageCounts,
    lo: int,
    to_logits,
) -> list[dict]:
    n = stats.n_latents
    best = scored.best()
    lang_fires, lang_tokens, languages = languages.fires, languages.tokens, languages.names
    next_tok, next_share = stats.top_next_tokens(10)
    logits = to_logits(run.sae.W_dec[lo : lo + n].detach()).float().cpu() if to_logits is not None else None
    if logits is not None:
        n_top = min(10, logits.shape[1])
        top, bottom = logits.topk(n_top, dim=1), logits.topk(n_top, dim=1, largest=False)
        top_ids, top_vals, bottom_ids, bottom_vals = (
            t.tolist() for t in (top.indices, top.values, bottom.indices, bottom.values)
        )
    neighbours = nearest_latents(run.sae.W_dec.detach().float().cpu(), lo, lo + n)
    # whole tensors to Python lists once: per-element .item()/.tolist() dominated this loop
    fires_l, sum_l, max_l, best_l = (t.tolist() for t in (stats.fires, stats.act_sum, stats.act_max, best))
    keys_l, prec_l, rec_l, sup_l = (t.tolist() for t in (scored.keys, scored.precision, scored.recall, scored.support))
    rates_l = (lang_fires.double() / lang_tokens.clamp(min=1)).tolist()  # [n, languages]
    top_docs, windows = stats.top.doc.tolist(), stats.top.ctx_tokens.tolist()  # [n, top_k], [n, top_k, window]
    next_tok_l, next_share_l = next_tok.tolist(), next_share.tolist()
    rows = []
    for i in range(n):
        fires = fires_l[i]
        row = {
            "latent": lo + i,
            "fires": fires,
            "density": fires / max(stats.tokens, 1),
            "mean_act": sum_l[i] / fires if fires else 0.0,
            "max_act": max_l[i],
            "label": None,
            "label_kind": None,
            "precision": None,
            "recall": None,
            "f1": None,
            "support": None,
        }
        c = best_l[i]
        if c >= 0:
            kind, text, _ = rule_text(run.vocab, space, meta, [k for k in keys_l[i][c] if k >= 0])
            p, r = prec_l[i][c], rec_l[i][c]
            row.update(
                label=text,
                label_kind=kind,
                precision=p,
                recall=r,
                f1=2 * p * r / (p + r) if p + r else 0.0,
                support=int(sup_l[i][c]),
            )
        rates = dict(zip(languages, rates_l[i]))
        centre = [w[stats.before] for w in windows[i]]  # the token each top example fired on
        ml = multilingual(top_docs[i], centre, doc_words, rates)
        row.update(multilingual=ml["multilingual"], languages=json.dumps(ml["languages"]), concept=ml["concept"])
        if logits is not None:
            row["top_logits"] = json.dumps([[run.vocab[t], v] for t, v in zip(top_ids[i], top_vals[i])])
            row["bottom_logits"] = json.dumps([[run.vocab[t], v] for t, v in zip(bottom_ids[i], bottom_vals[i])])
        row["next_tokens"] = json.dumps([[run.vocab[t], s] for t, s in zip(next_tok_l[i], next_share_l[i]) if t >= 0])
        row["neighbours"] = json.dumps([[j, s] for j, s in zip(*neighbours[i])])
        active = [run.vocab[t] for t in centre if t >= 0]
        row["top_tokens"] = " ".join(dict.fromkeys(active))
        row["contexts"] = " ".join("".join(run.vocab[t] for t in window if t >= 0) for window in windows[i][:4])
        rows.append(row)
    return rows


def nearest_latents(W_dec: Tensor, lo: int, hi: int, n: int = 8, chunk: int = 1024) -> list[tuple[list, list]]:
    """For latents [lo, hi): the `n` other latents of highest decoder cosine similarity, with it."""
    unit = W_dec / W_dec.norm(dim=1, keepdim=True).clamp(min=1e-12)
    n = min(n, unit.shape[0] - 1)
    out = []
    for start in range(lo, hi, chunk):
        sims = unit[start : min(hi, start + chunk)] @ unit.T  # [chunk, d_sae]
        sims[torch.arange(sims.shape[0]), torch.arange(start, start + sims.shape[0])] = -torch.inf
        top = sims.topk(n, dim=1) if n > 0 else None
        for r in range(sims.shape[0]):
            out.append(([], []) if top is None else (top.indices[r].tolist(), top.values[r].tolist()))
    return out
