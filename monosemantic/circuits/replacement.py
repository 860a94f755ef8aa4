"""The replacement model of one prompt (Ameisen et al. 2025, "Circuit Tracing"): every MLP replaced by
its transcoder plus an error term, attention patterns and norm scales frozen at their values on the
prompt. What remains is linear in its leaves (token embeddings, transcoder feature activations,
error terms), so direct effects between them are exact gradients.

    frozen = freeze(model, transcoders, ids)          # one clean pass: patterns, scales, features, errors
    leaves = frozen.leaves(batch=1)                   # the prompt's own values
    mlp_ins, final = linear_forward(frozen, leaves)   # mlp_ins[l] [B, T, d]; final [B, T, d] (after ln_f)

GPT-2 family only (the built-in model is one): the forward is written out here from the model's own
weights, so that patterns and norm scales can be detached; `freeze` checks it against the model's
logits. Biases (attention, norms, b_dec) are constants of the linear model, attributed to no node.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from monosemantic.models import ModelError
from monosemantic.sae import SAE


@dataclass
class Features:
    """Active features of one layer's transcoder on the prompt: [n] each."""

    pos: Tensor
    latent: Tensor
    act: Tensor


@dataclass
class Leaves:
    """The linear model's inputs, one row per backward target: emb [B, T, d], acts[l] [B, n_l],
    errors[l] [B, T, d]."""

    emb: Tensor
    acts: list[Tensor]
    errors: list[Tensor]


@dataclass
class Frozen:
    """One prompt's frozen replacement model; see the module docstring."""

    model: Any  # a Hugging Face GPT-2 (its submodules are read by name)
    transcoders: list[Any]  # SAE transcoders
    ids: Tensor  # [T]
    patterns: list[Tensor]  # per layer [H, T, T]
    scales: list[tuple[Tensor, Tensor]]  # per layer (ln_1, ln_2) frozen 1/sigma, [T, 1] each
    final_scale: Tensor  # ln_f's [T, 1]
    emb: Tensor  # [T, d] token + position embeddings
    features: list[Features]
    errors: list[Tensor]  # per layer [T, d]: the MLP's output minus the transcoder's
    mlp_in: list[Tensor]  # per layer [T, d], clean
    logits: Tensor  # [T, vocab] of the model
    dtype: torch.dtype

    @property
    def n_layers(self) -> int:
        return len(self.transcoders)

    def leaves(self, batch: int) -> Leaves:
        """The prompt's leaves, repeated `batch` times, each row a separate leaf for autograd."""
        rep = lambda t: t.unsqueeze(0).repeat(batch, *([1] * t.dim())).requires_grad_(True)  # noqa: E731
        return Leaves(rep(self.emb), [rep(f.act) for f in self.features], [rep(e) for e in self.errors])


def _blocks(model: Any) -> Any:
    if getattr(model.config, "model_type", None) != "gpt2":
        raise ModelError(
            f"attribution graphs are implemented for GPT-2-family models (the built-in model is one); "
            f"this model is {getattr(model.config, 'model_type', None)!r}"
        )
    return model.transformer.h


