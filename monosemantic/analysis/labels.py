"""Automatic labels without an LLM: rules of the form "fires ⇔ <rule>" with measured precision and recall.

A rule holds on a token when
- the token is t ("token"), or the n tokens ending at it are an n-gram ("2-gram", "3-gram");
- the token is one of a small set ("any of", up to `set_size` tokens);
- its document has a property from the corpus metadata ("language: Spanish", "operation: division").
Candidates are chosen on the first `fit_tokens` analysed tokens (the rules that hold most often where
the latent fires) and scored on the tokens after them, which they never saw:

    precision = #(fires and rule holds) / #(rule holds)      recall = #(fires and rule holds) / #(fires)

A latent's label is its candidate of highest F1 among those that hold on at least `MIN_SUPPORT`
held-out tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from monosemantic.analysis.latent_stats import KeyedSums, top_per_group

MIN_SUPPORT = 5  # held-out tokens a rule must hold on to become a label
SET_COVERAGE = 0.8  # a token set grows until it covers this share of the latent's firings


class KeySpace:
    """Integer keys of rules: n-grams of token ids (base vocab + 1, where vocab means "no token"),
    then metadata values. Keys of (latent, rule) pairs are latent * size + key, so the n-gram order
    is capped where that would overflow int64."""

    def __init__(self, vocab_size: int, n_latents: int, max_meta: int = 1 << 16):
        self.vocab_size, self.base = vocab_size, vocab_size + 1
        self.max_order = 3
        while sum(self.base**n for n in range(1, self.max_order + 1)) * n_latents * 2 >= 2**62:
            self.max_order -= 1
        self.offsets = [sum(self.base**m for m in range(1, n)) for n in range(1, self.max_order + 2)]
        self.meta_offset = self.offsets[-1]
        self.size = self.meta_offset + max_meta

    def ngram_keys(self, input_ids: Tensor, doc_ids: Tensor, kept: Tensor) -> Tensor:
        """[n_kept, max_order]: the key of the 1-, 2-, ... gram ending at each kept token (earlier
        positions outside the row count as "no token")."""
        prev = input_ids.clone()
        prev[doc_ids < 0] = self.vocab_size
        value = torch.zeros_like(input_ids)
        out = []
        for n in range(self.max_order):
            if n:
                shifted = torch.full_like(prev, self.vocab_size)
                shifted[:, n:] = prev[:, :-n]
                value = shifted * self.base**n + value
            else:
                value = prev.clone()
            out.append(value[kept] + self.offsets[n])
        return torch.stack(out, 1)

    def kind(self, key: int) -> tuple[str, tuple[int, ...] | int]:
        """('token' | '2-gram' | '3-gram', token ids) or ('meta', metadata id)."""
        if key >= self.meta_offset:
            return "meta", key - self.meta_offset
        n = max(i for i in range(self.max_order) if key >= self.offsets[i])
        value, tokens = key - self.offsets[n], []
        for _ in range(n + 1):
            value, t = divmod(value, self.base)
            tokens.append(t)
        return ("token" if n == 0 else f"{n + 1}-gram"), tuple(reversed(tokens))


class MetaVocab:
    """Ids for (field, value) pairs of document metadata, in order of first sight."""

    def __init__(self):
        self.ids: dict[tuple[str, str], int] = {}
        self.fields: list[str] = []
        self.field_of: list[int] = []

    def keys(self, meta: dict) -> list[int]:
        out = []
        for field, value in meta.items():
            pair = (str(field), str(value))
            if pair not in self.ids:
                if pair[0] not in self.fields:
                    self.fields.append(pair[0])
                self.ids[pair] = len(self.ids)
                self.field_of.append(self.fields.index(pair[0]))
            out.append(self.ids[pair])
        return out

    def name(self, i: int) -> tuple[str, str]:
        return next(pair for pair, j in self.ids.items() if j == i)


@dataclass
class Scored:
    """Every candidate rule of every latent, scored on held-out tokens."""

    keys: Tensor  # [n_latents, C, set_size] the rule's keys (a rule holds if any does), -1 padding
    precision: Tensor  # [n_latents, C]
    recall: Tensor  # [n_latents, C]
    support: Tensor  # [n_latents, C] held-out tokens the rule holds on
    hits: Tensor  # [n_latents, C] held-out firings on which it holds
    fires: Tensor  # [n_latents] held-out firings

    def best(self) -> Tensor:
        """[n_latents] index of each latent's label among its candidates, -1 where none qualifies."""
        f1 = 2 * self.precision * self.recall / (self.precision + self.recall).clamp(min=1e-12)
        f1 = torch.where(self.support >= MIN_SUPPORT, f1, -1.0)
        score, index = f1.max(1)
        return torch.where(score > 0, index, -1)


