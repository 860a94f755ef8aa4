"""OpenAI's sparse_autoencoder (github.com/openai/sparse_autoencoder, `Autoencoder.state_dict()`
saved with torch.save): a pickle, loaded only with torch.load(weights_only=True).

    pre_bias [d_in]                  -> b_dec (subtracted before encoding, added after decoding)
    encoder.weight [d_sae, d_in]     -> W_enc^T          (nn.Linear layout)
    latent_bias [d_sae]              -> b_enc
    decoder.weight [d_in, d_sae]     -> W_dec^T          (tied: decoder.linear.weight is encoder.weight)
    activation "ReLU" | "TopK", activation_state_dict {"k": int, "postact_fn": "ReLU"}, and for TopK
    also activation.k / activation.postact_fn (the TopK submodule's own state_dict adds them)
    stats_last_nonzero, latents_activation_frequency, latents_mean_square: training statistics, unused

Its `Autoencoder.from_state_dict` turns on the per-token layer norm (`LN`: (x - mean) / (std + 1e-5),
undone on the output) exactly when the activation is TopK; we do the same (`input_norm`). It builds
float32 modules and copies the file into them, so bf16/fp16 files compute in float32 here too.
TopK with postact_fn Identity keeps the top k pre-activations as they are, signed: our topk_identity.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

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
    read_pickle,
    take,
)
from monosemantic.sae import SAE, SAEFormatError

STATS = {"stats_last_nonzero", "latents_activation_frequency", "latents_mean_square"}
ACTIVATION_ENTRIES = {"activation.k", "activation.postact_fn"}
# TopK's post-activation -> our architecture: Identity keeps the top k as they are, signed (sae/signed.py)
POSTACT = {"ReLU": "topk", "Identity": "topk_identity"}
WHAT = "an OpenAI sparse_autoencoder state dict"


def read(path: Path, opts: LoadOptions, device: torch.device | str | None = None) -> SAE:
    state = read_pickle(path)
    d_in, d_sae = length(state, "pre_bias", "d_in", path), length(state, "latent_bias", "d_sae", path)
    check_orientation(d_in, d_sae, path, opts.allow_square)
    activation = get(state, "activation", str, path, default="ReLU")
    cfg: dict[str, Any] = {"d_in": d_in, "d_sae": d_sae}  # SAEConfig fields, for build_sae
    if activation == "TopK":
        k, postact = topk_state(state, path)
        if postact not in POSTACT:
            raise SAEFormatError(f"{path}: TopK postact_fn {postact!r} not supported; expected 'ReLU' or 'Identity'")
        cfg.update(arch=POSTACT[postact], k=k, input_norm="layer_norm")
    elif activation == "ReLU":
        cfg.update(arch="relu")
    else:
        raise SAEFormatError(f"{path}: activation {activation!r} not supported; expected 'ReLU' or 'TopK'")
    tied = "decoder.weight" not in state and "decoder.linear.weight" in state
    decoder = "decoder.linear.weight" if tied else "decoder.weight"
    known = STATS | {"pre_bias", "latent_bias", "encoder.weight", "activation", "activation_state_dict", decoder}
    check_unexpected(state, known | (ACTIVATION_ENTRIES if activation == "TopK" else set()), path, WHAT)
    W_enc_t = take(state, "encoder.weight", (d_sae, d_in), "[d_sae, d_in]", path)
    ours = {
        "W_enc": W_enc_t.T,
        "b_enc": take(state, "latent_bias", (d_sae,), "[d_sae]", path),
        "W_dec": take(state, decoder, (d_sae, d_in), "[d_sae, d_in]", path)
        if tied
        else take(state, decoder, (d_in, d_sae), "[d_in, d_sae]", path).T,
        "b_dec": take(state, "pre_bias", (d_in,), "[d_in]", path),
    }
    policy = choose_dtype(W_enc_t.dtype, "openai/sparse_autoencoder's Autoencoder.from_state_dict", opts.dtype, path)
    cfg.update(dtype=policy["dtype"], origin=origin("openai", policy))
    return build_sae(cfg, cast_all(ours, policy["dtype"]), path, device)


def topk_state(state: dict[str, Any], path: Path) -> tuple[int, str]:
    """k and the post-activation of a TopK state dict. `Autoencoder.state_dict()` holds them twice:
    in activation_state_dict, and (TopK being a submodule whose own state_dict adds them) as
    activation.k / activation.postact_fn; either may be there, and both must agree."""
    act_state = get(state, "activation_state_dict", dict, path, default={})
    found = []
    for key, types in (("k", int), ("postact_fn", str)):
        values = []
        if key in act_state:
            values.append(get(act_state, key, types, f"{path}: activation_state_dict"))
        if f"activation.{key}" in state:
            values.append(get(state, f"activation.{key}", types, path))
        if not values:
            raise SAEFormatError(f"{path}: activation_state_dict: missing key {key!r} (and no 'activation.{key}')")
        if len(set(values)) > 1:
            raise SAEFormatError(f"{path}: TopK {key} is {values[0]!r} in activation_state_dict but {values[1]!r}")
        found.append(values[0])
    return found[0], found[1]
