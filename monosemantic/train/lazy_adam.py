"""Lazy Adam: Adam that updates only the rows (latents) that received gradient this step.

A routed SAE with a million latents gives gradient to a few percent of its encoder and decoder
rows per step; plain Adam would still read and write all of W_enc, W_dec and both moments. Here a
parameter with a row dimension (`row_dims`, e.g. 1 for W_enc [d_in, d_sae]) is updated only at the
rows that received gradient: those that the SAE's sparse backward names (`row_grads`: ids and the
gradient rows, sae/row_grads.py; no full-size gradient exists, nothing is scanned) or, given a
dense .grad, those where it is not all zero. The rows are gathered, updated and scattered back in
chunks, in place; W_enc stored transposed (routed.py) makes each a contiguous row.

- those rows get torch.optim.Adam(fused=True)'s update (its kernel, as the trainer's dense
  parameters; equal up to the last bit, which its vector lanes may round differently on a chunk of
  rows than on the whole tensor; no weight decay, no amsgrad);
- the other rows are skipped, as in torch.optim.SparseAdam: their parameters and moments stay as
  they are (the moments are not decayed by beta^skipped), and the step count (bias correction) is
  the parameter's, counted every step; so a row that skips steps does not follow Adam exactly,
  which on a zero gradient would still move it by its decaying momentum.

With `row_rules` (the routed SAE's decoder, sae/row_grads.py) the chunk that is gathered anyway
also takes the decoder's constraints: its gradient rows lose their component along the rows before
the update (the SAE's remove_parallel_grad_) and the rows are renormalised after it
(normalize_decoder_), as the trainer would do before and after the step, without their own
gathers and scatters.

Parameters without a row dimension (b_dec, the router) get the dense Adam update. The state holds
the same tensors as Adam's ("step", "exp_avg", "exp_avg_sq"), so checkpoints save and load it alike.

    opt = optimizer_for(sae, lr)    # LazyAdam for an SAE that declares LAZY_ROWS (routed), else Adam
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from monosemantic.sae.row_grads import RowGrads

Rows = tuple[Tensor, Tensor]  # (ids [n] ascending, gradient rows [n, ...]) of one parameter
CHUNK = 32768  # rows per gather/update/scatter: few ops (under load each parallel op waits for its threads)


class LazyAdam(torch.optim.Optimizer):
    """See the module docstring. `row_dims[i]`: the row dimension of the i-th parameter, or None.
    `row_grads(p)`: the gradient of parameter p as rows (ids, rows [n, ...] in the layout of
    p.movedim(row_dim, 0)), for parameters whose backward gives no .grad (sae/row_grads.py); None
    where there is none. `row_rules(p)`: (project, unit) for such rows: remove the gradient's
    component along each row before the update / renormalise each row after it."""

    def __init__(
        self,
        params: list[nn.Parameter],
        row_dims: list[int | None],
        lr: float,
        betas=(0.9, 0.999),
        eps=1e-8,
        row_grads: Callable[[Tensor], Rows | None] | None = None,
        row_rules: Callable[[Tensor], tuple[bool, bool]] | None = None,
    ):
        if len(params) != len(row_dims):
            raise ValueError(f"{len(params)} parameters but {len(row_dims)} row dimensions")
        super().__init__(
            [{"params": [p], "row_dim": d} for p, d in zip(params, row_dims)], dict(lr=lr, betas=betas, eps=eps)
        )
        self.row_grads = row_grads
        self.row_rules = row_rules
        self._work: dict[tuple, list[Tensor]] = {}

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            [p] = group["params"]
            dim = group["row_dim"]
            rows = self.row_grads(p) if p.grad is None and dim is not None and self.row_grads is not None else None
            if p.grad is None and rows is None:
                continue
            state = self._state(p)
            state["step"] += 1
            if dim is None:
                _adam_(p, p.grad, state["exp_avg"], state["exp_avg_sq"], state["step"], group)
                continue
            rules = (False, False)
            if rows is None:
                ids = touched_rows(p.grad, dim)
                rows = ids, p.grad.index_select(dim, ids).movedim(dim, 0)
            elif self.row_rules is not None:
                rules = self.row_rules(p)
            targets = [t.movedim(dim, 0) for t in (p, state["exp_avg"], state["exp_avg_sq"])]
            _adam_rows_(targets, *rows, state["step"], group, self._chunk_buffers(targets[0]), *rules)
        return None

    def _chunk_buffers(self, p: Tensor) -> list[Tensor]:
        """Three [CHUNK, *row] buffers for rows of p (row dimension first), reused across steps."""
        key = (tuple(p.shape[1:]), p.dtype, p.device)
        if key not in self._work or self._work[key][0].shape[0] != CHUNK:
            self._work[key] = [p.new_empty(CHUNK, *p.shape[1:]) for _ in range(3)]
        return self._work[key]

    def _state(self, p: Tensor) -> dict:
        """p's state, created on first use; moments laid out as p (a loaded checkpoint's are
        contiguous: re-laid once, so that rows of a transposed parameter stay contiguous rows)."""
        state = self.state[p]
        if not state:
            state["step"] = torch.tensor(0.0)
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        for key in ("exp_avg", "exp_avg_sq"):
            if state[key].stride() != p.stride():
                state[key] = torch.empty_like(p).copy_(state[key])
        return state


def _adam_rows_(
    targets: list[Tensor],
    ids: Tensor,
    grad: Tensor,
    step: Tensor,
    group: dict,
    work: list[Tensor],
    project: bool = False,
    unit: bool = False,
):
    """Adam on rows `ids` of p, m, v (`targets`, row dimension first), chunk by chunk, through
    the reused chunk buffers `work` (fresh allocations would page-fault). `project`: first drop
    the gradient rows' component along p's rows (in place, as remove_parallel_grad_ would);
    `unit`: renormalise p's rows after the update (as normalize_decoder_ would)."""
    for lo in range(0, ids.shape[0], CHUNK):
        i = ids[lo : lo + CHUNK]
        p, m, v = (torch.index_select(t, 0, i, out=w[: i.shape[0]]) for t, w in zip(targets, work))
        g = grad[lo : lo + CHUNK]
        if project:
            g.addcmul_(torch.bmm(g.unsqueeze(1), p.unsqueeze(2)).view(-1, 1), p, value=-1)
        _adam_(p, g.contiguous(), m, v, step, group)
        if unit:
            p.div_(p.norm(dim=1, keepdim=True).clamp_min(1e-12))
        for target, part in zip(targets, (p, m, v)):
            target.index_copy_(0, i, part)


