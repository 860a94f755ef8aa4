"""Feature analysis: one pass of a corpus through model + SAE computes, for every latent, what a
researcher needs to read it, and writes it to the run's feature store (`store.py`).

    analyze("runs/demo", AnalyzeConfig(tokens=200_000))
    FeatureStore.open("runs/demo").feature(123)

Latents are analysed in shards of `shard_latents` (one pass over the tokens each, so memory stays
bounded for any dictionary size); each finished shard is on disk for good, and a restarted analysis
goes on with the next one. Per latent: statistics, histogram, top and quantile examples in context
(`latent_stats.py`), labels with held-out precision and recall (`labels.py`), logit effects along
the direct path, next-token statistics, nearest latents by decoder cosine, and a multilingual flag;
on corpora with token roles (the math corpus, `.jsonl` with `roles`), the token role of every example.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from monosemantic.analysis import concepts
from monosemantic.analysis.concepts import LabelInputs
from monosemantic.analysis.cooccurrence import Cooccurrence, missing_shards, save_cooccurrence
from monosemantic.analysis.label_text import Describer, label_fields, label_rows
from monosemantic.analysis.labels import DENSE, KeySpace, LabelStats, Names, Scored
from monosemantic.analysis.latent_stats import Batch, Examples, LatentStats
from monosemantic.analysis.loss_effect import loss_effect_file, record_loss_effects
from monosemantic.analysis.predicted import PREDICTED_TOKENS, PredictedSet, load_predicted
from monosemantic.analysis.settings import AnalyzeConfig
from monosemantic.analysis.shard_latents import LatentCache, shard_view
from monosemantic.analysis.store import features_dir, outdated_labels
from monosemantic.analysis.writer import StoreWriter
from monosemantic.config import ConfigError, derive_seed, to_dict
from monosemantic.data.corpora import Corpus, kept_tokens, pack
from monosemantic.mathlm.roles import math_corpus, samples_roles
from monosemantic.models import direct_logit_path
from monosemantic.runmodel import RunModel

log = logging.getLogger(__name__)

NEIGHBOURS_ALL = 1 << 16  # up to this many latents, nearest latents are searched among all of them
NEIGHBOURS_FLOATS = 1 << 26  # decoder similarities held at a time (256 MiB)
KEEP_DOCUMENTS = 1 << 16  # math documents of a pass kept for the example roles (a few KB each)


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
    run_dir: str | Path,
    cfg: AnalyzeConfig | None = None,
    *,
    device: str = "cpu",
    progress: bool = True,
    loss_effects: bool = False,
) -> Path:
    """Analyse every latent of the run's SAE into RUN_DIR/features; returns that directory.
    `loss_effects`: also record each feature's loss effects (loss_effect.py: two small forwards per
    feature, about 50 ms each on 2 cores, so opt-in: 3.5 min for 4096 features)."""
    cfg = cfg or AnalyzeConfig()
    cfg.check()
    run = RunModel.of_run(run_dir, cfg.corpus, device)
    settings = analysis_settings(run, cfg)
    if outdated_labels(features_dir(run_dir)):  # refused by every reader: analysed anew
        log.warning("%s holds labels of an older definition; analysing it anew", features_dir(run_dir))
        shutil.rmtree(features_dir(run_dir))
    writer = StoreWriter(features_dir(run_dir), settings, run.sae.d_sae, cfg.shard_latents, run.vocab)
    to_logits = direct_logit_path(run.model, run.hookpoint)
    predicted = None
    if to_logits is not None and load_predicted(writer.directory) is None:  # what the logit effects rank within
        if progress:  # -q: results and errors only
            log.info("the model's predicted tokens on the first %d tokens of %s ...", PREDICTED_TOKENS, run.corpus_spec)
        predicted = PredictedSet(run)  # its forwards run on the model thread of the first shard's pass
    cache = LatentCache(run)  # the model and the encoder run in the first pass only, where it fits
    for lo, hi in writer.pending_shards():
        co = Cooccurrence(lo, hi, run.sae.d_sae)
        results = analyze_shard(run, cfg, lo, hi, to_logits, co, progress=progress, side=predicted, cache=cache)
        save_cooccurrence(writer.directory, co)  # before the shard's rows: a resumed shard is counted anew
        writer.write_shard(lo, hi, *results)
    writer.finish()
    done = [(entry["lo"], entry["hi"]) for entry in writer.manifest["shards"].values()]
    for lo, hi in missing_shards(writer.directory, done):  # a store analysed before it was counted
        if progress:
            log.info("co-occurring features of latents %d-%d: one more pass over the tokens", lo, hi - 1)
        save_cooccurrence(writer.directory, count_cooccurrence(run, cfg, lo, hi, progress=progress, cache=cache))
    for lo, hi in done if loss_effects else []:  # from the stored top examples: an older store gets them too
        if not loss_effect_file(writer.directory, lo, hi).is_file():
            record_loss_effects(run, writer.directory, lo, hi, cfg.window * 3 // 4, progress=progress)
    if predicted is not None:
        predicted.save(writer.directory)
    return writer.directory


def _documents(corpus: Corpus, inputs: LabelInputs, kept: dict[int, object]) -> Iterator:
    """The corpus' documents, each given to `inputs`; the math corpus' kept in `kept` by id (up to
    `KEEP_DOCUMENTS`), so that `example_roles` need not generate them again."""
    keep = math_corpus(corpus) is not None
    for doc in corpus.documents():
        inputs.add(doc)
        if keep and len(kept) < KEEP_DOCUMENTS:
            kept[doc.id] = doc
        yield doc


def _latent_batches(
    cache: LatentCache, batches: Iterator, lo: int, hi: int, work, limit: int, side=None
) -> Iterator[tuple]:
    """(batch, kept tokens, what `work(batch, keep, z, firing)` returned) of each packed batch until
    `limit` kept tokens, where z [n_kept, hi - lo] are the latents and firing [nnz, 2] the (token,
    latent) of every latent that fires (`shard_view`; the run's model and SAE through `cache`,
    never all latents dense). The model, the SAE and `work` (the bookkeeping that needs
    only the latents: statistics, co-occurrences) run one batch ahead on a worker thread while the
    caller does the rest on the previous batch (torch kernels release the GIL). The worker runs the
    batches in order and the caller keeps to its own state (the packing, the documents), so the
    results are those of a plain loop. `side` (a `PredictedSet`): one step of its other forwards
    after each batch, on the same thread (one model forward at a time: the capture hooks are the
    model's), so they too run beside the caller's work."""

    def task(index, batch, keep):
        with torch.inference_mode():
            z, firing = shard_view(cache.get(index, batch, keep), int(keep.sum()), lo, hi)
            out = work(batch, keep, z, firing)
        if side is not None:
            side.step()
        return out

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="analyze-encode") as worker:
        pending = []  # (batch, keep, future of its work), at most two
        tokens = 0
        try:
            for index, batch in enumerate(batches):
                if tokens >= limit:
                    break  # a batch read ahead, as the packing always did, never analysed
                keep = kept_tokens(batch, cache.run.tokenizer)
                tokens += int(keep.sum())
                pending.append((batch, keep, worker.submit(task, index, batch, keep)))
                if len(pending) == 2:
                    batch, keep, out = pending.pop(0)
                    yield batch, keep, out.result()
            while pending:
                batch, keep, out = pending.pop(0)
                yield batch, keep, out.result()
        finally:
            for _, _, out in pending:
                out.cancel()  # the caller stopped early: no need to encode what is queued


def analyze_shard(
    run: RunModel,
    cfg: AnalyzeConfig,
    lo: int,
    hi: int,
    to_logits,
    co: Cooccurrence | None = None,
    *,
    progress=True,
    side: PredictedSet | None = None,
    cache: LatentCache | None = None,
):
    """One pass over the tokens for latents [lo, hi): (tokens, tensors for the shard file, feature rows,
    label rows, example roles); counts the shard's co-occurrences into `co` on the way."""
    n = hi - lo
    stats = LatentStats(
        n, len(run.vocab), top_k=cfg.top_k, samples=cfg.samples, window=cfg.window, seed=derive_seed(cfg.seed, lo)
    )
    space, names = KeySpace(len(run.vocab), n), Names()
    inputs = LabelInputs(space, names, run.tokenizer, run.vocab)
    fit_tokens = int(cfg.tokens * cfg.label_fit)
    labels = LabelStats(n, space, names, fit_tokens, bos=run.tokenizer.bos_token_id)
    read: dict[int, object] = {}
    docs = _documents(run.corpus, inputs, read)

    def work(batch, keep, z, firing):  # on the model's thread
        if co is not None:
            co.update(firing, z.shape[0])
        return z.shape[0], stats.update(Batch(z, keep, batch.input_ids, batch.doc_ids, batch.positions))

    with (
        tqdm(
            total=cfg.tokens, unit="tok", unit_scale=True, desc=f"analyse latents {lo}-{hi - 1}", disable=not progress
        ) as bar,
        torch.inference_mode(),
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="analyze-labels") as labeller,
    ):
        counting, seen = None, 0  # the label counting of the previous batch, on the labeller thread
        for batch, keep, (n_kept, (tok, lat)) in _latent_batches(
            cache or LatentCache(run),
            pack(docs, run.tokenizer, run.seq_len, cfg.batch_tokens),
            lo,
            hi,
            work,
            cfg.tokens,
            side,
        ):
            rules = inputs.rules(batch, keep)  # reads the batch's documents: here, in corpus order
            if counting is not None:
                counting.result()  # batches counted in order, one at a time
            counting = labeller.submit(_count_labels, labels, rules, tok, lat)
            seen += rules.keys.shape[0]
            if seen - rules.keys.shape[0] < fit_tokens <= seen:
                counting.result()  # its candidates are chosen among the names seen so far: none of the next batch's
            bar.update(n_kept)
        if counting is not None:
            counting.result()
    inputs.flush()  # documents the packing read ahead count too (languages, names)
    if stats.tokens < cfg.tokens:
        raise ConfigError(
            f"the corpus {run.corpus_spec!r} ran out after {stats.tokens} tokens, fewer than --tokens {cfg.tokens}"
        )
    scored, describer = labels.scored(), Describer(run.vocab, space, names)
    rows = feature_rows(run, stats, describer, scored, inputs.languages, lo, to_logits)
    roles = example_roles(run.corpus, run.tokenizer, [stats.top, stats.samples], bool(inputs.role_ids), read)
    return stats.tokens, stats.tensors(), rows, label_rows(describer, scored, lo), roles


