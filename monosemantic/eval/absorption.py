"""Feature absorption: how often a concept's own latents stay silent on it while a more specific latent
carries the concept instead (Chanin et al. 2024, "A is for Absorption"; the full-absorption score of
SAEBench, Karvonen et al. 2025), on the ground-truth concepts of a corpus' token roles.

SAEBench reads first-letter concepts off a tokenizer; the math corpus gives every token its concepts
(`analysis.concepts`: "operator, multiplication", "answer digit", ...). For one concept c, with the
tokens split in two halves (by document in the benchmark):

- probe: a logistic regression for c on the hookpoint's activations x (train half); its weight,
  normalised, is the concept's direction p. Concepts whose probe has test F1 < MIN_PROBE_F1 (0.6, as
  SAEBench) have no clean direction and are skipped;
- main latents M: the latent whose firing (z > 0) detects c with the best F1 on the train half, then
  greedily the latent whose firing added (OR) raises that F1 most, while it rises by >= F1_JUMP
  (0.03), at most MAX_MAIN (10) latents: SAEBench's k-sparse-probing rule with firing as the probe;
- a test token where c holds and the probe says so (a probe true positive) is **absorbed** when
  (i) no latent of M fires, (ii) the latent j of largest probe projection z_j (W_dec[j] . p) has
  cos(W_dec[j], p) >= COS_MIN (0.025) and (iii) that projection is >= PROJ_SHARE (0.4) of the token's
  own projection (x - b_dec) . p, which must be > 0 (SAEBench's thresholds and rule);
- absorption(c) = absorbed tokens / probe true positives (SAEBench's full-absorption rate).

Two differences from SAEBench: the projection is that of (x - b_dec), what the latents must carry
(SAEBench projects x itself; our residual streams have a large mean that b_dec holds), and a latent's
projection uses its decoder row as is (SAEBench multiplies by the cosine, the same for unit rows).
The benchmark reports the mean over concepts and the pooled rate (all absorbed / all true positives).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from monosemantic.eval.probing import logistic_fit

COS_MIN = 0.025  # SAEBench full_absorption_probe_cos_sim_threshold
PROJ_SHARE = 0.4  # SAEBench probe_projection_proportion_threshold
F1_JUMP = 0.03  # SAEBench f1_jump_threshold
MAX_MAIN = 10  # SAEBench max_k_value
MIN_PROBE_F1 = 0.6  # SAEBench min_GT_probe_f1


def f1_score(pred: Tensor, y: Tensor) -> float:
    tp = int((pred & y).sum())
    return 2 * tp / max(int(pred.sum()) + int(y.sum()), 1)


def main_latents(fires: Tensor, y: Tensor) -> list[int]:
    """The concept's main latents (see the module docstring): fires [n, d_sae] bool, y [n] bool."""
    chosen: list[int] = []
    covered = torch.zeros_like(y)
    best = 0.0
    n_pos = int(y.sum())
    for _ in range(MAX_MAIN):
        # F1 of (covered OR latent j) for every j at once: only tokens not yet covered add anything
        new = fires[~covered]  # [n_uncovered, d_sae]
        tp = int((covered & y).sum()) + new[y[~covered]].sum(0)
        pred = int(covered.sum()) + new.sum(0)
        f1 = 2 * tp / (pred + n_pos).clamp(min=1)
        f1[chosen] = -1
        j = int(f1.argmax())
        if chosen and float(f1[j]) - best < F1_JUMP:
            break
        chosen.append(j)
        covered |= fires[:, j]
        best = float(f1[j])
    return chosen


def absorbed(z: Tensor, x_c: Tensor, main: list[int], p: Tensor, W_dec: Tensor) -> Tensor:
    """[n] bool: the tokens (rows of latents z [n, d_sae], centred activations x_c [n, d_in]) that
    SAEBench's rule counts as fully absorbed for the concept of direction p [d_in] (unit)."""
    along = W_dec @ p  # [d_sae] each latent's projection per unit of activation
    cos = along / W_dec.norm(dim=1).clamp(min=1e-12)
    proj, top = (z * along).max(1)  # [n] the latent of largest probe projection
    total = x_c @ p
    silent = (z[:, main] <= 0).all(1)
    return silent & (cos[top] >= COS_MIN) & (total > 0) & (proj >= PROJ_SHARE * total)


