"""Token roles as concepts, and the per-token inputs of the label rules (`labels.py`).

- `document_roles(doc, tokenizer)`: the role of every token of a document, by position as `encode`
  numbers them, as (attribute, value) pairs with "kind" first: the math corpus' roles (normalised
  below) or a `.jsonl` document's `roles` (`data/roles.py`); None for a document without roles.
- `concepts_of(role)`: the concepts a role makes: its kind ("relation"), and its kind with each
  attribute ("relation, exact"); `concept_phrase` says one in words.
- `LabelInputs`: reads each document as the analysis reads the corpus and gives, per batch, the
  `TokenRules` of its kept tokens: n-grams, next token, class, concepts, next concepts, metadata,
  language, and whether the document's text is counted (de-duplication).

The math corpus' roles are read as concepts with its codes in words: an operator written as a word
("times", "por") is an operator with form=word, as a relation word is a relation; operation "mul"
is "multiplication", language "es" is "Spanish", exact True is "exact"; operand 0/1/2 is "answer" /
"first operand" / "second operand"; the whole number a digit belongs to (`value`) is dropped (a
concept per number would be too narrow); the answer's first token gets answer_start=True.
"""

from __future__ import annotations

import bisect
import functools
import hashlib

import torch
from torch import Tensor

from monosemantic.analysis.labels import MAX_FIELDS, MAX_LANGUAGES, KeySpace, Names, TokenRules
from monosemantic.data.corpora import Packed, document_meta
from monosemantic.data.roles import RoleSpan, span_token_roles
from monosemantic.mathlm.language import LANGUAGE_NAMES
from monosemantic.mathlm.sample import OPERATION_NAMES, Role, Sample

KIND_ALIASES = {"operator_word": "operator", "relation_word": "relation"}
OPERANDS = {0: "answer", 1: "first operand", 2: "second operand"}
NO_CONCEPT = ("bos", "eos", "special")
NEXT_ATTRIBUTES = ("answer_start",)  # attributes of the next token's role that make output-side rules
PHRASES = {("answer_start", True): "first token of the answer"}
CLASS_FIELD, NEXT_CLASS_FIELD = "class", "next:class"


@functools.lru_cache(maxsize=None)
def math_role(role: Role, answer_start: bool) -> tuple | None:
    """A math corpus Role as concept pairs (see the module docstring); None for BOS / EOS."""
    if role.kind in NO_CONCEPT:
        return None
    d = role.as_dict()
    d.pop("value", None)
    kind = KIND_ALIASES.get(d.pop("kind"), role.kind)
    if "operation" in d:
        d["operation"] = OPERATION_NAMES.get(d["operation"], d["operation"])
    if "language" in d:
        d["language"] = LANGUAGE_NAMES.get(d["language"], d["language"])
    if "exact" in d:
        d["exact"] = "exact" if d["exact"] else "approximate"
    if "operand" in d:
        d["operand"] = OPERANDS.get(d["operand"], str(d["operand"]))
    if answer_start:
        d["answer_start"] = True
    return (("kind", kind), *sorted(d.items()))


def math_spans(sample: Sample) -> tuple[RoleSpan, ...]:
    out = []
    for span in sample.spans:
        role = math_role(span.role, span.start == sample.answer_start)
        if role is not None:
            out.append(RoleSpan(span.start, span.end, role))
    return tuple(out)


def document_roles(doc: object, tokenizer) -> list[tuple | None] | None:
    """The role of every token of `doc` by position (None where a token has none); None if the
    document has no roles at all."""
    return documents_roles([doc], tokenizer)[0]


def documents_roles(docs: list, tokenizer) -> list[list[tuple | None] | None]:
    """`document_roles` of each of `docs`, their texts tokenized in one call: the tokenizer's
    per-call overhead was most of the analysis' cost of reading roles a document at a time. The
    roles are those of `data.roles.span_token_roles` (the span each token's first character lies in)."""
    spans = [math_spans(doc) if isinstance(doc, Sample) else getattr(doc, "roles", ()) for doc in docs]
    out: list[list[tuple | None] | None] = [None] * len(docs)
    need = [i for i, s in enumerate(spans) if s]
    if not need:
        return out
    if not getattr(tokenizer, "is_fast", False):
        return [span_token_roles(doc.text, s, tokenizer) if s else None for doc, s in zip(docs, spans)]  # its error
    enc = tokenizer(
        [docs[i].text for i in need],
        add_special_tokens=True,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
    )
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    for j, i in enumerate(need):
        ids, starts = enc["input_ids"][j], [s.start for s in spans[i]]
        roles: list[tuple | None] = []
        for (start, _), special in zip(enc["offset_mapping"][j], enc["special_tokens_mask"][j]):
            k = bisect.bisect_right(starts, start) - 1  # the last span starting at or before `start`
            roles.append(None if special or k < 0 or start >= spans[i][k].end else spans[i][k].role)
        if bos is not None and (not ids or ids[0] != bos):
            roles.insert(0, None)
        if eos is not None and (not ids or ids[-1] != eos):
            roles.append(None)
        out[i] = roles
    return out


