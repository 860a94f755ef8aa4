"""Sparse kernels whose weight gradients are rows, not full-size tensors (the routed SAE's fast path).

A step of a routed SAE with a million latents uses at most B * k of them; a dense [d_sae, d_in]
gradient would be 800 MB of mostly zeros, written by the backward and scanned by the optimiser.
Here the two autograd Functions return no gradient for W_enc, b_enc and W_dec: their backward
writes the gradient of the latents that were used, as rows, into a `RowGrads` that the SAE holds
until lazy Adam (train/lazy_adam.py) consumes it. Which latents get gradient is known from the
forward's selection, so nothing is scanned for nonzeros.

Entries use sae/sparse.py's flat layout: values [nnz], rows [nnz] (ascending; a row of the decoder's
output), cols [nnz] (latent id). The decoder's output may stack several reconstructions (the routed
SAE puts the AuxK one below x_hat: row B + t for token t), so each entry also names its `token`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from monosemantic.sae.sparse import row_dots, row_offsets


@dataclass
class RowGrads:
    """Gradients of the latents `ids` [n] (ascending): "W_enc" [n, d_in] (rows of W_enc^T),
    "b_enc" [n], "W_dec" [n, d_in]. Filled by the backward; several backward kernels add up.

    The decoder's row constraints ride along with the update, which gathers the rows anyway (one
    gather and scatter of them fewer per step each): `project` names the parameters whose gradient
    rows must still lose their component along the row (against the rows before the update), and
    `unit` those whose rows the optimiser renormalised after the update (train/lazy_adam.py)."""

    ids: Tensor
    grads: dict[str, Tensor] = field(default_factory=dict)
    project: set[str] = field(default_factory=set)
    unit: set[str] = field(default_factory=set)

    def add(self, name: str, rows: Tensor) -> None:
        if name in self.grads:
            self.grads[name].add_(rows)
        else:
            self.grads[name] = rows

    def dense(self, name: str, n: int) -> Tensor:
        """The gradient as a full [n, ...] tensor (tests and references only: that is what this avoids)."""
        rows = self.grads[name]
        return torch.zeros(n, *rows.shape[1:], dtype=rows.dtype, device=rows.device).index_copy_(0, self.ids, rows)


@dataclass
class Plan:
    """A step's entries, and those with an active latent grouped by latent (one sort serves the
    encoder's and the decoder's backward).

    perm [m]: active entries sorted by latent (stable); offsets [n]: where each of `store.ids`'
    runs starts in that order; segment [m]: the index into ids of each entry of perm.
    """

    rows: Tensor
    cols: Tensor
    tokens: Tensor
    n_out: int
    perm: Tensor
    offsets: Tensor
    segment: Tensor
    store: RowGrads


def make_plan(rows: Tensor, cols: Tensor, tokens: Tensor, active: Tensor, n_out: int) -> Plan:
    """Plan of entries (rows, cols, tokens) whose `active` ones [nnz] bool receive gradient (an
    entry whose ReLU is off has none, so its latent is not among the ids unless another entry is)."""
    idx = active.nonzero().squeeze(1)
    sorted_cols, order = cols[idx].sort(stable=True)
    ids, counts = torch.unique_consecutive(sorted_cols, return_counts=True)
    segment = torch.repeat_interleave(torch.arange(ids.shape[0], device=ids.device), counts)
    offsets = counts.cumsum(0) - counts
    return Plan(rows, cols, tokens, n_out, idx[order], offsets, segment, RowGrads(ids))


class _EncodeRows(torch.autograd.Function):
    """pre[i] = (x[token_i] - b_dec) . W_enc[:, cols_i] + b_enc[cols_i]; the forward returns the values
    the selection computed. Backward: W_enc^T and b_enc rows into the plan's store, and b_dec's
    gradient (-sum_i dpre_i W_enc[:, cols_i])."""

    @staticmethod
    def forward(ctx: Any, values: Tensor, x_c: Tensor, W_enc: Tensor, b_dec: Tensor | None, plan: Plan) -> Tensor:
        ctx.save_for_backward(x_c, W_enc)
        ctx.plan = plan
        return values.clone()  # an input returned as-is would alias it in the graph

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # grad [nnz]
        x_c, W_enc = ctx.saved_tensors
        plan: Plan = ctx.plan
        grad = grad.to(W_enc.dtype)
        g = grad[plan.perm]
        n = plan.store.ids.shape[0]
        plan.store.add("b_enc", torch.zeros(n, dtype=g.dtype, device=g.device).index_add_(0, plan.segment, g))
        x_rows = F.embedding_bag(plan.tokens[plan.perm], x_c, plan.offsets, mode="sum", per_sample_weights=g)
        plan.store.add("W_enc", x_rows)
        db_dec = None
        if ctx.needs_input_grad[3]:  # one bag per output row: aten parallelises over bags, not within one
            offsets = row_offsets(plan.rows, plan.n_out)
            db_dec = -F.embedding_bag(plan.cols, W_enc.t(), offsets, mode="sum", per_sample_weights=grad).sum(0)
        return None, None, None, db_dec, None


class _DecodeRows(torch.autograd.Function):
    """out[r] = sum over entries i of row r of values[i] * W_dec[cols_i]: [n_out, d_in]. Backward:
    the values' gradient, and W_dec rows into the plan's store."""

    @staticmethod
    def forward(ctx: Any, values: Tensor, W_dec: Tensor, plan: Plan) -> Tensor:
        ctx.save_for_backward(values, W_dec)
        ctx.plan = plan
        offsets = row_offsets(plan.rows, plan.n_out)
        return F.embedding_bag(plan.cols, W_dec, offsets, mode="sum", per_sample_weights=values)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # grad [n_out, d_in]
        values, W_dec = ctx.saved_tensors
        plan: Plan = ctx.plan
        grad = grad.to(W_dec.dtype).contiguous()
        d_values = row_dots(grad, W_dec, plan.rows, plan.cols)
        coef = values[plan.perm]
        plan.store.add(
            "W_dec", F.embedding_bag(plan.rows[plan.perm], grad, plan.offsets, mode="sum", per_sample_weights=coef)
        )
        return d_values, None, None


def encode_rows(values: Tensor, x_c: Tensor, W_enc: Tensor, b_dec: Tensor | None, plan: Plan) -> Tensor:
    """Differentiable pre-activations [nnz] of the plan's entries, whose `values` the selection
    computed from centred x_c [B, d_in] (detached); W_enc [d_in, d_sae] must be a transposed view of
    a contiguous [d_sae, d_in] tensor (so that its latents' weights are contiguous rows). Gradient:
    to `b_dec` (if given: x_c = x - b_dec) as usual, to W_enc and b_enc through `plan.store`."""
    return _EncodeRows.apply(values, x_c, W_enc, b_dec, plan)


def decode_rows(values: Tensor, W_dec: Tensor, plan: Plan) -> Tensor:
    """Sum of `values`-weighted decoder rows per output row: [plan.n_out, d_in] (no bias); gradient
    to W_dec through `plan.store`."""
    return _DecodeRows.apply(values, W_dec, plan)
