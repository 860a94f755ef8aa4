"""The explicit registry of SAE architectures: name -> class, and `create_sae`."""

from __future__ import annotations

import torch

from monosemantic.sae.base import ARCHITECTURES, SAE, SAEConfig
from monosemantic.sae.batchtopk import BatchTopKSAE
from monosemantic.sae.config import ARCH_CHECKS
from monosemantic.sae.gated import GatedSAE
from monosemantic.sae.jumprelu import JumpReLUSAE
from monosemantic.sae.matryoshka import MatryoshkaSAE
from monosemantic.sae.relu import ReluSAE
from monosemantic.sae.routed import RoutedSAE
from monosemantic.sae.signed import AbsTopKSAE, IdentityTopKSAE
from monosemantic.sae.topk import TopKSAE
from monosemantic.sae.transcoder import SkipTranscoder, TopKTranscoder
from monosemantic.sae.transcoder_peers import (
    JumpReLUSkipTranscoder,
    JumpReLUTranscoder,
    ReluSkipTranscoder,
    ReluTranscoder,
)

ARCHITECTURES.update(
    {
        "relu": ReluSAE,
        "topk": TopKSAE,
        "batchtopk": BatchTopKSAE,
        "matryoshka": MatryoshkaSAE,
        "jumprelu": JumpReLUSAE,
        "gated": GatedSAE,
        "transcoder": TopKTranscoder,
        "skip_transcoder": SkipTranscoder,
        "abstopk": AbsTopKSAE,
        "topk_identity": IdentityTopKSAE,
        "relu_transcoder": ReluTranscoder,
        "relu_skip_transcoder": ReluSkipTranscoder,
        "jumprelu_transcoder": JumpReLUTranscoder,
        "jumprelu_skip_transcoder": JumpReLUSkipTranscoder,
        "routed": RoutedSAE,
    }
)
assert ARCHITECTURES.keys() == ARCH_CHECKS.keys(), "an architecture's config checks go in sae/config.py"


def create_sae(cfg: SAEConfig, device: torch.device | str | None = None) -> SAE:
    """A freshly initialised SAE of the architecture `cfg.arch`."""
    return ARCHITECTURES[cfg.arch](cfg, device=device)