def _count_labels(labels: LabelStats, rules, tok: Tensor, lat: Tensor) -> None:
    """`labels.update` on the labeller thread: torch kernels (they release the GIL) beside the
    reading of the next batch's documents on the caller's thread."""
    with torch.inference_mode():
        labels.update(rules, tok, lat)


def count_cooccurrence(
    run: RunModel, cfg: AnalyzeConfig, lo: int, hi: int, *, progress: bool = True, cache: LatentCache | None = None
) -> Cooccurrence:
    """The co-occurrences of latents [lo, hi) alone, over the tokens `analyze_shard` reads."""
    co = Cooccurrence(lo, hi, run.sae.d_sae)
    batches = pack(run.corpus.documents(), run.tokenizer, run.seq_len, cfg.batch_tokens)

    def work(batch, keep, z, firing):
        co.update(firing, z.shape[0])
        return z.shape[0]

    with tqdm(total=cfg.tokens, unit="tok", unit_scale=True, desc="co-occurrences", disable=not progress) as bar:
        for _, _, n_kept in _latent_batches(cache or LatentCache(run), batches, lo, hi, work, cfg.tokens):
            bar.update(n_kept)
    return co


def example_roles(
    corpus: Corpus, tokenizer, examples: list[Examples], has_roles: bool = True, read: dict | None = None
) -> list[tuple[int, int, str]]:
    """(document, position, role in words) of the token of every example that has a role, each
    document read once: the math corpus' Role ('answer_digit operation=add ...'), a `.jsonl` corpus'
    `roles` (kind, then the attributes by name: 'relation exact=exact'); none for corpora without roles
    (`has_roles` False). `read`: math corpus documents by id already at hand (others are generated)."""
    positions: dict[int, set[int]] = {}
    for ex in examples:
        for doc, pos in zip(ex.doc.flatten().tolist(), ex.pos.flatten().tolist()):
            if doc >= 0:
                positions.setdefault(doc, set()).add(pos)
    out = []
    math = math_corpus(corpus)
    if math is not None:
        ids, read = sorted(positions), read or {}
        samples = [read[doc] if doc in read else math.sample(doc) for doc in ids]
        for doc, of_doc in zip(ids, samples_roles(samples, tokenizer)):
            out += [(doc, pos, of_doc[pos].describe()) for pos in sorted(positions[doc])]
        return out
    if not has_roles or not positions:
        return []
    last = max(positions)
    for doc in corpus.documents():  # one pass, up to the last document needed
        if doc.id > last:
            break
        roles = concepts.document_roles(doc, tokenizer) if doc.id in positions else None
        for pos in sorted(positions.get(doc.id, ())) if roles else ():
            if pos < len(roles) and roles[pos] is not None:
                out.append((doc.id, pos, " ".join([str(roles[pos][0][1]), *(f"{k}={v}" for k, v in roles[pos][1:])])))
    return out


