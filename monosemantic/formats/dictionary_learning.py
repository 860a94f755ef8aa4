"""dictionary_learning (saprmarks/dictionary_learning): DIR/ae.pt (a torch.save'd state dict, loaded
only with torch.load(weights_only=True)) + DIR/config.json ({"trainer": {"dict_class": ..., ...}}),
or a checkpoint DIR/checkpoints/ae_<step>.pt of the same run (trainSAE's save_steps).

    AutoEncoder          bias [d_in] (subtracted), encoder.weight [d_sae, d_in], encoder.bias,
                         decoder.weight [d_in, d_sae]; ReLU. Its loader folds the decoder column
                         norms into the encoder (`from_pretrained(normalize_decoder=True)`); so do we.
    AutoEncoderTopK      encoder.*, decoder.weight, b_dec (subtracted), k; ReLU then top k.
    BatchTopKSAE         the same plus its inference threshold (scalar): ReLU(pre) * (ReLU(pre) > threshold).
    JumpReluAutoEncoder  W_enc [d_in, d_sae], b_enc, W_dec [d_sae, d_in], b_dec, threshold [d_sae];
                         b_dec is NOT subtracted (its apply_b_dec_to_input is False and not saved).
    GatedAutoEncoder     encoder.weight, gate_bias, r_mag, mag_bias, decoder.weight, decoder_bias.
    AutoEncoderNew       encoder.*, decoder.weight, decoder.bias; ReLU(encoder(x)), no subtraction.
    MatryoshkaBatchTopKSAE  W_enc, b_enc, W_dec, b_dec, k, threshold, group_sizes: our matryoshka,
                         prefixes = cumsum(group_sizes) (with all groups active, as from_pretrained
                         leaves it, its inference forward is BatchTopKSAE's, as is ours).

Its `from_pretrained` builds float32 modules and copies the file into them, so bf16/fp16 files
compute in float32 here too (before the AutoEncoder's decoder-norm fold).

The trainer's `norm_factor` is already folded into ae.pt (its biases are rescaled before saving);
we record 1 / norm_factor as `activation_scale`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from monosemantic.formats.reading import (
    LoadOptions,
    build_sae,
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
from monosemantic.sae.config import DTYPES, read_json

CLASSES = (
    "AutoEncoder",
    "AutoEncoderNew",
    "AutoEncoderTopK",
    "BatchTopKSAE",
    "MatryoshkaBatchTopKSAE",
    "JumpReluAutoEncoder",
    "GatedAutoEncoder",
)
NOTES = {
    "MatryoshkaBatchTopKSAE": "group_sizes become the prefixes; with every group active (as from_pretrained leaves "
    "it) its inference forward is BatchTopKSAE's, ReLU(pre) * (ReLU(pre) > threshold), which is our matryoshka's",
    "AutoEncoderNew": "loaded as relu with apply_b_dec_to_input false: ReLU(encoder(x)), decoder(f) with its bias",
}


def read(path: Path, opts: LoadOptions, device: torch.device | str | None = None) -> SAE:
    ae_path = path if path.is_file() else path / "ae.pt"
    cfg_path, step = config_of(ae_path)
    trainer = get(read_json(cfg_path), "trainer", dict, cfg_path)
    dict_class = get(trainer, "dict_class", str, cfg_path)
    if dict_class not in CLASSES:
        raise SAEFormatError(f"{cfg_path}: dict_class {dict_class!r} not supported; expected one of {list(CLASSES)}")
    state = read_pickle(ae_path)
    d_in_key, d_sae_key = {
        "AutoEncoder": ("bias", "encoder.bias"),
        "AutoEncoderNew": ("decoder.bias", "encoder.bias"),
        "JumpReluAutoEncoder": ("b_dec", "b_enc"),
        "MatryoshkaBatchTopKSAE": ("b_dec", "b_enc"),
        "GatedAutoEncoder": ("decoder_bias", "gate_bias"),
    }.get(dict_class, ("b_dec", "encoder.bias"))
    d_in, d_sae = length(state, d_in_key, "d_in", ae_path), length(state, d_sae_key, "d_sae", ae_path)
    check_orientation(d_in, d_sae, ae_path, opts.allow_square)
    file_dtype = state[d_in_key].dtype
    policy = choose_dtype(file_dtype, "dictionary_learning's from_pretrained", opts.dtype, ae_path)
    # its classes are float32 modules that the file is copied into: cast before any folding
    state = {
        k: v.to(DTYPES[policy["dtype"]]) if isinstance(v, Tensor) and v.is_floating_point() else v
        for k, v in state.items()
    }
    ours, cfg = TRANSLATE[dict_class](state, d_in, d_sae, ae_path, trainer)
    norm_factor = trainer.get("norm_factor")
    cfg.update(
        d_in=d_in,
        d_sae=d_sae,
        dtype=policy["dtype"],
        hookpoint=trainer.get("submodule_name"),
        model=trainer.get("lm_name"),
        activation_scale=1 / norm_factor if isinstance(norm_factor, (int, float)) and norm_factor > 0 else 1.0,
        origin=origin(
            "dictionary_learning", policy, dict_class=dict_class, checkpoint_step=step, note=NOTES.get(dict_class)
        ),
    )
    return build_sae(cfg, ours, ae_path, device)


def config_of(ae_path: Path) -> tuple[Path, int | None]:
    """config.json of a run's ae.pt (beside it) or of a checkpoint trainer_i/checkpoints/ae_<step>.pt
    (one level up), and the checkpoint's step."""
    m = re.fullmatch(r"ae_(\d+)\.pt", ae_path.name)
    if m is not None and ae_path.parent.name == "checkpoints":
        return ae_path.parent.parent / "config.json", int(m.group(1))
    return ae_path.parent / "config.json", None


