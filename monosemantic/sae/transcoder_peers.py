"""Transcoders as other tools train them, loaded here to be used as ours are (transcode, splice, trace):
the same maths as `transcoder.py`'s, with another activation.

    relu_transcoder, relu_skip_transcoder          z = ReLU(x @ W_enc + b_enc)   (SAELens transcoder,
                                                   skip_transcoder: Dunefsky et al. 2024)
    jumprelu_transcoder, jumprelu_skip_transcoder  z = ReLU(pre) * 1[pre > threshold], threshold [d_sae]
                                                   (SAELens jumprelu_transcoder, jumprelu_skip_transcoder;
                                                   Gemma Scope 2 transcoders)

y_hat = z @ W_dec + b_dec (+ x @ W_skip), as for every transcoder here. These are loaded, not
trained here: their training needs an L1 or L0 penalty the TopK transcoder's trainer does not add
(`training_forward` says so); train a TopK transcoder with `monosemantic train --transcoder`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from monosemantic.config import ConfigError
from monosemantic.sae.base import SAEConfig, TrainOutput
from monosemantic.sae.transcoder import TopKTranscoder


class ReluTranscoder(TopKTranscoder):
    """ReLU transcoder (SAELens `transcoder`); see the module docstring."""

    arch = "relu_transcoder"

    def activation(self, pre: Tensor) -> Tensor:
        return F.relu(pre)

    def training_forward(
        self,
        xy: Tensor,
        *,
        dead: Tensor | None = None,
        penalty_scale: float = 1.0,
        matmul_dtype: torch.dtype | None = None,
    ) -> TrainOutput:
        raise ConfigError(
            f"arch={self.arch!r} is loaded from other tools' files, not trained here (its training needs a sparsity "
            "penalty this trainer does not add); train a TopK transcoder with `monosemantic train --transcoder`"
        )


class ReluSkipTranscoder(ReluTranscoder):
    """ReLU transcoder with a linear skip path (SAELens `skip_transcoder`)."""

    arch = "relu_skip_transcoder"
    skip = True
    W_skip: nn.Parameter


class JumpReLUTranscoder(ReluTranscoder):
    """JumpReLU transcoder (SAELens `jumprelu_transcoder`): a latent fires above its own threshold."""

    arch = "jumprelu_transcoder"
    scaled_buffers = ("threshold",)  # in units of the pre-activations

    def __init__(self, cfg: SAEConfig, device: torch.device | str | None = None):
        super().__init__(cfg, device)
        self.threshold = nn.Parameter(torch.zeros(cfg.d_sae, dtype=cfg.torch_dtype, device=device))

    def activation(self, pre: Tensor) -> Tensor:
        # SAELens' JumpReLUTranscoder.encode: ReLU(pre) masked by pre > threshold (a negative threshold acts as 0)
        return F.relu(pre) * (pre > self.threshold)


class JumpReLUSkipTranscoder(JumpReLUTranscoder):
    """JumpReLU transcoder with a linear skip path (SAELens `jumprelu_skip_transcoder`)."""

    arch = "jumprelu_skip_transcoder"
    skip = True
    W_skip: nn.Parameter
