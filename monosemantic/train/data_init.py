"""(Re)initialisation from data, used by the trainer.

- `init_scale_and_b_dec(...)`: the normalisation scalar and b_dec from the first batches.
- `geometric_median(x)`: b_dec's initial value (Towards Monosemanticity).
- `resample_dead_latents(...)`: dead latents re-initialised from inputs the SAE reconstructs badly
  (Towards Monosemanticity, "Neuron Resampling").
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from monosemantic.sae.base import SAE

MEDIAN_TOKENS = 1 << 14  # Weiszfeld iterations run on at most this many of the first tokens


@torch.no_grad()
def init_scale_and_b_dec(sae: SAE, sample: Tensor, normalize: bool, b_dec_init: str) -> float:
    """Set `sae.b_dec` from the first batches' rows `sample` [N, batch_width] (`b_dec_init`:
    geometric_median, mean or zeros) and return the scalar that makes E||x|| = sqrt(width) (1.0
    unless `normalize`); b_dec is estimated on the scaled rows."""
    scale = 1.0
    if normalize:  # norms in float64: in float32, those of huge activations overflow
        mean_norm = sample.cpu().double().norm(dim=1).mean().item()
        scale = math.sqrt(sae.batch_width) / max(mean_norm, 1e-12)
    target = sae.target(sample * scale)  # b_dec: a transcoder's is in its output space
    if b_dec_init == "geometric_median":
        sae.b_dec.copy_(geometric_median(target[:MEDIAN_TOKENS]))
    elif b_dec_init == "mean":
        sae.b_dec.copy_(target.mean(0))
    return scale


@torch.no_grad()
def geometric_median(x: Tensor, iters: int = 100, tol: float = 1e-6) -> Tensor:
    """Weiszfeld's algorithm on x [N, d] in float64 (Towards Monosemanticity initialises b_dec so)."""
    x = x.double()
    y = x.mean(0)
    for _ in range(iters):
        w = 1 / (x - y).norm(dim=1).clamp_min(1e-12)
        y_next = (w[:, None] * x).sum(0) / w.sum()
        if (y_next - y).norm() <= tol * y.norm().clamp_min(1e-12):
            return y_next
        y = y_next
    return y


@torch.no_grad()
def resample_dead_latents(
    sae: SAE, optimizer: torch.optim.Optimizer, x: Tensor, dead: Tensor, generator: torch.Generator
) -> int:
    """Re-initialise dead latents from inputs of x [B, d_in] drawn with probability ~ loss^2.

    Towards Monosemanticity, "Neuron Resampling": decoder row = the unit input; encoder column =
    the same, at 0.2 x the mean norm of the alive encoder columns; encoder bias 0; Adam moments of
    those entries reset. Returns the number of latents resampled.
    """
    ids = dead.nonzero().squeeze(1)
    if ids.numel() == 0:
        return 0
    loss = (x - sae(x).x_hat).pow(2).sum(-1)
    weights = loss.pow(2) if bool(loss.pow(2).sum() > 0) else torch.ones_like(loss)
    picked = x[torch.multinomial(weights, ids.numel(), replacement=True, generator=generator)]
    unit = picked / picked.norm(dim=1, keepdim=True).clamp_min(1e-12)  # [n_dead, d_in]
    alive = ~dead
    enc_norm = sae.W_enc[:, alive].norm(dim=0).mean() if bool(alive.any()) else torch.tensor(1.0)
    sae.W_dec[ids] = unit.to(sae.W_dec.dtype)
    sae.W_enc[:, ids] = (unit.T * 0.2 * enc_norm).to(sae.W_enc.dtype)
    sae.b_enc[ids] = 0
    for param, index in ((sae.W_dec, (ids,)), (sae.W_enc, (slice(None), ids)), (sae.b_enc, (ids,))):
        for key in ("exp_avg", "exp_avg_sq"):
            if key in optimizer.state.get(param, {}):
                optimizer.state[param][key][index] = 0
    return ids.numel()
