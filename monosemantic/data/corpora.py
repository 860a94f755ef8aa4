"""Text corpora and their packing into model inputs, with provenance for every token.

- `Document`: id, text and metadata of one text.
- `open_corpus(spec)`: the built-in math corpus (`mathlm`, `mathlm:heldout`), a `.txt` file (one
  document per non-empty line; a line over 1 MiB is read in pieces of at most that, one document
  each), a `.jsonl` file (field "text", and optionally "roles": token roles, format in `roles.py`),
  or a Hugging Face dataset saved with `save_to_disk` (column "text"). Files must be UTF-8; an error
  names the file, line and byte offset.
- `pack(...)`: documents -> [batch, seq_len] token batches, whole documents placed greedily in rows
  (long ones split), each token labelled with its (document id, position in the document).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import NamedTuple, Protocol

import torch
from torch import Tensor

from monosemantic.config import derive_seed
from monosemantic.data.roles import RoleFormatError, RoleSpan, parse_roles
from monosemantic.errors import MonosemanticError


@dataclass(frozen=True)
class Document:
    id: int
    text: str
    meta: dict = field(default_factory=dict, compare=False)
    roles: tuple[RoleSpan, ...] = field(default=(), compare=False)  # character spans with roles (.jsonl "roles")


def document_meta(doc: object) -> dict[str, str]:
    """Metadata of a document as strings (the math corpus' samples carry language, operation, ...)."""
    meta = getattr(doc, "meta", None)
    return {str(k): str(v) for k, v in meta.items()} if meta else {}


class Corpus(Protocol):
    def documents(self, start: int = 0, limit: int | None = None) -> Iterator[Document]: ...
    def describe(self) -> dict: ...


class CorpusError(MonosemanticError, ValueError):
    """A corpus that cannot be read: missing file, bad format, no text."""


MAX_LINE_BYTES = 1 << 20  # a longer .txt line is read in pieces, one document each: memory stays bounded


class TextFileCorpus:
    """A .txt file (one document per non-empty line, a line over MAX_LINE_BYTES cut into several) or a
    .jsonl file (one JSON object with "text" per line); refused at once if it holds no text."""

    def __init__(self, path: str | Path, text_field: str = "text"):
        self.path, self.text_field = Path(path), text_field
        if not self.path.is_file():
            raise CorpusError(f"{self.path}: no such file")
        if self.path.suffix not in (".txt", ".jsonl"):
            raise CorpusError(f"{self.path}: expected a .txt or .jsonl file, got {self.path.suffix!r}")
        if next(self._texts(), None) is None:
            raise CorpusError(f"{self.path}: no text (the file is empty or every line is blank)")

    def _lines(self, limit: int | None) -> Iterator[tuple[int, str]]:
        """(line number, text) of the file's lines, decoded as UTF-8; with `limit`, a longer line
        comes in pieces of at most `limit` bytes, cut after a space where the second half of the
        piece has one, else before its last (maybe incomplete) character."""
        with open(self.path, "rb") as f:
            number, offset, carry = 1, 0, b""
            while piece := carry + (f.readline() if limit is None else f.readline(limit - len(carry))):
                carry, whole = b"", piece.endswith(b"\n")
                if limit is not None and not whole and len(piece) >= limit:
                    cut = _cut(piece)
                    piece, carry = piece[:cut], piece[cut:]
                try:
                    text = piece.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise CorpusError(
                        f"{self.path}:{number}: invalid UTF-8 at byte {offset + e.start} of the file ({e.reason}); "
                        "the corpus must be UTF-8 text"
                    ) from None
                yield number, text
                offset, number = offset + len(piece), number + whole

    def _texts(self) -> Iterator[tuple[str, tuple[RoleSpan, ...]]]:
        """(text, role spans) of every document."""
        for n, line in self._lines(MAX_LINE_BYTES if self.path.suffix == ".txt" else None):
            if not line.strip():
                continue
            if self.path.suffix == ".txt":
                yield line.removesuffix("\n").removesuffix("\r"), ()  # as text mode read it: \r\n ends a line too
                continue
            try:
                record = json.loads(line)
                text = str(record[self.text_field])
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise CorpusError(
                    f"{self.path}:{n}: expected a JSON object with a {self.text_field!r} string ({e})"
                ) from e
            try:
                roles = parse_roles(record["roles"], text, f"{self.path}:{n}") if "roles" in record else ()
            except RoleFormatError as e:
                raise CorpusError(str(e)) from e
            yield text, roles

    def documents(self, start: int = 0, limit: int | None = None) -> Iterator[Document]:
        texts = islice(self._texts(), start, None if limit is None else start + limit)  # reads no further
        for i, (text, roles) in enumerate(texts, start):
            yield Document(i, text, roles=roles)

    def describe(self) -> dict:
        return {"kind": "file", "path": str(self.path.resolve()), "field": self.text_field}


def _cut(piece: bytes) -> int:
    """Where to cut a piece of a long line: after its last space in the second half (a space is
    never inside a UTF-8 character), else at the start of its last character (which may be
    incomplete: the rest of it comes with the next piece)."""
    space = piece.rfind(b" ", len(piece) // 2)
    if space >= 0:
        return space + 1
    starts = [i for i in range(max(0, len(piece) - 4), len(piece)) if piece[i] & 0xC0 != 0x80]
    return starts[-1] if starts and starts[-1] > 0 else len(piece)


class SavedDatasetCorpus:
    """A Hugging Face dataset saved with `Dataset.save_to_disk` (needs the `datasets` package)."""

    def __init__(self, path: str | Path, text_field: str = "text"):
        try:
            import datasets
        except ImportError as e:
            raise CorpusError(f"{path} is a saved Hugging Face dataset; `pip install datasets` to read it") from e
        self.path, self.text_field = Path(path), text_field
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            if "train" not in ds:
                raise CorpusError(f"{path}: a DatasetDict without a 'train' split (has {sorted(ds)})")
            ds = ds["train"]
        if text_field not in ds.column_names:
            raise CorpusError(f"{path}: no column {text_field!r}; it has {ds.column_names}")
        self.dataset = ds

    def documents(self, start: int = 0, limit: int | None = None) -> Iterator[Document]:
        stop = len(self.dataset) if limit is None else min(len(self.dataset), start + limit)
        for i in range(start, stop):
            yield Document(i, str(self.dataset[i][self.text_field]))

    def describe(self) -> dict:
        return {"kind": "hf_dataset", "path": str(self.path.resolve()), "field": self.text_field}


class CorpusShard:
    """Documents i, i + n, i + 2n, ... of a corpus (counted in its order): the share of
    data-parallel rank i of n, which harvests only these."""

    def __init__(self, corpus: Corpus, index: int, count: int):
        self.corpus, self.index, self.count = corpus, index, count

    def documents(self, start: int = 0, limit: int | None = None) -> Iterator[Document]:
        mine = (d for j, d in enumerate(self.corpus.documents()) if j % self.count == self.index)
        return islice(mine, start, None if limit is None else start + limit)

    def describe(self) -> dict:
        return {**self.corpus.describe(), "shard": [self.index, self.count]}


def open_corpus(spec: str, *, seed: int = 0, text_field: str = "text") -> Corpus:
    """`mathlm` / `mathlm:train` / `mathlm:heldout`, a .txt / .jsonl file, or a saved HF dataset directory."""
    if spec.split(":")[0] == "mathlm":
        from monosemantic.mathlm.corpus import MathCorpus

        return MathCorpus(spec.split(":")[1] if ":" in spec else "train", seed=seed)
    path = Path(spec)
    if path.is_dir():
        if not any((path / f).exists() for f in ("dataset_info.json", "state.json", "dataset_dict.json")):
            raise CorpusError(f"{path}: a directory, but not a dataset saved with save_to_disk")
        return SavedDatasetCorpus(path, text_field)
    return TextFileCorpus(path, text_field)


ENCODE_CHARS = 1 << 16  # a tokenizer given 10 MB of text at once takes GBs: longer texts go in pieces


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of one document: BOS first (when the tokenizer has one) and EOS last (when it has one).
    A text over ENCODE_CHARS characters is tokenized in pieces of at most that, each cut after
    whitespace where it can be (a token may then differ at a cut), so memory stays bounded."""
    return encode_many(tokenizer, [text])[0]


def encode_many(tokenizer, texts: list[str]) -> list[list[int]]:
    """`encode` of each text, the short ones in one tokenizer call: a call costs ~1 ms of Python
    around ~0.2 ms of tokenizing a short text, so one call per document dominated harvesting."""
    short = [i for i, text in enumerate(texts) if len(text) <= ENCODE_CHARS]
    ids: list[list[int]] = [[] for _ in texts]
    if short:
        encoded = _encode_short(tokenizer, [texts[i] for i in short])
        for i, row in zip(short, encoded):
            ids[i] = row
    return [
        _ends(tokenizer, row if len(text) <= ENCODE_CHARS else _encode_long(tokenizer, text))
        for row, text in zip(ids, texts)
    ]


def _encode_short(tokenizer, texts: list[str]) -> list[list[int]]:
    """`tokenizer(texts, add_special_tokens=True)["input_ids"]`; from a fast tokenizer's Rust backend
    directly when the wrapper would call it as is (no truncation, padding or special-token splitting
    set on it): the wrapper's conversion of each encoding to Python cost more than the tokenizing."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    split = bool(getattr(tokenizer, "split_special_tokens", False))
    if backend is None or backend.truncation or backend.padding or backend.encode_special_tokens != split:
        return tokenizer(texts, add_special_tokens=True)["input_ids"]
    return [e.ids for e in backend.encode_batch(texts, add_special_tokens=True)]


def _encode_long(tokenizer, text: str) -> list[int]:
    pieces = (tokenizer(piece, add_special_tokens=False)["input_ids"] for piece in _pieces(text, ENCODE_CHARS))
    return [i for piece in pieces for i in piece]


def _ends(tokenizer, ids: list[int]) -> list[int]:
    """`ids` with BOS first and EOS last (those the tokenizer has), added where missing."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    if bos is not None and (not ids or ids[0] != bos):
        ids = [bos, *ids]
    if eos is not None and (not ids or ids[-1] != eos):
        ids = [*ids, eos]
    return ids


def _pieces(text: str, size: int) -> Iterator[str]:
    """`text` in consecutive pieces of at most `size` characters, each ending at its last whitespace
    in its second half where it has one."""
    start = 0
    while start < len(text):
        end = min(start + size, len(text))
        if end < len(text):
            cut = max(text.rfind(c, start + size // 2, end) for c in " \n\t")
            end = cut + 1 if cut >= 0 else end
        yield text[start:end]
        start = end


def prompt_ids(tokenizer, text: str) -> list[int]:
    """Token ids of `text` as the analysis reads a document (BOS first when the tokenizer has one),
    without the EOS that would end it: the text may go on."""
    ids = encode(tokenizer, text)
    if ids and ids[-1] == tokenizer.eos_token_id:
        ids = ids[:-1]
    return ids


class Packed(NamedTuple):
    """A batch of packed rows. Provenance: token [b, t] is position `positions[b, t]` of document
    `doc_ids[b, t]` (-1 on padding)."""

    input_ids: Tensor  # [B, T] int64, pad id on padding
    doc_ids: Tensor  # [B, T] int64, -1 on padding
    positions: Tensor  # [B, T] int64, -1 on padding

    @property
    def attention_mask(self) -> Tensor:
        return (self.doc_ids >= 0).long()


def kept_tokens(batch: Packed, tokenizer) -> Tensor:
    """[B, T] bool: the tokens whose activations count (not padding, not BOS)."""
    keep = batch.doc_ids >= 0
    if tokenizer.bos_token_id is not None:
        keep &= batch.input_ids != tokenizer.bos_token_id
    return keep


WIDTH_STEP = 8  # row widths are rounded up to a multiple of this


def _batch(rows: list[tuple[list[int], int, int]], width: int, pad: int) -> Packed:
    """Rows of (tokens, document id, first position), right-padded to `width`."""
    # built as Python lists and converted once: per-row tensor writes cost ~10 us each, ~500 rows a batch
    ids, docs, pos = [], [], []
    for tokens, doc, start in rows:
        n, fill = len(tokens), width - len(tokens)
        ids.append([*tokens, *[pad] * fill])
        docs.append([*[doc] * n, *[-1] * fill])
        pos.append([*range(start, start + n), *[-1] * fill])
    return Packed(*(torch.tensor(table, dtype=torch.long) for table in (ids, docs, pos)))


ENCODE_DOCUMENTS = 256  # documents tokenized in one call (`encode_many`)


def _encoded(documents: Iterable[Document], tokenizer) -> Iterator[tuple[Document, list[int]]]:
    """(document, `encode` of its text), in order, tokenized ENCODE_DOCUMENTS at a time."""
    it = iter(documents)
    while group := list(islice(it, ENCODE_DOCUMENTS)):
        yield from zip(group, encode_many(tokenizer, [doc.text for doc in group]))


def _width(row: tuple[list[int], int, int], seq_len: int) -> int:
    return min(seq_len, -(-len(row[0]) // WIDTH_STEP) * WIDTH_STEP)


def pack(
    documents: Iterable[Document], tokenizer, seq_len: int, batch_tokens: int, *, pool_rows: int = 2048, seed: int = 0
) -> Iterator[Packed]:
    """Documents -> batches of rows, one document per row starting at position 0 (a document longer
    than `seq_len` tokens is split into pieces of `seq_len`, one per row, its positions continuing).

    Every row is then exactly what a model sees when it reads that text alone: no attention across
    documents, no shifted positions. To keep padding small, rows are grouped by width (their length
    rounded up to a multiple of 8): a batch is [batch_tokens // width, width]. Rows are gathered in
    pools of `pool_rows`; a pool's full batches come in an order shuffled by (seed, pool number), and
    rows that do not fill a batch wait for the next pool. So only a handful of batch shapes ever occur
    (kernels compiled per shape, e.g. oneDNN's, are not rebuilt) and the stream is a pure function of
    the documents and the arguments. The last batches of a finite corpus may be partial.
    """
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    waiting: dict[int, list[tuple[list[int], int, int]]] = {}
    pooled, n_pool = 0, 0

    def full_batches() -> list[Packed]:
        out = []
        for width in sorted(waiting):
            rows_per_batch = max(1, batch_tokens // width)
            group = waiting[width]
            while len(group) >= rows_per_batch:
                out.append(_batch(group[:rows_per_batch], width, pad))
                del group[:rows_per_batch]
        return out

    for doc, tokens in _encoded(documents, tokenizer):
        for start in range(0, len(tokens), seq_len):
            row = (tokens[start : start + seq_len], doc.id, start)
            waiting.setdefault(_width(row, seq_len), []).append(row)
            pooled += 1
        if pooled >= pool_rows:
            batches = full_batches()
            order = torch.randperm(len(batches), generator=torch.Generator().manual_seed(derive_seed(seed, n_pool)))
            yield from (batches[i] for i in order.tolist())
            pooled = sum(len(g) for g in waiting.values())
            n_pool += 1
    yield from full_batches()
    for width in sorted(waiting):
        if waiting[width]:
            yield _batch(waiting[width], width, pad)
