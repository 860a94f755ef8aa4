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
from monosemantic.sae.sparse import column_order, row_dots, selected_preacts, sparse_decode


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
        if W_enc.t().is_contiguous():  # stored by latent (`SAE.encoder_layout_`): cast in that layout
            W_enc = sae.workspace("W_enc_cast", tuple(W_enc.shape[::-1]), dtype).copy_(W_enc.t()).t()
        else:
            W_enc = sae.workspace("W_enc_cast", tuple(W_enc.shape), dtype).copy_(W_enc)
    return torch.addmm(sae.b_enc.to(dtype), x_c.to(dtype), W_enc, out=out)


# Candidates per token taken from a bf16 matmul before their values are recomputed in fp32: 2k at
# first, x4 for the tokens whose margin check (`refined_topk`) fails. On the shipped layer-3 SAE's
# real activations (d_sae 4096, k 32) top-2k recovered the fp32 top-k in 98% of tokens (the rest
# passed after widening), top-k alone in 65%; on random data at 16k-64k latents top-(k+16) sufficed.
FIRST_CANDIDATES = 2
# The recomputed candidates give B * 2k samples of the bf16 error; the largest of them, times this
# factor, bounds the error of the latents not taken (the sample's maximum was 93% of the whole
# [B, d_sae] matrix's on real activations). A rigorous a-priori bound (2^-7 * ||x|| * ||W_enc[:, j]||)
# is 5x the largest error seen and would send most tokens back to fp32.
ERROR_MARGIN = 2.0


def candidate_preacts(x_c: Tensor, cand: Tensor, W_enc_rows: Tensor, b_enc: Tensor) -> Tensor:
    """Pre-activations [n, m] of the candidate latents cand [n, m] of the n tokens x_c [n, d_in]
    (b_dec already subtracted), from W_enc^T rows [d_sae, d_in]: O(n * m * d_in)."""
    n, m = cand.shape
    rows = torch.arange(n, device=x_c.device).repeat_interleave(m)
    return (row_dots(x_c, W_enc_rows, rows, cand.reshape(-1)) + b_enc[cand.reshape(-1)]).view(n, m)