def touched_rows(grad: Tensor, dim: int) -> Tensor:
    """Indices along `dim` whose gradient slice is not all zero: [n] int64."""
    other = [d for d in range(grad.ndim) if d != dim]
    nonzero = grad.ne(0).any(dim=other[0]) if len(other) == 1 else grad.ne(0) if not other else grad.ne(0).flatten()
    return nonzero.nonzero().squeeze(1)


def _adam_(p: Tensor, g: Tensor, m: Tensor, v: Tensor, step: Tensor, group: dict) -> None:
    """torch.optim.Adam(fused=True)'s update, in place on p, m, v, with `step` already counted:
    its kernel (one pass; 10x faster on CPU than the single-tensor one's eight)."""
    beta1, beta2 = group["betas"]
    common = dict(lr=group["lr"], beta1=beta1, beta2=beta2, weight_decay=0.0, eps=group["eps"])
    torch._fused_adam_([p], [g], [m], [v], [], [step], **common, amsgrad=False, maximize=False)


def optimizer_for(sae: nn.Module, lr: float, fused: bool = False) -> torch.optim.Optimizer:
    """LazyAdam over an SAE that declares which dimension of which parameter holds its latents
    (`lazy_rows`, e.g. the routed SAE's), torch's Adam otherwise."""
    rows: dict[str, int] | None = getattr(sae, "lazy_rows", None)
    if rows is None:
        return torch.optim.Adam(sae.parameters(), lr=lr, fused=fused)
    named = list(sae.named_parameters())
    names = {id(p): n for n, p in named}

    def row_grads(p: Tensor) -> Rows | None:  # the fast path's gradient rows (sae/row_grads.py)
        store = getattr(sae, "row_grads", None)
        if store is None or names[id(p)] not in store.grads:
            return None
        return store.ids, store.grads[names[id(p)]]

    def row_rules(p: Tensor) -> tuple[bool, bool]:  # the decoder's constraints, taken on by the update
        store, name = cast("RowGrads", sae.row_grads), names[id(p)]  # row_grads(p) found it
        project, unit = name in store.project, name in getattr(sae, "unit_rows", ())
        store.project.discard(name)
        if unit:
            store.unit.add(name)  # normalize_decoder_ then leaves these rows alone
        return project, unit

    params, dims = [p for _, p in named], [rows.get(n) for n, _ in named]
    return LazyAdam(params, dims, lr=lr, row_grads=row_grads, row_rules=row_rules)
