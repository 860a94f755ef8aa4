"""ReLU SAE with an L1 penalty (Bricken et al. 2023, "Towards Monosemanticity", Anthropic).

z = ReLU((x - b_dec) @ W_enc + b_enc); loss = ||x - x_hat||^2 + l1_coefficient * sum_i z_i ||W_dec_i||.
The decoder-norm weighting makes the penalty honest when rows are not unit norm (it equals the plain
L1 while the trainer keeps them unit norm). The penalty warms up linearly (`penalty_scale`), and
dead latents are resampled from high-loss inputs by the trainer (`TrainConfig.resample_every`).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from monosemantic.config import ConfigError
from monosemantic.sae.base import SAE, SAEConfig


class ReluSAE(SAE):
    """ReLU + L1 SAE; see the module docstring."""

    arch = "relu"

    @staticmethod
    def check_config(cfg: SAEConfig) -> None:
        if cfg.l1_coefficient < 0:
            raise ConfigError(f"l1_coefficient must be >= 0, got {cfg.l1_coefficient}")

    def activation(self, pre: Tensor) -> Tensor:
        return F.relu(pre)

    def aux_losses(self, x, x_hat, latents, pre, dead, penalty_scale):
        l1 = (latents * self.W_dec.norm(dim=1)).sum(-1).mean()
        return {"l1": penalty_scale * self.cfg.l1_coefficient * l1}
