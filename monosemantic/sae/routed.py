"""Routed (Switch) TopK SAE (Mudide et al. 2024, "Efficient Dictionary Learning with Switch Sparse
Autoencoders", arXiv 2410.08201).

The d_sae latents are `cfg.experts` contiguous blocks of m = d_sae / experts ("experts"). A router
picks one expert per token and only that expert's TopK SAE runs:

    x_c  = x - b_dec                                   # the pre-encoder bias, shared by all experts
    p    = softmax(x_c @ W_router)                     # [N, E] router probabilities
    e    = argmax p                                    # the token's expert
    z    = p_e * ReLU(TopK_k(x_c @ W_enc[:, block e] + b_enc[block e]))   # [N, m], placed in block e
    x_hat = z @ W_dec + b_dec

Scaling the expert's output by p_e (the paper's eq. for x_hat) is what gives the router a gradient;
here it is folded into the latents, so `decode(encode(x))` is x_hat and a latent's activation is
what its decoder row is multiplied by. Loss (the paper's sec. 2): MSE + alpha * E * sum_i f_i P_i,
the Switch Transformer load-balancing term (f_i: share of the batch's tokens routed to expert i,
P_i: mean router probability of expert i), alpha = `BALANCE_COEF`; plus AuxK within the chosen
expert's dead latents. Departures from the paper: the router reads x - b_dec (the paper gives it a
bias b_router of its own), and AuxK is ours (the paper's experts are plain TopK SAEs).

The fast path groups the tokens by expert and runs one [n_e, d_in] @ [d_in, m] matmul per expert, so
a token costs O(d_in * m) instead of O(d_in * d_sae). W_enc is stored as the transpose of a
[d_sae, d_in] tensor, so a latent's encoder weights are a contiguous row. The backward
(sae/row_grads.py) gives W_enc, b_enc and W_dec no full-size gradient: it writes the rows of the
latents that fired into `row_grads`, which the trainer's lazy Adam (train/lazy_adam.py) updates and
`normalize_decoder_` renormalises; no step costs O(d_sae * d_in) outside the matmuls. `LAZY_ROWS`
names the latent dimension of each parameter (for dense gradients: the reference path). `forward`
is the dense reference.

Formats without a router (SAELens, sparsify, ...) get it as a plain TopK SAE (`as_topk`): the same
weights, but its encoder picks the top k of all d_sae latents, not of one expert's, and leaves out
p_e, so its latents differ from the routed SAE's; our own cfg.json + safetensors keep the router.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from monosemantic.sae.base import ENCODE_BUDGET, SAE, SAEConfig, SAEOutput, TrainOutput, mse_loss
from monosemantic.sae.row_grads import RowGrads, decode_rows, encode_rows, make_plan
from monosemantic.sae.topk import TopKSAE, active_k, chunked_topk, k_aux

BALANCE_COEF = 1.0  # alpha; the MSE is summed over d_in (E||x|| = sqrt(d_in)), so both are O(1)
Entries = tuple[Tensor, Tensor, Tensor]  # (rows, cols, values) of selected latents, as in sae/sparse.py
LAZY_ROWS = {"W_enc": 1, "b_enc": 0, "W_dec": 0}  # parameter -> dimension indexed by latent
UNIT_ROWS = ("W_dec",)  # parameters whose rows lazy Adam renormalises with the update
TOPK_ROWS = 1024  # tokens per top-k call: on a few dozen rows aten's top-k costs 4x as much per row


class Selection(NamedTuple):
    """The fast path's choice: top_vals, top_cols [N, k] (pre-activations and latent ids, token
    order) and the AuxK entries (rows, cols, values; sorted by row), or None without dead latents."""

    top_vals: Tensor
    top_cols: Tensor
    aux: Entries | None


class RoutedSAE(SAE):
    """Switch SAE of TopK experts; see the module docstring."""

    arch = "routed"
    lazy_rows = LAZY_ROWS  # the trainer's optimiser updates only the latents that got gradient
    unit_rows = UNIT_ROWS

    def __init__(self, cfg: SAEConfig, device: torch.device | str | None = None):
        super().__init__(cfg, device=device)
        self.W_router = nn.Parameter(torch.empty(cfg.d_in, self.experts, device=device, dtype=cfg.torch_dtype))
        self.reset_router()
        self.row_grads: RowGrads | None = None  # the last fast-path backward's gradients (row_grads.py)
        self._row_layout_()

    @torch.no_grad()
    def reset_router(self) -> None:
        # random directions: at the start the argmax spreads the tokens over the experts
        w = torch.randn(self.cfg.d_in, self.experts, dtype=torch.float32, device=self.W_router.device)
        self.W_router.copy_(w / self.cfg.d_in**0.5)

    @property
    def experts(self) -> int:
        assert self.cfg.experts is not None  # check_routed refuses a config without it
        return self.cfg.experts

    @property
    def block(self) -> int:
        """m, latents per expert."""
        return self.cfg.d_sae // self.experts

    def route(self, x_c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Router probabilities [N, E], chosen expert [N] and its probability [N] of centred x_c [N, d_in]."""
        probs = torch.softmax(x_c @ self.W_router, dim=-1)
        expert = probs.argmax(-1)
        return probs, expert, probs.gather(1, expert[:, None]).squeeze(1)

    def _centred(self, x: Tensor) -> Tensor:
        return x - self.b_dec if self.cfg.apply_b_dec_to_input else x

    def balance_loss(self, probs: Tensor, expert: Tensor) -> Tensor:
        """alpha * E * sum_i f_i P_i (Switch Transformer eq. 4; f has no gradient)."""
        f = torch.bincount(expert, minlength=self.experts).to(probs.dtype) / expert.shape[0]
        return BALANCE_COEF * self.experts * (f * probs.mean(0)).sum()

    # ---- dense reference --------------------------------------------------------------------

    def in_expert(self, expert: Tensor) -> Tensor:
        """[N, d_sae] bool: the latents of each token's expert."""
        latent_expert = torch.arange(self.d_sae, device=expert.device) // self.block
        return latent_expert[None, :] == expert[:, None]

    def dense_latents(self, x_c: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Latents [N, d_sae] of centred x_c [N, d_in], with the router's probabilities [N, E], the
        chosen experts [N] and the pre-activations [N, d_sae] (-inf outside each token's expert)."""
        probs, expert, p = self.route(x_c)
        pre = (x_c @ self.W_enc + self.b_enc).masked_fill(~self.in_expert(expert), float("-inf"))
        vals, idx = pre.topk(active_k(self.cfg), dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter(-1, idx, F.relu(vals) * p[:, None]), probs, expert, pre

    def forward(self, x: Tensor, *, dead: Tensor | None = None, penalty_scale: float = 1.0) -> SAEOutput:
        lead = x.shape[:-1]
        x = self._flatten(x)
        latents, probs, expert, pre = self.dense_latents(self._centred(x))
        x_hat = latents @ self.W_dec + self.b_dec
        losses = {"mse": mse_loss(x_hat, x), "balance": self.balance_loss(probs, expert)}
        if dead is not None and bool(torch.isfinite(pre[:, dead]).any()):
            losses["auxk"] = self._auxk_dense(x, x_hat, pre.masked_fill(~dead[None, :], float("-inf")))
        loss = torch.stack(list(losses.values())).sum()
        return SAEOutput(x_hat.reshape(*lead, -1), latents.reshape(*lead, -1), loss, losses)

    def _auxk_dense(self, x: Tensor, x_hat: Tensor, pre_dead: Tensor) -> Tensor:
        """AuxK over each token's expert's dead latents (pre_dead: -inf elsewhere)."""
        n_dead = torch.isfinite(pre_dead).sum(-1)  # [N], the dead latents of each token's expert
        n = min(k_aux(self.cfg), int(n_dead.max()))
        vals, idx = pre_dead.topk(n, dim=-1, sorted=False)
        z = torch.zeros_like(pre_dead).scatter(-1, idx, F.relu(vals.nan_to_num(neginf=0.0)))
        return self.cfg.auxk_coef * mse_loss(z @ self.W_dec, (x - x_hat).detach())

    def activation(self, pre: Tensor) -> Tensor:
        raise NotImplementedError("a routed SAE's latents depend on the router: use encode() or forward()")

    def encode(self, x: Tensor) -> Tensor:
        """Latents [..., d_sae]; without autograd (analysis, the dashboard) each token runs only its
        expert's encoder block (O(d_in * m) per token), with it the dense reference."""
        lead = x.shape[:-1]
        x_c = self._centred(self._flatten(x))
        if torch.is_grad_enabled():
            return self.dense_latents(x_c)[0].reshape(*lead, self.d_sae)
        _, expert, p = self.route(x_c)
        sel = self.select(x_c, expert, None)
        z = torch.zeros(x_c.shape[0], self.d_sae, dtype=x_c.dtype, device=x_c.device)
        z.scatter_(1, sel.top_cols, F.relu(sel.top_vals) * p[:, None])
        return z.reshape(*lead, self.d_sae)

    def encode_entries(self, x: Tensor, budget: int = ENCODE_BUDGET) -> tuple[Tensor, Tensor, Tensor]:
        """As `encode`'s nonzeros (token, latent, value; row-major), straight from each token's k
        selected latents: O(N * k) memory whatever d_sae (the analysis of a 1M-latent SAE)."""
        if torch.is_grad_enabled():
            return super().encode_entries(x, budget)
        x_c = self._centred(self._flatten(x))
        _, expert, p = self.route(x_c)
        sel = self.select(x_c, expert, None)
        cols, order = sel.top_cols.sort(dim=1)  # row-major: latents ascending within a token
        vals = (F.relu(sel.top_vals) * p[:, None]).gather(1, order)
        tok = torch.arange(x_c.shape[0], device=x_c.device)[:, None].expand_as(cols)
        nonzero = vals != 0
        return tok[nonzero], cols[nonzero], vals[nonzero]

    @torch.no_grad()
    def fold_input_scale_(self, scale: float) -> None:
        """As for every SAE, plus W_router * scale: the router then sees the same logits on raw x."""
        super().fold_input_scale_(scale)
        self.W_router.mul_(scale)

    # ---- fast path --------------------------------------------------------------------------

    def _row_layout_(self) -> None:
        """Keep W_enc [d_in, d_sae] as the transpose of a contiguous [d_sae, d_in] tensor, so that a
        latent's encoder weights are one contiguous row: the sparse backward, lazy Adam and the
        per-expert matmuls then gather and scatter rows, not strided columns. Same values, same
        Parameter object (the optimiser keeps it); a loaded SAE is re-laid out at its first step."""
        if not self.W_enc.t().is_contiguous():
            self.W_enc.data = self.W_enc.data.t().contiguous().t()

    @torch.no_grad()
    def select(self, x_c: Tensor, expert: Tensor, dead: Tensor | None) -> Selection:
        """Each token's top k latents within its expert (pre-activation values [N, k], latent ids
        [N, k]) and, with `dead`, its AuxK entries within the expert's dead latents. The tokens are
        sorted by expert once; each expert runs one [n_e, d_in] @ [d_in, m] matmul, into a buffer
        shared by consecutive experts until it holds `TOPK_ROWS` tokens, and each buffer one top-k."""
        N, k, m = x_c.shape[0], active_k(self.cfg), self.block
        order = torch.argsort(expert, stable=True)
        counts = torch.bincount(expert, minlength=self.experts).tolist()
        x_sorted = x_c[order]
        vals = torch.empty(N, k, dtype=x_c.dtype, device=x_c.device)
        idx = torch.empty(N, k, dtype=torch.long, device=x_c.device)
        buf = self._pre_buffer(min(N, TOPK_ROWS + max(counts)), x_c.dtype)
        has_dead = dead.view(self.experts, m).any(1).tolist() if dead is not None else [False] * self.experts
        aux: list[Entries] = []
        group: list[tuple[int, int, int]] = []  # (expert, its first row in x_sorted, its tokens)
        start = 0
        for e, n_e in enumerate(counts):
            if n_e:
                group.append((e, start, n_e))
                start += n_e
            if group and (start - group[0][1] >= TOPK_ROWS or e == self.experts - 1):
                lo = group[0][1]
                pre = self._group_preacts(x_sorted, group, buf[: start - lo])
                vals[lo:start], idx[lo:start] = chunked_topk(pre, k)
                for g_e, g_start, g_n in group:
                    if dead is not None and has_dead[g_e]:
                        rows = slice(g_start - lo, g_start - lo + g_n)
                        aux.append(self._aux_entries(pre[rows], dead, g_e, order[g_start : g_start + g_n]))
                group = []
        idx += (expert[order] * m)[:, None]  # expert-local ids -> latent ids
        top_vals, top_cols = torch.empty_like(vals), torch.empty_like(idx)
        top_vals[order], top_cols[order] = vals, idx  # back to token order
        return Selection(top_vals, top_cols, _sorted_entries(aux) if aux else None)

    def _pre_buffer(self, rows: int, dtype: torch.dtype) -> Tensor:
        """A [>= rows, m] buffer for pre-activations, kept across steps (a fresh one page-faults on
        every step) and grown, never shrunk, as the largest group of tokens varies."""
        buf = self._workspace.get("routed_pre")
        if buf is None or buf.shape[0] < rows or buf.dtype != dtype or buf.device != self.W_enc.device:
            buf = self.workspace("routed_pre", (rows, self.block), dtype)
        return buf

    def _group_preacts(self, x_sorted: Tensor, group: list[tuple[int, int, int]], out: Tensor) -> Tensor:
        """Pre-activations of a group of experts' tokens within their experts: `out` [rows, m]."""
        m, lo, W_rows = self.block, group[0][1], self.W_enc.t()  # W_rows [d_sae, d_in]
        for e, start, n_e in group:
            block = slice(e * m, (e + 1) * m)
            pre = out[start - lo : start - lo + n_e]
            # the bias added after the product, while it is still in cache: addmm would first copy
            # it, broadcast, into the rows (a slow strided copy, a quarter of the matmuls' time)
            torch.mm(x_sorted[start : start + n_e], W_rows[block].t(), out=pre).add_(self.b_enc[block])
        return out

    def _aux_entries(self, pre: Tensor, dead: Tensor, e: int, tokens: Tensor) -> Entries:
        """AuxK entries (rows, cols, values) of expert e's `tokens` from their pre-activations
        [n_e, m] (overwritten): the top k_aux of the expert's dead latents."""
        m = self.block
        dead_e = dead[e * m : (e + 1) * m]
        n = min(k_aux(self.cfg), int(dead_e.sum()))
        vals, idx = pre.masked_fill_(~dead_e, float("-inf")).topk(n, dim=-1, sorted=False)
        return tokens.repeat_interleave(n), (idx + e * m).reshape(-1), vals.reshape(-1)

    def training_forward(
        self,
        x: Tensor,
        *,
        dead: Tensor | None = None,
        penalty_scale: float = 1.0,
        matmul_dtype: torch.dtype | None = None,
    ) -> TrainOutput:
        """Fast path (fp32 selection; `matmul_dtype` is not used: each expert's matmul is small).
        W_enc, b_enc and W_dec get no .grad: their gradient is `self.row_grads` (sae/row_grads.py),
        the rows of the latents this step used, which lazy Adam consumes."""
        self._row_layout_()
        x = self._flatten(x)
        B, k = x.shape[0], active_k(self.cfg)
        x_c = self._centred(x)
        probs, expert, p = self.route(x_c)
        sel = self.select(x_c.detach(), expert, dead)
        rows = torch.arange(B, device=x.device).repeat_interleave(k)
        cols, values, tokens = sel.top_cols.reshape(-1), sel.top_vals.reshape(-1), rows
        if sel.aux is not None:  # the AuxK reconstruction is stacked below x_hat: rows B + token
            a_rows, a_cols, a_vals = sel.aux
            cols, values = torch.cat([cols, a_cols]), torch.cat([values, a_vals])
            rows, tokens = torch.cat([rows, a_rows + B]), torch.cat([rows, a_rows])
        plan = make_plan(rows, cols, tokens, values > 0, B if sel.aux is None else 2 * B)
        self.row_grads = plan.store
        b_dec = self.b_dec if self.cfg.apply_b_dec_to_input else None
        pre = encode_rows(values, x_c.detach(), self.W_enc, b_dec, plan)
        acts = F.relu(pre[: B * k]) * p.repeat_interleave(k)
        out = decode_rows(torch.cat([acts, F.relu(pre[B * k :])]) if sel.aux is not None else acts, self.W_dec, plan)
        x_hat = out[:B] + self.b_dec
        losses = {"mse": mse_loss(x_hat, x), "balance": self.balance_loss(probs, expert)}
        if sel.aux is not None:
            losses["auxk"] = self.cfg.auxk_coef * mse_loss(out[B:], (x - x_hat).detach())
        loss = torch.stack(list(losses.values())).sum()
        active = values[: B * k] > 0
        fired = torch.zeros(self.d_sae, dtype=torch.bool, device=x.device)
        fired[cols[: B * k][active]] = True
        return TrainOutput(
            x_hat.detach(), loss, {k: v.detach() for k, v in losses.items()}, fired, active.sum().float() / B
        )

    @torch.no_grad()
    def remove_parallel_grad_(self) -> None:
        """As every SAE's; on the decoder rows of `row_grads` it is left to lazy Adam, which
        projects each chunk of gradient rows against the rows it gathers for the update."""
        super().remove_parallel_grad_()
        store = self.row_grads
        if store is not None and "W_dec" in store.grads:
            store.project.add("W_dec")

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """After a fast-path step only the rows it updated (`row_grads`, then done with; nothing
        to do when lazy Adam renormalised them with the update); else all."""
        store: RowGrads | None = getattr(self, "row_grads", None)  # unset while the base class initialises
        if store is None:
            return super().normalize_decoder_()
        self.row_grads = None
        if "W_dec" in store.unit:
            return None
        W = self.W_dec.index_select(0, store.ids)
        self.W_dec.index_copy_(0, store.ids, W.div_(W.norm(dim=1, keepdim=True).clamp_min(1e-12)))
        return None

    # ---- export -----------------------------------------------------------------------------

    def as_topk(self) -> TopKSAE:
        """The same weights as a plain TopK SAE, for formats that have no router: its encoder picks
        the top k of all latents and has no p_e scaling, so its latents are not this SAE's."""
        cfg = dataclasses.replace(self.cfg, arch="topk", experts=None)
        with torch.device("meta"):
            sae = TopKSAE(cfg)
        # contiguous: the plain SAE gets the usual [d_in, d_sae] layout, not our transposed W_enc
        tensors = {
            k: v.detach().clone(memory_format=torch.contiguous_format)
            for k, v in self.state_dict().items()
            if k != "W_router"
        }
        return sae.assign_(tensors, self.W_enc.device)  # type: ignore[return-value]


def _sorted_entries(groups: list[Entries]) -> Entries:
    """Concatenate (rows, cols, values) groups and sort them by row (the sparse kernels' layout)."""
    rows, cols, values = (torch.cat(t) for t in zip(*groups))
    order = torch.argsort(rows, stable=True)
    return rows[order], cols[order], values[order]
