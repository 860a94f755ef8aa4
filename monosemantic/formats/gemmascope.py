"""Gemma Scope (google/gemma-scope-* on Hugging Face): params.npz of a JumpReLU SAE, read with
numpy and allow_pickle=False.

    W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in], threshold [d_sae]

Its forward (the Gemma Scope tutorial): pre = x @ W_enc + b_enc (b_dec is NOT subtracted),
z = (pre > threshold) * ReLU(pre), x_hat = z @ W_dec + b_dec. There is no config file: d_in and
d_sae are declared by b_dec and b_enc.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from monosemantic.formats.reading import build_sae, check_orientation, check_unexpected, dtype_name, length, take
from monosemantic.sae import SAE, SAEFormatError

FILE = "params.npz"
KEYS = {"W_enc", "b_enc", "W_dec", "b_dec", "threshold"}


def read(path: Path, *, allow_square: bool = False, device: torch.device | str | None = None) -> SAE:
    npz = path / FILE if path.is_dir() else path
    try:
        with np.load(npz, allow_pickle=False) as data:
            arrays = {k: torch.from_numpy(data[k].copy()) for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:  # ValueError: an object array (needs pickle)
        raise SAEFormatError(f"{npz}: not a readable .npz of plain arrays ({e})") from e
    check_unexpected(arrays, KEYS, npz, "a Gemma Scope JumpReLU SAE")
    d_in, d_sae = length(arrays, "b_dec", "d_in", npz), length(arrays, "b_enc", "d_sae", npz)
    check_orientation(d_in, d_sae, npz, allow_square)
    ours = {
        "W_enc": take(arrays, "W_enc", (d_in, d_sae), "[d_in, d_sae]", npz),
        "b_enc": take(arrays, "b_enc", (d_sae,), "[d_sae]", npz),
        "W_dec": take(arrays, "W_dec", (d_sae, d_in), "[d_sae, d_in]", npz),
        "b_dec": take(arrays, "b_dec", (d_in,), "[d_in]", npz),
        "threshold": take(arrays, "threshold", (d_sae,), "[d_sae]", npz),
    }
    cfg = {
        "arch": "jumprelu",
        "d_in": d_in,
        "d_sae": d_sae,
        "apply_b_dec_to_input": False,
        "dtype": dtype_name(ours["W_enc"].dtype, npz),
    }
    return build_sae(cfg, ours, npz, device)
