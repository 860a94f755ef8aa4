"""Harvesting activations: model + hookpoint + corpus -> shuffled [batch, d] batches, with provenance.

Documents are batched one per row (`corpora.pack`), run through the model up to the hookpoint (the
forward stops there), and every real token's activation is kept; BOS and padding are not. Each
activation carries its provenance: (document id, position in the document, token id).

The stream of kept activations, in corpus order, is cut into chunks of `chunk_tokens` that are
shuffled as a whole (the shuffle buffer). Chunk c is a pure function of c, so `load_state_dict`
resumes exactly, re-running only the chunk it resumes in; the disk cache (`cache.py`) stores
chunks as shards, so reading a cache gives the very batches the stream would give.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from monosemantic.config import ConfigError, derive_seed
from monosemantic.data.corpora import Corpus, kept_tokens, pack
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
    their concatenation, d = sum of `widths` (split it with `torch.split(x, stream.widths, 1)`)."""

    def __init__(
        self,
        model,
        tokenizer,
        hookpoint: str | list[str] | list[Hookpoint],
        corpus: Corpus,
        batch_size: int,
        cfg: HarvestConfig | None = None,
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
        self._source: Iterator[tuple[Tensor, Tensor]] | None = None
        self._carry: list[tuple[Tensor, Tensor]] = []
        self._last: tuple[int, tuple[Tensor, Tensor]] | None = None
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
        for batch in pack(self.corpus.documents(), self.tokenizer, self.cfg.seq_len, self.cfg.batch_tokens):
            keep = kept_tokens(batch, self.tokenizer)
            n = int(keep.sum())
            if skip_tokens >= n:
                skip_tokens -= n
                continue
            device = self._device()
            captured = run_and_capture(
                self.model, batch.input_ids.to(device), self.hooks, batch.attention_mask.to(device)
            )
            acts = (
                captured[self.hook.name] if len(self.names) == 1 else torch.cat([captured[n] for n in self.names], -1)
            )
            prov = torch.stack([batch.doc_ids, batch.positions, batch.input_ids], -1)[keep]
            yield acts[keep.to(device)][skip_tokens:], prov[skip_tokens:]
            skip_tokens = 0

    def _next_chunk(self) -> tuple[Tensor, Tensor]:
        if self._source is None:
            self._source, self._carry = self._forwarded(self.chunk * self.chunk_tokens), []
        have = sum(a.shape[0] for a, _ in self._carry)
        for acts, prov in self._source:
            self._carry.append((acts, prov))
            have += acts.shape[0]
            if have >= self.chunk_tokens:
                break
        if have == 0:
            raise StopIteration
        acts = torch.cat([a for a, _ in self._carry])
        prov = torch.cat([p for _, p in self._carry])
        n = min(self.chunk_tokens, acts.shape[0] // self.batch_size * self.batch_size)
        if n == 0:
            raise StopIteration
        self._carry = [(acts[n:].clone(), prov[n:].clone())]  # a view would keep the whole chunk alive
        g = torch.Generator().manual_seed(derive_seed(self.cfg.seed, self.chunk))
        order = torch.randperm(n, generator=g)
        return acts[:n][order.to(acts.device)], prov[:n][order]

    def chunks(self, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """Shuffled chunks `start`, `start + 1`, ...: (acts [chunk_tokens, d], provenance [chunk_tokens, 3]);
        the last may be shorter (whole batches only) when the corpus ends."""
        self.load_state_dict({"chunk": start, "index": 0})
        while True:
            try:
                chunk = self._next_chunk()
            except StopIteration:
                return
            self._last = (self.chunk, chunk)
            yield chunk
            self.chunk += 1

    # ---- the iterator ------------------------------------------------------------------------

    def __iter__(self) -> ActivationStream:
        return self

    def __next__(self) -> Tensor:
        if self._current is None:
            if self._last is not None and self._last[0] == self.chunk:
                self._current = self._last[1]  # rewound into the chunk computed last: no re-run
            else:
                self._current = self._next_chunk()
                self._last = (self.chunk, self._current)
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
        self._current = None
        # the source always stands right after the last computed chunk: keep it if we return there
        if self._last is None or self._last[0] != self.chunk:
            self._source, self._carry = None, []