def concept_absorption(x: Tensor, z: Tensor, y: Tensor, train: Tensor, W_dec: Tensor, b_dec: Tensor) -> dict | None:
    """Absorption of one concept: x [n, d_in] activations, z [n, d_sae] latents, y [n] bool (the
    concept holds), train [n] bool (the probe's and main latents' half; the rest is scored). None
    when the probe has no clean direction (test F1 < MIN_PROBE_F1)."""
    test = ~train
    w, b = logistic_fit(x[train], y[train])
    probe_says = x @ w + b > 0
    probe_f1 = f1_score(probe_says[test], y[test])
    if probe_f1 < MIN_PROBE_F1:
        return None
    main = main_latents(z[train] > 0, y[train])
    tp = test & y & probe_says
    hit = absorbed(z[tp], x[tp] - b_dec, main, w / w.norm(), W_dec)
    return {
        "probe_f1": probe_f1,
        "main_latents": main,
        "main_f1": f1_score((z[test][:, main] > 0).any(1), y[test]),
        "probe_true_positives": int(tp.sum()),
        "absorbed": int(hit.sum()),
        "absorption": int(hit.sum()) / max(int(tp.sum()), 1),
    }


def absorption_scores(
    x: Tensor, z: Tensor, concepts: Tensor, names: list[str], train: Tensor, W_dec: Tensor, b_dec: Tensor
) -> dict:
    """Absorption per concept (columns of concepts [n, K] bool, named `names`) and the summary."""
    rows = []
    for k, name in enumerate(names):
        y = concepts[:, k]
        if min(int(y[train].sum()), int(y[~train].sum())) < 20:
            continue
        row = concept_absorption(x, z, y, train, W_dec, b_dec)
        if row is not None:
            rows.append({"concept": name, **row})
    total_tp = sum(r["probe_true_positives"] for r in rows)
    return {
        "concepts": len(rows),
        "mean_absorption": sum(r["absorption"] for r in rows) / len(rows) if rows else None,
        "pooled_absorption": sum(r["absorbed"] for r in rows) / total_tp if total_tp else None,
        "per_concept": rows,
    }


def absorption_benchmark(run_dir: str | Path, tokens: int = 10_000, progress: bool = False) -> dict | None:
    """Absorption of a run's SAE on `tokens` held-out tokens of its corpus' token roles (the math
    corpus, or a .jsonl corpus with roles); None if the corpus has no roles. Documents of even id
    fit the probes and pick the main latents, those of odd id are scored."""
    from monosemantic.analysis.concepts import concept_phrase, concepts_of, document_roles
    from monosemantic.data.corpora import kept_tokens, open_corpus, pack
    from monosemantic.eval.concept_bench import role_documents
    from monosemantic.eval.splice import default_eval_corpus
    from monosemantic.hooks import run_and_capture
    from monosemantic.runmodel import RunModel

    run = RunModel.of_run(run_dir)
    spec = default_eval_corpus(run.corpus_spec)
    corpus = open_corpus(spec)
    if not any(document_roles(d, run.tokenizer) for d in corpus.documents(limit=1000)):
        return None
    roles: dict[int, list] = {}
    xs, zs, docs, pairs = [], [], [], []
    n = 0
    bar = tqdm(total=tokens, unit="tok", unit_scale=True, desc="absorption", disable=not progress)
    with torch.inference_mode(), bar:
        for batch in pack(role_documents(corpus, run.tokenizer, roles), run.tokenizer, run.seq_len, 4096):
            keep = kept_tokens(batch, run.tokenizer)
            x = run_and_capture(run.model, batch.input_ids, [run.hook], batch.attention_mask)[run.hook.name][keep]
            xs.append(x.float().cpu())
            zs.append(run.sae.encode(x.float()).cpu())
            ids, pos = batch.doc_ids[keep].tolist(), batch.positions[keep].tolist()
            docs += ids
            pairs += [concepts_of(roles[d][p]) if roles[d][p] is not None else [] for d, p in zip(ids, pos)]
            n += len(ids)
            bar.update(len(ids))
            if n >= tokens:
                break
    names = sorted({c for cs in pairs for c in cs}, key=str)
    column = {c: i for i, c in enumerate(names)}
    concepts = torch.zeros(n, len(names), dtype=torch.bool)
    for i, cs in enumerate(pairs):
        concepts[i, [column[c] for c in cs]] = True
    train = torch.tensor(docs) % 2 == 0
    W_dec, b_dec = run.sae.W_dec.detach().float().cpu(), run.sae.b_dec.detach().float().cpu()
    z = torch.cat(zs)
    scores = absorption_scores(torch.cat(xs), z, concepts, [concept_phrase(*c) for c in names], train, W_dec, b_dec)
    # the L0 of these very tokens: absorption is compared between SAEs at the same L0
    return {"corpus": spec, "tokens": n, "l0": (z > 0).sum(1).float().mean().item(), **scores}
