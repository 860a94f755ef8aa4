"""The labelling benchmark: how well single features detect the corpus' ground-truth concepts, for the
SAE and, as the baseline, for the model's neurons. Automatic interpretation without an LLM, scored
against truth.

On `tokens` tokens of distinct held-out documents of a corpus with token roles (the math corpus, or a
`.jsonl` corpus with `roles`):
- the concepts are those of the roles (`analysis.concepts`: a kind, "relation", or a kind with one
  attribute, "relation, exact") that hold on at least `min_support` of the tokens;
- a dictionary is the SAE's latents, or the hookpoint's neurons read as an identity dictionary of
  2 x d_in features, ReLU(x_i) and ReLU(-x_i) (a neuron may carry a concept in either sign); a
  feature fires where it is > 0;
- per concept, the feature of best F1 at detecting it, with its precision P(concept | fires) and
  recall P(fires | concept): the **concept recall** of the dictionary is their mean F1;
- the share of features (of all of them) whose best concept reaches precision >= 0.8 and recall >= 0.5.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from monosemantic.analysis.concepts import concept_phrase, concepts_of, document_roles
from monosemantic.data.corpora import Document, kept_tokens, open_corpus, pack

GOOD_PRECISION, GOOD_RECALL = 0.8, 0.5


class ConceptCounts:
    """Firings, concept support and their co-occurrence for dictionaries of `sizes` features."""

    def __init__(self, sizes: dict[str, int]):
        self.tokens = 0
        self.names: list[tuple[str, object]] = []
        self.index: dict[tuple[str, object], int] = {}
        self.support = torch.zeros(0, dtype=torch.float64)
        self.fires = {k: torch.zeros(n, dtype=torch.float64) for k, n in sizes.items()}
        self.joint = {k: torch.zeros(n, 0, dtype=torch.float64) for k, n in sizes.items()}

    def concept_ids(self, role: tuple | None) -> list[int]:
        if role is None:
            return []
        for pair in concepts_of(role):
            if pair not in self.index:
                self.index[pair] = len(self.names)
                self.names.append(pair)
        return [self.index[p] for p in concepts_of(role)]

    def add(self, concepts: list[list[int]], acts: dict[str, Tensor]) -> None:
        """`concepts`: the concept ids of each token; `acts`: per dictionary its [n_tokens, n] activations."""
        n_concepts = len(self.names)
        rows = [i for i, cs in enumerate(concepts) for _ in cs]
        cols = [c for cs in concepts for c in cs]
        onehot = torch.zeros(len(concepts), n_concepts, dtype=torch.float64)
        onehot[rows, cols] = 1.0
        grow = n_concepts - self.support.numel()
        self.support = torch.cat([self.support, torch.zeros(grow, dtype=torch.float64)]) + onehot.sum(0)
        for name, a in acts.items():
            tok, feat = torch.nonzero(a > 0, as_tuple=True)
            self.fires[name] += torch.bincount(feat, minlength=a.shape[1]).double()
            fired = torch.sparse_coo_tensor(  # [n, tokens]: the indices come from nonzero(), valid by construction
                torch.stack([feat, tok]),
                torch.ones(feat.numel(), dtype=torch.float64),
                (a.shape[1], a.shape[0]),
                check_invariants=False,
            )
            joint = torch.cat([self.joint[name], torch.zeros(a.shape[1], grow, dtype=torch.float64)], 1)
            self.joint[name] = joint + torch.sparse.mm(fired, onehot)
        self.tokens += len(concepts)


def concept_scores(fires: Tensor, support: Tensor, joint: Tensor, names: list[str]) -> tuple[list[dict], dict]:
    """Per concept (`names`, support [K]) its best feature by F1 (fires [n], joint [n, K] firings on
    the concept); and the dictionary's summary: concept recall (mean best F1) and the features whose
    best concept has precision >= GOOD_PRECISION and recall >= GOOD_RECALL."""
    if not names:
        return [], {
            "features": fires.numel(),
            "concept_recall": None,
            "concept_labelled": 0,
            "concept_labelled_share": 0.0,
        }
    precision = joint / fires.clamp(min=1)[:, None]  # P(concept | fires)
    recall = joint / support.clamp(min=1)[None, :]  # P(fires | concept)
    f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
    best = f1.argmax(0)  # [K] the best feature of each concept
    per_concept = [
        {
            "concept": name,
            "support": int(support[k]),
            "feature": int(best[k]),
            "precision": precision[best[k], k].item(),
            "recall": recall[best[k], k].item(),
            "f1": f1[best[k], k].item(),
        }
        for k, name in enumerate(names)
    ]
    own = f1.argmax(1)  # [n] the best concept of each feature
    rows = torch.arange(f1.shape[0])
    good = (precision[rows, own] >= GOOD_PRECISION) & (recall[rows, own] >= GOOD_RECALL) & (fires > 0)
    summary = {
        "features": fires.numel(),
        "concept_recall": f1[best, torch.arange(len(names))].mean().item(),
        "concept_labelled": int(good.sum()),
        "concept_labelled_share": int(good.sum()) / max(fires.numel(), 1),
    }
    return per_concept, summary


def role_documents(corpus, tokenizer, roles: dict) -> Iterator[Document]:
    """Distinct texts of the corpus, each with its token roles (in `roles`), skipping those without."""
    seen = set()
    for doc in corpus.documents():
        if doc.text in seen:
            continue
        seen.add(doc.text)
        found = document_roles(doc, tokenizer)
        if found is not None:
            roles[doc.id] = found
            yield doc


def concept_benchmark(
    run_dir: str | Path, tokens: int = 20_000, min_support: int = 20, batch_tokens: int = 4096, progress: bool = False
) -> dict | None:
    """The labelling benchmark of a run (see the module docstring); None if its corpus has no roles
    in the first 1000 documents."""
    from monosemantic.eval.splice import default_eval_corpus
    from monosemantic.hooks import run_and_capture
    from monosemantic.runmodel import RunModel

    run = RunModel.of_run(run_dir)
    spec = default_eval_corpus(run.corpus_spec)
    corpus = open_corpus(spec)
    if not any(document_roles(d, run.tokenizer) for d in corpus.documents(limit=1000)):
        return None
    counts = ConceptCounts({"sae": run.sae.d_sae, "neurons": 2 * run.sae.d_in})
    roles: dict[int, list] = {}
    bar = tqdm(total=tokens, unit="tok", unit_scale=True, desc="concept benchmark", disable=not progress)
    with torch.inference_mode(), bar:
        for batch in pack(role_documents(corpus, run.tokenizer, roles), run.tokenizer, run.seq_len, batch_tokens):
            keep = kept_tokens(batch, run.tokenizer)
            x = run_and_capture(run.model, batch.input_ids, [run.hook], batch.attention_mask)[run.hook.name][keep]
            x = x.float().cpu()
            where = zip(batch.doc_ids[keep].tolist(), batch.positions[keep].tolist())
            concepts = [counts.concept_ids(roles[d][p]) for d, p in where]
            counts.add(concepts, {"sae": run.sae.encode(x).cpu(), "neurons": torch.cat([x.relu(), (-x).relu()], 1)})
            bar.update(len(concepts))
            if counts.tokens >= tokens:
                break
    kept = [k for k in range(len(counts.names)) if counts.support[k] >= min_support]
    names = [concept_phrase(*counts.names[k]) for k in kept]
    out = {"corpus": spec, "tokens": counts.tokens, "min_support": min_support, "concepts": len(kept)}
    for name in ("sae", "neurons"):
        per_concept, summary = concept_scores(
            counts.fires[name], counts.support[kept], counts.joint[name][:, kept], names
        )
        out[name] = {**summary, "per_concept": per_concept}
    return out
