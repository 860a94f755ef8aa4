"""SAE architectures: one file each, listed in the explicit registry (`registry.py`).

    from monosemantic.sae import SAE
    sae = SAE.load("runs/demo")       # any architecture, verified on load
    z = sae.encode(x)                 # [..., d_sae]
    x_hat = sae.decode(z)             # [..., d_in]

    config.py        SAEConfig (cfg.json), the checks a saved SAE must pass, each architecture's config checks
    base.py          what every architecture shares: parameters, input semantics, save / load
    relu.py, topk.py, batchtopk.py, matryoshka.py, jumprelu.py, gated.py    one architecture each
    transcoder.py    transcoders (read an MLP's input, write its output), with or without a skip path
    transcoder_peers.py  ReLU and JumpReLU transcoders (with or without skip) of other tools, loaded, not trained
    signed.py        TopK with signed latents (SAELens abstopk, OpenAI TopK + Identity), loaded, not trained
    sparse.py        the sparse kernels of the TopK fast path
    registry.py      name -> class, create_sae

A leaf of the package: it imports torch, safetensors and monosemantic's config, error and atomic-file
helpers only. Files made by other tools (SAELens, sparsify, ...) load with `monosemantic.formats.load_sae`.
"""

from monosemantic.sae.base import SAE, SAEConfig, SAEFormatError, SAEOutput, TrainOutput
from monosemantic.sae.batchtopk import BatchTopKSAE
from monosemantic.sae.gated import GatedSAE
from monosemantic.sae.jumprelu import JumpReLUSAE
from monosemantic.sae.matryoshka import MatryoshkaSAE
from monosemantic.sae.registry import ARCHITECTURES, create_sae
from monosemantic.sae.relu import ReluSAE
from monosemantic.sae.signed import AbsTopKSAE, IdentityTopKSAE
from monosemantic.sae.topk import TopKSAE
from monosemantic.sae.transcoder import SkipTranscoder, TopKTranscoder

__all__ = [
    "ARCHITECTURES",
    "SAE",
    "SAEConfig",
    "SAEFormatError",
    "SAEOutput",
    "TrainOutput",
    "ReluSAE",
    "TopKSAE",
    "BatchTopKSAE",
    "MatryoshkaSAE",
    "JumpReLUSAE",
    "GatedSAE",
    "TopKTranscoder",
    "SkipTranscoder",
    "AbsTopKSAE",
    "IdentityTopKSAE",
    "create_sae",
]
