"""OpenAI's sparse_autoencoder (github.com/openai/sparse_autoencoder, `Autoencoder.state_dict()`
saved with torch.save): a pickle, loaded only with torch.load(weights_only=True).

    pre_bias [d_in]                  -> b_dec (subtracted before encoding, added after decoding)
    encoder.weight [d_sae, d_in]     -> W_enc^T          (nn.Linear layout)
    latent_bias [d_sae]              -> b_enc
    decoder.weight [d_in, d_sae]     -> W_dec^T          (tied: decoder.linear.weight is encoder.weight)
    activation "ReLU" | "TopK", activation_state_dict {"k": int, "postact_fn": "ReLU"}
    stats_last_nonzero, latents_activation_frequency, latents_mean_square: training statistics, unused

Its `Autoencoder.from_state_dict` turns on the per-token layer norm (`LN`: (x - mean) / (std + 1e-5),
undone on the output) exactly when the activation is TopK; we do the same (`input_norm`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from monosemantic.formats.reading import (
    build_sae,
    check_orientation,
    check_unexpected,
    dtype_name,
    get,
    length,
    read_pickle,
    take,
)
from monosemantic.sae import SAE, SAEFormatError

STATS = {"stats_last_nonzero", "latents_activation_frequency", "latents_mean_square"}


def read(path: Path, *, allow_square: bool = False, device: torch.device | str | None = None) -> SAE:
    state = read_pickle(path)
    d_in, d_sae = length(state, "pre_bias", "d_in", path), length(state, "latent_bias", "d_sae", path)
    check_orientation(d_in, d_sae, path, allow_square)
    activation = get(state, "activation", str, path, default="ReLU")
    act_state = get(state, "activation_state_dict", dict, path, default={})
    cfg: dict[str, Any] = {"d_in": d_in, "d_sae": d_sae}  # SAEConfig fields, for build_sae
    if activation == "TopK":
        postact = get(act_state, "postact_fn", str, f"{path}: activation_state_dict")
        if postact != "ReLU":
            raise SAEFormatError(f"{path}: TopK postact_fn {postact!r} not supported; expected 'ReLU'")
        cfg.update(arch="topk", k=get(act_state, "k", int, f"{path}: activation_state_dict"), input_norm="layer_norm")
    elif activation == "ReLU":
        cfg.update(arch="relu")
    else:
        raise SAEFormatError(f"{path}: activation {activation!r} not supported; expected 'ReLU' or 'TopK'")
    tied = "decoder.weight" not in state and "decoder.linear.weight" in state
    check_unexpected(
        state,
        STATS
        | {
            "pre_bias",
            "latent_bias",
            "encoder.weight",
            "activation",
            "activation_state_dict",
            "decoder.linear.weight" if tied else "decoder.weight",
        },
        path,
        "an OpenAI sparse_autoencoder state dict",
    )
    W_enc_t = take(state, "encoder.weight", (d_sae, d_in), "[d_sae, d_in]", path)
    ours = {
        "W_enc": W_enc_t.T,
        "b_enc": take(state, "latent_bias", (d_sae,), "[d_sae]", path),
        "W_dec": take(state, "decoder.linear.weight", (d_sae, d_in), "[d_sae, d_in]", path)
        if tied
        else take(state, "decoder.weight", (d_in, d_sae), "[d_in, d_sae]", path).T,
        "b_dec": take(state, "pre_bias", (d_in,), "[d_in]", path),
    }
    cfg["dtype"] = dtype_name(W_enc_t.dtype, path)
    return build_sae(cfg, ours, path, device)
