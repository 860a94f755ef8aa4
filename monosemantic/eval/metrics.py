"""Evaluation metrics, as defined in the product brief (tests hold the code to these definitions).

Over N token activations x_i in R^d with reconstructions x_hat_i:

- `fvu`: sum ||x_i - x_hat_i||^2 / sum ||x_i - mu||^2 (mu the mean of the x_i);
  `explained_variance` = 1 - FVU.
- `normalized_mse` (OpenAI): sum ||x_i - x_hat_i||^2 / sum ||x_i||^2.
- `l0`: mean over tokens of the number of nonzero latents.
- dead latent: no nonzero activation over the last D tokens (`dead_fraction`, D stated alongside);
  dense latent: fires on more than 10% of tokens (`dense_fraction`).
- `mmcs`: mean over true features of the best cosine similarity with any decoder row.

Pure tensor functions first; then `ReconstructionStats`, a streaming accumulator, and `evaluate`,
which runs an SAE over batches of activations and reports all of the above.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from monosemantic.data.activations import ActivationDataError
from monosemantic.sae import SAE

DENSE_DENSITY = 0.1  # a latent firing on more than this fraction of tokens is "dense"


def _rows(x: Tensor) -> Tensor:
    return x.reshape(-1, x.shape[-1])


def fvu(x: Tensor, x_hat: Tensor) -> Tensor:
    """Fraction of variance unexplained; x, x_hat [..., d]."""
    x, x_hat = _rows(x).double(), _rows(x_hat).double()
    return (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()


def explained_variance(x: Tensor, x_hat: Tensor) -> Tensor:
    return 1 - fvu(x, x_hat)


def normalized_mse(x: Tensor, x_hat: Tensor) -> Tensor:
    """OpenAI's normalised MSE; x, x_hat [..., d]."""
    x, x_hat = _rows(x).double(), _rows(x_hat).double()
    return (x - x_hat).pow(2).sum() / x.pow(2).sum()


def l0(latents: Tensor) -> Tensor:
    """Mean number of nonzero latents per token; latents [..., d_sae]."""
    return (_rows(latents) != 0).sum(-1).double().mean()


def dead_fraction(tokens_since_fired: Tensor, window: int) -> float:
    """Fraction of latents that have not fired in the last `window` tokens."""
    return (tokens_since_fired >= window).double().mean().item()


def dense_fraction(density: Tensor, threshold: float = DENSE_DENSITY) -> float:
    """Fraction of latents whose firing frequency is above `threshold`; density [d_sae]."""
    return (density > threshold).double().mean().item()


def density_histogram(density: Tensor, bins: int = 40, low: float = 1e-7) -> dict:
    """Histogram of log10 firing frequency, with never-firing latents counted apart.

    Returns {"edges": [bins + 1] log10 values, "counts": [bins], "never_fired": int}.
    """
    density = density.double()
    alive = density[density > 0]
    edges = torch.linspace(torch.log10(torch.tensor(low)).item(), 0.0, bins + 1, dtype=torch.float64)
    counts = torch.histc(torch.log10(alive.clamp_min(low)), bins=bins, min=edges[0].item(), max=0.0)
    return {
        "edges": [round(e, 6) for e in edges.tolist()],
        "counts": [int(c) for c in counts.tolist()],
        "never_fired": int((density == 0).sum()),
    }


def mmcs(true_features: Tensor, W_dec: Tensor) -> float:
    """Mean max cosine similarity: for each true feature [n, d], the best decoder row [d_sae, d]."""
    a = torch.nn.functional.normalize(true_features.double(), dim=1)
    b = torch.nn.functional.normalize(W_dec.detach().double(), dim=1)
    return (a @ b.T).max(dim=1).values.mean().item()


class ReconstructionStats:
    """Streaming sums for FVU, normalised MSE, L0 and per-latent firing counts.

    Variance uses Chan et al.'s pairwise merge of (count, mean, M2) in float64, so FVU stays
    accurate when activations have a large mean compared with their spread.
    """

    def __init__(self, d_sae: int):
        self.n = 0
        self.mean: Tensor | None = None
        self.m2 = 0.0  # sum ||x_i - mean||^2
        self.sse = 0.0  # sum ||x_i - x_hat_i||^2
        self.sum_sq = 0.0  # sum ||x_i||^2
        self.active = 0  # total nonzero latents
        self.fire_counts = torch.zeros(d_sae, dtype=torch.long)

    def update(self, x: Tensor, x_hat: Tensor, latents: Tensor) -> None:
        x, x_hat, latents = _rows(x).double(), _rows(x_hat).double(), _rows(latents)
        n_b = x.shape[0]
        if n_b == 0:
            return
        mean_b = x.mean(0)
        m2_b = (x - mean_b).pow(2).sum().item()
        if self.mean is None:
            self.mean, self.m2 = mean_b, m2_b
        else:
            delta = mean_b - self.mean
            total = self.n + n_b
            self.m2 += m2_b + delta.pow(2).sum().item() * self.n * n_b / total
            self.mean = self.mean + delta * (n_b / total)
        self.n += n_b
        self.sse += (x - x_hat).pow(2).sum().item()
        self.sum_sq += x.pow(2).sum().item()
        nonzero = latents != 0
        self.active += int(nonzero.sum())
        self.fire_counts += nonzero.sum(0).cpu()

    def density(self) -> Tensor:
        return self.fire_counts.double() / max(self.n, 1)


@dataclass
class EvalResult:
    """Metrics of one SAE over `n_tokens` activations (definitions in this module's docstring)."""

    n_tokens: int
    fvu: float
    explained_variance: float
    normalized_mse: float
    l0: float
    dead_fraction: float
    """latents that never fired on these n_tokens tokens (D = n_tokens)"""
    dense_fraction: float
    density_histogram: dict

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def evaluate(sae: SAE, batches: Iterable[Tensor], max_tokens: int | None = None) -> EvalResult:
    """Run `sae` (in eval mode) over batches [B, d_in] of activations and compute its metrics."""
    was_training = sae.training
    sae.eval()
    stats = ReconstructionStats(sae.cfg.d_sae)
    try:
        for x in batches:
            if max_tokens is not None and stats.n >= max_tokens:
                break
            if max_tokens is not None:
                x = x[: max_tokens - stats.n]
            x = x.to(sae.W_enc.device)
            z = sae.encode(x)
            stats.update(x, sae.decode(z, x), z)  # x: SAEs with per-token input_norm restore its scale
    finally:
        sae.train(was_training)
    if stats.n == 0:
        raise ActivationDataError("evaluate: no activations were given (empty data, or max_tokens=0)")
    density = stats.density()
    f = stats.sse / stats.m2
    return EvalResult(
        n_tokens=stats.n,
        fvu=f,
        explained_variance=1 - f,
        normalized_mse=stats.sse / stats.sum_sq,
        l0=stats.active / stats.n,
        dead_fraction=(density == 0).double().mean().item(),
        dense_fraction=dense_fraction(density),
        density_histogram=density_histogram(density),
    )
