"""Gated SAE (Rajamanoharan et al. 2024, "Improving Dictionary Learning with Gated Sparse
Autoencoders", DeepMind).

Two paths share W_enc: the gate decides which latents fire, the magnitude path how strongly.

    pi_gate = (x - b_dec) @ W_enc + b_enc                  (b_enc is the gate's bias, SAELens' b_gate)
    pi_mag  = exp(r_mag) * ((x - b_dec) @ W_enc) + b_mag
    z       = H(pi_gate) * ReLU(pi_mag)

Training loss (sec. 3.2): ||x - x_hat||^2 + l1_coefficient * sum_i ReLU(pi_gate)_i ||W_dec_i||
+ ||x - x_hat_frozen(ReLU(pi_gate))||^2, the last term decoding the gate's ReLU through a frozen
copy of the decoder so that the gate, which H cuts off from the reconstruction, still learns.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from monosemantic.sae.base import SAE, SAEConfig, mse_loss


class GatedSAE(SAE):
    """Gated SAE; see the module docstring."""

    arch = "gated"
    # b_mag is in units of the pre-activations (which scale with the input); r_mag is a ratio
    scaled_buffers = ("b_mag",)

    def __init__(self, cfg: SAEConfig, device: torch.device | str | None = None):
        super().__init__(cfg, device)
        self.r_mag = nn.Parameter(torch.zeros(cfg.d_sae, dtype=cfg.torch_dtype, device=device))
        self.b_mag = nn.Parameter(torch.zeros(cfg.d_sae, dtype=cfg.torch_dtype, device=device))

    def activation(self, pre: Tensor) -> Tensor:
        # pre - b_enc recovers (x - b_dec) @ W_enc without a second [N, d_sae] matmul
        magnitude = F.relu(torch.exp(self.r_mag) * (pre - self.b_enc) + self.b_mag)
        return (pre > 0).to(pre.dtype) * magnitude

    def aux_losses(
        self, x: Tensor, x_hat: Tensor, latents: Tensor, pre: Tensor, dead: Tensor | None, penalty_scale: float
    ) -> dict[str, Tensor]:
        gate = F.relu(pre)
        l1 = (gate * self.W_dec.norm(dim=1)).sum(-1).mean()
        x_hat_frozen = gate @ self.W_dec.detach() + self.b_dec.detach()
        return {"l1": penalty_scale * self.cfg.l1_coefficient * l1, "aux": mse_loss(x_hat_frozen, x)}