def linear_encoder(state: dict, d_in: int, d_sae: int, src: Path) -> dict[str, Tensor]:
    """W_enc, b_enc, W_dec from the nn.Linear encoder / decoder pair."""
    return {
        "W_enc": take(state, "encoder.weight", (d_sae, d_in), "[d_sae, d_in]", src).T,
        "b_enc": take(state, "encoder.bias", (d_sae,), "[d_sae]", src),
        "W_dec": take(state, "decoder.weight", (d_in, d_sae), "[d_in, d_sae]", src).T,
    }


def autoencoder(
    state: dict[str, Any], d_in: int, d_sae: int, src: Path, trainer: dict[str, Any]
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    check_unexpected(state, {"bias", "encoder.weight", "encoder.bias", "decoder.weight"}, src, "an AutoEncoder")
    ours = linear_encoder(state, d_in, d_sae, src)
    ours["b_dec"] = take(state, "bias", (d_in,), "[d_in]", src)
    norms = ours["W_dec"].norm(dim=1)
    if not torch.allclose(norms, torch.ones_like(norms)):  # the rule of its normalize_decoder()
        ours["W_dec"] = ours["W_dec"] / norms[:, None]
        ours["W_enc"], ours["b_enc"] = ours["W_enc"] * norms, ours["b_enc"] * norms
    return ours, {"arch": "relu"}


def topk(
    state: dict[str, Any], d_in: int, d_sae: int, src: Path, trainer: dict[str, Any]
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    batch = trainer["dict_class"] == "BatchTopKSAE"
    check_unexpected(
        state,
        {"encoder.weight", "encoder.bias", "decoder.weight", "b_dec", "k", "threshold"},
        src,
        trainer["dict_class"],
    )
    ours = linear_encoder(state, d_in, d_sae, src)
    ours["b_dec"] = take(state, "b_dec", (d_in,), "[d_in]", src)
    k = int(take(state, "k", (), "[] (an int)", src))
    if "k" in trainer and trainer["k"] != k:
        raise SAEFormatError(f"{src}: k={k}, but config.json's trainer says k={trainer['k']!r}")
    if batch:
        ours["threshold"] = take(state, "threshold", (), "[] (a scalar)", src)
    return ours, {"arch": "batchtopk" if batch else "topk", "k": k}


def matryoshka(
    state: dict[str, Any], d_in: int, d_sae: int, src: Path, trainer: dict[str, Any]
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    check_unexpected(
        state, {"W_enc", "b_enc", "W_dec", "b_dec", "k", "threshold", "group_sizes"}, src, "a MatryoshkaBatchTopKSAE"
    )
    length(state, "group_sizes", "n_groups", src)
    groups = state["group_sizes"]
    if int(groups.sum()) != d_sae:
        raise SAEFormatError(f"{src}: group_sizes {groups.tolist()} do not sum to d_sae={d_sae}")
    k = int(take(state, "k", (), "[] (an int)", src))
    if "k" in trainer and trainer["k"] != k:
        raise SAEFormatError(f"{src}: k={k}, but config.json's trainer says k={trainer['k']!r}")
    ours = {
        "W_enc": take(state, "W_enc", (d_in, d_sae), "[d_in, d_sae]", src),
        "b_enc": take(state, "b_enc", (d_sae,), "[d_sae]", src),
        "W_dec": take(state, "W_dec", (d_sae, d_in), "[d_sae, d_in]", src),
        "b_dec": take(state, "b_dec", (d_in,), "[d_in]", src),
        "threshold": take(state, "threshold", (), "[] (a scalar)", src),
    }
    prefixes = tuple(int(p) for p in groups.cumsum(0).tolist())
    return ours, {"arch": "matryoshka", "k": k, "matryoshka_prefixes": prefixes}


def autoencoder_new(
    state: dict[str, Any], d_in: int, d_sae: int, src: Path, trainer: dict[str, Any]
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    check_unexpected(
        state, {"encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias"}, src, "an AutoEncoderNew"
    )
    ours = linear_encoder(state, d_in, d_sae, src)
    ours["b_dec"] = take(state, "decoder.bias", (d_in,), "[d_in]", src)
    return ours, {"arch": "relu", "apply_b_dec_to_input": False}


def jumprelu(
    state: dict[str, Any], d_in: int, d_sae: int, src: Path, trainer: dict[str, Any]
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    check_unexpected(state, {"W_enc", "b_enc", "W_dec", "b_dec", "threshold"}, src, "a JumpReluAutoEncoder")
    ours = {
        "W_enc": take(state, "W_enc", (d_in, d_sae), "[d_in, d_sae]", src),
        "b_enc": take(state, "b_enc", (d_sae,), "[d_sae]", src),
        "W_dec": take(state, "W_dec", (d_sae, d_in), "[d_sae, d_in]", src),
        "b_dec": take(state, "b_dec", (d_in,), "[d_in]", src),
        "threshold": take(state, "threshold", (d_sae,), "[d_sae]", src),
    }
    return ours, {"arch": "jumprelu", "apply_b_dec_to_input": False}


def gated(
    state: dict[str, Any], d_in: int, d_sae: int, src: Path, trainer: dict[str, Any]
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    known = {"encoder.weight", "gate_bias", "r_mag", "mag_bias", "decoder.weight", "decoder_bias"}
    check_unexpected(state, known, src, "a GatedAutoEncoder")
    ours = {
        "W_enc": take(state, "encoder.weight", (d_sae, d_in), "[d_sae, d_in]", src).T,
        "b_enc": take(state, "gate_bias", (d_sae,), "[d_sae]", src),
        "W_dec": take(state, "decoder.weight", (d_in, d_sae), "[d_in, d_sae]", src).T,
        "b_dec": take(state, "decoder_bias", (d_in,), "[d_in]", src),
        "r_mag": take(state, "r_mag", (d_sae,), "[d_sae]", src),
        "b_mag": take(state, "mag_bias", (d_sae,), "[d_sae]", src),
    }
    return ours, {"arch": "gated"}


TRANSLATE = {
    "AutoEncoder": autoencoder,
    "AutoEncoderNew": autoencoder_new,
    "AutoEncoderTopK": topk,
    "MatryoshkaBatchTopKSAE": matryoshka,
    "BatchTopKSAE": topk,
    "JumpReluAutoEncoder": jumprelu,
    "GatedAutoEncoder": gated,
}
