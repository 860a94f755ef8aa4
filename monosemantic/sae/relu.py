"""ReLU SAE with an L1 penalty (Bricken et al. 2023, "Towards Monosemanticity", Anthropic).

z = ReLU((x - b_dec) @ W_enc + b_enc); loss = ||x - x_hat||^2 + l1_coefficient * sum_i z_i ||W_dec_i||.
The decoder-norm weighting makes the penalty honest when rows are not unit norm (it equals the plain
L1 while the trainer keeps them unit norm). The penalty warms up linearly (`penalty_scale`), and
dead latents are resampled from high-loss inputs by the trainer (`TrainConfig.resample_every`).

Initialisation: the shared tied one (unit-norm random decoder rows, W_enc = W_dec^T) with the encoder
scaled by d_in / d_sae. Unscaled, about half of all latents fire at the start and each adds a unit
row, so the first reconstruction is about (d_sae / 2 d_in) x plus noise: FVU in the tens for a 16x
dictionary, and hundreds of steps spent undoing it. Scaled, x_hat starts near x / 2 (FVU about
0.3). This plays the role of the small decoder norms of Anthropic's April 2024 update (0.05-1)
for a trainer that keeps decoder rows at unit norm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from monosemantic.sae.base import SAE


class ReluSAE(SAE):
    """ReLU + L1 SAE; see the module docstring."""

    arch = "relu"

    @torch.no_grad()
    def reset_parameters(self) -> None:
        super().reset_parameters()
        self.W_enc.mul_(min(1.0, self.cfg.d_in / self.cfg.d_sae))  # see the module docstring

    def activation(self, pre: Tensor) -> Tensor:
        return F.relu(pre)

    def aux_losses(
        self, x: Tensor, x_hat: Tensor, latents: Tensor, pre: Tensor, dead: Tensor | None, penalty_scale: float
    ) -> dict[str, Tensor]:
        l1 = (latents * self.W_dec.norm(dim=1)).sum(-1).mean()
        return {"l1": penalty_scale * self.cfg.l1_coefficient * l1}
