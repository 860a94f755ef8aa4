"""Matryoshka BatchTopK SAE (Bussmann et al. 2025, "Learning Multi-Level Features with Matryoshka SAEs").

The dictionary is read as nested prefixes: latents [0, m_1) < [0, m_2) < ... < [0, m_L = d_sae).
Latents are chosen as in BatchTopK (the k * B largest ReLU pre-activations of the whole batch, over
the whole dictionary); prefix i reconstructs x from the chosen latents below m_i alone,
x_hat_i = b_dec + sum_{j < m_i} z_j W_dec[j], and the loss sums the prefixes' errors:

    loss = sum_i ||x - x_hat_i||^2 (summed over d_in, averaged over tokens) + AuxK

(the paper's eq. 2 with unit weights; SAELens' `matryoshka_batchtopk` sums them the same way, and
its outermost level is the plain reconstruction). A latent in a small prefix must reconstruct on its
own, without help from the latents after it, so a general feature ("digit") cannot leave the
tokens of a specific one ("digit 7") to a later latent: that is what counters feature absorption.

Inference is BatchTopK's: one threshold for all latents (`BatchTopKSAE`), so a trained Matryoshka
SAE encodes and decodes like a BatchTopK one and exports to SAELens as jumprelu, as SAELens itself
saves its Matryoshka SAEs. AuxK reconstructs the full residual (SAELens' default,
use_matryoshka_aux_loss=False).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from monosemantic.sae.base import SAEConfig, TrainOutput, mse_loss
from monosemantic.sae.batchtopk import BatchTopKSAE, select_batch_topk
from monosemantic.sae.config import matryoshka_prefixes
from monosemantic.sae.sparse import selected_preacts, sparse_decode
from monosemantic.sae.topk import active_k, auxk_dense, auxk_sparse, encoder_preacts


def prefix_losses(x: Tensor, partial: list[Tensor], b_dec: Tensor, prefixes: tuple[int, ...]) -> dict[str, Tensor]:
    """MSE of each inner prefix: partial[i] [B, d_in] is the decode of latents in [m_{i-1}, m_i)
    (no bias); the outermost prefix is the whole SAE, whose error is the caller's "mse"."""
    losses = {}
    x_hat = b_dec.expand_as(x)
    for m, part in zip(prefixes[:-1], partial):
        x_hat = x_hat + part
        losses[f"mse_prefix_{m}"] = mse_loss(x_hat, x)
    return losses


class MatryoshkaSAE(BatchTopKSAE):
    """BatchTopK whose loss sums the reconstruction errors of nested prefixes; see the module docstring."""

    arch = "matryoshka"

    def __init__(self, cfg: SAEConfig, device: torch.device | str | None = None):
        super().__init__(cfg, device)
        self.prefixes = matryoshka_prefixes(cfg)

    def aux_losses(
        self, x: Tensor, x_hat: Tensor, latents: Tensor, pre: Tensor, dead: Tensor | None, penalty_scale: float
    ) -> dict[str, Tensor]:
        """Dense reference: the inner prefixes' errors from the dense latents [N, d_sae], then AuxK."""
        bounds = (0, *self.prefixes)
        partial = [latents[:, lo:hi] @ self.W_dec[lo:hi] for lo, hi in zip(bounds, bounds[1:-1])]
        return {**prefix_losses(x, partial, self.b_dec, self.prefixes), **auxk_dense(self, x, x_hat, pre, dead)}

    def training_forward(
        self,
        x: Tensor,
        *,
        dead: Tensor | None = None,
        penalty_scale: float = 1.0,
        matmul_dtype: torch.dtype | None = None,
    ) -> TrainOutput:
        x = self._flatten(x)
        B = x.shape[0]
        pre = encoder_preacts(self, x, matmul_dtype)
        rows, cols, values, most, W_enc_rows = select_batch_topk(self, x, pre, active_k(self.cfg) * B, self._width)
        if most is not None:
            self._width = most + most // 4 + 1
        b_dec = self.b_dec if self.cfg.apply_b_dec_to_input else None
        acts = F.relu(selected_preacts(x, self.W_enc, self.b_enc, b_dec, rows, cols, values, W_enc_rows))
        # each group [m_{i-1}, m_i) decoded on its own (entries stay row-sorted under a mask), so the
        # prefixes cost one sparse decode in all: O(nnz * d_in), as for BatchTopK
        bounds = (0, *self.prefixes)
        partial = []
        for lo, hi in zip(bounds, bounds[1:]):
            sel = ((cols >= lo) & (cols < hi)).nonzero().squeeze(1)
            partial.append(sparse_decode(acts[sel], rows[sel], cols[sel], self.W_dec, B))
        x_hat = torch.stack(partial).sum(0) + self.b_dec
        losses = {"mse": mse_loss(x_hat, x), **prefix_losses(x, partial, self.b_dec, self.prefixes)}
        losses.update(auxk_sparse(self, x, x_hat, pre, dead, W_enc_rows))
        loss = torch.stack(list(losses.values())).sum()
        active = acts > 0
        fired = torch.zeros(self.d_sae, dtype=torch.bool, device=x.device)
        fired[cols[active]] = True
        self.observe_training_acts_(values)
        return TrainOutput(
            x_hat.detach(), loss, {k: v.detach() for k, v in losses.items()}, fired, active.sum().float() / B
        )
