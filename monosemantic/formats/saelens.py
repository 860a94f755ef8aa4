"""SAELens: DIR/cfg.json + DIR/sae_weights.safetensors, configs of SAELens 6 and of earlier versions.

Architectures: standard (ReLU), topk, abstopk (signed latents: sae/signed.py), jumprelu, gated, and
the training checkpoints `SAETrainer` writes of batchtopk and matryoshka_batchtopk (topk_threshold []
is the inference threshold of every latent, as SAELens' own inference save makes it; Matryoshka
loads as our matryoshka with matryoshka_widths as its prefixes). W_enc [d_in, d_sae], W_dec
[d_sae, d_in], b_enc [d_sae] (gated: b_gate, r_mag, b_mag), b_dec [d_in], threshold [d_sae]
(jumprelu); the transcoders (transcoder, skip_transcoder, jumprelu_transcoder,
jumprelu_skip_transcoder) in `transcoders.py`. Refused, with the reason: matching_pursuit, temporal.
The TransformerLens hook name (metadata.hook_name) becomes our hookpoint where it names a site
(`hooknames.py`); cfg.origin keeps it, and `write` writes the TransformerLens name.

Semantics carried over into our cfg:
- apply_b_dec_to_input: as is.
- normalize_activations: none; layer_norm and constant_norm_rescale -> our per-token `input_norm`;
  expected_average_only_in -> the dataset-wide factor in DIR/activation_scaler.json, folded into
  the weights as SAELens' own `fold_activation_norm_scaling_factor` does (W_enc * s, W_dec / s,
  b_dec / s; latents unchanged); without that file the caller passes it (activation_scale),
  else loading is refused with the factor's definition.
- dtype: cast to cfg.json's dtype, as SAELens does (or the caller's).
- topk/batchtopk/abstopk rescale_acts_by_decoder_norm: folded (decoder rows made unit norm, latents scaled to match).
- a pre-6 `scaling_factor` tensor of ones is dropped (as SAELens does); any other is refused.
- reshape_activations hook_z: SAELens flattens [..., n_heads, d_head] inputs itself; ours take the
  flattened [..., d_in], and the maths is the same.

Writing (`write`) produces a SAELens 6 config that `sae_lens.SAE.load_from_disk` loads; BatchTopK
and Matryoshka are written as jumprelu with their one threshold for every latent (SAELens' own export of both);
ReLU and JumpReLU transcoders as SAELens' (TopK transcoders have no SAELens architecture: sparsify holds them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import Tensor

from monosemantic.atomic import atomic_write_bytes, atomic_write_json
from monosemantic.formats import transcoders
from monosemantic.formats.hooknames import from_transformer_lens, to_transformer_lens
from monosemantic.formats.reading import (
    LoadOptions,
    build_sae,
    cast_all,
    check_orientation,
    check_unexpected,
    choose_dtype,
    dtype_name,
    fold_decoder_norms,
    get,
    origin,
    take,
)
from monosemantic.sae import SAE, SAEConfig, SAEFormatError
from monosemantic.sae.config import TRANSCODER_ARCHS, read_json

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
SCALER_FILE = "activation_scaler.json"
ARCHS = {
    "standard": "relu",
    "topk": "topk",
    "jumprelu": "jumprelu",
    "gated": "gated",
    "batchtopk": "batchtopk",  # training checkpoints of SAETrainer; the finished SAE is saved as jumprelu
    "matryoshka_batchtopk": "matryoshka",
    "abstopk": "abstopk",
}
NOTES = {
    "matryoshka_batchtopk": "a training checkpoint; matryoshka_widths are its prefixes (they shape the training "
    "loss), and its inference forward is JumpReLU with topk_threshold for every latent, which is our matryoshka's",
    "batchtopk": "a training checkpoint; its inference forward is JumpReLU with topk_threshold for every latent, "
    "which is our batchtopk's",
}
REFUSED = {
    "matching_pursuit": "matching pursuit encodes by greedy residual selection over the decoder, which no "
    "architecture here computes",
    "temporal": "the temporal SAE's encoder attends over previous tokens, which no architecture here does",
}
NORMS = {"none": "none", "layer_norm": "layer_norm", "constant_norm_rescale": "constant_norm"}
EXTRA_TENSORS = {
    "standard": ("b_enc",),
    "topk": ("b_enc",),
    "abstopk": ("b_enc",),
    "jumprelu": ("b_enc", "threshold"),
    "gated": ("b_gate", "r_mag", "b_mag"),
    "batchtopk": ("b_enc", "topk_threshold"),
    "matryoshka_batchtopk": ("b_enc", "topk_threshold"),
}
WRITABLE = ("relu", "topk", "abstopk", "batchtopk", "matryoshka", "jumprelu", "gated")
K_ARCHS = ("topk", "batchtopk", "matryoshka", "abstopk")  # ours that take k (and may rescale by decoder norms)
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


def read(path: Path, opts: LoadOptions, device: torch.device | str | None = None) -> SAE:
    cfg = read_config(path)
    source = path / CFG_FILE
    arch = get(cfg, "architecture", str, source)
    if arch in REFUSED:
        raise SAEFormatError(f"{source}: architecture {arch!r} not supported: {REFUSED[arch]}")
    if arch not in ARCHS and arch not in transcoders.SAELENS:
        known = sorted([*ARCHS, *transcoders.SAELENS])
        raise SAEFormatError(f"{source}: architecture {arch!r} not supported; expected one of {known}")
    d_in, d_sae = get(cfg, "d_in", int, source), get(cfg, "d_sae", int, source)
    check_orientation(d_in, d_sae, source, opts.allow_square)
    tensors = load_weights(path)
    wsource = path / WEIGHTS_FILE
    policy = choose_dtype(_dtype(cfg.get("dtype", "float32"), source), None, opts.dtype, source)
    policy["file_dtype"] = dtype_name(take(tensors, "W_enc", (d_in, d_sae), "[d_in, d_sae]", wsource).dtype, wsource)
    hook_name = (cfg.get("metadata") or {}).get("hook_name")
    if arch in transcoders.SAELENS:
        found = origin("saelens", policy, hook_name=hook_name, architecture=arch)
        return transcoders.read_saelens(cfg, tensors, path, policy, found, device)
    ours = {
        "W_enc": take(tensors, "W_enc", (d_in, d_sae), "[d_in, d_sae]", wsource),
        "W_dec": take(tensors, "W_dec", (d_sae, d_in), "[d_sae, d_in]", wsource),
        "b_dec": take(tensors, "b_dec", (d_in,), "[d_in]", wsource),
    }
    for key in EXTRA_TENSORS[arch]:
        scalar = key == "topk_threshold"
        ours[key] = take(tensors, key, () if scalar else (d_sae,), "[] (a scalar)" if scalar else "[d_sae]", wsource)
    check_unexpected(tensors, set(ours), wsource, f"a SAELens {arch!r} SAE")
    if arch == "gated":
        ours["b_enc"] = ours.pop("b_gate")
    if "topk_threshold" in ours:  # SAELens' inference save: one threshold for every latent (JumpReLU)
        ours["threshold"] = ours.pop("topk_threshold")
    ours = cast_all(ours, policy["dtype"])  # SAELens casts to cfg.json's dtype on load
    scale = input_scale(cfg, path, opts.activation_scale)
    if scale is not None:
        ours.update(W_enc=ours["W_enc"] * scale, W_dec=ours["W_dec"] / scale, b_dec=ours["b_dec"] / scale)
    rescaled = ARCHS[arch] in K_ARCHS and cfg.get("rescale_acts_by_decoder_norm", False)
    if scale is not None and rescaled and "threshold" in ours:
        # the BatchTopK threshold is in units of pre * ||W_dec row||, and W_dec was just divided by the
        # factor: SAELens' own fold divides the threshold too (its issue #763)
        ours["threshold"] = ours["threshold"] / scale
    if rescaled:
        ours["W_enc"], ours["b_enc"], ours["W_dec"] = fold_decoder_norms(ours["W_enc"], ours["b_enc"], ours["W_dec"])
    metadata = cfg.get("metadata") or {}
    ours_cfg = {
        "arch": ARCHS[arch],
        "d_in": d_in,
        "d_sae": d_sae,
        "dtype": policy["dtype"],
        "apply_b_dec_to_input": get(cfg, "apply_b_dec_to_input", bool, source, default=True),
        "input_norm": NORMS.get(cfg.get("normalize_activations", "none"), "none"),
        "activation_scale": scale if scale is not None else 1.0,
        "hookpoint": (from_transformer_lens(hook_name) or hook_name) if isinstance(hook_name, str) else None,
        "model": metadata.get("model_name"),
        "origin": origin("saelens", policy, hook_name=hook_name, architecture=arch, note=NOTES.get(arch)),
    }
    if ARCHS[arch] in K_ARCHS:
        ours_cfg["k"] = average_k(cfg, source)
    if arch == "matryoshka_batchtopk":
        ours_cfg["matryoshka_prefixes"] = tuple(get(cfg, "matryoshka_widths", list, source))
    return build_sae(ours_cfg, ours, path, device)


def average_k(cfg: dict[str, Any], source: Path) -> int:
    """k, an int for topk and a float (the average per token) for SAELens' BatchTopK; ours keeps an
    int, used only to train on; inference uses the threshold."""
    k = get(cfg, "k", (int, float), source)
    if not k >= 1 or k != int(k):
        raise SAEFormatError(f"{source}: k={k!r}; expected a whole number >= 1 of active latents per token")
    return int(k)


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


def input_scale(cfg: dict[str, Any], path: Path, given: float | None = None) -> float | None:
    """The dataset-wide input factor to fold in, or None; refuses normalisations we cannot honour.
    `given`: the factor from the caller, where activation_scaler.json does not hold it."""
    norm = cfg.get("normalize_activations", "none")
    if norm in NORMS:
        return None
    if norm != "expected_average_only_in":
        raise SAEFormatError(
            f"{path / CFG_FILE}: normalize_activations {norm!r} not supported; expected one of "
            f"{sorted(NORMS) + ['expected_average_only_in']}"
        )
    scaler = path / SCALER_FILE
    factor = read_json(scaler).get("scaling_factor") if scaler.is_file() else None
    factor = given if given is not None else factor
    if factor is None:
        where = f"{scaler} is missing" if not scaler.is_file() else f"{scaler} has scaling_factor null"
        raise SAEFormatError(
            f"{path / CFG_FILE}: normalize_activations is 'expected_average_only_in', so the weights expect inputs "
            f"multiplied by the dataset-wide factor S = sqrt(d_in) / mean ||x|| over the training activations "
            f"(SAELens' ActivationScaler), but {where}. Pass S with load_sae(path, activation_scale=S) or "
            f'`monosemantic convert --activation-scale S`, or write {SCALER_FILE} as {{"scaling_factor": S}}; '
            'set normalize_activations to "none" if the factor is already folded into the weights'
        )
    if not isinstance(factor, (int, float)) or isinstance(factor, bool) or not factor > 0:
        raise SAEFormatError(f"{scaler}: scaling_factor is {factor!r}; expected a positive number")
    return float(factor)


def write(sae: SAE, out: Path) -> Path:
    """Write `sae` as DIR/cfg.json + DIR/sae_weights.safetensors in the SAELens 6 layout."""
    cfg = sae.cfg
    metadata = {"sae_lens_version": WRITTEN_VERSION, "hook_name": peer_hook_name(cfg), "model_name": cfg.model}
    if cfg.arch in TRANSCODER_ARCHS:
        metadata["hook_name_out"] = peer_hook_name(cfg, output=True)
        config, tensors = transcoders.saelens_write(sae, metadata)
        return _write(out, config, tensors)
    if cfg.arch not in WRITABLE:
        raise SAEFormatError(f"SAELens has no architecture for arch={cfg.arch!r}; it writes {', '.join(WRITABLE)}")
    # topk, abstopk, jumprelu, gated: same; matryoshka infers as batchtopk, and SAELens saves both as jumprelu
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
        "metadata": metadata,
    }
    if arch in ("topk", "abstopk"):
        config.update(k=cfg.k, rescale_acts_by_decoder_norm=False)
    return _write(out, config, tensors)


def _write(out: Path, config: dict[str, Any], tensors: dict[str, Tensor]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / WEIGHTS_FILE, safetensors.torch.save(tensors))
    atomic_write_json(out / CFG_FILE, config)
    return out


def peer_hook_name(cfg: SAEConfig, output: bool = False) -> str | None:
    """The TransformerLens name SAELens expects: of our hookpoint (a transcoder's output hookpoint, with
    `output`) if it is a named site, else the SAELens name the SAE came with, else ours as it is."""
    ours = cfg.output_hookpoint if output else cfg.hookpoint
    came = cfg.origin or {}
    came_with = came.get("hook_name_out" if output else "hook_name") if came.get("format") == "saelens" else None
    return to_transformer_lens(ours) or came_with or ours


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