def feature_rows(
    run: RunModel,
    stats: LatentStats,
    describer: Describer,
    scored: Scored,
    languages: list[str],
    lo: int,
    to_logits,
) -> list[dict]:
    n = stats.n_latents
    density = (stats.fires.double() / max(stats.tokens, 1)).tolist()
    labels = label_fields(describer, scored, density, languages)
    next_tok, next_share = stats.top_next_tokens(10)
    logits = to_logits(run.sae.W_dec[lo : lo + n].detach()).float().cpu() if to_logits is not None else None
    if logits is not None:
        n_top = min(10, logits.shape[1])
        top, bottom = logits.topk(n_top, dim=1), logits.topk(n_top, dim=1, largest=False)
        top_ids, top_vals, bottom_ids, bottom_vals = (
            t.tolist() for t in (top.indices, top.values, bottom.indices, bottom.values)
        )
    neighbours = nearest_latents(run.sae.W_dec.detach().float().cpu(), lo, lo + n, block=neighbour_block(run.sae))
    # whole tensors to Python lists once: per-element .item()/.tolist() dominated this loop
    fires_l, sum_l, max_l = (t.tolist() for t in (stats.fires, stats.act_sum, stats.act_max))
    windows = stats.top.ctx_tokens.tolist()  # [n, top_k, window]
    next_tok_l, next_share_l = next_tok.tolist(), next_share.tolist()
    rows = []
    for i in range(n):
        fires = fires_l[i]
        row = {
            "latent": lo + i,
            "fires": fires,
            "density": density[i],
            "mean_act": sum_l[i] / fires if fires else 0.0,
            "max_act": max_l[i],
            **labels[i],
            "dense": int(density[i] > DENSE),
        }
        centre = [w[stats.before] for w in windows[i]]  # the token each top example fired on
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


