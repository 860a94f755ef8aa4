"""Transcoders made by other tools, read into our transcoder classes (sae/transcoder.py, sae/transcoder_peers.py).

SAELens (cfg.json + sae_weights.safetensors, `architecture` below): W_enc [d_in, d_sae], b_enc [d_sae],
W_dec [d_sae, d_out], b_dec [d_out], W_skip [d_out, d_in] (ours: its transpose), threshold [d_sae].

    transcoder -> relu_transcoder                  skip_transcoder -> relu_skip_transcoder
    jumprelu_transcoder -> jumprelu_transcoder     jumprelu_skip_transcoder -> jumprelu_skip_transcoder

SAELens never subtracts b_dec from a transcoder's input and normalises the input without restoring
the output: only normalize_activations "none" loads. metadata.hook_name is the input's site,
metadata.hook_name_out (where given) the output's; both are translated with `hooknames.py` where
they name a site of ours, and kept in cfg.origin. (SAELens' usual input names, `ln2.hook_normalized`
and `hook_mlp_in`, are not our mlp.in, which is after the norm's affine: they stay as they are.)

sparsify (cfg.json with transcode / skip_connection): ReLU then the top k of encoder(x), our
`transcoder` (W_skip [d_out, d_in] likewise transposed into our skip_transcoder). Its directory names a
module: the transcoder reads that module's input and writes its output (`h.3.mlp` -> layers.3.mlp.in
-> layers.3.mlp.out). An autoencoder with a skip connection (skip_connection without transcode)
subtracts b_dec before encoding: it loads as a skip_transcoder reading and writing one hookpoint,
with b_dec folded into b_enc (b_enc - b_dec @ W_enc, in float32 at least, then cast).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from monosemantic.formats.hooknames import from_sparsify, from_transformer_lens
from monosemantic.formats.reading import build_sae, cast_all, check_unexpected, get, take
from monosemantic.sae import SAE, SAEFormatError

SAELENS = {
    "transcoder": "relu_transcoder",
    "skip_transcoder": "relu_skip_transcoder",
    "jumprelu_transcoder": "jumprelu_transcoder",
    "jumprelu_skip_transcoder": "jumprelu_skip_transcoder",
}


def saelens_tensors(tensors: dict[str, Tensor], arch: str, d_in: int, d_sae: int, d_out: int, source: Path) -> dict:
    """Our tensors of a SAELens transcoder of `arch` (SAELens' name)."""
    ours = {
        "W_enc": take(tensors, "W_enc", (d_in, d_sae), "[d_in, d_sae]", source),
        "b_enc": take(tensors, "b_enc", (d_sae,), "[d_sae]", source),
        "W_dec": take(tensors, "W_dec", (d_sae, d_out), "[d_sae, d_out]", source),
        "b_dec": take(tensors, "b_dec", (d_out,), "[d_out]", source),
    }
    if "skip" in arch:
        ours["W_skip"] = take(tensors, "W_skip", (d_out, d_in), "[d_out, d_in]", source).T
    if arch.startswith("jumprelu"):
        ours["threshold"] = take(tensors, "threshold", (d_sae,), "[d_sae]", source)
    check_unexpected(tensors, set(ours), source, f"a SAELens {arch!r}")
    return ours


def saelens_config(cfg: dict[str, Any], arch: str, source: Path) -> dict[str, Any]:
    """SAEConfig fields of a SAELens transcoder (all but dtype and origin) from its cfg.json."""
    norm = cfg.get("normalize_activations", "none")
    if norm != "none":
        raise SAEFormatError(
            f"{source}: a {arch!r} with normalize_activations {norm!r} is not supported: SAELens normalises a "
            "transcoder's input and leaves its output as it is, which no transcoder here does; expected 'none'"
        )
    if get(cfg, "apply_b_dec_to_input", bool, source, default=False):
        raise SAEFormatError(f"{source}: apply_b_dec_to_input is true; a transcoder's b_dec is its output's bias")
    metadata = cfg.get("metadata") or {}
    hook_in, hook_out = metadata.get("hook_name"), metadata.get("hook_name_out")
    return {
        "arch": SAELENS[arch],
        "d_in": get(cfg, "d_in", int, source),
        "d_sae": get(cfg, "d_sae", int, source),
        "d_out": get(cfg, "d_out", int, source),
        "apply_b_dec_to_input": False,
        "hookpoint": translated(hook_in, from_transformer_lens),
        "output_hookpoint": translated(hook_out, from_transformer_lens),
        "model": metadata.get("model_name"),
    }


def translated(name: Any, translate: Any) -> str | None:
    return (translate(name) or name) if isinstance(name, str) else None


def read_saelens(
    cfg: dict[str, Any], tensors: dict[str, Tensor], path: Path, policy: dict, origin: dict, device: Any
) -> SAE:
    """Our transcoder of a SAELens transcoder directory whose cfg.json is `cfg`."""
    source, arch = path / "cfg.json", cfg["architecture"]
    ours_cfg = saelens_config(cfg, arch, source)
    ours = saelens_tensors(tensors, arch, ours_cfg["d_in"], ours_cfg["d_sae"], ours_cfg["d_out"], path)
    hook_out = (cfg.get("metadata") or {}).get("hook_name_out")
    ours_cfg.update(dtype=policy["dtype"], origin={**origin, **({"hook_name_out": hook_out} if hook_out else {})})
    return build_sae(ours_cfg, cast_all(ours, policy["dtype"]), path, device)


def sparsify_sites(name: str, transcode: bool) -> tuple[str, str]:
    """Our (input, output) hookpoints of a sparsify coder in directory `name`: a transcoder reads its
    module's input and writes its output; an autoencoder reads and writes the module's output. Names
    with no site of ours are kept as they are."""
    out = from_sparsify(name)
    m = re.fullmatch(r"layers\.(\d+)\.(.+)", out or "")
    if m is None:
        return name, name
    if not transcode:
        return out, out  # type: ignore[return-value]
    inp = {"mlp.out": "mlp.in", "resid.post": "resid.pre"}.get(m.group(2))  # an MLP's or a whole block's input
    return (f"layers.{m.group(1)}.{inp}", m.group(0)) if inp else (name, name)


def sparsify_tensors(tensors: dict[str, Tensor], d_in: int, d_sae: int, transcode: bool, skip: bool, src: Path) -> dict:
    """Our tensors of a sparsify coder: an autoencoder's as they are, a transcoder's or skip autoencoder's
    for our transcoder classes (d_out = d_in, as sparsify makes them)."""
    check_unexpected(
        tensors, {"encoder.weight", "encoder.bias", "W_dec", "b_dec"} | ({"W_skip"} if skip else set()), src, "sparsify"
    )
    ours = {
        "W_enc": take(tensors, "encoder.weight", (d_sae, d_in), "[d_sae, d_in]", src).T,
        "b_enc": take(tensors, "encoder.bias", (d_sae,), "[d_sae]", src),
        "W_dec": take(tensors, "W_dec", (d_sae, d_in), "[d_sae, d_in]", src),
        "b_dec": take(tensors, "b_dec", (d_in,), "[d_in]", src),
    }
    if skip:
        ours["W_skip"] = take(tensors, "W_skip", (d_in, d_in), "[d_out, d_in]", src).T
    if skip and not transcode:  # an SAE + skip: (x - b_dec) @ W_enc + b_enc == x @ W_enc + (b_enc - b_dec @ W_enc)
        wide = torch.promote_types(ours["b_enc"].dtype, torch.float32)
        b_enc = ours["b_enc"].to(wide) - ours["b_dec"].to(wide) @ ours["W_enc"].to(wide)
        ours["b_enc"] = b_enc.to(ours["b_enc"].dtype)
    return ours


def saelens_write(sae: SAE, metadata: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """SAELens' cfg.json and tensors of our relu_ or jumprelu_ transcoder; `metadata` names its sites."""
    back = {ours: theirs for theirs, ours in SAELENS.items()}
    cfg = sae.cfg
    if cfg.arch not in back:
        raise SAEFormatError(
            f"SAELens' transcoders are ReLU or JumpReLU ({', '.join(SAELENS)}); arch={cfg.arch!r} has none there: "
            "export a TopK transcoder to sparsify"
        )
    state = {k: v.detach().cpu().contiguous() for k, v in sae.state_dict().items()}
    if "W_skip" in state:
        state["W_skip"] = state["W_skip"].T.contiguous()  # SAELens' [d_out, d_in]
    config = {
        "architecture": back[cfg.arch],
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "d_out": cfg.d_out if cfg.d_out is not None else cfg.d_in,
        "dtype": cfg.dtype,
        "device": "cpu",
        "apply_b_dec_to_input": False,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": metadata,
    }
    return config, state
