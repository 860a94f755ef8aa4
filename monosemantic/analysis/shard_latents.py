"""The latents the analysis reads, in memory bounded whatever the dictionary's width.

A batch's latents are kept as entries (token, latent, value) of its nonzeros (`SAE.encode_entries`:
a routed SAE gives each token's k latents directly; other SAEs encode a few tokens at a time), never
as a dense [tokens, d_sae] tensor (at 1M latents, 4096 tokens of it are 16 GiB). Each shard then
takes its own columns, dense [tokens, shard], and the firings of every latent (for co-occurrences).

`LatentCache` keeps every batch's entries across the shards' passes over the same batches while they
fit in a budget, so that the model and the encoder run once per analysis rather than once per shard
(a 1M-latent SAE has 128 shards of 8192).
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from monosemantic.runmodel import RunModel

log = logging.getLogger(__name__)

CACHE_BYTES = 1 << 30  # entries are 20 bytes: 1 GiB holds 200k tokens at 256 latents per token
Entries = tuple[Tensor, Tensor, Tensor]  # token [nnz], latent [nnz], value [nnz]; row-major order


class LatentCache:
    """The entries of the i-th packed batch of a pass, computed once while the cache fits `budget`
    bytes (then dropped: every pass encodes anew). Every pass must read the same batches in the
    same order (the analysis packs the same corpus each time) and ask for them in order."""

    def __init__(self, run: RunModel, budget: int = CACHE_BYTES):
        self.run, self.budget, self.size = run, budget, 0
        self.entries: list[Entries] | None = []

    def get(self, index: int, batch, keep: Tensor) -> Entries:
        if self.entries is not None and index < len(self.entries):
            return self.entries[index]
        acts = self.run.hook_acts(batch.input_ids, batch.attention_mask, keep)
        entries: Entries = tuple(t.cpu() for t in self.run.sae.encode_entries(acts))  # type: ignore[assignment]
        if self.entries is not None and index == len(self.entries):
            self.size += sum(t.numel() * t.element_size() for t in entries)
            if self.size <= self.budget:
                self.entries.append(entries)
            else:
                log.info("the latents outgrow %d MiB: each shard encodes its tokens anew", self.budget >> 20)
                self.entries = None
        return entries


def shard_view(entries: Entries, n_tokens: int, lo: int, hi: int) -> tuple[Tensor, Tensor]:
    """(z [n_tokens, hi - lo] the dense latents [lo, hi), firing [nnz, 2] the (token, latent) of every
    latent > 0 in row-major order): what `z[:, lo:hi]` and `(z > 0).nonzero()` give on dense latents."""
    tok, lat, val = entries
    mine = (lat >= lo) & (lat < hi)
    z = torch.zeros(n_tokens, hi - lo, dtype=val.dtype)
    z[tok[mine], lat[mine] - lo] = val[mine]
    fires = val > 0
    return z, torch.stack([tok[fires], lat[fires]], 1)