def neighbour_block(sae) -> int | None:
    """Latents among which nearest latents are searched: all (None) up to `NEIGHBOURS_ALL` latents;
    beyond, a routed SAE's expert (its latents are the ones that compete for a token) or else
    contiguous blocks of `NEIGHBOURS_ALL`, so the search costs O(d_sae * block * d_in), not
    O(d_sae^2 * d_in) (1M latents against all: 4e14 flops, hours on a few cores)."""
    if sae.d_sae <= NEIGHBOURS_ALL:
        return None
    experts = getattr(sae.cfg, "experts", None)
    return sae.d_sae // experts if experts else NEIGHBOURS_ALL


def nearest_latents(
    W_dec: Tensor, lo: int, hi: int, n: int = 8, chunk: int = 1024, block: int | None = None
) -> list[tuple[list, list]]:
    """For latents [lo, hi): the `n` other latents of highest decoder cosine similarity, with it;
    with `block`, among the latents of their own block of `block` (latent i's: i // block)."""
    if block is None:
        return _nearest_in(W_dec, lo, hi, 0, n, chunk)
    out, start = [], lo
    while start < hi:
        first = start // block * block
        end = min(hi, first + block)
        out += _nearest_in(W_dec[first : first + block], start - first, end - first, first, n, chunk)
        start = end
    return out


def _nearest_in(W: Tensor, lo: int, hi: int, offset: int, n: int, chunk: int) -> list[tuple[list, list]]:
    """`nearest_latents` of rows [lo, hi) of W among all its rows; ids + `offset`. At most
    `NEIGHBOURS_FLOATS` similarities at a time: [1024, d_sae] is 4 GiB at 1M latents."""
    unit = W / W.norm(dim=1, keepdim=True).clamp(min=1e-12)
    n = min(n, unit.shape[0] - 1)
    chunk = max(1, min(chunk, NEIGHBOURS_FLOATS // unit.shape[0]))
    out = []
    for start in range(lo, hi, chunk):
        sims = unit[start : min(hi, start + chunk)] @ unit.T  # [chunk, rows of W]
        sims[torch.arange(sims.shape[0]), torch.arange(start, start + sims.shape[0])] = -torch.inf
        top = sims.topk(n, dim=1) if n > 0 else None
        for r in range(sims.shape[0]):
            out.append(([], []) if top is None else ((top.indices[r] + offset).tolist(), top.values[r].tolist()))
    return out
