"""TopK SAE (Gao et al. 2024, "Scaling and evaluating sparse autoencoders", OpenAI).

z = ReLU(TopK_k((x - b_dec) @ W_enc + b_enc)): the k largest pre-activations per token survive.
Training adds the AuxK loss: the residual e = x - x_hat is reconstructed from the top k_aux
*dead* latents alone, which gives dead latents a gradient again (sec. A.2).

The fast training path (`training_forward`) computes the dense encoder matmul once, into a reused
buffer and without autograd, and does everything else through the sparse kernels of
`monosemantic.sae.sparse`; `forward` is the plain dense-autograd reference it is tested against.
The helpers here (`encoder_preacts`, `sparse_training_step`, AuxK) are shared with BatchTopK.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from monosemantic.config import ConfigError
from monosemantic.sae.base import SAE, SAEConfig, TrainOutput, mse_loss
from monosemantic.sae.sparse import column_order, selected_preacts, sparse_decode


def active_k(cfg: SAEConfig) -> int:
    """k, active latents per token: set for topk and batchtopk (`check_k` refuses a config without it)."""
    if cfg.k is None:
        raise ConfigError(f"arch={cfg.arch!r} needs k, the number of active latents per token; got k=None")
    return cfg.k


def k_aux(cfg: SAEConfig) -> int:
    # sparsify's default; OpenAI used 512 at d_in = 768 and larger.
    return cfg.k_aux if cfg.k_aux is not None else max(1, cfg.d_in // 2)


def chunked_topk(pre: Tensor, k: int, chunks: int = 16) -> tuple[Tensor, Tensor]:
    """`pre.topk(k, dim=-1, sorted=False)` of pre [B, n], 1.5-2.7x faster on CPU at n = 16k-64k.

    View each row as [chunks, w] (w = n / chunks), so that column c holds latents c, w + c, 2w + c, ...
    A latent can be in the top k only if its column's maximum is among the top k column maxima
    (k columns hold larger values otherwise), so the top k columns (found the same way,
    recursively) hold every winner and the top k of their `chunks * k` entries is the answer.
    The same values as `topk`; the indices differ only where values tie at the k-th place.
    """
    B, n = pre.shape
    if n % chunks or n < 4 * chunks * k:  # too small to gain: aten's topk directly
        return pre.topk(k, dim=-1, sorted=False)
    w = n // chunks
    by_slice = pre.view(B, chunks, w)  # entry [b, s, c] is latent s * w + c
    _, col = chunked_topk(by_slice.amax(1), k, chunks)  # [B, k] columns holding the winners
    cand = by_slice.gather(2, col.unsqueeze(1).expand(B, chunks, k))  # [B, chunks, k]
    vals, j = cand.view(B, chunks * k).topk(k, dim=-1, sorted=False)
    return vals, col.gather(1, j % k) + (j // k) * w


@torch.no_grad()
def encoder_preacts(sae: SAE, x: Tensor, matmul_dtype: torch.dtype | None) -> Tensor:
    """(x - b_dec) @ W_enc + b_enc into the SAE's reused [B, d_sae] buffer, without autograd.

    With `matmul_dtype` (e.g. bfloat16) the matmul runs in that dtype; callers then use the result
    only to choose latents and recompute the chosen values in the weights' dtype.
    """
    if sae.cfg.input_norm != "none":  # the trainer refuses these too; the sparse path never normalises
        raise ConfigError(f"the fast training path does not support input_norm={sae.cfg.input_norm!r}")
    dtype = matmul_dtype or sae.W_enc.dtype
    x_c = x - sae.b_dec if sae.cfg.apply_b_dec_to_input else x
    out = sae.workspace("pre_acts", (x.shape[0], sae.d_sae), dtype)
    W_enc: Tensor = sae.W_enc
    if dtype != W_enc.dtype:
        W_enc = sae.workspace("W_enc_cast", tuple(W_enc.shape), dtype).copy_(W_enc)
    return torch.addmm(sae.b_enc.to(dtype), x_c.to(dtype), W_enc, out=out)


def auxk_dense(
    sae: SAE, x: Tensor, x_hat: Tensor, pre: Tensor, dead: Tensor | None, target: Tensor | None = None
) -> dict[str, Tensor]:
    """AuxK term with dense ops (reference): top-k_aux dead latents reconstruct the residual
    (`target` - x_hat; the target is x, or a transcoder's output)."""
    if dead is None or not bool(dead.any()):
        return {}
    n = min(k_aux(sae.cfg), int(dead.sum()))
    vals, idx = pre.masked_fill(~dead, float("-inf")).topk(n, dim=-1, sorted=False)
    z = torch.zeros_like(pre).scatter(-1, idx, F.relu(vals))
    y = x if target is None else target
    return {"auxk": sae.cfg.auxk_coef * mse_loss(z @ sae.W_dec, (y - x_hat).detach())}


def auxk_sparse(
    sae: SAE,
    x: Tensor,
    x_hat: Tensor,
    pre: Tensor,
    dead: Tensor | None,
    W_enc_rows: Tensor | None,
    target: Tensor | None = None,
) -> dict[str, Tensor]:
    """AuxK term touching only the dead latents: cost O(B * n_dead) to select, O(B * k_aux * d_in) after.

    `W_enc_rows` (W_enc^T, contiguous) is needed when `pre` came from a low-precision matmul;
    `target`: what x_hat reconstructs, when not x (a transcoder's output)."""
    if dead is None:
        return {}
    dead_ids = dead.nonzero().squeeze(1)
    if dead_ids.numel() == 0:
        return {}
    B = x.shape[0]
    n = min(k_aux(sae.cfg), dead_ids.numel())
    vals, j = pre.index_select(1, dead_ids).topk(n, dim=-1, sorted=False)  # [B, n]
    rows = torch.arange(B, device=x.device).repeat_interleave(n)
    cols = dead_ids[j.reshape(-1)]
    exact = vals.reshape(-1) if pre.dtype == sae.W_enc.dtype else None
    b_dec = sae.b_dec if sae.cfg.apply_b_dec_to_input else None
    order = column_order(cols, sae.d_sae)
    pre_aux = selected_preacts(x, sae.W_enc, sae.b_enc, b_dec, rows, cols, exact, W_enc_rows, order)
    e_hat = sparse_decode(F.relu(pre_aux), rows, cols, sae.W_dec, B, order)
    y = x if target is None else target
    return {"auxk": sae.cfg.auxk_coef * mse_loss(e_hat, (y - x_hat).detach())}


def sparse_training_step(
    sae: SAE,
    x: Tensor,
    pre: Tensor,
    rows: Tensor,
    cols: Tensor,
    values: Tensor | None,
    dead: Tensor | None,
    target: Tensor | None = None,
    skip: Tensor | None = None,
) -> TrainOutput:
    """Loss and statistics for selected latents (rows, cols) of x [B, d_in]; see `sparse`.

    `values` are the selected pre-activations from `pre` when it was computed in the weights'
    dtype; None makes them be recomputed exactly from the selected columns. A transcoder gives
    its `target` [B, d_out] (else x is reconstructed) and its `skip` term [B, d_out] (added to x_hat).
    """
    B = x.shape[0]
    b_dec = sae.b_dec if sae.cfg.apply_b_dec_to_input else None
    # recomputing values after a low-precision matmul needs W_enc^T rows: one copy per step
    W_enc_rows = sae.transposed_copy("W_enc_T", sae.W_enc) if pre.dtype != sae.W_enc.dtype else None
    order = column_order(cols, sae.d_sae)  # shared by the encoder's and the decoder's gradient
    acts = F.relu(selected_preacts(x, sae.W_enc, sae.b_enc, b_dec, rows, cols, values, W_enc_rows, order))
    x_hat = sparse_decode(acts, rows, cols, sae.W_dec, B, order) + sae.b_dec
    if skip is not None:
        x_hat = x_hat + skip
    y = x if target is None else target
    losses = {"mse": mse_loss(x_hat, y)}
    losses.update(auxk_sparse(sae, x, x_hat, pre, dead, W_enc_rows, target))
    loss = torch.stack(list(losses.values())).sum()
    active = acts > 0
    fired = torch.zeros(sae.d_sae, dtype=torch.bool, device=x.device)
    fired[cols[active]] = True
    return TrainOutput(
        x_hat.detach(), loss, {k: v.detach() for k, v in losses.items()}, fired, active.sum().float() / B
    )


class TopKSAE(SAE):
    """ReLU(TopK) SAE with AuxK; see the module docstring."""

    arch = "topk"

    def activation(self, pre: Tensor) -> Tensor:
        vals, idx = pre.topk(active_k(self.cfg), dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter(-1, idx, F.relu(vals))

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
        B, k = x.shape[0], active_k(self.cfg)
        pre = encoder_preacts(self, x, matmul_dtype)
        vals, idx = chunked_topk(pre, k)
        rows = torch.arange(B, device=x.device).repeat_interleave(k)
        exact = vals.reshape(-1) if pre.dtype == self.W_enc.dtype else None
        return sparse_training_step(self, x, pre, rows, idx.reshape(-1), exact, dead)
