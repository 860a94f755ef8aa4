"""Sparse kernels behind the TopK / BatchTopK fast path.

A TopK SAE activates k of d_sae latents per token. The encoder's dense matmul picks them; after that
every product needs only the active latents, so the decoder forward and every backward product here
cost O(nnz * d_in) instead of O(B * d_sae * d_in).

Active latents are held in a flat, row-sorted layout (like CSR without the compression):
    values [nnz]   activation (or pre-activation) of each active latent
    rows   [nnz]   token (row of the batch) it belongs to, ascending
    cols   [nnz]   latent id
For TopK, nnz = B * k and rows = [0]*k + [1]*k + ...; BatchTopK has a variable count per row.

The kernels are those behind `F.embedding_bag` with per-sample weights: its forward is exactly the
sparse decoder (a weighted sum of decoder rows per token), and its two backward kernels are exactly
the encoder's sparse gradient (rows of W_enc^T accumulated by the latents they fed) and the dot
products of a token with selected weight rows. We call those aten kernels directly because we need
each one without the others.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

_EMBEDDING_BAG_SUM = 0  # aten's mode id for embedding_bag(mode="sum")


def row_offsets(rows: Tensor, n_rows: int) -> Tensor:
    """Start of each row's entries in a row-sorted flat layout: [n_rows] int64."""
    return torch.searchsorted(rows, torch.arange(n_rows, device=rows.device, dtype=rows.dtype))


class ColumnOrder(NamedTuple):
    """The flat entries regrouped by latent, for the products that sum over tokens per latent.

    perm    [nnz]    entry indices sorted by col (stable: tokens ascending within a latent)
    offsets [n_cols] where each latent's run of entries starts in that order
    """

    perm: Tensor
    offsets: Tensor


def column_order(cols: Tensor, n_cols: int) -> ColumnOrder:
    """`ColumnOrder` of `cols`; one sort serves every per-latent product of a step (encoder and
    decoder gradients share the selection)."""
    # stable: aten's unstable int64 sort is 3-5x slower on CPU here; and in int32 (latent ids fit),
    # 2.7x faster again than the stable int64 sort (131k entries of 16k latents, 2 threads)
    key = cols.to(torch.int32) if n_cols < 2**31 else cols
    sorted_cols, perm = key.sort(stable=True)
    return ColumnOrder(perm, torch.searchsorted(sorted_cols, torch.arange(n_cols, device=cols.device, dtype=key.dtype)))


class _SparseDecode(torch.autograd.Function):
    """out[b] = sum over entries i of row b of values[i] * W_dec[cols[i]], with a backward that
    sums per latent through `column_order` (aten's embedding_bag backward zero-fills and sorts a
    dense [d_sae, d_in] gradient itself, 3-6x slower at 16k latents)."""

    @staticmethod
    def forward(
        ctx: Any, values: Tensor, W_dec: Tensor, rows: Tensor, cols: Tensor, n_rows: int, order: ColumnOrder | None
    ) -> Tensor:
        ctx.save_for_backward(values, W_dec, rows, cols)
        ctx.order = order
        return F.embedding_bag(cols, W_dec, row_offsets(rows, n_rows), mode="sum", per_sample_weights=values)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # grad [n_rows, d_in]
        values, W_dec, rows, cols = ctx.saved_tensors
        grad = grad.to(W_dec.dtype)
        d_values = row_dots(grad, W_dec, rows, cols) if ctx.needs_input_grad[0] else None
        d_W = scatter_rows(grad, values, rows, cols, W_dec.shape[0], ctx.order) if ctx.needs_input_grad[1] else None
        return d_values, d_W, None, None, None, None


def sparse_decode(
    values: Tensor, rows: Tensor, cols: Tensor, W_dec: Tensor, n_rows: int, order: ColumnOrder | None = None
) -> Tensor:
    """Sum of `values`-weighted decoder rows per token: [n_rows, d_in] (no bias).

    Differentiable in `values` and `W_dec`; the backward touches only the `cols` rows of W_dec.
    `order`: `column_order(cols, d_sae)`, if the caller has it.
    """
    return _SparseDecode.apply(values.to(W_dec.dtype), W_dec, rows, cols, n_rows, order)


