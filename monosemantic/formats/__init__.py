"""The SAE formats of other tools: one module each, read into our `SAE` (and for SAELens and
sparsify, written back), with the format told from the files (`detect.py`).

    from monosemantic import load_sae
    sae = load_sae("gemma-scope/layer_12/width_16k/average_l0_71")   # any format below, or ours
    sae.save("runs/converted")                                        # our cfg.json + sae.safetensors
    export_sae(sae, "out/for_saelens", "saelens")

Every reader checks the tensors against the shapes the file declares, carries the format's input
semantics (b_dec subtraction, input normalisation, thresholds) into our `SAEConfig`, and refuses
what it cannot reproduce exactly. Pickled files are only ever read with torch.load(weights_only=True).

    detect.py        which format a path holds, from its files
    reading.py       what the readers share: shape and orientation checks, building our SAE
    hooknames.py     our hookpoints in TransformerLens' and sparsify's names, both ways
    saelens.py, sparsify.py, openai.py, dictionary_learning.py, gemmascope.py    one format each
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from monosemantic.formats import dictionary_learning, gemmascope, openai, saelens, sparsify
from monosemantic.formats.detect import NATIVE, detect_format, saes_below
from monosemantic.formats.reading import LoadOptions
from monosemantic.sae import SAE, SAEFormatError
from monosemantic.sae.routed import RoutedSAE

log = logging.getLogger(__name__)

READERS = {
    "saelens": saelens.read,
    "sparsify": sparsify.read,
    "openai": openai.read,
    "dictionary_learning": dictionary_learning.read,
    "gemmascope": gemmascope.read,
}
WRITERS = {"saelens": saelens.write, "sparsify": sparsify.write}


def load_sae(
    path: str | Path,
    *,
    device: torch.device | str | None = None,
    allow_square: bool = False,
    dtype: str | None = None,
    activation_scale: float | None = None,
) -> SAE:
    """Load the SAE at `path`, ours or any format in `READERS` (detected from the files), in eval mode.

    allow_square: accept d_in == d_sae, where a transposed weight matrix cannot be detected (see
    `reading.check_orientation`); ours are always accepted, their cfg.json names the layout.
    dtype: compute in this dtype; by default each tool's own policy (cfg.origin states it): OpenAI,
    dictionary_learning and Gemma Scope upcast half-precision files to float32, SAELens and
    sparsify keep the file's dtype.
    activation_scale: the dataset-wide input factor of a SAELens expected_average_only_in SAE whose
    activation_scaler.json is missing.
    """
    path = Path(path)
    fmt = detect_format(path)
    if fmt == NATIVE:
        sae = SAE.load(path, device=device)
        return sae if dtype is None or dtype == sae.cfg.dtype else sae.with_dtype(dtype)  # type: ignore[arg-type]
    if fmt is None:
        below = saes_below(path)
        if below:
            names = ", ".join(p.name for p in below)
            raise SAEFormatError(f"{path} holds {len(below)} SAEs, in {names}; pass the directory of one of them")
        if not path.exists():
            raise SAEFormatError(f"{path}: no such file or directory")
        raise SAEFormatError(
            f"{path}: no SAE found; expected one of: our cfg.json + sae.safetensors, SAELens cfg.json + "
            "sae_weights.safetensors, sparsify cfg.json + sae.safetensors, dictionary_learning ae.pt + "
            "config.json (or its checkpoints/ae_<step>.pt), Gemma Scope params.npz or params.safetensors + "
            "config.json, an OpenAI sparse_autoencoder .pt state dict"
        )
    opts = LoadOptions(allow_square=allow_square, dtype=dtype, activation_scale=activation_scale)
    return READERS[fmt](path, opts, device)


def export_sae(sae: SAE, out: str | Path, format: str) -> Path:
    """Write `sae` into directory `out` in `format` (saelens or sparsify), for that tool to load."""
    if format not in WRITERS:
        raise SAEFormatError(f"cannot export to {format!r}; expected one of {sorted(WRITERS)}")
    if isinstance(sae, RoutedSAE):  # no format has a router: the same weights, without the routing
        log.warning(
            "%s has no routed SAE: exporting the weights as a plain TopK SAE over all %d latents; the router "
            "is dropped, so its encoder picks the top k of all latents, not of one expert's (monosemantic's "
            "own cfg.json + sae.safetensors keep the router)",
            format,
            sae.d_sae,
        )
        sae = sae.as_topk()
    return WRITERS[format](sae, Path(out))


__all__ = ["READERS", "WRITERS", "detect_format", "export_sae", "load_sae"]
