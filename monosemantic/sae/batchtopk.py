"""BatchTopK SAE (Bussmann et al. 2024, "BatchTopK Sparse Autoencoders").

Training keeps the k * B largest ReLU pre-activations of the whole batch, so tokens that need more
latents get more and the mean is still k. Inference cannot see a batch: a latent fires when its
pre-activation exceeds one threshold. During training the threshold is the running mean (EMA) of
the smallest activation kept in each batch (dictionary_learning's estimator, with a memory of ~100
batches instead of its ~1000), so that checkpoints can be evaluated; it trails the weights, though
(the minimum falls as the SAE trains: 2M-token runs at k = 16/32/64 fired on 13/24/45 latents at
inference with it, and on 5-9 with the slower EMA). When training ends, `calibrate_` sets it from the
final weights: the smallest of the k * B largest pre-activations of the last batch, which is the
threshold that batch's own selection used. AuxK is shared with TopK.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from monosemantic.sae.base import SAE, SAEConfig, TrainOutput
from monosemantic.sae.sparse import row_dots
from monosemantic.sae.topk import (
    ERROR_MARGIN,
    FIRST_CANDIDATES,
    active_k,
    auxk_dense,
    centred,
    encoder_preacts,
    sparse_training_step,
)

THRESHOLD_EMA = 0.99  # dictionary_learning's threshold_beta is 0.999; see the module docstring


def batch_topk_select(pre: Tensor, n: int, width: int | None = None) -> tuple[Tensor, Tensor, Tensor, int]:
    """The n largest entries of pre [B, F] as row-sorted (rows, cols, values), each [n], and the
    largest number taken from one row.

    Entries come sorted by (row, column). A full sort of B * F entries is slow; instead take each row's top m as
    candidates and select among those. That is exact unless some row had all m candidates selected (then it may hold
    more), in which case m grows and we retry. `width` is a first guess for m (e.g. the previous
    batch's largest row count); it changes the speed, never the result.
    """
    B, F_ = pre.shape
    n = min(n, B * F_)
    m = min(F_, max(1, 2 * -(-n // B), width or 0))
    while True:
        cand_vals, cand_idx = pre.topk(m, dim=-1, sorted=False)  # [B, m]
        _, pos = cand_vals.reshape(-1).topk(n, sorted=False)
        per_row = torch.bincount(pos // m, minlength=B)
        most = int(per_row.max())
        if m == F_ or most < m:
            break
        m = min(F_, 4 * m)
    rows, cols = pos // m, cand_idx.reshape(-1)[pos]
    # canonical (row, latent) order: the sums downstream must not depend on m, or a resumed run
    # (which starts with another first guess) would differ in the last bits
    key = rows * F_ + cols  # unique per entry: any sort gives the one order; int32 sorts ~3x faster
    order = (key.to(torch.int32) if B * F_ < 2**31 else key).argsort()
    rows, cols = rows[order], cols[order]
    return rows, cols, pre[rows, cols], most


@torch.no_grad()
def refined_batch_topk(sae: SAE, x: Tensor, pre: Tensor, n: int, W_enc_rows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(rows, cols, values) of `batch_topk_select` of the fp32 pre-activations of x [B, d_in],
    picked from `pre`, those of a low-precision (bf16) matmul; the values come back in fp32.

    As `refined_topk` for the whole batch: the top `FIRST_CANDIDATES * n` bf16 entries are
    recomputed in fp32 and the top n of those kept, unless the margin (n-th fp32 value - smallest
    candidate's bf16 value) is below `ERROR_MARGIN` x the largest error measured on the
    candidates (then 4x the candidates, and at a quarter of the batch the fp32 matmul).
    """
    B, F_ = pre.shape
    x_c = centred(sae, x)
    n = min(n, B * F_)
    m = FIRST_CANDIDATES * n
    while 4 * m <= B * F_:
        rows, cols, cb, _ = batch_topk_select(pre, m)
        cv = row_dots(x_c, W_enc_rows, rows, cols) + sae.b_enc[cols]  # [m] fp32
        v, j = cv.topk(n, sorted=False)
        ceiling = cb.to(cv.dtype).min() + ERROR_MARGIN * float((cb.to(cv.dtype) - cv).abs().max())
        if ceiling < v.min() or ceiling <= 0:
            j = j.sort().values  # keeps the (row, latent) order of the candidates
            return rows[j], cols[j], cv[j]
        m *= 4
    rows, cols, values, _ = batch_topk_select(torch.addmm(sae.b_enc, x_c, sae.W_enc), n)
    return rows, cols, values


def select_batch_topk(
    sae: SAE, x: Tensor, pre: Tensor, n: int, width: int | None
) -> tuple[Tensor, Tensor, Tensor, int | None, Tensor | None]:
    """(rows, cols, values, largest row count or None, W_enc^T rows or None) of the n largest
    entries of pre [B, d_sae]: `batch_topk_select`, or after a low-precision matmul
    `refined_batch_topk` (fp32 values; the W_enc^T copy it made is passed on for AuxK)."""
    if pre.dtype == sae.W_enc.dtype:
        return (*batch_topk_select(pre, n, width), None)
    W_enc_rows = sae.transposed_copy("W_enc_T", sae.W_enc)
    return (*refined_batch_topk(sae, x, pre, n, W_enc_rows), None, W_enc_rows)


class BatchTopKSAE(SAE):
    """BatchTopK in training, a learned threshold at inference; see the module docstring."""

    arch = "batchtopk"
    trains_by_latent = True
    scaled_buffers = ("threshold",)
    threshold: Tensor  # a registered buffer [], declared for the type checker (nn.Module's getattr is untyped)

    def __init__(self, cfg: SAEConfig, device: torch.device | str | None = None):
        super().__init__(cfg, device)
        # < 0: not estimated yet (then inference falls back to plain ReLU)
        self.register_buffer("threshold", torch.tensor(-1.0, dtype=cfg.torch_dtype, device=device))
        self._width: int | None = None  # candidates per row for batch_topk_select (speed only)

    def threshold_activation(self, pre: Tensor) -> Tensor:
        """Inference: pre-activations above max(threshold, 0) pass, the rest are zero."""
        return torch.where(pre > self.threshold.clamp_min(0), pre, torch.zeros_like(pre))

    def activation(self, pre: Tensor) -> Tensor:
        if not self.training:
            return self.threshold_activation(pre)
        flat = F.relu(pre).reshape(-1)
        vals, idx = flat.topk(min(active_k(self.cfg) * pre.shape[0], flat.numel()), sorted=False)
        return torch.zeros_like(flat).scatter(0, idx, vals).view_as(pre)

    def inference_activation(self, pre: Tensor) -> Tensor:
        return self.threshold_activation(pre)

    def aux_losses(
        self, x: Tensor, x_hat: Tensor, latents: Tensor, pre: Tensor, dead: Tensor | None, penalty_scale: float
    ) -> dict[str, Tensor]:
        return auxk_dense(self, x, x_hat, pre, dead)

    def training_forward(
        self,
        x: Tensor,
        *,
        dead: Tensor | None = None,
        penalty_scale: float = 1.0,
        matmul_dtype: torch.dtype | None = None,
    ) -> TrainOutput:
        x = self._flatten(x)
        pre = encoder_preacts(self, x, matmul_dtype)
        n = active_k(self.cfg) * x.shape[0]
        rows, cols, values, most, W_enc_rows = select_batch_topk(self, x, pre, n, self._width)
        if most is not None:
            self._width = most + most // 4 + 1  # next batch's first guess: a little above this one's
        out = sparse_training_step(self, x, pre, rows, cols, values, dead, W_enc_rows=W_enc_rows)
        self.observe_training_acts_(values)
        return out

    @torch.no_grad()
    def calibrate_(self, x: Tensor) -> None:
        """Threshold <- the smallest of the k * B largest pre-activations of x [B, d_in] under the
        current weights: where training's own selection would stop on this batch."""
        x = self._flatten(x)
        _, _, kept, _ = batch_topk_select(self.pre_acts(x), active_k(self.cfg) * x.shape[0])
        low = kept.min()
        if low > 0:  # else fewer than k * B pre-activations are positive: keep the estimate
            self.threshold.copy_(low.to(self.threshold.dtype))

    @torch.no_grad()
    def observe_training_acts_(self, acts: Tensor) -> None:
        """Threshold <- EMA of the smallest positive activation kept in each training batch."""
        if not self.training:
            return
        positive = acts[acts > 0]
        if positive.numel() == 0:
            return
        low = positive.min().to(self.threshold.dtype)
        if self.threshold < 0:
            self.threshold.copy_(low)
        else:
            self.threshold.mul_(THRESHOLD_EMA).add_((1 - THRESHOLD_EMA) * low)
