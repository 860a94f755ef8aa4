"""Feature splitting between SAEs of different widths (Bricken et al. 2023, "Towards
Monosemanticity": features split as dictionaries grow), matched by decoder cosine similarity.

Each feature of the wide SAE gets as parent the narrow feature whose decoder direction is closest
to its own; a narrow feature *splits* when two or more wide features with cosine >= `threshold`
have it as parent.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Split:
    parent: int  # feature of the narrow SAE
    children: list[int]  # features of the wide SAE, by decreasing cosine
    cosines: list[float]


def unit_rows(W: Tensor) -> Tensor:
    return W / W.norm(dim=1, keepdim=True).clamp(min=1e-12)


def parents(narrow_W_dec: Tensor, wide_W_dec: Tensor, chunk: int = 4096) -> tuple[Tensor, Tensor]:
    """For each wide feature: (its closest narrow feature [d_wide], that cosine [d_wide])."""
    a, b = unit_rows(narrow_W_dec.float()), unit_rows(wide_W_dec.float())
    best, index = [], []
    for start in range(0, b.shape[0], chunk):
        sims = b[start : start + chunk] @ a.T  # [chunk, d_narrow]
        value, i = sims.max(1)
        best.append(value)
        index.append(i)
    return torch.cat(index), torch.cat(best)


def find_splits(narrow_W_dec: Tensor, wide_W_dec: Tensor, threshold: float = 0.6) -> list[Split]:
    """Narrow features with two or more close children in the wide SAE, most children first."""
    if narrow_W_dec.shape[1] != wide_W_dec.shape[1]:
        raise ValueError(
            f"decoders of different widths d_in: {narrow_W_dec.shape[1]} and {wide_W_dec.shape[1]}; "
            "splitting compares SAEs of the same hookpoint"
        )
    parent, cosine = parents(narrow_W_dec, wide_W_dec)
    close = cosine >= threshold
    splits = []
    for p in torch.unique(parent[close]).tolist():
        members = torch.nonzero(close & (parent == p)).flatten()
        if members.numel() >= 2:
            order = cosine[members].argsort(descending=True)
            splits.append(Split(p, members[order].tolist(), cosine[members][order].tolist()))
    return sorted(splits, key=lambda s: (-len(s.children), s.parent))


def match_fraction(narrow_W_dec: Tensor, wide_W_dec: Tensor, threshold: float = 0.6) -> float:
    """Fraction of wide features with a narrow parent at cosine >= threshold."""
    _, cosine = parents(narrow_W_dec, wide_W_dec)
    return (cosine >= threshold).float().mean().item()
