"""Automatic labels without an LLM: rules "fires ⇔ <rule>" with held-out precision and recall.

The rules a token can satisfy come as one column of integer keys each (`KeySpace`, built per batch
by `concepts.LabelInputs`):
- input side: the token and the 2- and 3-grams ending at it, and a set of a few tokens ("any of");
  the token's class (a digit, a space, a word, a symbol); on corpora with token roles its concept:
  its role's kind ("relation") or kind and one attribute ("relation, exact"), and a concept together
  with the token ("relation, exact" and "=");
- output side: the next token, its class, its role's kind, whether it is the answer's first token;
- the document's metadata ("language: Spanish");
- position: the token is among the first N of its document (N in `POSITIONS`). N-grams that reach
  back to the document's start (BOS, or before the row) are no candidates: a feature of the first
  positions gets a position rule (or a token rule), never "<bos>1".
Candidates are chosen on the first `fit_tokens` analysed tokens (per column, the keys that hold most
often where the latent fires) and scored on the tokens after them, which they never saw. Both parts
count each distinct text once (a document whose text was seen before is skipped), so a repeated
problem cannot inflate a score. As `PRODUCT.md` defines them:

    precision = P(rule holds | fires) = #(fires and rule holds) / #(fires)
    recall    = P(fires | rule holds) = #(fires and rule holds) / #(rule holds)   support = #(rule holds)

`choose_labels` keeps one rule per latent, or none: see its docstring for the floors.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor

from monosemantic.analysis.latent_stats import KeyedSums, top_per_group

MIN_SUPPORT = 10  # held-out tokens a label's rule must hold on
MIN_HITS = 5  # held-out firings on which it must hold
PRECISION_FLOOR = 0.5  # below this held-out precision a feature has "no label"
MIN_LIFT = 2.0  # nor when its precision is below this many times the rule's base rate (support / tokens)
DENSE = 0.1  # features firing on more than this share of tokens are labelled "dense"
POSITIONS = (1, 2, 4)
SET_COVERAGE = 0.8  # a token set grows until it covers this share of the latent's firings
MAX_FIELDS = 48  # named columns (metadata fields, role attributes, ...) beyond these are ignored
MAX_LANGUAGES = 8  # languages told apart in the counts; bucket MAX_LANGUAGES: no language, or a later one
PER_NGRAM, PER_FIELD = 3, 2  # candidates per latent of each n-gram / next-token column, of each named column
CHUNK = 1 << 16  # firings compared with the candidates at once (bounds memory)


class KeySpace:
    """Integer keys of rules, in ranges: n-grams of token ids (base vocab + 1, where vocab means "no
    token"), next tokens, named values (`Names`), conjunctions (named value, token). Keys of (latent,
    rule) pairs are latent * size + key, so the n-gram order is capped where that would overflow."""

    def __init__(self, vocab_size: int, n_latents: int, max_named: int = 1 << 16):
        self.vocab_size, self.base, self.max_named = vocab_size, vocab_size + 1, max_named
        self.max_order = 3
        while self._size(self.max_order) * n_latents * 2 >= 2**62:
            self.max_order -= 1
        self.offsets = [sum(self.base**m for m in range(1, n)) for n in range(1, self.max_order + 2)]
        self.next_offset = self.offsets[-1]
        self.named_offset = self.next_offset + self.base
        self.conj_offset = self.named_offset + max_named
        self.size = self.conj_offset + max_named * self.base

    def _size(self, order: int) -> int:
        return sum(self.base**n for n in range(1, order + 1)) + self.base + self.max_named * (self.base + 1)

    @property
    def first_named_column(self) -> int:
        return self.max_order + 1

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

    def conj_key(self, named: Tensor, token: Tensor) -> Tensor:
        return self.conj_offset + (named - self.named_offset) * self.base + token

    def column(self, key: Tensor, field_of: Tensor) -> Tensor:
        """The column of each key: n-gram order - 1, max_order for next tokens, then named fields."""
        col = torch.searchsorted(torch.tensor(self.offsets[1:]), key, right=True)
        named = key >= self.named_offset
        col[named] = self.first_named_column + field_of[key[named] - self.named_offset]
        return col

    def at_document_start(self, key: Tensor, bos: int | None) -> Tensor:
        """Which n-gram keys hold a token before the row ("no token") or BOS."""
        out = torch.zeros_like(key, dtype=torch.bool)
        for n in range(1, self.max_order):
            inside = (key >= self.offsets[n]) & (key < self.offsets[n + 1])
            value = key - self.offsets[n]
            for _ in range(n + 1):
                value, t = value // self.base, value % self.base
                out |= inside & ((t == self.vocab_size) | (t == (-1 if bos is None else bos)))
        return out

    def kind(self, key: int) -> tuple[str, tuple[int, ...] | int]:
        """('token' | '2-gram' | '3-gram', token ids), ('next token', id) or ('named', Names id)."""
        if key >= self.named_offset:
            return "named", key - self.named_offset
        if key >= self.next_offset:
            return "next token", key - self.next_offset
        n = max(i for i in range(self.max_order) if key >= self.offsets[i])
        value, tokens = key - self.offsets[n], []
        for _ in range(n + 1):
            value, t = divmod(value, self.base)
            tokens.append(t)
        return ("token" if n == 0 else f"{n + 1}-gram"), tuple(reversed(tokens))


class Names:
    """Ids for (field, value) pairs in order of first sight, and a column for each field. Fields after
    the first MAX_FIELDS, and values after the first `max_named`, get no id (-1): they make no rules."""

    def __init__(self, max_named: int = 1 << 16):
        self.max_named = max_named
        self.ids: dict[tuple[str, object], int] = {}
        self.pairs: list[tuple[str, object]] = []
        self.fields: list[str] = []
        self.columns: dict[str, int] = {}
        self.field_of: list[int] = []

    def id(self, field: str, value: object) -> int:
        pair = (field, value)
        found = self.ids.get(pair)
        if found is not None:
            return found
        if field not in self.columns:
            if len(self.fields) >= MAX_FIELDS:
                return -1
            self.columns[field] = len(self.fields)
            self.fields.append(field)
        if len(self.pairs) >= self.max_named:
            return -1
        self.ids[pair] = len(self.pairs)
        self.pairs.append(pair)
        self.field_of.append(self.columns[field])
        return self.ids[pair]

    def name(self, i: int) -> tuple[str, object]:
        return self.pairs[i]


@dataclass
class TokenRules:
    """What holds on each kept token of a batch."""

    keys: Tensor  # [n_kept, K] per column the key of the rule that holds (-1: none): n-grams, next token, named
    index: Tensor  # [n_kept] the token's index in its document (0: its first token after BOS)
    language: Tensor  # [n_kept] language bucket in [0, MAX_LANGUAGES]
    counted: Tensor  # [n_kept] bool: its document's text is seen for the first time (de-duplication)


@dataclass
class Scored:
    """Every candidate rule of every latent, scored on the held-out tokens. Candidates per latent, in
    order: `single` [F columns x PER_NGRAM] (-1: none), the token set, one concept+token pair per role
    column (`conj`, `conj_token`), then the position rules."""

    single: Tensor  # [n_latents, F, PER_NGRAM] keys
    token_set: Tensor  # [n_latents, set_size] token keys, -1 padding
    conj_columns: list[int]
    conj: Tensor  # [n_latents, R] named keys of role columns
    conj_token: Tensor  # [n_latents] token key
    valid: Tensor  # [n_latents, C] bool: the candidate exists
    precision: Tensor  # [n_latents, C]
    recall: Tensor  # [n_latents, C]
    support: Tensor  # [n_latents, C] held-out tokens the rule holds on
    hits: Tensor  # [n_latents, C] held-out firings on which it holds
    language_hits: Tensor  # [n_latents, MAX_LANGUAGES + 1, C] the same by the token's language
    fires: Tensor  # [n_latents] held-out firings
    tokens: int  # held-out tokens counted (distinct texts)
    top_tokens: Tensor  # [n_latents, set_size] the tokens it fired on most in the fit part, -1 padding
    occurrences: KeyedSums  # held-out tokens each key holds on (conjunction keys too)

    @functools.cached_property
    def f1(self) -> Tensor:
        return 2 * self.precision * self.recall / (self.precision + self.recall).clamp(min=1e-12)

    def rule(self, i: int, c: int) -> tuple:
        """Candidate c of latent i: ('key', column, key), ('set', keys), ('conj', named key, token key,
        column) or ('position', N)."""
        n_single = self.single.shape[1] * PER_NGRAM
        if c < n_single:
            col, slot = divmod(c, PER_NGRAM)
            return "key", col, int(self.single[i, col, slot])
        c -= n_single
        if c == 0:
            return "set", tuple(k for k in self.token_set[i].tolist() if k >= 0)
        c -= 1
        if c < len(self.conj_columns):
            return "conj", int(self.conj[i, c]), int(self.conj_token[i]), self.conj_columns[c]
        return "position", POSITIONS[c - len(self.conj_columns)]


class LabelStats:
    """Counts for the labels of `n_latents` latents: candidates from the first `fit_tokens` tokens,
    scores from the rest."""

    def __init__(
        self,
        n_latents: int,
        space: KeySpace,
        names: Names,
        fit_tokens: int,
        *,
        bos: int | None = None,
        set_size: int = 5,
    ):
        self.n_latents, self.space, self.names, self.fit_tokens = n_latents, space, names, fit_tokens
        self.bos, self.set_size = bos, set_size
        self.tokens = 0  # analysed tokens (all of them: they decide when fitting ends)
        self.scored_tokens = 0  # held-out tokens counted
        self.fit_counts = KeyedSums(n_latents * space.size)
        self.fit_fires = torch.zeros(n_latents, dtype=torch.long)
        self.single: Tensor | None = None  # candidates, once chosen (see Scored)
        self.occurrences = KeyedSums(space.size)
        self.position_tokens = torch.zeros(len(POSITIONS), dtype=torch.long)
        self.fires = torch.zeros(n_latents, dtype=torch.long)

    @property
    def fitting(self) -> bool:
        return self.single is None

    def update(self, rules: TokenRules, tok: Tensor, lat: Tensor) -> None:
        """One batch: `rules` of its kept tokens, (tok, lat) its firings (kept-token index, latent)."""
        self.tokens += rules.keys.shape[0]
        counted = rules.counted[tok]
        tok, lat = tok[counted], lat[counted]
        if self.fitting:
            held = rules.keys[tok]
            pair = lat[:, None] * self.space.size + held
            self.fit_counts.add(pair[held >= 0])
            self.fit_fires += torch.bincount(lat, minlength=self.n_latents)
            if self.tokens >= self.fit_tokens:
                self._choose()
            return
        self._occurrences(rules)
        self.fires += torch.bincount(lat, minlength=self.n_latents)
        hits = self.hits.view(-1, self.hits.shape[2])
        for lo in range(0, tok.numel(), CHUNK):
            t, la = tok[lo : lo + CHUNK], lat[lo : lo + CHUNK]
            hit = self._hits(rules.keys[t], la, rules.index[t])
            hits.index_add_(0, la * (MAX_LANGUAGES + 1) + rules.language[t], hit.long())

    def _occurrences(self, rules: TokenRules) -> None:
        keys = rules.keys[rules.counted]
        self.scored_tokens += keys.shape[0]
        self.occurrences.add(keys[keys >= 0])
        role = keys[:, self.conj_columns]  # [m, R] concepts, each also counted with the token
        self.occurrences.add(self.space.conj_key(role, keys[:, :1])[role >= 0])
        index = rules.index[rules.counted]
        self.position_tokens += (index[:, None] < torch.tensor(POSITIONS)).sum(0)

    def _hits(self, held: Tensor, lat: Tensor, index: Tensor) -> Tensor:
        """[nnz, C] bool: which candidates of its latent hold at each firing."""
        held = held[:, : self.single.shape[1]]
        cand = self.single[lat]  # [nnz, F, PER_NGRAM]
        single = ((cand == held[:, :, None]) & (cand >= 0)).flatten(1)
        members = self.token_set[lat]
        in_set = ((members == held[:, :1]) & (members >= 0)).any(1, keepdim=True)
        concept = self.conj[lat]
        conj = (concept == held[:, self.conj_columns]) & (concept >= 0) & (held[:, :1] == self.conj_token[lat, None])
        position = index[:, None] < torch.tensor(POSITIONS)
        return torch.cat([single, in_set, conj, position], 1)

    def _choose(self) -> None:
        pairs, counts = self.fit_counts.items()
        lat, key = pairs // self.space.size, pairs % self.space.size
        keep = ~self.space.at_document_start(key, self.bos)
        lat, key, counts = lat[keep], key[keep], counts[keep]
        n_cols = self.space.first_named_column + len(self.names.fields)
        col = self.space.column(key, torch.tensor(self.names.field_of + [0], dtype=torch.long))
        per = max(PER_NGRAM, self.set_size)
        top, top_counts = top_per_group(lat * n_cols + col, counts, key, self.n_latents * n_cols, per)
        top, top_counts = top.view(self.n_latents, n_cols, per), top_counts.view(self.n_latents, n_cols, per)
        self.single = top[:, :, :PER_NGRAM].clone()
        self.single[:, self.space.first_named_column :, PER_FIELD:] = -1
        self.top_tokens = top[:, 0, : self.set_size].clone()
        self.token_set = self._token_set(self.top_tokens, top_counts[:, 0, : self.set_size])
        first = self.space.first_named_column
        self.conj_columns = [first + j for j, f in enumerate(self.names.fields) if f.startswith("role:")]
        self.conj = self.single[:, self.conj_columns, 0].clone()
        self.conj_token = self.single[:, 0, 0].clone()
        n_cands = n_cols * PER_NGRAM + 1 + len(self.conj_columns) + len(POSITIONS)
        self.hits = torch.zeros(self.n_latents, MAX_LANGUAGES + 1, n_cands, dtype=torch.long)
        self.fit_counts = None  # no longer needed: free its memory

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
        occ = self.occurrences.get
        single = self.single.flatten(1)
        conj_keys = self.space.conj_key(self.conj, self.conj_token[:, None])
        conj_valid = (self.conj >= 0) & (self.conj_token[:, None] >= 0)
        support = torch.cat(
            [
                torch.where(single >= 0, occ(single.clamp(min=0)), 0.0),
                torch.where(self.token_set >= 0, occ(self.token_set.clamp(min=0)), 0.0).sum(1, keepdim=True),
                torch.where(conj_valid, occ(conj_keys.clamp(min=0)), 0.0),
                self.position_tokens.double().expand(self.n_latents, -1),
            ],
            1,
        ).long()
        valid = torch.cat(
            [
                single >= 0,
                (self.token_set >= 0).any(1, keepdim=True),
                conj_valid,
                torch.ones(self.n_latents, len(POSITIONS), dtype=torch.bool),
            ],
            1,
        )
        hits = self.hits.sum(1)
        return Scored(
            self.single,
            self.token_set,
            self.conj_columns,
            self.conj,
            self.conj_token,
            valid,
            torch.where(valid, hits / self.fires.clamp(min=1)[:, None].double(), 0.0),
            torch.where(valid & (support > 0), hits / support.clamp(min=1).double(), 0.0),
            torch.where(valid, support, 0),
            hits,
            self.hits,
            self.fires,
            self.scored_tokens,
            self.top_tokens,
            self.occurrences,
        )


def choose_labels(scored: Scored, priority: Tensor) -> Tensor:
    """[n_latents] each latent's label (a candidate index), -1 for "no label": its rule of best F1
    among those that hold on >= MIN_SUPPORT held-out tokens and >= MIN_HITS held-out firings, with
    precision >= PRECISION_FLOOR and >= MIN_LIFT x the rule's base rate (a rule that holds on most
    tokens, "result: exact", says nothing about a feature); ties go to the higher `priority` [C]
    (concepts before tokens)."""
    ok = scored.valid & (scored.support >= MIN_SUPPORT) & (scored.hits >= MIN_HITS)
    ok &= scored.precision >= PRECISION_FLOOR
    ok &= scored.precision >= MIN_LIFT * scored.support / max(scored.tokens, 1)
    score = torch.where(ok, scored.f1 + 1e-9 * priority[None, :], -1.0)
    best_score, best = score.max(1)
    return torch.where(best_score >= 0, best, -1)
