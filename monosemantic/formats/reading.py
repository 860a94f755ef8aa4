"""What every reader of another tool's files needs: safe unpickling, config values and tensors checked
against declared shapes, the orientation check for square matrices, and building our SAE.

Every refusal is an `SAEFormatError` naming the file, the key, the value found and what was expected.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from monosemantic.config import ConfigError
from monosemantic.sae import ARCHITECTURES, SAE, SAEConfig, SAEFormatError
from monosemantic.sae.config import DTYPES, check_state


@dataclass(frozen=True)
class LoadOptions:
    """What the caller of `load_sae` decides for every reader."""

    allow_square: bool = False
    """accept d_in == d_sae, where a transposed weight matrix cannot be detected"""
    dtype: str | None = None
    """compute in this dtype instead of the one the tool's own loader would use"""
    activation_scale: float | None = None
    """SAELens expected_average_only_in: the dataset-wide input factor, where activation_scaler.json is missing"""


def choose_dtype(file_dtype: torch.dtype, upcast_by: str | None, override: str | None, source: Path | str) -> dict:
    """Our dtype for weights stored in `file_dtype`, as the tool's own loader computes, and the policy
    stated in cfg.json. `upcast_by`: the loader that builds float32 modules and copies the file into
    them (OpenAI, dictionary_learning, Gemma Scope), so half-precision files compute in float32;
    None: the tool keeps the file's dtype (SAELens, sparsify). `override` (--dtype) wins."""
    stored = dtype_name(file_dtype, source)
    if override is not None:
        if override not in DTYPES:
            raise SAEFormatError(f"dtype {override!r} not supported; expected one of {sorted(DTYPES)}")
        return {"dtype": override, "file_dtype": stored, "dtype_policy": f"{override}, as asked (--dtype)"}
    if upcast_by is not None and stored in ("bfloat16", "float16"):
        return {"dtype": "float32", "file_dtype": stored, "dtype_policy": f"upcast to float32, as {upcast_by} does"}
    policy = "kept, as the tool's loader does" if upcast_by is None else f"kept (float32 or wider; {upcast_by})"
    return {"dtype": stored, "file_dtype": stored, "dtype_policy": policy}


def cast_all(tensors: dict[str, Tensor], dtype: str) -> dict[str, Tensor]:
    """Every tensor in `dtype`, before any arithmetic on them: the tools fold norms and scales in the
    dtype they compute in."""
    return {k: v.to(DTYPES[dtype]) for k, v in tensors.items()}


def origin(fmt: str, policy: dict, **names: object) -> dict:
    """cfg.json's `origin`: the format, the dtype policy, and the tool's own names (None ones left out)."""
    out = {"format": fmt, "file_dtype": policy["file_dtype"], "dtype_policy": policy["dtype_policy"]}
    out.update({k: v for k, v in names.items() if v is not None})
    return out


