"""A disk cache of the built-in corpus' packed token batches: generate once, harvest many times.

Generating the math corpus in Python, tokenizing and packing it cost far more than the forward to an
early hookpoint (an embedding lookup), and every SAE of a sweep or a demo reads the same batches. So
`packed_batches` stores the batches `pack` makes from a `mathlm` corpus (ids and provenance) in
segments of SEGMENT_BATCHES batches under `cache_root()/packed/KEY/`, and later runs read them back.

- KEY hashes everything the batches depend on: the corpus' description (split, seed, mixture, shard),
  the source of the generator and of the packing code (any edit is a new key), the tokenizer (its
  serialized form and special ids), seq_len and batch_tokens, the torch and tokenizers versions. A
  key that cannot be made (no source to read) means no cache, never an error.
- A segment is written atomically (temp file + rename: a killed writer leaves no segment, only a
  `.tmp` that is never read) and carries the sha256 of its contents, checked on every read: a
  damaged or truncated segment is regenerated (and rewritten), never used.
- Cached or not, the batches are the very ones `pack` yields, in the same order. A run reading past
  the cached segments generates from the corpus' start (what a run without the cache pays) and
  caches the rest. Every cached token costs 12 bytes (1M tokens: 12 MB).

`$MONOSEMANTIC_PACK_CACHE` overrides the folder; `off` turns the cache off.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
from collections.abc import Iterator
from itertools import count, islice
from pathlib import Path

import numpy as np
import tokenizers
import torch

from monosemantic.atomic import atomic_write_bytes
from monosemantic.data import corpora
from monosemantic.data.corpora import Corpus, Packed, pack

log = logging.getLogger(__name__)

SEGMENT_BATCHES = 32
MAGIC = b"monosemantic-packed/1\n"
ENV = "MONOSEMANTIC_PACK_CACHE"


def cache_root() -> Path:
    """Where monosemantic keeps what it can rebuild: $MONOSEMANTIC_CACHE, else
    $XDG_CACHE_HOME/monosemantic, else ~/.cache/monosemantic."""
    if os.environ.get("MONOSEMANTIC_CACHE"):
        return Path(os.environ["MONOSEMANTIC_CACHE"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "monosemantic"
    return Path.home() / ".cache" / "monosemantic"


def _generator_source() -> str:
    """The source of everything that writes the built-in corpus and packs it."""
    from monosemantic import config
    from monosemantic.mathlm import corpus, language, problems, sample

    return "".join(inspect.getsource(m) for m in (corpus, language, problems, sample, corpora, config))


def cache_key(corpus: Corpus, tokenizer, seq_len: int, batch_tokens: int) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    parts = {
        "corpus": corpus.describe(),
        "code": hashlib.sha256(_generator_source().encode()).hexdigest(),
        "tokenizer": hashlib.sha256(backend.to_str().encode()).hexdigest() if backend is not None else None,
        "special": [tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id],
        "seq_len": seq_len,
        "batch_tokens": batch_tokens,
        # pack's shuffles (torch.randperm) and the tokenizing are the libraries' own
        "libraries": [torch.__version__, tokenizers.__version__],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def cache_folder(corpus: Corpus, tokenizer, seq_len: int, batch_tokens: int) -> Path | None:
    """This corpus' segments' folder; None when it is not cached (not the built-in corpus, a
    tokenizer without a serialized form, or the cache turned off)."""
    setting = os.environ.get(ENV, "")
    if setting.lower() == "off" or corpus.describe().get("kind") != "mathlm":
        return None
    if getattr(tokenizer, "backend_tokenizer", None) is None:
        return None
    root = Path(setting) if setting else cache_root() / "packed"
    try:
        return root / cache_key(corpus, tokenizer, seq_len, batch_tokens)
    except Exception as e:  # no source to hash (a .pyc-only install), a tokenizer that cannot serialize
        log.warning("not caching packed tokens: no key for them (%s)", e)
        return None


def encode_segment(batches: list[Packed]) -> bytes | None:
    """Header (batch count, shapes), then each batch's ids, document ids and positions as int32;
    None when a value does not fit int32 (the segment is then not cached)."""
    tables = [torch.stack(list(b)) for b in batches]  # [3, B, T] each
    if any(t.numel() and (t.min() < -(2**31) or t.max() >= 2**31) for t in tables):
        return None
    shapes = np.array([len(batches), *(n for t in tables for n in t.shape[1:])], dtype="<i8")
    body = shapes.tobytes() + b"".join(t.to(torch.int32).numpy().astype("<i4").tobytes() for t in tables)
    return MAGIC + hashlib.sha256(body).digest() + body


def decode_segment(data: bytes) -> list[Packed] | None:
    """The batches of a segment file's bytes; None when they are not a whole, intact segment."""
    head = len(MAGIC) + 32
    if len(data) < head + 8 or not data.startswith(MAGIC):
        return None
    body = memoryview(data)[head:]
    if hashlib.sha256(body).digest() != data[len(MAGIC) : head]:
        return None
    n = int(np.frombuffer(body, dtype="<i8", count=1)[0])
    shapes = np.frombuffer(body, dtype="<i8", count=1 + 2 * n, offset=0)[1:].reshape(n, 2)
    values = np.frombuffer(body, dtype="<i4", offset=8 * (1 + 2 * n)).astype(np.int64)
    out, at = [], 0
    for rows, width in shapes.tolist():
        size = 3 * rows * width
        out.append(Packed(*torch.from_numpy(values[at : at + size].reshape(3, rows, width).copy())))
        at += size
    return out if at == values.shape[0] else None


def _read(file: Path) -> list[Packed] | None:
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        log.warning("%s: cannot read the packed-token cache (%s); generating", file, e)
        return None
    batches = decode_segment(data)
    if batches is None:
        log.warning("%s: damaged segment of the packed-token cache; generating it again", file)
    return batches


def _write(file: Path, batches: list[Packed]) -> None:
    data = encode_segment(batches)
    if data is None:
        return
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(file, data)
    except OSError as e:  # a full or read-only cache costs speed, never the run
        log.warning("not caching packed tokens: %s", e)


def packed_batches(corpus: Corpus, tokenizer, seq_len: int, batch_tokens: int) -> Iterator[Packed]:
    """`pack(corpus.documents(), tokenizer, seq_len, batch_tokens)`, read from the cache where it
    holds them and cached where it does not."""
    folder = cache_folder(corpus, tokenizer, seq_len, batch_tokens)
    if folder is None:
        yield from pack(corpus.documents(), tokenizer, seq_len, batch_tokens)
        return
    source: Iterator[Packed] | None = None
    for s in count():
        file = folder / f"{s:07d}.bin"
        batches = _read(file) if source is None else None
        if batches is None:
            if source is None:  # from the corpus' start: pack's pools span segments
                source = pack(corpus.documents(), tokenizer, seq_len, batch_tokens)
                for _ in islice(source, s * SEGMENT_BATCHES):
                    pass
            batches = list(islice(source, SEGMENT_BATCHES))
            if len(batches) == SEGMENT_BATCHES:  # rewritten even if there: it may be damaged
                _write(file, batches)
        yield from batches
        if len(batches) < SEGMENT_BATCHES:
            return
