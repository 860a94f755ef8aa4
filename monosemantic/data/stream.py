"""Harvesting activations: model + hookpoint + corpus -> shuffled [batch, d] batches, with provenance.

Documents are batched one per row (`corpora.pack`; the built-in corpus' batches are cached on disk
by `pack_cache.py`), run through the model up to the hookpoint (the
forward stops there), and every real token's activation is kept; BOS and padding are not. Each
activation carries its provenance: (document id, position in the document, token id).

The stream of kept activations, in corpus order, is cut into chunks of `chunk_tokens` that are
shuffled as a whole (the shuffle buffer). Chunk c is a pure function of c, so `load_state_dict`
resumes exactly, re-running only the chunk it resumes in; the disk cache (`cache.py`) stores
chunks as shards, so reading a cache gives the very batches the stream would give.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from monosemantic.config import ConfigError, derive_seed
from monosemantic.data.corpora import Corpus, kept_tokens
from monosemantic.data.pack_cache import packed_batches
from monosemantic.hooks import hookpoint_widths, run_and_capture
from monosemantic.models import Hookpoint, ModelError, context_length, resolve_hookpoints


@dataclass
class HarvestConfig:
    seq_len: int = 64
    """longest row fed to the model; longer documents are split (the built-in model's context is 64)"""
    batch_tokens: int = 4096
    """tokens per model forward (rows x row length, padding included)"""
    chunk_tokens: int = 1 << 16
    """activations shuffled together (the shuffle buffer; rounded up to whole batches)"""
    seed: int = 0
    """seed of the shuffle"""

    def __post_init__(self) -> None:
        for name in ("seq_len", "batch_tokens", "chunk_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")


class ActivationStream:
    """`Iterator[Tensor]` of [batch_size, d] activations for the trainer, with `state_dict` /
    `load_state_dict`; `provenance` holds the [batch_size, 3] (document, position, token) rows of
    the batch last returned.

    `hookpoint` is one hookpoint (a name, or a pattern that matches exactly one), or a list of them
    (names, or `Hookpoint`s the caller resolved): then one forward captures them all and a batch is
    their concatenation, d = sum of `widths` (split it with `torch.split(x, stream.widths, 1)`).

    With `look_ahead`, the chunk after the one being read is harvested in a thread meanwhile (the
    same chunks, the same order; one more chunk in memory): only for a model nothing else runs
    while the stream is alive, since the thread's hooks are on the model. `stop_ahead()` ends it."""

    def __init__(
        self,
        model,
        tokenizer,
        hookpoint: str | list[str] | list[Hookpoint],
        corpus: Corpus,
        batch_size: int,
        cfg: HarvestConfig | None = None,
        *,
        look_ahead: bool = False,
    ):
        self.model, self.tokenizer, self.corpus, self.batch_size = model, tokenizer, corpus, batch_size
        self.cfg = cfg or HarvestConfig()
        self.hooks = self._resolve(hookpoint)
        self.hook = self.hooks[0]
        self.names = [h.name for h in self.hooks]
        max_len = context_length(model)
        if max_len is not None and self.cfg.seq_len > max_len:
            raise ModelError(f"seq_len={self.cfg.seq_len} exceeds the model's context of {max_len} tokens")
        self.chunk_tokens = -(-self.cfg.chunk_tokens // batch_size) * batch_size
        self.chunk, self.index = 0, 0
        self.provenance: Tensor | None = None
        self._current: tuple[Tensor, Tensor] | None = None  # (acts, provenance) of self.chunk, shuffled
        # the forwards in corpus order, the chunk they go on with, and what they read past its end;
        # touched only by `_compute`, which runs in the main thread or (one at a time) in `_ahead`'s
        self._source: Iterator[tuple[Tensor, Tensor]] | None = None
        self._source_at: int | None = None
        self._carry: list[tuple[Tensor, Tensor]] = []
        self._last: tuple[int, tuple[Tensor, Tensor]] | None = None  # the chunk returned last
        self._ahead: tuple[int, _Ahead] | None = None  # the next chunk, being computed in a thread
        self.look_ahead, self._stopping = look_ahead, False
        self.ahead_until: int | None = None  # chunks from here on are not computed ahead (the reader stops before)
        self.widths = hookpoint_widths(model, self.hooks)
        self.d = sum(self.widths)

    def _resolve(self, hookpoint: str | list[str] | list[Hookpoint]) -> list[Hookpoint]:
        if isinstance(hookpoint, str):
            hooks = resolve_hookpoints(self.model, hookpoint)
            if len(hooks) != 1:
                raise ModelError(f"hookpoint {hookpoint!r} matches {len(hooks)} hookpoints; an SAE reads exactly one")
            return hooks
        hooks = [h for h in hookpoint if isinstance(h, Hookpoint)]
        if len(hooks) == len(hookpoint):
            return hooks  # resolved by the caller, once per job
        return resolve_hookpoints(self.model, [h if isinstance(h, str) else h.name for h in hookpoint])

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def describe(self) -> dict:
        hookpoint = self.names if len(self.names) > 1 else self.hook.name
        return {
            "hookpoint": hookpoint,
            "corpus": self.corpus.describe(),
            "d": self.d,
            "batch_size": self.batch_size,
            **{f"harvest_{k}": v for k, v in vars(self.cfg).items()},
        }

    # ---- corpus order ----------------------------------------------------------------------------

    def _forwarded(self, skip_tokens: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Kept activations [n, d] and provenance [n, 3] per forward, in corpus order, from the
        `skip_tokens`-th kept token on; batches before it are counted, not run."""
        for batch in packed_batches(self.corpus, self.tokenizer, self.cfg.seq_len, self.cfg.batch_tokens):
            if self._stopping:
                return  # stop_ahead: the chunk is dropped
            keep = kept_tokens(batch, self.tokenizer).view(-1)  # [B * T]
            rows = keep.nonzero().squeeze(1)  # kept (row, position)s, flattened, in corpus order
            if skip_tokens >= rows.shape[0]:
                skip_tokens -= rows.shape[0]
                continue
            rows = rows[skip_tokens:]
            device = self._device()
            with torch.no_grad():
                captured = run_and_capture(
                    self.model, batch.input_ids.to(device), self.hooks, batch.attention_mask.to(device)
                )
            acts = (
                captured[self.hook.name] if len(self.names) == 1 else torch.cat([captured[n] for n in self.names], -1)
            )
            prov = torch.stack([batch.doc_ids, batch.positions, batch.input_ids], -1).view(-1, 3)
            yield acts.reshape(-1, acts.shape[-1]).index_select(0, rows.to(device)), prov.index_select(0, rows)
            skip_tokens = 0

    def _compute(self, k: int) -> tuple[Tensor, Tensor]:
        """Chunk k, shuffled: read on from the source if it stands at k, else from a new one that
        skips the first k chunks. Raises StopIteration when the corpus has no whole batch left."""
        if self._source is None or self._source_at != k:
            self._source, self._carry = self._forwarded(k * self.chunk_tokens), []
        self._source_at = None  # unknown until this chunk is complete (an error may leave it anywhere)
        have = sum(a.shape[0] for a, _ in self._carry)
        for acts, prov in self._source:
            self._carry.append((acts, prov))
            have += acts.shape[0]
            if have >= self.chunk_tokens:
                break
        acts = torch.cat([a for a, _ in self._carry]) if self._carry else torch.empty(0)
        n = min(self.chunk_tokens, acts.shape[0] // self.batch_size * self.batch_size)
        if n == 0:
            self._source_at = k  # the ended source stands here: asking again ends again, at once
            raise StopIteration
        prov = torch.cat([p for _, p in self._carry])
        self._carry = [(acts[n:].clone(), prov[n:].clone())]  # a view would keep the whole chunk alive
        self._source_at = k + 1
        g = torch.Generator().manual_seed(derive_seed(self.cfg.seed, k))
        order = torch.randperm(n, generator=g)
        return acts[:n][order.to(acts.device)], prov[:n][order]

    def _chunk(self, k: int) -> tuple[Tensor, Tensor]:
        """Chunk k (the one computed last, the one computed ahead, or computed now); then chunk
        k + 1 is computed in a thread while the caller uses this one (torch's ops release the GIL,
        so the model's forward and the SAE's step overlap)."""
        if self._last is None or self._last[0] != k:
            ahead, self._ahead = self._ahead, None
            chunk = None
            if ahead is not None:
                try:
                    chunk = ahead[1].result()
                except BaseException:
                    if ahead[0] == k:
                        raise
                    self._source = None  # a source that raised is closed
                chunk = chunk if ahead[0] == k else None
            self._last = (k, chunk if chunk is not None else self._compute(k))
        if self.look_ahead and self._ahead is None and (self.ahead_until is None or k + 1 < self.ahead_until):
            self._ahead = (k + 1, _Ahead(self._compute, k + 1))
        return self._last[1]

    def stop_ahead(self) -> None:
        """Stop the chunk being computed ahead (after its current forward) and wait for it; the
        stream stays usable (the next chunk it needs is then computed when needed)."""
        if self._ahead is not None:
            self._stopping = True
            self._ahead[1].wait()
            self._ahead, self._source, self._stopping = None, None, False

    def chunks(self, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """Shuffled chunks `start`, `start + 1`, ...: (acts [chunk_tokens, d], provenance [chunk_tokens, 3]);
        the last may be shorter (whole batches only) when the corpus ends."""
        self.load_state_dict({"chunk": start, "index": 0})
        while True:
            try:
                chunk = self._chunk(self.chunk)
            except StopIteration:
                return
            yield chunk
            self.chunk += 1

    # ---- the iterator ------------------------------------------------------------------------

    def __iter__(self) -> ActivationStream:
        return self

    def __next__(self) -> Tensor:
        if self._current is None:
            self._current = self._chunk(self.chunk)
        acts, prov = self._current
        start = self.index * self.batch_size
        batch, self.provenance = acts[start : start + self.batch_size], prov[start : start + self.batch_size]
        self.index += 1
        if self.index * self.batch_size >= acts.shape[0]:
            self.chunk, self.index, self._current = self.chunk + 1, 0, None
        return batch

    def state_dict(self) -> dict:
        return {"chunk": self.chunk, "index": self.index}

    def load_state_dict(self, state: dict) -> None:
        if (int(state["chunk"]), int(state["index"])) == (self.chunk, self.index):
            return
        self.chunk, self.index = int(state["chunk"]), int(state["index"])
        self._current = None  # the source is left alone: `_compute` knows where it stands


class _Ahead:
    """`fn(*args)` running in a thread (not a daemon: a process ending meanwhile waits for it rather than
    abort inside a torch op); `result()` waits
    for it and returns its value or raises its exception."""

    def __init__(self, fn: Callable, *args) -> None:
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn, *args), name="harvest-ahead")
        self._thread.start()

    def _run(self, fn: Callable, *args) -> None:
        try:
            self._value = fn(*args)
        except BaseException as e:  # StopIteration too: handed to the caller by result()
            self._error = e

    def wait(self) -> None:
        self._thread.join()

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value