def _norm(x: Tensor, ln: Any, inv_sigma: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """LayerNorm with its 1/sigma [.., T, 1] given (frozen) or computed; returns (out, 1/sigma)."""
    centred = x - x.mean(-1, keepdim=True)
    if inv_sigma is None:
        inv_sigma = torch.rsqrt(centred.pow(2).mean(-1, keepdim=True) + ln.eps)
    return centred * inv_sigma * ln.weight.to(x.dtype) + ln.bias.to(x.dtype), inv_sigma


def _qkv(attn: Any, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """q, k, v [.., H, T, hd] of h [.., T, d] (GPT-2's Conv1D: x @ W + b)."""
    W, b = attn.c_attn.weight.to(h.dtype), attn.c_attn.bias.to(h.dtype)
    q, k, v = (h @ W + b).split(attn.split_size, dim=-1)
    heads = lambda t: t.unflatten(-1, (attn.num_heads, attn.head_dim)).transpose(-3, -2)  # noqa: E731
    return heads(q), heads(k), heads(v)


def _attend(attn: Any, pattern: Tensor, v: Tensor) -> Tensor:
    """c_proj(pattern @ v): pattern [H, T, T], v [.., H, T, hd] -> [.., T, d]."""
    z = (pattern @ v).transpose(-3, -2).flatten(-2)
    return z @ attn.c_proj.weight.to(v.dtype) + attn.c_proj.bias.to(v.dtype)


def _pattern(attn: Any, layer: int, q: Tensor, k: Tensor) -> Tensor:
    scores = q @ k.transpose(-1, -2)
    if attn.scale_attn_weights:
        scores = scores / math.sqrt(attn.head_dim)
    if getattr(attn, "scale_attn_by_inverse_layer_idx", False):
        scores = scores / float(layer + 1)
    T = q.shape[-2]
    causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    return scores.masked_fill(~causal, float("-inf")).softmax(-1)


@torch.no_grad()
def freeze(model: Any, transcoders: list[SAE], ids: Tensor) -> Frozen:
    """One clean pass over ids [T]: the model's own computation (the real MLPs), recording what the
    replacement model freezes and the transcoders' features and errors on the way; in the model's
    dtype (the transcoders must have it too)."""
    blocks = _blocks(model)
    dtype = model.lm_head.weight.dtype
    if any(tc.W_enc.dtype != dtype for tc in transcoders):
        raise ModelError(f"the transcoders' dtype must be the model's ({dtype}); convert them with with_dtype")
    if len(transcoders) != len(blocks):
        raise ModelError(
            f"the replacement model needs one transcoder per layer ({len(blocks)}); got {len(transcoders)}"
        )
    T = ids.shape[0]
    tr = model.transformer
    emb = (tr.wte.weight[ids] + tr.wpe.weight[:T]).to(dtype)
    resid = emb
    patterns, scales, features, errors, mlp_in = [], [], [], [], []
    for layer, (block, tc) in enumerate(zip(blocks, transcoders)):
        h, s1 = _norm(resid, block.ln_1)
        q, k, v = _qkv(block.attn, h)
        patterns.append(_pattern(block.attn, layer, q, k))
        resid = resid + _attend(block.attn, patterns[-1], v)
        x, s2 = _norm(resid, block.ln_2)
        scales.append((s1, s2))
        mlp_in.append(x)
        out = block.mlp(x)
        z = tc.encode(x)  # [T, d_sae]
        pos, latent = (z > 0).nonzero(as_tuple=True)
        features.append(Features(pos, latent, z[pos, latent]))
        errors.append(out - tc.decode(z, x))
        resid = resid + out
    final, sf = _norm(resid, tr.ln_f)
    logits = final @ model.lm_head.weight.to(dtype).T
    return Frozen(model, transcoders, ids, patterns, scales, sf, emb, features, errors, mlp_in, logits, dtype)


def decoder_rows(frozen: Frozen, layer: int) -> Tensor:
    """[n_l, T * d_out]: each active feature's decoder row, placed at its position (so that
    acts [B, n_l] @ this is the transcoder's sparse output [B, T * d_out])."""
    f, tc = frozen.features[layer], frozen.transcoders[layer]
    T, d = frozen.ids.shape[0], tc.W_dec.shape[1]
    rows = torch.zeros(f.pos.shape[0], T, d, dtype=frozen.dtype)
    rows[torch.arange(f.pos.shape[0]), f.pos] = tc.W_dec[f.latent].to(frozen.dtype)
    return rows.flatten(1)


def linear_forward(frozen: Frozen, leaves: Leaves, upto: int | None = None) -> tuple[list[Tensor], Tensor | None]:
    """The frozen replacement model on `leaves`: each layer's MLP input [B, T, d] (layers < `upto`, all
    by default) and the final residual after ln_f [B, T, d] (None when stopped early)."""
    blocks = _blocks(frozen.model)
    upto = frozen.n_layers if upto is None else upto
    resid, B = leaves.emb, leaves.emb.shape[0]
    mlp_ins = []
    for layer in range(upto):
        block, tc = blocks[layer], frozen.transcoders[layer]
        s1, s2 = frozen.scales[layer]
        h, _ = _norm(resid, block.ln_1, s1)
        _, _, v = _qkv(block.attn, h)
        resid = resid + _attend(block.attn, frozen.patterns[layer], v)
        x, _ = _norm(resid, block.ln_2, s2)
        mlp_ins.append(x)
        out = (leaves.acts[layer] @ decoder_rows(frozen, layer)).view(B, *x.shape[1:])
        out = out + tc.b_dec.to(x.dtype) + leaves.errors[layer]
        if getattr(tc, "skip", False):
            out = out + x @ tc.W_skip.to(x.dtype)
        resid = resid + out
    if upto < frozen.n_layers:
        return mlp_ins, None
    final, _ = _norm(resid, frozen.model.transformer.ln_f, frozen.final_scale)
    return mlp_ins, final
