"""SAE architectures: one file each, listed in the explicit registry `ARCHITECTURES`.

    from monosemantic.sae import SAE
    sae = SAE.load("runs/demo")       # any architecture, verified on load
    z = sae.encode(x)                 # [..., d_sae]
    x_hat = sae.decode(z)             # [..., d_in]

Files made by other tools (SAELens, sparsify, ...) load too: see `monosemantic.formats`.
"""

from monosemantic.sae.base import SAE, SAEConfig, SAEFormatError, SAEOutput, TrainOutput
from monosemantic.sae.batchtopk import BatchTopKSAE
from monosemantic.sae.gated import GatedSAE
from monosemantic.sae.jumprelu import JumpReLUSAE
from monosemantic.sae.relu import ReluSAE
from monosemantic.sae.topk import TopKSAE

ARCHITECTURES: dict[str, type[SAE]] = {
    "relu": ReluSAE,
    "topk": TopKSAE,
    "batchtopk": BatchTopKSAE,
    "jumprelu": JumpReLUSAE,
    "gated": GatedSAE,
}


def create_sae(cfg: SAEConfig, device=None) -> SAE:
    """A freshly initialised SAE of the architecture `cfg.arch`."""
    return ARCHITECTURES[cfg.arch](cfg, device=device)


__all__ = [
    "ARCHITECTURES", "SAE", "SAEConfig", "SAEFormatError", "SAEOutput", "TrainOutput",
    "ReluSAE", "TopKSAE", "BatchTopKSAE", "JumpReLUSAE", "GatedSAE", "create_sae",
]