class LabelStats:
    """Counts for the labels of `n_latents` latents: candidates from the first `fit_tokens` tokens,
    scores from the rest."""

    def __init__(
        self,
        n_latents: int,
        space: KeySpace,
        meta: MetaVocab,
        fit_tokens: int,
        *,
        per_kind: int = 3,
        meta_per_field: int = 2,
        set_size: int = 5,
    ):
        self.n_latents, self.space, self.meta, self.fit_tokens = n_latents, space, meta, fit_tokens
        self.per_kind, self.meta_per_field, self.set_size = per_kind, meta_per_field, set_size
        self.tokens = 0
        self.fit_counts = KeyedSums(n_latents * space.size)
        self.fit_fires = torch.zeros(n_latents, dtype=torch.long)
        # candidates, once chosen: n-grams [n, max_order, per_kind] (order m+1 in row m), metadata values
        # [n, fields, meta_per_field] (field f in row f), token sets [n, set_size]; -1 padding
        self.ngram_cands: Tensor | None = None
        self.meta_cands: Tensor | None = None
        self.set_cands: Tensor | None = None
        self.occurrences = KeyedSums(space.size)
        self.hits: Tensor | None = None
        self.fires = torch.zeros(n_latents, dtype=torch.long)

    @property
    def fitting(self) -> bool:
        return self.ngram_cands is None

    def update(self, rule_keys: Tensor, tok: Tensor, lat: Tensor) -> None:
        """`rule_keys` [n_kept, K]: the keys that hold on each kept token (-1 padding); (tok, lat) the
        batch's firings."""
        if self.fitting:
            pair = lat[:, None] * self.space.size + rule_keys[tok]
            self.fit_counts.add(pair[rule_keys[tok] >= 0])
            self.fit_fires += torch.bincount(lat, minlength=self.n_latents)
            self.tokens += rule_keys.shape[0]
            if self.tokens >= self.fit_tokens:
                self._choose()
            return
        self.tokens += rule_keys.shape[0]
        self.occurrences.add(rule_keys[rule_keys >= 0])
        self.fires += torch.bincount(lat, minlength=self.n_latents)
        # each candidate is compared with the one key of its own kind: n-gram of its order, value of its field
        held = rule_keys[tok]  # [nnz, max_order + fields]
        order = self.space.max_order
        n_fields = self.meta_cands.shape[1]
        meta = torch.full((held.shape[0], n_fields), -2, dtype=torch.long)  # -2: matches no candidate
        meta[:, : min(n_fields, held.shape[1] - order)] = held[:, order : order + n_fields]
        hit = torch.cat(
            [
                (self.ngram_cands[lat] == held[:, :order, None]).flatten(1),
                ((self.meta_cands[lat] == meta[:, :, None]) & (meta[:, :, None] >= 0)).flatten(1),
                (self.set_cands[lat] == held[:, :1]).any(1, keepdim=True),
            ],
            1,
        )
        self.hits.index_add_(0, lat, hit.long())

    def _choose(self) -> None:
        pairs, counts = self.fit_counts.items()
        lat, key = pairs // self.space.size, pairs % self.space.size
        is_meta = key >= self.space.meta_offset
        order = torch.searchsorted(torch.tensor(self.space.offsets[1:]), key, right=True)
        field = torch.tensor(self.meta.field_of, dtype=torch.long)[key[is_meta] - self.space.meta_offset]
        n_kinds = self.space.max_order + max(len(self.meta.fields), 1)
        kind = order.clone()
        kind[is_meta] = self.space.max_order + field
        per = max(self.per_kind, self.meta_per_field, self.set_size)
        top, top_counts = top_per_group(lat * n_kinds + kind, counts, key, self.n_latents * n_kinds, per)
        top, top_counts = top.view(self.n_latents, n_kinds, per), top_counts.view(self.n_latents, n_kinds, per)
        order, n_fields = self.space.max_order, len(self.meta.fields)
        self.ngram_cands = top[:, :order, : self.per_kind].contiguous()
        self.meta_cands = top[:, order : order + n_fields, : self.meta_per_field].contiguous()
        self.set_cands = self._token_set(top[:, 0, : self.set_size], top_counts[:, 0, : self.set_size])
        n_cands = order * self.per_kind + n_fields * self.meta_per_field + 1
        self.hits = torch.zeros(self.n_latents, n_cands, dtype=torch.long)
        self.tokens = 0

    @property
    def candidates(self) -> Tensor:
        """[n_latents, C, set_size]: every candidate rule as the keys it holds for (-1 padding), in the
        order of `hits`: n-grams by order, metadata by field, then the token set."""
        singles = torch.cat([self.ngram_cands.flatten(1), self.meta_cands.flatten(1)], 1)
        cand = torch.full((self.n_latents, singles.shape[1] + 1, self.set_size), -1, dtype=torch.long)
        cand[:, :-1, 0] = singles
        cand[:, -1] = self.set_cands
        return cand

    def _token_set(self, tokens: Tensor, counts: Tensor) -> Tensor:
        """[n_latents, set_size]: the most frequent tokens until they cover SET_COVERAGE of the
        firings; only sets of two or more (one token is already a candidate)."""
        cover = torch.cumsum(counts, 1) / self.fit_fires.clamp(min=1)[:, None]
        size = (cover < SET_COVERAGE).sum(1) + 1  # tokens needed (all of them if never enough)
        take = torch.arange(self.set_size)[None, :] < size[:, None]
        out = torch.where(take & (tokens >= 0), tokens, -1)
        out[(out >= 0).sum(1) < 2] = -1
        return out

    def scored(self) -> Scored:
        if self.fitting:
            raise ValueError(
                f"label statistics need more than the {self.tokens} tokens seen for fitting "
                f"(fit_tokens={self.fit_tokens}) before they can be scored"
            )
        candidates = self.candidates
        valid = candidates >= 0
        occ = torch.where(valid, self.occurrences.get(candidates.clamp(min=0)), 0.0).sum(-1)
        hits = self.hits.double()
        precision = torch.where(occ > 0, hits / occ.clamp(min=1), 0.0)
        recall = hits / self.fires.clamp(min=1)[:, None].double()
        has_rule = valid.any(-1)
        return Scored(
            candidates,
            torch.where(has_rule, precision, 0.0),
            torch.where(has_rule, recall, 0.0),
            torch.where(has_rule, occ, 0.0).long(),
            self.hits,
            self.fires,
        )


def rule_keys(
    space: KeySpace, meta: MetaVocab, input_ids: Tensor, doc_ids: Tensor, kept: Tensor, doc_meta: dict[int, list[int]]
) -> Tensor:
    """[n_kept, max_order + fields]: the keys of every rule that holds on each kept token: its
    n-grams, then its document's metadata value of each field (`doc_meta`: document id -> MetaVocab
    ids); -1 where a document lacks a field."""
    ngrams = space.ngram_keys(input_ids, doc_ids, kept)
    docs, inverse = torch.unique(doc_ids[kept], return_inverse=True)
    per_doc = torch.full((docs.numel(), len(meta.fields)), -1, dtype=torch.long)
    for i, d in enumerate(docs.tolist()):
        for j in doc_meta.get(d, []):
            per_doc[i, meta.field_of[j]] = j + space.meta_offset
    return torch.cat([ngrams, per_doc[inverse]], 1)
