"""SAELens: DIR/cfg.json + DIR/sae_weights.safetensors, configs of SAELens 6 and of earlier versions.

Architectures: standard (ReLU), topk, jumprelu, gated. W_enc [d_in, d_sae], W_dec [d_sae, d_in],
b_enc [d_sae] (gated: b_gate, r_mag, b_mag), b_dec [d_in], threshold [d_sae] (jumprelu).

Semantics carried over into our cfg:
- apply_b_dec_to_input: as is.
- normalize_activations: none; layer_norm and constant_norm_rescale -> our per-token `input_norm`;
  expected_average_only_in -> the dataset-wide factor in DIR/activation_scaler.json, folded into
  the weights as SAELens' own `fold_activation_norm_scaling_factor` does (W_enc * s, W_dec / s,
  b_dec / s; latents unchanged); without that file the factor is unknown and loading is refused.
- topk rescale_acts_by_decoder_norm: folded (decoder rows made unit norm, latents scaled to match).
- a pre-6 `scaling_factor` tensor of ones is dropped (as SAELens does); any other is refused.
- reshape_activations hook_z: SAELens flattens [..., n_heads, d_head] inputs itself; ours take the
  flattened [..., d_in], and the maths is the same.

Writing (`write`) produces a SAELens 6 config that `sae_lens.SAE.load_from_disk` loads; BatchTopK
and Matryoshka are written as jumprelu with their one threshold for every latent (SAELens' own export of both).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import Tensor

from monosemantic.atomic import atomic_write_bytes, atomic_write_json
from monosemantic.formats.reading import (
    build_sae,
    check_orientation,
    check_unexpected,
    dtype_name,
    fold_decoder_norms,
    get,
    take,
)
from monosemantic.sae import SAE, SAEFormatError
from monosemantic.sae.config import read_json

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
SCALER_FILE = "activation_scaler.json"
ARCHS = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu", "gated": "gated"}
NORMS = {"none": "none", "layer_norm": "layer_norm", "constant_norm_rescale": "constant_norm"}
EXTRA_TENSORS = {
    "standard": ("b_enc",),
    "topk": ("b_enc",),
    "jumprelu": ("b_enc", "threshold"),
    "gated": ("b_gate", "r_mag", "b_mag"),
}
WRITTEN_VERSION = "6.0.0"  # the config layout we write; SAELens reads any 6.x this way


def read_config(path: Path) -> dict[str, Any]:
    """cfg.json in the SAELens 6 layout (older configs are translated as SAELens itself does)."""
    cfg = read_json(path / CFG_FILE)
    version = cfg.get("sae_lens_version") or (cfg.get("metadata") or {}).get("sae_lens_version")
    if _major(version) >= 6:
        return cfg
    old = {"hook_point": "hook_name", "hook_point_head_index": "hook_head_index", "activation_fn_str": "activation_fn"}
    cfg = {old.get(k, k): v for k, v in cfg.items()}
    cfg.setdefault("architecture", "standard")
    activation = cfg.get("activation_fn", "relu")
    if activation == "topk":
        cfg["architecture"] = "topk"
        cfg["k"] = (cfg.get("activation_fn_kwargs") or {}).get("k")
    elif activation != "relu":
        raise SAEFormatError(f"{path / CFG_FILE}: activation_fn {activation!r} not supported; expected relu or topk")
    norm = cfg.get("normalize_activations")
    if isinstance(norm, bool) or norm is None:
        cfg["normalize_activations"] = "expected_average_only_in" if norm else "none"
    cfg["metadata"] = {"hook_name": cfg.get("hook_name"), "model_name": cfg.get("model_name")}
    return cfg


def read(path: Path, *, allow_square: bool = False, device: torch.device | str | None = None) -> SAE:
    cfg = read_config(path)
    source = path / CFG_FILE
    arch = get(cfg, "architecture", str, source)
    if arch not in ARCHS:
        raise SAEFormatError(f"{source}: architecture {arch!r} not supported; expected one of {sorted(ARCHS)}")
    d_in, d_sae = get(cfg, "d_in", int, source), get(cfg, "d_sae", int, source)
    check_orientation(d_in, d_sae, source, allow_square)
    tensors = load_weights(path)
    wsource = path / WEIGHTS_FILE
    ours = {
        "W_enc": take(tensors, "W_enc", (d_in, d_sae), "[d_in, d_sae]", wsource),
        "W_dec": take(tensors, "W_dec", (d_sae, d_in), "[d_sae, d_in]", wsource),
        "b_dec": take(tensors, "b_dec", (d_in,), "[d_in]", wsource),
    }
    for key in EXTRA_TENSORS[arch]:
        ours[key] = take(tensors, key, (d_sae,), "[d_sae]", wsource)
    check_unexpected(tensors, set(ours), wsource, f"a SAELens {arch!r} SAE")
    if arch == "gated":
        ours["b_enc"] = ours.pop("b_gate")
    dtype = cfg.get("dtype", "float32")
    ours = {k: v.to(_dtype(dtype, source)) for k, v in ours.items()}  # SAELens casts to cfg dtype on load
    scale = input_scale(cfg, path)
    if scale is not None:
        ours.update(W_enc=ours["W_enc"] * scale, W_dec=ours["W_dec"] / scale, b_dec=ours["b_dec"] / scale)
    if arch == "topk" and cfg.get("rescale_acts_by_decoder_norm", False):
        ours["W_enc"], ours["b_enc"], ours["W_dec"] = fold_decoder_norms(ours["W_enc"], ours["b_enc"], ours["W_dec"])
    metadata = cfg.get("metadata") or {}
    ours_cfg = {
        "arch": ARCHS[arch],
        "d_in": d_in,
        "d_sae": d_sae,
        "dtype": dtype_name(ours["W_enc"].dtype, source),
        "apply_b_dec_to_input": get(cfg, "apply_b_dec_to_input", bool, source, default=True),
        "input_norm": NORMS.get(cfg.get("normalize_activations", "none"), "none"),
        "activation_scale": scale if scale is not None else 1.0,
        "hookpoint": metadata.get("hook_name"),
        "model": metadata.get("model_name"),
    }
    if arch == "topk":
        ours_cfg["k"] = get(cfg, "k", int, source)
    return build_sae(ours_cfg, ours, path, device)


def load_weights(path: Path) -> dict[str, Tensor]:
    weights = path / WEIGHTS_FILE
    try:
        tensors = safetensors.torch.load_file(weights)
    except (safetensors.SafetensorError, OSError, ValueError) as e:
        raise SAEFormatError(f"{weights}: not a readable safetensors file ({e})") from e
    if "log_threshold" in tensors:  # SAELens' older JumpReLU checkpoints; it converts them the same way
        tensors["threshold"] = tensors.pop("log_threshold").exp()
    if "scaling_factor" in tensors:
        factor = tensors.pop("scaling_factor")
        if not torch.allclose(factor, torch.ones_like(factor)):
            raise SAEFormatError(
                f"{weights}: a finetuning 'scaling_factor' other than ones is not supported "
                "(SAELens 6 cannot load it either)"
            )
    return tensors


def input_scale(cfg: dict[str, Any], path: Path) -> float | None:
    """The dataset-wide input factor to fold in, or None; refuses normalisations we cannot honour."""
    norm = cfg.get("normalize_activations", "none")
    if norm in NORMS:
        return None
    if norm != "expected_average_only_in":
        raise SAEFormatError(
            f"{path / CFG_FILE}: normalize_activations {norm!r} not supported; expected one of "
            f"{sorted(NORMS) + ['expected_average_only_in']}"
        )
    scaler = path / SCALER_FILE
    if not scaler.is_file():
        raise SAEFormatError(
            f"{path / CFG_FILE}: normalize_activations is 'expected_average_only_in', so the weights expect "
            f"inputs multiplied by a dataset-wide factor, but {scaler} (where SAELens keeps it) is missing. "
            'Write it as {"scaling_factor": S}, or set normalize_activations to "none" if the factor '
            "is already folded into the weights"
        )
    factor = read_json(scaler).get("scaling_factor")
    if not isinstance(factor, (int, float)) or isinstance(factor, bool) or not factor > 0:
        raise SAEFormatError(f"{scaler}: scaling_factor is {factor!r}; expected a positive number")
    return float(factor)


def write(sae: SAE, out: Path) -> Path:
    """Write `sae` as DIR/cfg.json + DIR/sae_weights.safetensors in the SAELens 6 layout."""
    cfg = sae.cfg
    # topk, jumprelu, gated: same; matryoshka infers as batchtopk, and SAELens saves both as jumprelu
    arch = {"relu": "standard", "batchtopk": "jumprelu", "matryoshka": "jumprelu"}.get(cfg.arch, cfg.arch)
    state = {k: v.detach().cpu().contiguous() for k, v in sae.state_dict().items()}
    tensors = {"W_enc": state["W_enc"], "W_dec": state["W_dec"], "b_dec": state["b_dec"]}
    if arch == "gated":
        tensors.update(b_gate=state["b_enc"], r_mag=state["r_mag"], b_mag=state["b_mag"])
    else:
        tensors["b_enc"] = state["b_enc"]
    if cfg.arch in ("batchtopk", "matryoshka"):  # one threshold for all latents; below 0 it means "not estimated": ReLU
        tensors["threshold"] = state["threshold"].clamp_min(0).expand(cfg.d_sae).contiguous()
    elif cfg.arch == "jumprelu":
        tensors["threshold"] = state["threshold"]
    norm = {v: k for k, v in NORMS.items()}[cfg.input_norm]
    config = {
        "architecture": arch,
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "dtype": cfg.dtype,
        "device": "cpu",
        "apply_b_dec_to_input": cfg.apply_b_dec_to_input,
        "normalize_activations": norm,
        "reshape_activations": "none",
        "metadata": {"sae_lens_version": WRITTEN_VERSION, "hook_name": cfg.hookpoint, "model_name": cfg.model},
    }
    if arch == "topk":
        config.update(k=cfg.k, rescale_acts_by_decoder_norm=False)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / WEIGHTS_FILE, safetensors.torch.save(tensors))
    atomic_write_json(out / CFG_FILE, config)
    return out


def _major(version: Any) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return 0


def _dtype(name: Any, source: Path) -> torch.dtype:
    dtype = getattr(torch, str(name).removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype):
        raise SAEFormatError(f"{source}: dtype {name!r} is not a torch dtype; expected e.g. float32")
    return dtype