def row_dots(x: Tensor, weight_rows: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """x[rows[i]] . weight_rows[cols[i]] for every entry: [nnz].

    `weight_rows` is [n, d] with contiguous rows (e.g. W_enc^T or W_dec).
    """
    offsets = row_offsets(rows, x.shape[0])
    return torch.ops.aten._embedding_bag_per_sample_weights_backward(
        x, weight_rows, cols, offsets, rows, _EMBEDDING_BAG_SUM
    )


def scatter_rows(
    x: Tensor, coef: Tensor, rows: Tensor, cols: Tensor, n_out: int, order: ColumnOrder | None = None
) -> Tensor:
    """out[j] = sum over entries i with cols[i] == j of coef[i] * x[rows[i]]: [n_out, d] (dense).

    An embedding bag over x per latent (rows with no entry come out zero); `order` as `sparse_decode`.
    """
    perm, offsets = order if order is not None else column_order(cols, n_out)
    return F.embedding_bag(rows[perm], x, offsets, mode="sum", per_sample_weights=coef[perm].to(x.dtype))


class _SelectedPreacts(torch.autograd.Function):
    """pre[i] = (x[rows[i]] - b_dec) . W_enc[:, cols[i]] + b_enc[cols[i]], with a sparse backward.

    The forward returns `values`, the pre-activations already computed by the dense encoder matmul
    (or recomputed in fp32 by `selected_preacts`), so nothing is computed twice.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        W_enc: Tensor,
        b_enc: Tensor,
        b_dec: Tensor | None,
        values: Tensor,
        rows: Tensor,
        cols: Tensor,
        order: ColumnOrder | None,
    ) -> Tensor:
        ctx.save_for_backward(x, W_enc, b_dec, rows, cols)
        ctx.has_b_dec = b_dec is not None
        ctx.order = order
        return values.clone()  # an input returned as-is would alias it in the graph

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # grad [nnz]
        x, W_enc, b_dec, rows, cols = ctx.saved_tensors
        d_sae = W_enc.shape[1]
        grad = grad.to(W_enc.dtype)
        dx = dW_enc = db_enc = db_dec = None
        if ctx.needs_input_grad[2] or ctx.needs_input_grad[3]:
            db_enc = torch.zeros(d_sae, dtype=W_enc.dtype, device=W_enc.device)
            db_enc.index_add_(0, cols, grad)
        if ctx.needs_input_grad[1]:
            x_c = x - b_dec if ctx.has_b_dec else x
            # (d_sae, d_in), handed over transposed: no copy where W_enc is stored by latent
            # (`SAE.encoder_layout_`); autograd copies it into a contiguous W_enc's layout otherwise
            dW_enc = scatter_rows(x_c.to(W_enc.dtype), grad, rows, cols, d_sae, ctx.order).t()
        if ctx.needs_input_grad[0]:
            dx = F.embedding_bag(
                cols,
                W_enc.t().contiguous(),
                row_offsets(rows, x.shape[0]),
                mode="sum",
                per_sample_weights=grad,
            ).to(x.dtype)
        if ctx.has_b_dec and ctx.needs_input_grad[3]:
            # d/d b_dec of sum_i grad_i * (x - b_dec) . W_enc[:, cols_i] = -W_enc @ db_enc
            db_dec = -(W_enc @ db_enc)
        if not ctx.needs_input_grad[2]:
            db_enc = None
        return dx, dW_enc, db_enc, db_dec, None, None, None, None


def selected_preacts(
    x: Tensor,
    W_enc: Tensor,
    b_enc: Tensor,
    b_dec: Tensor | None,
    rows: Tensor,
    cols: Tensor,
    values: Tensor | None = None,
    W_enc_rows: Tensor | None = None,
    order: ColumnOrder | None = None,
) -> Tensor:
    """Differentiable pre-activations of the selected latents: [nnz].

    x [B, d_in]; W_enc [d_in, d_sae]; `b_dec` is subtracted from x first when given. `values`, when
    given, are these pre-activations as the encoder matmul computed them (fp32); without it they are
    computed here in the weights' dtype from the selected columns only (used after a bf16 matmul,
    which is only trusted to pick the latents, not to give their values). `W_enc_rows` is
    W_enc^T as a contiguous [d_sae, d_in] tensor, if the caller keeps one; `order` as `sparse_decode`.
    """
    if values is None:
        with torch.no_grad():
            x_c = (x - b_dec) if b_dec is not None else x
            rows_T = W_enc_rows if W_enc_rows is not None else W_enc.t().contiguous()
            values = row_dots(x_c.to(W_enc.dtype), rows_T, rows, cols) + b_enc[cols]
    return _SelectedPreacts.apply(x, W_enc, b_enc, b_dec, values, rows, cols, order)
