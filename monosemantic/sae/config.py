"""The SAE's description and its files: `SAEConfig` (saved as `cfg.json`), the checks that a
`cfg.json` + `sae.safetensors` pair must pass (`read_config`, `check_state`), `SAEFormatError`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import torch
from torch import Tensor

from monosemantic.atomic import read_json_object
from monosemantic.config import OMIT_NONE, ConfigError, from_dict
from monosemantic.errors import MonosemanticError

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae.safetensors"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}
LAYER_NORM_EPS = 1e-5  # OpenAI's sparse_autoencoder LN and SAELens' layer_norm both add it to the std


class SAEFormatError(MonosemanticError, ValueError):
    """A saved SAE (cfg.json / sae.safetensors) is missing, corrupt or does not match its config."""


@dataclass
class SAEConfig:
    arch: str
    """architecture: relu (ReLU + L1, Anthropic), topk (OpenAI), batchtopk, matryoshka (BatchTopK with
    nested prefixes), jumprelu (DeepMind), gated; transcoder, skip_transcoder (TopK; read one
    hookpoint, write another: sae/transcoder.py; relu_ and jumprelu_ ones from other tools:
    sae/transcoder_peers.py); abstopk, topk_identity (signed latents, as other
    tools make them: sae/signed.py)"""
    d_in: int
    """width of the activation vectors the SAE reads"""
    d_sae: int
    """number of latents in the dictionary (d_in x expansion factor)"""
    k: int | None = None
    """active latents per token (topk; batchtopk, matryoshka: on average over a batch)"""
    dtype: Literal["float32", "bfloat16", "float16", "float64"] = "float32"
    """dtype of the weights"""
    apply_b_dec_to_input: bool = True
    """subtract b_dec from the input before encoding (the pre-encoder bias)"""
    input_norm: Literal["none", "layer_norm", "constant_norm"] = "none"
    """per-token input normalisation, undone on the output; only SAEs made by other tools use it:
    layer_norm = (x - mean) / (std + 1e-5) (OpenAI TopK, SAELens layer_norm), constant_norm =
    x * sqrt(d_in) / ||x|| (SAELens constant_norm_rescale)"""
    l1_coefficient: float = 5.0
    """relu, gated: weight of the L1 penalty on latent activations (gated: on the gate's ReLU),
    times decoder row norms"""
    l0_coefficient: float = 1.0
    """jumprelu: weight of the L0 penalty (lambda of Rajamanoharan et al. 2024, "Jumping Ahead")"""
    jumprelu_bandwidth: float = 0.05
    """jumprelu: width of the rectangle kernel in the threshold's straight-through gradient, in
    units of the normalised activations (E||x|| = sqrt(d_in))"""
    k_aux: int | None = None
    """topk/batchtopk: dead latents used by the AuxK loss per token (default d_in // 2)"""
    auxk_coef: float = 1 / 32
    """topk/batchtopk: weight of the AuxK loss (OpenAI: 1/32)"""
    matryoshka_prefixes: tuple[int, ...] | None = field(default=None, metadata=OMIT_NONE)
    """matryoshka: sizes of the nested prefixes of the dictionary, each trained to reconstruct on its
    own, increasing, the last d_sae (appended if missing); default d_sae/64, d_sae/16, d_sae/4, d_sae"""
    activation_scale: float = 1.0
    """input-normalisation scalar already folded into these weights (informational)"""
    hookpoint: str | None = None
    """where the activations were read, e.g. layers.4.mlp.neurons (informational)"""
    model: str | None = None
    """model the activations came from (informational)"""
    origin: dict[str, Any] | None = field(default=None, metadata=OMIT_NONE)
    """an SAE loaded from another tool's files: that format, its own names for what differs here (hook
    name, seed, architecture) and the dtype policy applied (informational)"""
    d_out: int | None = field(default=None, metadata=OMIT_NONE)
    """transcoders: width of the output (None: d_in); W_dec is [d_sae, d_out]"""
    output_hookpoint: str | None = field(default=None, metadata=OMIT_NONE)
    """transcoders: where the output is written, e.g. layers.4.mlp.out (hookpoint is the input's)"""
    experts: int | None = field(default=None, metadata=OMIT_NONE)
    """routed: number of experts, each a TopK SAE over d_sae / experts latents (sae/routed.py)"""

    def __post_init__(self) -> None:
        if self.arch not in ARCH_CHECKS:
            raise ConfigError(f"unknown architecture {self.arch!r}; expected one of {sorted(ARCH_CHECKS)}")
        for name in ("d_in", "d_sae"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype {self.dtype!r} not supported; expected one of {sorted(DTYPES)}")
        if self.input_norm not in ("none", "layer_norm", "constant_norm"):
            raise ConfigError(
                f"input_norm {self.input_norm!r} not supported; expected none, layer_norm or constant_norm"
            )
        if self.experts is not None and self.arch != "routed":
            raise ConfigError(f"experts is for arch='routed', not {self.arch!r}; drop it")
        if self.matryoshka_prefixes is not None and self.arch != "matryoshka":
            raise ConfigError(f"matryoshka_prefixes is for arch='matryoshka', not {self.arch!r}; drop it")
        ARCH_CHECKS[self.arch](self)

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]


def check_k(cfg: SAEConfig) -> None:
    """topk, batchtopk: k active latents per token (on average, for batchtopk), and the AuxK knobs."""
    if not isinstance(cfg.k, int) or isinstance(cfg.k, bool) or cfg.k < 1:
        raise ConfigError(f"arch={cfg.arch!r} needs k, the number of active latents per token (>= 1); got k={cfg.k!r}")
    if cfg.k > cfg.d_sae:
        raise ConfigError(f"k={cfg.k} is larger than d_sae={cfg.d_sae}; k must be at most the number of latents")
    if cfg.k_aux is not None and (not isinstance(cfg.k_aux, int) or cfg.k_aux < 1):
        raise ConfigError(f"k_aux must be a positive integer or unset, got {cfg.k_aux!r}")
    if cfg.auxk_coef < 0:
        raise ConfigError(f"auxk_coef must be >= 0, got {cfg.auxk_coef}")


def check_transcoder(cfg: SAEConfig) -> None:
    """transcoder, skip_transcoder: TopK's knobs, and those of every transcoder."""
    check_k(cfg)
    check_transcoder_io(cfg)


def check_transcoder_io(cfg: SAEConfig) -> None:
    """Every transcoder: b_dec is the output's bias, so it is not subtracted from the input; the output
    width, if given, positive; no per-token input normalisation."""
    if cfg.apply_b_dec_to_input:
        raise ConfigError(f"arch={cfg.arch!r}: b_dec lives in the output space; set apply_b_dec_to_input=False")
    if cfg.d_out is not None and (not isinstance(cfg.d_out, int) or isinstance(cfg.d_out, bool) or cfg.d_out < 1):
        raise ConfigError(f"d_out must be a positive integer or unset, got {cfg.d_out!r}")
    if cfg.input_norm != "none":
        raise ConfigError(f"arch={cfg.arch!r} takes input_norm='none' only, got {cfg.input_norm!r}")


def check_routed(cfg: SAEConfig) -> None:
    """routed: TopK's knobs, and experts that split d_sae into equal blocks of at least k latents."""
    check_k(cfg)
    e = cfg.experts
    if not isinstance(e, int) or isinstance(e, bool) or e < 1 or cfg.d_sae % e or cfg.d_sae // e < (cfg.k or 1):
        raise ConfigError(
            f"arch='routed' needs experts, a positive divisor of d_sae={cfg.d_sae} that leaves at least "
            f"k={cfg.k} latents per expert; got experts={e!r}"
        )
    if cfg.input_norm != "none":
        raise ConfigError(f"arch='routed' takes input_norm='none' only, got {cfg.input_norm!r}")


def check_l1(cfg: SAEConfig) -> None:
    """relu, gated: a non-negative L1 coefficient."""
    if not cfg.l1_coefficient >= 0:
        raise ConfigError(f"l1_coefficient must be >= 0, got {cfg.l1_coefficient}")


def check_jumprelu(cfg: SAEConfig) -> None:
    if not cfg.l0_coefficient >= 0:
        raise ConfigError(f"l0_coefficient must be >= 0, got {cfg.l0_coefficient}")
    if not cfg.jumprelu_bandwidth > 0:
        raise ConfigError(f"jumprelu_bandwidth must be > 0, got {cfg.jumprelu_bandwidth}")


def default_prefixes(d_sae: int) -> tuple[int, ...]:
    """Prefixes growing 4x up to d_sae (d_sae/64, d_sae/16, d_sae/4, d_sae; sizes below 1 dropped):
    geometric like the paper's nested dictionaries, with the smallest a few times k at our widths."""
    return tuple(sorted({d_sae // 4**i for i in range(4) if d_sae // 4**i >= 1}))


def matryoshka_prefixes(cfg: SAEConfig) -> tuple[int, ...]:
    """The prefix sizes of a matryoshka config, increasing and ending at d_sae."""
    if cfg.matryoshka_prefixes is None:
        return default_prefixes(cfg.d_sae)
    prefixes = tuple(cfg.matryoshka_prefixes)
    return prefixes if prefixes[-1] == cfg.d_sae else (*prefixes, cfg.d_sae)


def check_matryoshka(cfg: SAEConfig) -> None:
    """matryoshka: k as for batchtopk, and strictly increasing prefix sizes in [1, d_sae]."""
    check_k(cfg)
    p = cfg.matryoshka_prefixes
    if p is not None:
        _check_prefixes(cfg, p)
    cfg.matryoshka_prefixes = matryoshka_prefixes(cfg)  # stated in cfg.json, not left to the default


def _check_prefixes(cfg: SAEConfig, p: tuple[int, ...]) -> None:
    ok = isinstance(p, (list, tuple)) and len(p) > 0 and all(isinstance(m, int) and not isinstance(m, bool) for m in p)
    if not ok or p[0] < 1 or p[-1] > cfg.d_sae or any(a >= b for a, b in zip(p, p[1:])):
        raise ConfigError(
            f"matryoshka_prefixes must be strictly increasing integers between 1 and d_sae={cfg.d_sae} "
            f"(e.g. {list(default_prefixes(cfg.d_sae))}), got {list(p) if isinstance(p, (list, tuple)) else p!r}"
        )


# What each architecture requires of its config, by name. The classes live in registry.py, which
# imports the architectures, which import this module: so the checks are here, and a test keeps
# the two tables' names the same.
ARCH_CHECKS: dict[str, Callable[[SAEConfig], None]] = {
    "relu": check_l1,
    "topk": check_k,
    "batchtopk": check_k,
    "matryoshka": check_matryoshka,
    "jumprelu": check_jumprelu,
    "gated": check_l1,
    "transcoder": check_transcoder,
    "skip_transcoder": check_transcoder,
    "abstopk": check_k,
    "topk_identity": check_k,
    "relu_transcoder": check_transcoder_io,
    "relu_skip_transcoder": check_transcoder_io,
    "jumprelu_transcoder": check_transcoder_io,
    "jumprelu_skip_transcoder": check_transcoder_io,
    "routed": check_routed,
}

#: architectures that read one hookpoint and write another (sae/transcoder.py); the rest reconstruct their input
#: (relu_*, jumprelu_*: loaded from other tools' files, not trained here: sae/transcoder_peers.py)
TRANSCODER_ARCHS = (
    "transcoder",
    "skip_transcoder",
    "relu_transcoder",
    "relu_skip_transcoder",
    "jumprelu_transcoder",
    "jumprelu_skip_transcoder",
)
#: architectures with signed latents (sae/signed.py): loaded from other tools' files, not trained here
SIGNED_ARCHS = ("abstopk", "topk_identity")
SAE_ARCHS = tuple(a for a in ARCH_CHECKS if a not in TRANSCODER_ARCHS + SIGNED_ARCHS)

FOREIGN_HINT = (
    "SAEs of other tools (SAELens, sparsify, OpenAI, dictionary_learning, Gemma Scope) load with "
    "monosemantic.load_sae or convert with `monosemantic convert`"
)


def read_json(path: Path, missing: str = "") -> dict:
    """The JSON object in file `path`; `missing` is appended to the error if there is no such file."""
    if not path.is_file():
        raise SAEFormatError(f"{path}: missing{missing}")
    return read_json_object(path, SAEFormatError)


def read_config(path: str | Path) -> tuple[SAEConfig, str | None]:
    """Parse `path/cfg.json` into an SAEConfig (and the weights' recorded sha256, if any)."""
    cfg_path = Path(path) / CFG_FILE
    raw = read_json(cfg_path, f"; an SAE directory holds {CFG_FILE} and {WEIGHTS_FILE} ({FOREIGN_HINT})")
    sha = raw.pop("sha256", None)
    if "arch" not in raw:
        raise SAEFormatError(f"{cfg_path}: no 'arch' key, so not an SAE saved by monosemantic; {FOREIGN_HINT}")
    try:
        return from_dict(SAEConfig, raw, source=str(cfg_path)), sha
    except ConfigError as e:
        raise SAEFormatError(str(e)) from e


def check_state(expected: dict[str, Tensor], found: dict[str, Tensor], source: str) -> None:
    """Raise SAEFormatError unless `found` has exactly the names, shapes and dtypes of `expected`
    and only finite values."""
    missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or extra:
        raise SAEFormatError(f"{source}: tensors do not match the config: missing {missing}, unexpected {extra}")
    for name, want in expected.items():
        got = found[name]
        if tuple(got.shape) != tuple(want.shape):
            raise SAEFormatError(
                f"{source}: tensor {name!r} has shape {list(got.shape)}, the config implies {list(want.shape)}"
            )
        if got.dtype != want.dtype:
            raise SAEFormatError(f"{source}: tensor {name!r} has dtype {got.dtype}, the config says {want.dtype}")
        if got.is_floating_point() and not torch.isfinite(got).all():
            raise SAEFormatError(f"{source}: tensor {name!r} contains NaN or inf")


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
