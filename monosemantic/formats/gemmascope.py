"""Gemma Scope (google/gemma-scope-* on Hugging Face): JumpReLU SAEs, as

    DIR/params.npz                        Gemma Scope (Gemma 2): W_enc, W_dec, ... (or lowercase w_enc, w_dec),
                                          read with numpy and allow_pickle=False
    DIR/params.safetensors + config.json  Gemma Scope 2 (Gemma 3): w_enc, w_dec, b_enc, b_dec, threshold;
                                          config.json {"architecture": "jump_relu", "model_name",
                                          "hf_hook_point_in": "model.layers.12.output", ...}

    W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in], threshold [d_sae]

Its forward (the Gemma Scope tutorial): pre = x @ W_enc + b_enc (b_dec is NOT subtracted),
z = (pre > threshold) * ReLU(pre), x_hat = z @ W_dec + b_dec. d_in and d_sae are declared by b_dec
and b_enc. Lowercase `w_` keys are renamed `W_` and a `scaling_factor` of ones is dropped, as
SAELens' Gemma loaders do; SAELens and the tutorial compute in float32, so bf16/fp16 files are
upcast. Gemma Scope 2's transcoders (an `hf_hook_point_out`, and with affine_connection an
`affine_skip_connection` [d_in, d_out]) load as our jumprelu_transcoder / jumprelu_skip_transcoder
(sae/transcoder_peers.py), as SAELens' Gemma 3 loader makes them. The hookpoint is config.json's
`hf_hook_point_in` (a transcoder's output: `hf_hook_point_out`): a block's output becomes
`layers.<i>.resid.post`, another module's output that module's path.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.torch
import torch
from torch import Tensor

from monosemantic.formats.reading import (
    LoadOptions,
    build_sae,
    cast_all,
    check_orientation,
    check_unexpected,
    choose_dtype,
    get,
    length,
    origin,
    take,
)
from monosemantic.sae import SAE, SAEFormatError
from monosemantic.sae.config import read_json

FILE = "params.npz"
SAFETENSORS_FILE = "params.safetensors"
CONFIG_FILE = "config.json"
KEYS = {"W_enc", "b_enc", "W_dec", "b_dec", "threshold"}
UPCAST_BY = "SAELens' Gemma Scope loader"


def read(path: Path, opts: LoadOptions, device: torch.device | str | None = None) -> SAE:
    path = path.parent if path.name == SAFETENSORS_FILE else path
    if path.is_dir() and (path / SAFETENSORS_FILE).is_file():
        weights, arrays = path / SAFETENSORS_FILE, read_safetensors(path / SAFETENSORS_FILE)
        hf_hook, names = scope2_config(path)
    else:
        weights = path / FILE if path.is_dir() else path
        arrays, hf_hook, names = read_npz(weights), None, {}
    arrays = {("W_" + k[2:] if k.startswith("w_") else k): v for k, v in arrays.items()}  # as SAELens maps them
    factor = arrays.pop("scaling_factor", None)
    if factor is not None and not torch.allclose(factor.float(), torch.ones_like(factor.float())):
        raise SAEFormatError(f"{weights}: a finetuning 'scaling_factor' other than ones is not supported")
    if names.get("hf_hook_point_out") is not None or "affine_skip_connection" in arrays:
        return read_transcoder(arrays, names, weights, opts, device)
    check_unexpected(arrays, KEYS, weights, "a Gemma Scope JumpReLU SAE")
    d_in, d_sae = length(arrays, "b_dec", "d_in", weights), length(arrays, "b_enc", "d_sae", weights)
    check_orientation(d_in, d_sae, weights, opts.allow_square)
    ours = {
        "W_enc": take(arrays, "W_enc", (d_in, d_sae), "[d_in, d_sae]", weights),
        "b_enc": take(arrays, "b_enc", (d_sae,), "[d_sae]", weights),
        "W_dec": take(arrays, "W_dec", (d_sae, d_in), "[d_sae, d_in]", weights),
        "b_dec": take(arrays, "b_dec", (d_in,), "[d_in]", weights),
        "threshold": take(arrays, "threshold", (d_sae,), "[d_sae]", weights),
    }
    policy = choose_dtype(ours["W_enc"].dtype, UPCAST_BY, opts.dtype, weights)
    cfg = {
        "arch": "jumprelu",
        "d_in": d_in,
        "d_sae": d_sae,
        "apply_b_dec_to_input": False,
        "dtype": policy["dtype"],
        "hookpoint": our_hookpoint(hf_hook),
        "model": names.get("model_name"),
        "origin": origin("gemmascope", policy, hf_hook_point_in=hf_hook),
    }
    return build_sae(cfg, cast_all(ours, policy["dtype"]), weights, device)


def read_transcoder(
    arrays: dict[str, Tensor], cfg: dict[str, Any], weights: Path, opts: LoadOptions, device: Any
) -> SAE:
    """A Gemma Scope 2 transcoder: reads hf_hook_point_in, writes hf_hook_point_out; W_dec [d_sae, d_out],
    b_dec [d_out], and with affine_connection an affine_skip_connection [d_in, d_out] (our W_skip's layout;
    SAELens transposes it into its own [d_out, d_in])."""
    skip = "affine_skip_connection" in arrays
    check_unexpected(
        arrays, KEYS | ({"affine_skip_connection"} if skip else set()), weights, "a Gemma Scope 2 transcoder"
    )
    d_sae, d_out = length(arrays, "b_enc", "d_sae", weights), length(arrays, "b_dec", "d_out", weights)
    w_enc = arrays.get("W_enc")
    d_in = w_enc.shape[0] if isinstance(w_enc, Tensor) and w_enc.ndim == 2 else -1  # declared by W_enc alone
    check_orientation(d_in, d_sae, weights, opts.allow_square)
    ours = {
        "W_enc": take(arrays, "W_enc", (d_in, d_sae), "[d_in, d_sae]", weights),
        "b_enc": arrays["b_enc"],
        "W_dec": take(arrays, "W_dec", (d_sae, d_out), "[d_sae, d_out]", weights),
        "b_dec": arrays["b_dec"],
        "threshold": take(arrays, "threshold", (d_sae,), "[d_sae]", weights),
    }
    if skip:
        ours["W_skip"] = take(arrays, "affine_skip_connection", (d_in, d_out), "[d_in, d_out]", weights)
    policy = choose_dtype(ours["W_enc"].dtype, UPCAST_BY, opts.dtype, weights)
    hook_in, hook_out = cfg.get("hf_hook_point_in"), cfg.get("hf_hook_point_out")
    ours_cfg = {
        "arch": "jumprelu_skip_transcoder" if skip else "jumprelu_transcoder",
        "d_in": d_in,
        "d_sae": d_sae,
        "d_out": d_out,
        "apply_b_dec_to_input": False,
        "dtype": policy["dtype"],
        "hookpoint": our_hookpoint(hook_in),
        "output_hookpoint": our_hookpoint(hook_out),
        "model": cfg.get("model_name"),
        "origin": origin("gemmascope", policy, hf_hook_point_in=hook_in, hf_hook_point_out=hook_out),
    }
    return build_sae(ours_cfg, cast_all(ours, policy["dtype"]), weights, device)


def read_npz(npz: Path) -> dict[str, Tensor]:
    try:
        with np.load(npz, allow_pickle=False) as data:
            return {k: torch.from_numpy(data[k].copy()) for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:  # ValueError: an object array (needs pickle)
        raise SAEFormatError(f"{npz}: not a readable .npz of plain arrays ({e})") from e


def read_safetensors(weights: Path) -> dict[str, Tensor]:
    try:
        return safetensors.torch.load_file(weights)
    except (safetensors.SafetensorError, OSError, ValueError) as e:
        raise SAEFormatError(f"{weights}: not a readable safetensors file ({e})") from e


def scope2_config(path: Path) -> tuple[str | None, dict[str, Any]]:
    """hf_hook_point_in and config.json (optional: SAELens infers one from the folder name); refuses
    what is not JumpReLU."""
    source = path / CONFIG_FILE
    cfg = read_json(source) if source.is_file() else {}
    arch = get(cfg, "architecture", str, source, default="jump_relu")
    if arch != "jump_relu":
        raise SAEFormatError(f"{source}: architecture {arch!r} not supported; expected 'jump_relu'")
    hook = get(cfg, "hf_hook_point_in", str, source, default=None)
    return hook, cfg


def our_hookpoint(hf_hook: str | None) -> str | None:
    """`model.layers.12.output` -> `layers.12.resid.post`; `<module>.output` -> that module's path
    (a hookpoint of ours names a module's output); anything else stays as it is."""
    if hf_hook is None:
        return None
    m = re.fullmatch(r"(?:model\.)?layers\.(\d+)\.output", hf_hook)
    if m is not None:
        return f"layers.{m.group(1)}.resid.post"
    return hf_hook.removesuffix(".output") if hf_hook.endswith(".output") else hf_hook
