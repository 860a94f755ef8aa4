"""Streaming statistics of every latent over a stream of activations, in bounded memory.

`LatentStats` takes, batch by batch, the latents' activations on the kept tokens of packed rows
and keeps, per latent:
- how often it fires, the sum and maximum of its activations;
- a histogram over log-spaced bins (`HIST_EDGES`: 8 per decade from 1e-4 to 1e4, plus an underflow
  and an overflow bin), the picture of "Towards Monosemanticity"'s feature pages;
- its `top_k` highest activations (a per-latent top-k merged batch by batch, never all activations);
- `samples` examples drawn uniformly from each coarse activation range (2 ranges per decade): the
  quantile samples of Anthropic's viewer, by bottom-k sampling on random priorities, which is an
  exact uniform sample without replacement of each range's activations;
- the sum of its activations per next token (the tokens it helps predict, by the data).
Each example keeps its document, its position and a window of `window` tokens around it with this
latent's activation on each of them, so it can be shown in context.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

DECADES = (-4, 4)
BINS_PER_DECADE = 8
COARSE_PER_DECADE = 2
N_FINE = (DECADES[1] - DECADES[0]) * BINS_PER_DECADE
HIST_EDGES = torch.logspace(DECADES[0], DECADES[1], N_FINE + 1, dtype=torch.float64)
N_HIST = N_FINE + 2  # [underflow, N_FINE bins, overflow]
N_RANGES = (DECADES[1] - DECADES[0]) * COARSE_PER_DECADE + 2
RANGE_EDGES = torch.logspace(DECADES[0], DECADES[1], N_RANGES - 1, dtype=torch.float64)


def hist_bin(values: Tensor) -> Tensor:
    """Histogram bin of positive activations: 0 below 1e-4, N_HIST - 1 at 1e4 and above."""
    return torch.bucketize(values.double(), HIST_EDGES.to(values.device), right=True)


def range_of_bin(fine: Tensor) -> Tensor:
    """Coarse activation range (of the quantile samples) containing fine histogram bin `fine`."""
    inner = (fine - 1).clamp(min=0) // (BINS_PER_DECADE // COARSE_PER_DECADE) + 1
    return torch.where(fine == 0, 0, torch.where(fine == N_HIST - 1, N_RANGES - 1, inner))


@dataclass
class Batch:
    """The latents of one packed batch. Rows are documents (or pieces of one) from position 0."""

    z: Tensor  # [n_kept, n_latents] activations on the kept tokens, row-major order of the batch
    kept: Tensor  # [B, T] bool: which tokens z covers (not padding, not BOS)
    input_ids: Tensor  # [B, T]
    doc_ids: Tensor  # [B, T], -1 on padding
    positions: Tensor  # [B, T], -1 on padding


class Examples:
    """Per group the `size` entries of highest score seen so far, each with its context window.

    Groups are latents (top activations; score = activation) or (latent, range) pairs (uniform
    samples; score = -random priority). Buffers stay sorted by descending score; empty slots have
    score -inf and document -1."""

    def __init__(self, n_groups: int, size: int, window: int):
        self.score = torch.full((n_groups, size), -torch.inf)
        self.value = torch.zeros(n_groups, size)
        self.doc = torch.full((n_groups, size), -1, dtype=torch.long)
        self.pos = torch.full((n_groups, size), -1, dtype=torch.long)
        self.ctx_start = torch.full((n_groups, size), -1, dtype=torch.long)  # document position of window[0]
        self.ctx_tokens = torch.full((n_groups, size, window), -1, dtype=torch.int32)
        self.ctx_acts = torch.zeros(n_groups, size, window, dtype=torch.float16)

    def offer(self, groups: Tensor, scores: Tensor, entries: Tensor, context) -> None:
        """Candidates (group, score) with `entries` [n] indices that `context(entries)` turns into
        (value, doc, pos, ctx_start, ctx_tokens, ctx_acts); only those that enter a buffer are looked up."""
        better = scores > self.score[groups, -1]
        groups, scores, entries = groups[better], scores[better], entries[better]
        if groups.numel() == 0:
            return
        order = group_order(groups, scores)
        groups, scores, entries = groups[order], scores[order], entries[order]
        touched, counts = torch.unique_consecutive(groups, return_counts=True)
        size = self.score.shape[1]
        first = torch.cumsum(counts, 0) - counts
        rank = torch.arange(groups.numel()) - torch.repeat_interleave(first, counts)
        keep = rank < size  # a group's best `size` candidates are all that can enter
        row = torch.repeat_interleave(torch.arange(touched.numel()), counts)[keep]
        cand = torch.full((touched.numel(), size), -torch.inf)
        cand_entry = torch.full((touched.numel(), size), -1, dtype=torch.long)
        cand[row, rank[keep]] = scores[keep]
        cand_entry[row, rank[keep]] = entries[keep]
        merged, slot = torch.cat([self.score[touched], cand], 1).topk(size, dim=1)
        empty = merged == -torch.inf  # fewer than `size` entries so far: padding was picked
        is_new = (slot >= size) & ~empty
        new_entries = torch.gather(cand_entry, 1, (slot - size).clamp(min=0))[is_new]
        old = slot.clamp(max=size - 1)
        for buf, blank in zip(self._buffers(), self.BLANK):
            index = old if buf.dim() == 2 else old[..., None].expand(-1, -1, buf.shape[2])
            rows = torch.gather(buf[touched], 1, index)
            rows[empty] = blank
            buf[touched] = rows
        self.score[touched] = merged
        if new_entries.numel():
            rows, slots = touched[:, None].expand_as(slot)[is_new], torch.nonzero(is_new)[:, 1]
            for buf, new in zip(self._buffers(), context(new_entries)):
                buf[rows, slots] = new.to(buf.dtype)

    BLANK = (0.0, -1, -1, -1, -1, 0.0)  # what an empty slot holds, per buffer of `_buffers`

    def _buffers(self) -> tuple[Tensor, ...]:
        return self.value, self.doc, self.pos, self.ctx_start, self.ctx_tokens, self.ctx_acts

    def tensors(self, prefix: str) -> dict[str, Tensor]:
        return {
            f"{prefix}_value": self.value,
            f"{prefix}_doc": self.doc,
            f"{prefix}_pos": self.pos,
            f"{prefix}_ctx_start": self.ctx_start,
            f"{prefix}_ctx_tokens": self.ctx_tokens,
            f"{prefix}_ctx_acts": self.ctx_acts,
        }


class LatentStats:
    """Statistics of `n_latents` latents over the batches given to `update`."""

    def __init__(
        self,
        n_latents: int,
        vocab_size: int,
        *,
        top_k: int = 16,
        samples: int = 4,
        window: int = 32,
        window_before: int | None = None,
        seed: int = 0,
    ):
        self.n_latents, self.vocab_size, self.window = n_latents, vocab_size, window
        self.before = window * 3 // 4 if window_before is None else window_before
        self.tokens = 0
        self.fires = torch.zeros(n_latents, dtype=torch.long)
        self.act_sum = torch.zeros(n_latents, dtype=torch.float64)
        self.act_max = torch.zeros(n_latents)
        self.hist = torch.zeros(n_latents, N_HIST, dtype=torch.long)
        self.next_token_sum = KeyedSums(n_latents * vocab_size)
        self.top = Examples(n_latents, top_k, window)
        self.samples = Examples(n_latents * N_RANGES, samples, window)
        self.generator = torch.Generator().manual_seed(seed)

    def update(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """Take one batch; returns its firings (kept-token index [nnz], latent [nnz]) for other bookkeeping."""
        z = batch.z.float()
        tok, lat = torch.nonzero(z > 0, as_tuple=True)
        val = z[tok, lat]
        self.tokens += z.shape[0]
        self.fires += torch.bincount(lat, minlength=self.n_latents)
        self.act_sum.index_add_(0, lat, val.double())
        self.act_max.scatter_reduce_(0, lat, val, "amax")
        fine = hist_bin(val)
        self.hist.view(-1).index_add_(0, lat * N_HIST + fine, torch.ones_like(lat))
        next_tok = next_tokens(batch)[tok]
        has_next = next_tok >= 0
        self.next_token_sum.add((lat * self.vocab_size + next_tok)[has_next], val[has_next])
        entry = torch.arange(tok.numel())
        context = self._context(batch, z, tok, lat, val)
        self.top.offer(lat, val, entry, context)
        priority = torch.rand(tok.numel(), generator=self.generator)
        self.samples.offer(lat * N_RANGES + range_of_bin(fine), -priority, entry, context)
        return tok, lat

    def _context(self, batch: Batch, z: Tensor, tok: Tensor, lat: Tensor, val: Tensor):
        rows_b, rows_t = torch.nonzero(batch.kept, as_tuple=True)  # kept token i sits at (rows_b[i], rows_t[i])
        index = torch.full(batch.kept.shape, -1, dtype=torch.long)
        index[rows_b, rows_t] = torch.arange(rows_b.numel())
        width = batch.kept.shape[1]

        def lookup(entries: Tensor):
            i, latent = tok[entries], lat[entries]
            b, t = rows_b[i], rows_t[i]
            cols = t[:, None] - self.before + torch.arange(self.window)  # [n, window]
            inside = (cols >= 0) & (cols < width)
            cols_c = cols.clamp(0, width - 1)
            kept_i = torch.where(inside, index[b[:, None], cols_c], -1)
            real = inside & (batch.doc_ids[b[:, None], cols_c] >= 0)
            acts = torch.where(kept_i >= 0, z[kept_i.clamp(min=0), latent[:, None]], 0.0)
            tokens = torch.where(real, batch.input_ids[b[:, None], cols_c], -1)
            start = batch.positions[b, t] - self.before
            return val[entries], batch.doc_ids[b, t], batch.positions[b, t], start, tokens, acts

        return lookup

    def tensors(self) -> dict[str, Tensor]:
        """Everything kept, as named tensors (for a shard file)."""
        samples = {
            k: v.reshape(self.n_latents, N_RANGES * v.shape[1], *v.shape[2:])  # row i = latent i
            for k, v in self.samples.tensors("sample").items()
        }
        return {
            "fires": self.fires,
            "act_sum": self.act_sum,
            "act_max": self.act_max,
            "hist": self.hist,
            **self.top.tensors("top"),
            **samples,
        }

    def top_next_tokens(self, n: int = 10) -> tuple[Tensor, Tensor]:
        """Per latent the `n` next tokens with the largest summed activation: ([n_latents, n] token ids,
        -1 where fewer; [n_latents, n] share of the latent's total activation)."""
        keys, sums = self.next_token_sum.items()
        latent, token = keys // self.vocab_size, keys % self.vocab_size
        share = sums / self.act_sum.clamp(min=1e-30)[latent]
        return top_per_group(latent, share, token, self.n_latents, n)


class KeyedSums:
    """Exact float64 sums by int64 key in [0, key_space): a dense vector when the space is small, else
    sorted unique keys with their sums (merged in bulk, so adding stays cheap)."""

    def __init__(self, key_space: int, dense_limit: int = 1 << 24):
        self.key_space = key_space
        self.dense = torch.zeros(key_space, dtype=torch.float64) if key_space <= dense_limit else None
        self.keys = torch.zeros(0, dtype=torch.long)
        self.sums = torch.zeros(0, dtype=torch.float64)
        self._pending: list[tuple[Tensor, Tensor]] = []
        self._pending_n = 0

    def add(self, keys: Tensor, values: Tensor | None = None) -> None:
        values = torch.ones(keys.shape, dtype=torch.float64) if values is None else values.double()
        if self.dense is not None:
            self.dense.index_add_(0, keys, values)
            return
        self._pending.append((keys, values))
        self._pending_n += keys.numel()
        if self._pending_n > 1 << 21:
            self._merge()

    def _merge(self) -> None:
        if not self._pending:
            return
        keys = torch.cat([self.keys, *(k for k, _ in self._pending)])
        values = torch.cat([self.sums, *(v for _, v in self._pending)])
        self.keys, inverse = torch.unique(keys, sorted=True, return_inverse=True)
        self.sums = torch.zeros(self.keys.numel(), dtype=torch.float64).index_add_(0, inverse, values)
        self._pending, self._pending_n = [], 0

    def get(self, keys: Tensor) -> Tensor:
        """Sums at `keys` (0 for keys never added)."""
        if self.dense is not None:
            return self.dense[keys]
        self._merge()
        if self.keys.numel() == 0:
            return torch.zeros(keys.shape, dtype=torch.float64)
        at = torch.searchsorted(self.keys, keys).clamp(max=self.keys.numel() - 1)
        return torch.where(self.keys[at] == keys, self.sums[at], 0.0)

    def items(self) -> tuple[Tensor, Tensor]:
        """(keys, sums) of every key with a non-zero sum, keys ascending."""
        if self.dense is not None:
            keys = torch.nonzero(self.dense, as_tuple=True)[0]
            return keys, self.dense[keys]
        self._merge()
        nonzero = self.sums != 0
        return self.keys[nonzero], self.sums[nonzero]


def group_order(groups: Tensor, scores: Tensor) -> Tensor:
    """Permutation sorting by group, and within a group by descending score (ties in input order)."""
    order = torch.argsort(-scores, stable=True)
    return order[torch.argsort(groups[order], stable=True)]


def top_per_group(groups: Tensor, scores: Tensor, payload: Tensor, n_groups: int, n: int) -> tuple[Tensor, Tensor]:
    """For each group, the payloads of its `n` highest scores: ([n_groups, n] payload, -1 where fewer;
    [n_groups, n] scores, 0 where fewer)."""
    order = group_order(groups, scores)
    groups, scores, payload = groups[order], scores[order], payload[order]
    counts = torch.bincount(groups, minlength=n_groups)
    first = torch.cumsum(counts, 0) - counts
    rank = torch.arange(groups.numel()) - first[groups]
    keep = rank < n
    out = torch.full((n_groups, n), -1, dtype=payload.dtype)
    out_scores = torch.zeros(n_groups, n, dtype=scores.dtype)
    out[groups[keep], rank[keep]] = payload[keep]
    out_scores[groups[keep], rank[keep]] = scores[keep]
    return out, out_scores


def next_tokens(batch: Batch) -> Tensor:
    """[n_kept] the token after each kept token in its row, -1 where the row ends or pads."""
    following = torch.full_like(batch.input_ids, -1)
    following[:, :-1] = torch.where(batch.doc_ids[:, 1:] >= 0, batch.input_ids[:, 1:], -1)
    return following[batch.kept]
