"""JumpReLU SAE (Rajamanoharan et al. 2024, "Jumping Ahead: Improving Reconstruction Fidelity with
JumpReLU Sparse Autoencoders", DeepMind; the architecture of Gemma Scope).

z_i = pre_i * H(pre_i - threshold_i), pre = (x - b_dec) @ W_enc + b_enc, with a learned threshold
[d_sae] per latent; loss = ||x - x_hat||^2 + l0_coefficient * sum_i H(pre_i - threshold_i).

H has no useful gradient, so training uses the paper's straight-through estimators (sec. 4): with
the rectangle kernel K(u) = 1[|u| < 1/2] and bandwidth eps (`cfg.jumprelu_bandwidth`),

    d JumpReLU / d pre       = H(pre - threshold)                       (the true derivative)
    d JumpReLU / d threshold = -(threshold / eps) * K((pre - threshold) / eps)
    d H / d pre              = 0
    d H / d threshold        = -(1 / eps) * K((pre - threshold) / eps)

so the threshold learns from the reconstruction and the L0 penalty, and the encoder from the
reconstruction alone. The threshold is a plain parameter kept >= 0 by projection before each
training step (SAELens' choice: Adam moves it by ~lr per step, which a log-parametrisation would
turn into a crawl for small thresholds). At inference a negative threshold acts as 0, i.e. the
activation is ReLU(pre) * H(pre - threshold), as in SAELens, Gemma Scope and dictionary_learning.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from monosemantic.sae.base import SAE, SAEConfig, TrainOutput

INIT_THRESHOLD = 0.01  # SAELens' default for inputs normalised to E||x|| = sqrt(d_in), as ours are


def rectangle(u: Tensor) -> Tensor:
    """K(u) = 1 for |u| < 1/2, else 0 (in u's dtype)."""
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class JumpReLUFunction(torch.autograd.Function):
    """pre [N, d_sae] * H(pre - threshold [d_sae]) with the straight-through threshold gradient."""

    @staticmethod
    def forward(ctx: Any, pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, None]:
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_threshold = -(threshold / eps) * (rectangle((pre - threshold) / eps) * grad).sum(0)
        return grad * (pre > threshold), grad_threshold, None


class StepFunction(torch.autograd.Function):
    """H(pre - threshold) [N, d_sae] with the straight-through threshold gradient (for the L0)."""

    @staticmethod
    def forward(ctx: Any, pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, Tensor, None]:
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        return None, -(1 / eps) * (rectangle((pre - threshold) / eps) * grad).sum(0), None


class JumpReLUSAE(SAE):
    """JumpReLU SAE with an L0 penalty; see the module docstring."""

    arch = "jumprelu"
    scaled_buffers = ("threshold",)  # in units of the pre-activations, which scale with the input

    def __init__(self, cfg: SAEConfig, device: torch.device | str | None = None):
        super().__init__(cfg, device)
        self.threshold = nn.Parameter(torch.full((cfg.d_sae,), INIT_THRESHOLD, dtype=cfg.torch_dtype, device=device))

    def activation(self, pre: Tensor) -> Tensor:
        return JumpReLUFunction.apply(pre, self.threshold.clamp_min(0), self.cfg.jumprelu_bandwidth)

    def aux_losses(
        self, x: Tensor, x_hat: Tensor, latents: Tensor, pre: Tensor, dead: Tensor | None, penalty_scale: float
    ) -> dict[str, Tensor]:
        l0 = StepFunction.apply(pre, self.threshold.clamp_min(0), self.cfg.jumprelu_bandwidth).sum(-1).mean()
        return {"l0": penalty_scale * self.cfg.l0_coefficient * l0}

    def training_forward(self, x: Tensor, **kwargs: Any) -> TrainOutput:
        with torch.no_grad():
            self.threshold.clamp_(min=0)  # the projection that keeps the threshold's gradient alive
        return super().training_forward(x, **kwargs)