def concepts_of(role: tuple) -> list[tuple[str, object]]:
    """(field, value) of every concept of a role: ("role:kind", kind), ("role:<attr>", (kind, value))."""
    kind = role[0][1]
    return [("role:kind", kind)] + [(f"role:{attr}", (kind, value)) for attr, value in role[1:]]


def next_concepts_of(role: tuple) -> list[tuple[str, object]]:
    """The output-side concepts of a token whose next token has `role`."""
    kind = role[0][1]
    return [("next:kind", kind)] + [(f"next:{a}", (kind, v)) for a, v in role[1:] if a in NEXT_ATTRIBUTES]


def value_phrase(attr: str, value: object) -> str:
    if (attr, value) in PHRASES:
        return PHRASES[attr, value]
    words = attr.replace("_", " ")
    if isinstance(value, bool):
        return words if value else f"not {words}"
    if isinstance(value, int):
        return f"{words} {value}"
    return str(value).replace("_", " ")


def concept_phrase(field: str, value: object) -> str:
    """A concept in words: ("role:kind", "answer_digit") -> "answer digit"; ("role:place",
    ("answer_digit", "tens")) -> "answer digit, tens"."""
    attr = field.split(":", 1)[1]
    if attr == "kind":
        return str(value).replace("_", " ")
    kind, v = value
    return f"{kind.replace('_', ' ')}, {value_phrase(attr, v)}"


def token_class(text: str) -> str | None:
    """digit, space, word or symbol, by the token's text (None for an empty one)."""
    if not text:
        return None
    if text.isspace():
        return "space"
    core = text.strip()
    return "digit" if core.isdigit() else "word" if core.isalpha() else "symbol"