def read_pickle(path: Path) -> dict[str, Any]:
    """A torch.save'd state dict, unpickled only with `torch.load(weights_only=True)`: tensors and
    plain containers are rebuilt, and any other object is refused before any code of it runs."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        what = f" (it references {found.group(1)})" if found else ""
        raise SAEFormatError(
            f"{path}: refused to unpickle{what}: the file holds objects other than tensors and plain "
            "containers; monosemantic loads pickles only with torch.load(weights_only=True), which never "
            "runs code from the file. Convert it to safetensors with the tool that wrote it."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise SAEFormatError(f"{path}: not a readable torch.save file ({e})") from e
    if not isinstance(obj, dict):
        raise SAEFormatError(f"{path}: expected a state dict (a dict of tensors), got a {type(obj).__name__}")
    return obj


_REQUIRED = object()


def get(
    cfg: dict[str, Any], key: str, types: type | tuple[type, ...], source: Path | str, default: Any = _REQUIRED
) -> Any:
    """cfg[key], which must be of `types`, and present unless a default is given."""
    if key not in cfg:
        if default is not _REQUIRED:
            return default
        raise SAEFormatError(f"{source}: missing key {key!r}")
    value = cfg[key]
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in _as_tuple(types)):
        raise SAEFormatError(f"{source}: key {key!r} is {value!r}; expected {_type_names(types)}")
    return value


def take(tensors: dict[str, Any], key: str, shape: tuple[int, ...], layout: str, source: Path | str) -> Tensor:
    """tensors[key], which must be a tensor of `shape`; `layout` names the dimensions, e.g. "[d_sae, d_in]"."""
    if key not in tensors:
        raise SAEFormatError(f"{source}: missing tensor {key!r}; the file holds {sorted(tensors)}")
    t = tensors[key]
    if not isinstance(t, Tensor):
        raise SAEFormatError(f"{source}: {key!r} is a {type(t).__name__}, expected a tensor {layout}")
    if tuple(t.shape) != tuple(shape):
        hint = " (transposed?)" if tuple(t.shape) == tuple(shape)[::-1] else ""
        raise SAEFormatError(
            f"{source}: tensor {key!r} has shape {list(t.shape)}; expected {layout} = {list(shape)}{hint}"
        )
    return t


def length(tensors: dict[str, Any], key: str, name: str, source: Path | str) -> int:
    """The length of the 1-D tensor tensors[key], which declares dimension `name` (d_in, d_sae)."""
    if key not in tensors:
        raise SAEFormatError(f"{source}: missing tensor {key!r}; the file holds {sorted(tensors)}")
    t = tensors[key]
    if not isinstance(t, Tensor) or t.ndim != 1:
        got = list(t.shape) if isinstance(t, Tensor) else type(t).__name__
        raise SAEFormatError(f"{source}: {key!r} is {got}; expected a 1-D tensor [{name}]")
    return t.shape[0]


def check_unexpected(tensors: dict[str, Any], known: set[str], source: Path | str, what: str) -> None:
    """Refuse tensors the reader does not understand: they may change the maths."""
    extra = sorted(set(tensors) - known)
    if extra:
        raise SAEFormatError(f"{source}: unexpected entries {extra} for {what}; expected only {sorted(known)}")


def check_orientation(d_in: int, d_sae: int, source: Path | str, allow_square: bool) -> None:
    """With d_in == d_sae every weight matrix is square: a transposed one would pass every shape
    check and load silently wrong, so it takes the caller's word (allow_square) to go on."""
    if d_in == d_sae and not allow_square:
        raise SAEFormatError(
            f"{source}: d_in == d_sae == {d_in}, so the weight matrices are square and their orientation "
            "cannot be checked against the declared shapes; if the file is known to follow its tool's "
            "layout, load it with allow_square=True (monosemantic convert --allow-square)"
        )


def dtype_name(dtype: torch.dtype, source: Path | str) -> str:
    for name, d in DTYPES.items():
        if d == dtype:
            return name
    raise SAEFormatError(f"{source}: weights of dtype {dtype}; expected one of {sorted(DTYPES)}")


def build_sae(
    cfg: dict[str, Any], tensors: dict[str, Tensor], source: Path | str, device: torch.device | str | None = None
) -> SAE:
    """Our SAE from SAEConfig fields `cfg` and our tensor names, cast to cfg's dtype and checked."""
    try:
        sae_cfg = SAEConfig(**cfg)
    except ConfigError as e:
        raise SAEFormatError(f"{source}: {e}") from e
    tensors = {k: v.detach().to(sae_cfg.torch_dtype).contiguous() for k, v in tensors.items()}
    with torch.device("meta"):
        sae = ARCHITECTURES[sae_cfg.arch](sae_cfg)
    check_state(sae.state_dict(), tensors, str(source))
    return sae.assign_(tensors, device)


def fold_decoder_norms(W_enc: Tensor, b_enc: Tensor, W_dec: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Unit-norm decoder rows with the same reconstruction: latent i is multiplied by ||W_dec_i||."""
    norms = W_dec.norm(dim=1)  # [d_sae]
    return W_enc * norms, b_enc * norms, W_dec / norms[:, None]


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _type_names(types: type | tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in _as_tuple(types))