@torch.no_grad()
def refined_topk(
    x_c: Tensor, pre: Tensor, k: int, W_enc_rows: Tensor, b_enc: Tensor, ids: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The top k in W_enc's dtype (values [B, k], latent ids [B, k]) of the pre-activations of
    x_c [B, d_in] (b_dec subtracted), picked from `pre` [B, n], those of a low-precision (bf16)
    matmul; `ids` [n]: the latent of each column of `pre` (default: column j is latent j).

    Each token's top `FIRST_CANDIDATES * k` bf16 candidates are recomputed exactly and the top k of
    those kept. That is the fp32 selection unless a latent outside the candidates beats the k-th,
    which needs a bf16 error above the margin (k-th fp32 value - smallest candidate's bf16 value);
    tokens whose margin is below `ERROR_MARGIN` x the largest error measured on the candidates take
    4x the candidates, until that would reach a quarter of the columns: then their exact row.
    """
    B, n = pre.shape
    vals = torch.empty(B, k, dtype=W_enc_rows.dtype, device=pre.device)
    idx = torch.empty(B, k, dtype=torch.long, device=pre.device)
    todo, width, err = None, FIRST_CANDIDATES * k, None  # todo: the tokens still open (None: all)
    while todo is None or todo.numel():
        p, xt = (pre, x_c) if todo is None else (pre[todo], x_c[todo])
        rows = torch.arange(B, device=pre.device) if todo is None else todo
        if 4 * width > n:
            W_rows, b = (W_enc_rows, b_enc) if ids is None else (W_enc_rows[ids], b_enc[ids])
            v, j = torch.addmm(b, xt, W_rows.t()).topk(k, dim=-1, sorted=False)
            vals[rows], idx[rows] = v, j if ids is None else ids[j]
            break
        _, cand = chunked_topk(p, width)
        latents = cand if ids is None else ids[cand]
        cv = candidate_preacts(xt, latents, W_enc_rows, b_enc)  # [n_todo, width], exact
        v, j = cv.topk(k, dim=-1, sorted=False)
        cb = p.gather(1, cand).to(cv.dtype)
        if err is None:
            err = ERROR_MARGIN * float((cb - cv).abs().max())
        # a latent not taken is <= its row's smallest candidate + err; it matters only if above the
        # k-th value and positive (ReLU zeroes the rest)
        ceiling = cb.amin(1) + err
        ok = (ceiling < v.amin(1)) | (ceiling <= 0)
        if todo is None and bool(ok.all()):  # the common case: no masked copies
            return v, latents.gather(1, j)
        vals[rows[ok]], idx[rows[ok]] = v[ok], latents.gather(1, j)[ok]
        todo, width = rows[~ok], 4 * width
    return vals, idx


def centred(sae: SAE, x: Tensor) -> Tensor:
    """x - b_dec where the SAE subtracts it before encoding, else x."""
    return x - sae.b_dec if sae.cfg.apply_b_dec_to_input else x


def select_topk(sae: SAE, x: Tensor, pre: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor | None]:
    """(values [B, k] in the weights' dtype, latent ids [B, k], W_enc^T rows or None) of the top k
    of pre [B, d_sae]; after a low-precision matmul the pick is `refined_topk`'s, and the W_enc^T
    copy it made is passed on (`sparse_training_step` needs it for AuxK)."""
    if pre.dtype == sae.W_enc.dtype:
        vals, idx = chunked_topk(pre, k)
        return vals, idx, None
    W_enc_rows = sae.transposed_copy("W_enc_T", sae.W_enc)
    with torch.no_grad():
        x_c = centred(sae, x)
    return (*refined_topk(x_c, pre, k, W_enc_rows, sae.b_enc), W_enc_rows)


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
    if pre.dtype == sae.W_enc.dtype:
        vals, j = pre.index_select(1, dead_ids).topk(n, dim=-1, sorted=False)  # [B, n]
        cols = dead_ids[j.reshape(-1)]
    else:  # the same refined pick as the top k's (an fp32 path's AuxK picks these latents too)
        assert W_enc_rows is not None, "a low-precision pre needs W_enc_rows"
        with torch.no_grad():
            x_c = centred(sae, x)
        vals, cols = refined_topk(x_c, pre.index_select(1, dead_ids), n, W_enc_rows, sae.b_enc, dead_ids)
        cols = cols.reshape(-1)
    rows = torch.arange(B, device=x.device).repeat_interleave(n)
    exact = vals.reshape(-1)
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
    W_enc_rows: Tensor | None = None,
) -> TrainOutput:
    """Loss and statistics for selected latents (rows, cols) of x [B, d_in]; see `sparse`.

    `values` are the selected pre-activations from `pre` when it was computed in the weights'
    dtype (or recomputed by `refined_topk`); None makes them be recomputed exactly from the selected
    columns. A transcoder gives
    its `target` [B, d_out] (else x is reconstructed) and its `skip` term [B, d_out] (added to x_hat).
    """
    B = x.shape[0]
    b_dec = sae.b_dec if sae.cfg.apply_b_dec_to_input else None
    # recomputing values after a low-precision matmul needs W_enc^T rows (`W_enc_rows`, if the
    # caller made them): one copy per step
    if W_enc_rows is None and pre.dtype != sae.W_enc.dtype:
        W_enc_rows = sae.transposed_copy("W_enc_T", sae.W_enc)
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
    trains_by_latent = True

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
        vals, idx, W_enc_rows = select_topk(self, x, pre, k)
        rows = torch.arange(B, device=x.device).repeat_interleave(k)
        return sparse_training_step(self, x, pre, rows, idx.reshape(-1), vals.reshape(-1), dead, W_enc_rows=W_enc_rows)
