"""TopK SAEs whose latents keep their sign: other tools make them, and they load here to be used as
those tools use them (encode, decode, splice, export).

    abstopk        z = the k pre-activations largest in |pre|, with their sign (SAELens `abstopk`:
                   "AbsTopK: Rethinking Sparse Autoencoders For Bidirectional Features", 2025)
    topk_identity  z = the k largest pre-activations, kept as they are, no ReLU (OpenAI
                   sparse_autoencoder's `TopK(k, postact_fn=nn.Identity())`)

pre = (x - b_dec) @ W_enc + b_enc, as for every SAE here. Both are positively homogeneous, so the
input-scale fold holds. A latent "fires" where it is nonzero, with either sign; the feature analysis,
dashboard, concept benchmark and circuits read firing as z > 0, so they refuse a signed SAE
(`require_unsigned`). An abstopk SAE has an exact unsigned twin with 2 * d_sae latents
(`split_signed`): latent i's positive side, then its negative side, decoder rows W_dec_i and -W_dec_i.

They are not trained here (`SIGNED_ARCHS` are left out of `monosemantic train --arch`): the sparse
fast path and AuxK take the ReLU of the selected pre-activations. `forward` is the dense one.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from monosemantic.errors import MonosemanticError
from monosemantic.sae.base import SAE
from monosemantic.sae.topk import TopKSAE, active_k


class SignedLatentsError(MonosemanticError, ValueError):
    """An SAE with signed latents given to code that reads firing as a positive activation."""


def signed_topk(score: Tensor, pre: Tensor, k: int) -> Tensor:
    """pre [N, F] where `score` is among its row's k largest, zeros elsewhere (sign kept)."""
    idx = score.topk(k, dim=-1, sorted=False).indices
    return torch.zeros_like(pre).scatter(-1, idx, pre.gather(-1, idx))


class AbsTopKSAE(SAE):
    """Top k by |pre-activation|, sign kept (SAELens abstopk); see the module docstring."""

    arch = "abstopk"
    signed_latents = True

    def activation(self, pre: Tensor) -> Tensor:
        return signed_topk(pre.abs(), pre, active_k(self.cfg))


class IdentityTopKSAE(SAE):
    """Top k by value, no ReLU (OpenAI's TopK with an Identity post-activation)."""

    arch = "topk_identity"
    signed_latents = True

    def activation(self, pre: Tensor) -> Tensor:
        return signed_topk(pre, pre, active_k(self.cfg))


def require_unsigned(sae: SAE, what: str) -> None:
    """Refuse an SAE whose latents can be negative for `what` (e.g. "feature analysis"), which reads
    a latent as firing where it is positive."""
    if not sae.signed_latents:
        return
    twin = (
        " An abstopk SAE has an exact unsigned twin with 2 x d_sae latents (each latent's positive and negative "
        "side): `monosemantic convert SRC --out DIR --split-signed`, then use DIR."
        if sae.cfg.arch == "abstopk"
        else ""
    )
    raise SignedLatentsError(
        f"{what} needs latents that fire with positive values, but this SAE (arch={sae.cfg.arch!r}) keeps the sign "
        f"of its top k pre-activations, so a latent also fires with negative values; encode/decode, eval and "
        f"export work with it.{twin}"
    )


@torch.no_grad()
def split_signed(sae: SAE) -> TopKSAE:
    """The topk SAE with 2 * d_sae latents computing the same reconstruction as abstopk `sae`.

    Latent i of `sae` becomes latents i (its positive side) and d_sae + i (its negative side), with
    encoder columns W_enc_i, -W_enc_i, biases b_enc_i, -b_enc_i and decoder rows W_dec_i, -W_dec_i.
    Each latent has one positive side, |pre_i|, so the top k of the 2 * d_sae pre-activations
    under ReLU are the abstopk's k latents, each on the side of its sign."""
    if sae.cfg.arch != "abstopk":
        raise SignedLatentsError(f"only an abstopk SAE splits into an unsigned topk SAE; this one is {sae.cfg.arch!r}")
    cfg = dataclasses.replace(sae.cfg, arch="topk", d_sae=2 * sae.cfg.d_sae)
    twin = TopKSAE(cfg, device=sae.W_enc.device)
    twin.W_enc.copy_(torch.cat([sae.W_enc, -sae.W_enc], 1))
    twin.b_enc.copy_(torch.cat([sae.b_enc, -sae.b_enc]))
    twin.W_dec.copy_(torch.cat([sae.W_dec, -sae.W_dec], 0))
    twin.b_dec.copy_(sae.b_dec)
    return twin.eval()