class LabelInputs:
    """Reads documents (`add`, in corpus order) and turns batches of them into `TokenRules` (`rules`).

    Per document it keeps only a hash of its text, an id of its metadata and an id of each token's
    role: the keys of a role or a metadata set are computed once, in tables."""

    def __init__(self, space: KeySpace, names: Names, tokenizer, vocab: list[str]):
        self.space, self.names, self.tokenizer = space, names, tokenizer
        self.first = 1 if tokenizer.bos_token_id is not None else 0  # index of a document's first token
        specials = set(tokenizer.all_special_ids)
        classes = [None if i in specials else token_class(text) for i, text in enumerate(vocab)]
        self.class_key = self._keys(CLASS_FIELD, classes)
        self.next_class_key = self._keys(NEXT_CLASS_FIELD, classes)
        self.languages: list[str] = []
        self.docs: dict[int, tuple[int, Tensor | None, bytes]] = {}  # id -> (metadata id, role ids, text hash)
        self.owner: dict[bytes, int] = {}  # text hash -> the document counted for it
        self.meta_ids: dict[tuple, int] = {}
        self.meta_rows: list[tuple[list[int], int]] = []  # named keys by column, language bucket
        self.role_ids: dict[tuple, int] = {}
        self.role_rows: list[tuple[list[int], list[int], int]] = []  # input keys, next keys, language bucket
        self._tables: tuple | None = None
        self._pending: list = []  # documents added, not yet read

    def _keys(self, field: str, values: list) -> Tensor:
        named = [-1 if v is None else self.names.id(field, v) for v in values]
        return torch.tensor([-1 if i < 0 else self.space.named_offset + i for i in named], dtype=torch.long)

    def _row(self, pairs: list[tuple[str, object]]) -> list[int]:
        row = [-1] * MAX_FIELDS
        for field, value in pairs:
            i = self.names.id(field, value)
            if i >= 0:
                row[self.names.field_of[i]] = self.space.named_offset + i
        return row

    def language(self, name: object) -> int:
        if name is None:
            return MAX_LANGUAGES
        if name not in self.languages:
            self.languages.append(str(name))
        return min(self.languages.index(str(name)), MAX_LANGUAGES)

    def add(self, doc) -> None:
        """Take the next document; read when `rules` (or `flush`) next needs it, with the others
        pending, in order (the ids of names and roles are given in order of first sight)."""
        self._pending.append(doc)

    def flush(self) -> None:
        """Read the documents added since the last call (`documents_roles` tokenizes them together)."""
        docs, self._pending = self._pending, []
        for doc, roles in zip(docs, documents_roles(docs, self.tokenizer)):
            meta = tuple(sorted(document_meta(doc).items()))
            if meta not in self.meta_ids:
                self.meta_ids[meta] = len(self.meta_rows)
                self.meta_rows.append(
                    (self._row([(f"meta:{k}", v) for k, v in meta]), self.language(dict(meta).get("language")))
                )
            ids = None if roles is None else torch.tensor([self._role_id(r) for r in roles], dtype=torch.int32)
            text = hashlib.blake2b(doc.text.encode(), digest_size=16).digest()
            self.docs[doc.id] = (self.meta_ids[meta], ids, text)

    def _role_id(self, role: tuple | None) -> int:
        if role is None:
            return -1
        if role not in self.role_ids:
            self.role_ids[role] = len(self.role_rows)
            language = self.language(dict(role).get("language"))
            self.role_rows.append((self._row(concepts_of(role)), self._row(next_concepts_of(role)), language))
        return self.role_ids[role]

    def _table(self) -> tuple[Tensor, ...]:
        """(meta keys, meta language, role input keys, role next keys, role language), a row of -1 /
        no language last (index -1), rebuilt when new metadata or roles were seen."""
        sizes = (len(self.meta_rows), len(self.role_rows))
        if self._tables is None or self._tables[0] != sizes:
            none = ([-1] * MAX_FIELDS, [-1] * MAX_FIELDS, MAX_LANGUAGES)
            meta = [*self.meta_rows, none[1:]]
            roles = [*self.role_rows, none]
            self._tables = (
                sizes,
                torch.tensor([m[0] for m in meta], dtype=torch.long),
                torch.tensor([m[1] for m in meta], dtype=torch.long),
                torch.tensor([r[0] for r in roles], dtype=torch.long),
                torch.tensor([r[1] for r in roles], dtype=torch.long),
                torch.tensor([r[2] for r in roles], dtype=torch.long),
            )
        return self._tables[1:]

    def rules(self, batch: Packed, kept: Tensor) -> TokenRules:
        self.flush()
        meta_keys, meta_lang, role_in, role_next, role_lang = self._table()
        B, T = batch.input_ids.shape
        role = torch.full((B, T + 1), -1, dtype=torch.long)  # role id of each token, and of the one after the row
        meta = torch.full((B,), -1, dtype=torch.long)
        counted = torch.zeros(B, dtype=torch.bool)
        has_roles = torch.zeros(B, dtype=torch.bool)
        for b, (d, start) in enumerate(zip(batch.doc_ids[:, 0].tolist(), batch.positions[:, 0].tolist())):
            meta_id, ids, text = self.docs[d]
            meta[b], counted[b] = meta_id, self.owner.setdefault(text, d) == d
            if ids is not None:
                piece = ids[start : start + T + 1]
                role[b, : piece.numel()], has_roles[b] = piece, True
        role[:, :T][batch.doc_ids < 0] = -1
        named = torch.maximum(role_in[role[:, :T]], role_next[role[:, 1:]])  # [B, T, MAX_FIELDS]
        named = torch.maximum(named, meta_keys[meta][:, None, :])
        lang = torch.where(has_roles[:, None], role_lang[role[:, :T]], meta_lang[meta][:, None])
        following = torch.full_like(batch.input_ids, -1)
        following[:, :-1] = torch.where(batch.doc_ids[:, 1:] >= 0, batch.input_ids[:, 1:], -1)
        has_next = following >= 0
        named[..., self.names.columns[CLASS_FIELD]] = self.class_key[batch.input_ids]
        named[..., self.names.columns[NEXT_CLASS_FIELD]] = torch.where(
            has_next, self.next_class_key[following.clamp(min=0)], -1
        )
        next_key = torch.where(has_next, self.space.next_offset + following, -1)
        keys = torch.cat(
            [
                self.space.ngram_keys(batch.input_ids, batch.doc_ids, kept),
                next_key[kept][:, None],
                named[kept][:, : len(self.names.fields)],
            ],
            1,
        )
        rows = torch.arange(B)[:, None].expand(B, T)[kept]
        return TokenRules(keys, batch.positions[kept] - self.first, lang[kept], counted[rows])
