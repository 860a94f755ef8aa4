"""Co-occurring features: for each latent, the other latents that fire on the same tokens.

Counted during the analysis' pass (the same tokens as every other statistic): per batch, the pair
counts of the shard's latents with every latent are the sparse product S^T A of the binary firing
matrices (S [tokens, shard], A [tokens, d_sae]; firing = activation > 0, as `latent_stats.py`
counts it), summed over batches in `KeyedSums` (dense below 2^24 pairs, else sorted unique keys),
so memory grows with the distinct pairs seen, never with tokens. Per latent i the analysis keeps
its `PARTNERS` most frequent partners j, with

    count = tokens where both fire,  P(j | i) = count / fires_i,  Jaccard = count / (fires_i + fires_j - count)

(ranking by count is ranking by P(j | i): fires_i is fixed for i; ties go to the lower index).
Each shard writes FEATURES_DIR/cooccurrence/LO-HI.safetensors (about 200 bytes per latent: 2 MB for
a 10k dictionary) before the shard's rows, so a resumed analysis never lacks it.

    co = Cooccurrence(lo, hi, d_sae); co.update(firing_idx, n_tokens) per batch; save_cooccurrence(dir, lo, co)
    cooccurring(dir, i)  # {"tokens", "partners": [{"feature", "count", "p", "jaccard"}]} or None
"""

from __future__ import annotations

import warnings
from pathlib import Path

import safetensors.torch
import torch
from torch import Tensor

from monosemantic.analysis.latent_stats import KeyedSums, top_per_group
from monosemantic.atomic import atomic_write_bytes

COOCCURRENCE_DIR = "cooccurrence"
PARTNERS = 10


class Cooccurrence:
    """Pair counts of latents [lo, hi) with every latent of a `d_sae` dictionary, over the batches given."""

    def __init__(self, lo: int, hi: int, d_sae: int):
        self.lo, self.hi, self.d_sae = lo, hi, d_sae
        self.pairs = KeyedSums((hi - lo) * d_sae)
        self.fires = torch.zeros(d_sae, dtype=torch.long)
        self.tokens = 0

    def update(self, firing: Tensor, n_tokens: int) -> None:
        """firing [nnz, 2]: (token, latent) of every firing on a batch of `n_tokens` tokens."""
        self.tokens += n_tokens
        tok, lat = firing[:, 0], firing[:, 1]
        self.fires += torch.bincount(lat, minlength=self.d_sae)
        mine = (lat >= self.lo) & (lat < self.hi)
        if not mine.any():
            return
        ones = torch.ones(tok.numel())
        every = torch.sparse_coo_tensor(firing.T, ones, (n_tokens, self.d_sae), check_invariants=False)
        shard = torch.sparse_coo_tensor(
            torch.stack([lat[mine] - self.lo, tok[mine]]),
            ones[mine],
            (self.hi - self.lo, n_tokens),
            check_invariants=False,
        )
        with warnings.catch_warnings():  # torch's "sparse CSR support is in beta", from inside its kernel
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            pairs = torch.sparse.mm(shard, every).coalesce()  # [shard, d_sae]: exact, counts <= n_tokens < 2^24
        i, j = pairs.indices()
        self.pairs.add(i * self.d_sae + j, pairs.values())

    def partners(self, n: int = PARTNERS) -> dict[str, Tensor]:
        """Per latent of the shard its `n` most frequent partners (itself excluded): partner [shard, n]
        (-1 where fewer), count, p = P(partner | latent), jaccard."""
        keys, sums = self.pairs.items()
        latent, other = keys // self.d_sae, keys % self.d_sae
        others = other != latent + self.lo
        latent, other, sums = latent[others], other[others], sums[others]
        partner, count = top_per_group(latent, sums, other, self.hi - self.lo, n)
        own = self.fires[self.lo : self.hi, None].double()
        theirs = self.fires[partner.clamp(min=0)].double()
        p = torch.where(partner >= 0, count / own.clamp(min=1), 0.0)
        jaccard = torch.where(partner >= 0, count / (own + theirs - count).clamp(min=1), 0.0)
        return {"partner": partner.int(), "count": count.long(), "p": p.float(), "jaccard": jaccard.float()}


def cooccurrence_file(directory: str | Path, lo: int, hi: int) -> Path:
    return Path(directory) / COOCCURRENCE_DIR / f"{lo:08d}-{hi:08d}.safetensors"


def save_cooccurrence(directory: str | Path, co: Cooccurrence) -> Path:
    """FEATURES_DIR/cooccurrence/LO-HI.safetensors: the shard's partners, with the tokens counted."""
    path = cooccurrence_file(directory, co.lo, co.hi)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = safetensors.torch.save(co.partners(), metadata={"tokens": str(co.tokens), "lo": str(co.lo)})
    atomic_write_bytes(path, data)
    return path


def missing_shards(directory: str | Path, shards: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The shards [lo, hi) whose co-occurrence file is absent (a store analysed before it was counted)."""
    return [(lo, hi) for lo, hi in shards if not cooccurrence_file(directory, lo, hi).is_file()]


def cooccurring(directory: str | Path, i: int, shard_latents: int, n_latents: int) -> dict | None:
    """Latent i's co-occurring latents as saved ({"tokens", "partners": [{"feature", "count", "p",
    "jaccard"}]}, most frequent first); None where its shard's file is absent (an older store)."""
    lo = i - i % shard_latents
    path = cooccurrence_file(directory, lo, min(n_latents, lo + shard_latents))
    if not path.is_file():
        return None
    with safetensors.safe_open(path, "pt") as f:
        tokens = int(f.metadata()["tokens"])
        rows = {k: f.get_slice(k)[i - lo : i - lo + 1][0].tolist() for k in ("partner", "count", "p", "jaccard")}
    partners = [
        {"feature": j, "count": c, "p": p, "jaccard": jac}
        for j, c, p, jac in zip(rows["partner"], rows["count"], rows["p"], rows["jaccard"])
        if j >= 0
    ]
    return {"tokens": tokens, "partners": partners}
