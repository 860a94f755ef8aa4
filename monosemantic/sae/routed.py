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
a token costs O(d_in * m) instead of O(d_in * d_sae); the backward then touches only the selected
latents (sae/sparse.py), and `LAZY_ROWS` tells the trainer's lazy Adam (train/lazy_adam.py) which
dimension of each parameter holds one latent per row. `forward` is the dense reference.

Formats without a router (SAELens, sparsify, ...) get it as a plain TopK SAE (`as_topk`): the same
weights, but its encoder picks the top k of all d_sae latents, not of one expert's, and leaves out
p_e, so its latents differ from the routed SAE's; our own cfg.json + safetensors keep the router.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from monosemantic.sae.base import SAE, SAEConfig, SAEOutput, TrainOutput, mse_loss
from monosemantic.sae.sparse import selected_preacts, sparse_decode
from monosemantic.sae.topk import TopKSAE, active_k, k_aux

BALANCE_COEF = 1.0  # alpha; the MSE is summed over d_in (E||x|| = sqrt(d_in)), so both are O(1)
Entries = tuple[Tensor, Tensor, Tensor]  # (rows, cols, values) of selected latents, as in sae/sparse.py
LAZY_ROWS = {"W_enc": 1, "b_enc": 0, "W_dec": 0}  # parameter -> dimension indexed by latent


class RoutedSAE(SAE):
    """Switch SAE of TopK experts; see the module docstring."""

    arch = "routed"
    lazy_rows = LAZY_ROWS  # the trainer's optimiser updates only the latents that got gradient

    def __init__(self, cfg: SAEConfig, device: torch.device | str | None = None):
        super().__init__(cfg, device=device)
        self.W_router = nn.Parameter(torch.empty(cfg.d_in, self.experts, device=device, dtype=cfg.torch_dtype))
        self.reset_router()

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
        rows, cols, values = _sorted_entries(self.select(x_c, expert, None)[0])
        z = torch.zeros(x_c.shape[0], self.d_sae, dtype=x_c.dtype, device=x_c.device)
        z[rows, cols] = F.relu(values) * p[rows]
        return z.reshape(*lead, self.d_sae)

    @torch.no_grad()
    def fold_input_scale_(self, scale: float) -> None:
        """As for every SAE, plus W_router * scale: the router then sees the same logits on raw x."""
        super().fold_input_scale_(scale)
        self.W_router.mul_(scale)

    # ---- fast path --------------------------------------------------------------------------

    @torch.no_grad()
    def select(self, x_c: Tensor, expert: Tensor, dead: Tensor | None) -> tuple[list[Entries], list[Entries]]:
        """Per expert with tokens: its top-k (rows, cols, pre-activation values) and, with `dead`,
        its AuxK selections; one [n_e, d_in] @ [d_in, m] matmul each. Returns two lists of
        (rows, cols, values) triples, flattened and concatenated by the caller."""
        k, m = active_k(self.cfg), self.block
        order = torch.argsort(expert, stable=True)
        counts = torch.bincount(expert, minlength=self.experts).tolist()
        top: list[Entries] = []
        aux: list[Entries] = []
        start = 0
        for e, n_e in enumerate(counts):
            if n_e == 0:
                continue
            tokens = order[start : start + n_e]
            start += n_e
            cols = slice(e * m, (e + 1) * m)
            pre = torch.addmm(self.b_enc[cols], x_c[tokens], self.W_enc[:, cols])  # [n_e, m]
            vals, idx = pre.topk(k, dim=-1, sorted=False)
            top.append((tokens.repeat_interleave(k), (idx + e * m).reshape(-1), vals.reshape(-1)))
            dead_e = dead[cols] if dead is not None else None
            if dead_e is not None and bool(dead_e.any()):
                n = min(k_aux(self.cfg), int(dead_e.sum()))
                vals, idx = pre.masked_fill(~dead_e, float("-inf")).topk(n, dim=-1, sorted=False)
                aux.append((tokens.repeat_interleave(n), (idx + e * m).reshape(-1), vals.reshape(-1)))
        return top, aux

    def training_forward(
        self,
        x: Tensor,
        *,
        dead: Tensor | None = None,
        penalty_scale: float = 1.0,
        matmul_dtype: torch.dtype | None = None,
    ) -> TrainOutput:
        """Fast path (fp32 selection; `matmul_dtype` is not used: each expert's matmul is small)."""
        x = self._flatten(x)
        B = x.shape[0]
        x_c = self._centred(x)
        probs, expert, p = self.route(x_c)
        top, aux = self.select(x_c.detach(), expert, dead)
        rows, cols, values = _sorted_entries(top)
        b_dec = self.b_dec if self.cfg.apply_b_dec_to_input else None
        acts = F.relu(selected_preacts(x, self.W_enc, self.b_enc, b_dec, rows, cols, values)) * p[rows]
        x_hat = sparse_decode(acts, rows, cols, self.W_dec, B) + self.b_dec
        losses = {"mse": mse_loss(x_hat, x), "balance": self.balance_loss(probs, expert)}
        if aux:
            a_rows, a_cols, a_vals = _sorted_entries(aux)
            pre_aux = selected_preacts(x, self.W_enc, self.b_enc, b_dec, a_rows, a_cols, a_vals)
            e_hat = sparse_decode(F.relu(pre_aux), a_rows, a_cols, self.W_dec, B)
            losses["auxk"] = self.cfg.auxk_coef * mse_loss(e_hat, (x - x_hat).detach())
        loss = torch.stack(list(losses.values())).sum()
        active = acts > 0
        fired = torch.zeros(self.d_sae, dtype=torch.bool, device=x.device)
        fired[cols[active]] = True
        return TrainOutput(
            x_hat.detach(), loss, {k: v.detach() for k, v in losses.items()}, fired, active.sum().float() / B
        )

    # ---- export -----------------------------------------------------------------------------

    def as_topk(self) -> TopKSAE:
        """The same weights as a plain TopK SAE, for formats that have no router: its encoder picks
        the top k of all latents and has no p_e scaling, so its latents are not this SAE's."""
        cfg = dataclasses.replace(self.cfg, arch="topk", experts=None)
        with torch.device("meta"):
            sae = TopKSAE(cfg)
        tensors = {k: v.detach().clone() for k, v in self.state_dict().items() if k != "W_router"}
        return sae.assign_(tensors, self.W_enc.device)  # type: ignore[return-value]


def _sorted_entries(groups: list[Entries]) -> Entries:
    """Concatenate (rows, cols, values) groups and sort them by row (the sparse kernels' layout)."""
    rows, cols, values = (torch.cat(t) for t in zip(*groups))
    order = torch.argsort(rows, stable=True)
    return rows[order], cols[order], values[order]
