"""Language models: load a Hugging Face causal LM from a local directory (or the built-in one), and
name the places where activations can be read or written (hookpoints).

A hookpoint is `layers.<i>.<site>`, with sites
    resid.pre     the residual stream entering block i
    resid.mid     the residual stream between attention and MLP (not in parallel-residual blocks)
    resid.post    the residual stream leaving block i
    attn.out      the attention sublayer's output
    mlp.neurons   the MLP's hidden activations after the nonlinearity ("the neurons")
    mlp.out       the MLP sublayer's output
or the path of any module (its output), e.g. `transformer.h.3.mlp.c_fc`. Glob patterns select several
(`layers.*.mlp.neurons`).

    model, tokenizer = load_model("builtin")
    [hook] = resolve_hookpoints(model, "layers.4.mlp.neurons")
"""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from monosemantic.errors import MonosemanticError

log = logging.getLogger(__name__)

BUILTIN = "builtin"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SITES = ("resid.pre", "resid.mid", "resid.post", "attn.out", "mlp.neurons", "mlp.out")


class ModelError(MonosemanticError, ValueError):
    """A model directory or hookpoint that cannot be used: missing files, unknown names, bad shapes."""


@dataclass(frozen=True)
class Family:
    """Where a model family keeps its parts (module paths; `block.` ones relative to a block)."""

    blocks: str
    attn: str
    mlp: str
    neurons: tuple[str, Literal["input", "output"]]  # the module whose input/output are the neurons
    mid_norm: str | None  # the module whose input is resid.mid (None: parallel residual)
    final_norm: str
    unembed: str
    mlp_down: str  # the MLP's output projection (neurons -> residual stream), relative to a block


FAMILIES = {
    "gpt2": Family(
        "transformer.h", "attn", "mlp", ("mlp.act", "output"), "ln_2", "transformer.ln_f", "lm_head", "mlp.c_proj"
    ),
    "llama": Family(
        "model.layers",
        "self_attn",
        "mlp",
        ("mlp.down_proj", "input"),
        "post_attention_layernorm",
        "model.norm",
        "lm_head",
        "mlp.down_proj",
    ),
    "gpt_neox": Family(
        "gpt_neox.layers",
        "attention",
        "mlp",
        ("mlp.act", "output"),
        "post_attention_layernorm",
        "gpt_neox.final_layer_norm",
        "embed_out",
        "mlp.dense_4h_to_h",
    ),
}
for _name in ("mistral", "qwen2", "qwen3", "gemma", "olmo", "phi3"):
    FAMILIES[_name] = FAMILIES["llama"]


@dataclass(frozen=True)
class Hookpoint:
    """A named place in a model: the output (or the first input) of the module at `module`."""

    name: str
    module: str
    kind: Literal["input", "output"]
    layer: int | None = None


def family_of(model: nn.Module) -> Family:
    model_type = getattr(model.config, "model_type", None)
    if model_type not in FAMILIES:
        raise ModelError(
            f"model type {model_type!r} has no named hookpoints yet (known: {sorted(FAMILIES)}); "
            "address its modules by path instead, e.g. 'model.layers.3.mlp'"
        )
    return FAMILIES[model_type]


def n_layers(model: nn.Module) -> int:
    return len(model.get_submodule(family_of(model).blocks))


def parallel_residual(model: nn.Module) -> bool:
    return bool(getattr(model.config, "use_parallel_residual", False))


def named_hookpoints(model: nn.Module) -> dict[str, Hookpoint]:
    """Every `layers.<i>.<site>` hookpoint of this model."""
    fam = family_of(model)
    out = {}
    for i in range(n_layers(model)):
        block = f"{fam.blocks}.{i}"
        sites = {
            "resid.pre": (block, "input"),
            "resid.post": (block, "output"),
            "attn.out": (f"{block}.{fam.attn}", "output"),
            "mlp.neurons": (f"{block}.{fam.neurons[0]}", fam.neurons[1]),
            "mlp.out": (f"{block}.{fam.mlp}", "output"),
        }
        if fam.mid_norm is not None and not parallel_residual(model):
            sites["resid.mid"] = (f"{block}.{fam.mid_norm}", "input")
        for site in SITES:
            if site in sites:
                module, kind = sites[site]
                out[f"layers.{i}.{site}"] = Hookpoint(f"layers.{i}.{site}", module, kind, i)
    return out


def describe_hookpoints(model: nn.Module) -> str:
    try:
        names = named_hookpoints(model)
    except ModelError:
        return "module paths such as " + ", ".join(n for n, _ in list(model.named_modules())[1:6])
    sites = sorted({n.split(".", 2)[2] for n in names}, key=SITES.index)
    return f"layers.{{0-{n_layers(model) - 1}}}.{{{','.join(sites)}}}, or any module path"


def resolve_hookpoints(model: nn.Module, patterns: str | list[str]) -> list[Hookpoint]:
    """Hookpoints matching names, glob patterns or module paths, in model order; unknown ones are an
    error that lists what exists."""
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    try:
        named = named_hookpoints(model)
    except ModelError:
        named = {}
    modules = dict(model.named_modules())
    found: dict[str, Hookpoint] = {}
    for pattern in patterns:
        hits = [h for name, h in named.items() if fnmatch.fnmatchcase(name, pattern)]
        if not hits and pattern in modules and pattern:
            hits = [Hookpoint(pattern, pattern, "output")]
        if not hits:
            raise ModelError(f"hookpoint {pattern!r} not found; this model has {describe_hookpoints(model)}")
        for h in hits:
            found.setdefault(h.name, h)
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    return sorted(found.values(), key=lambda h: (order[h.module], h.kind == "output", h.name))


def model_dir(spec: str | Path) -> Path:
    """The directory of `spec` ('builtin' or a path), checked to hold a config and safetensors weights."""
    if str(spec) == BUILTIN:
        from monosemantic.mathlm import BUILTIN_MODEL_DIR

        path = BUILTIN_MODEL_DIR
    else:
        path = Path(spec)
    if not path.is_dir():
        raise ModelError(
            f"model directory {path} does not exist (give a local Hugging Face model directory, or 'builtin')"
        )
    if not (path / "config.json").is_file():
        raise ModelError(f"{path}: no config.json; a Hugging Face model directory holds config.json and weights")
    if not any((path / f).is_file() for f in ("model.safetensors", "model.safetensors.index.json")):
        pickled = [f for f in ("pytorch_model.bin", "pytorch_model.bin.index.json") if (path / f).exists()]
        hint = (
            (
                f" (it has {pickled[0]}: pickled weights are not loaded, since unpickling can run code; "
                "convert them to safetensors)"
            )
            if pickled
            else ""
        )
        raise ModelError(f"{path}: no model weights: expected model.safetensors{hint}")
    return path


def load_model(spec: str | Path = BUILTIN, *, dtype: str = "float32", device: str = "cpu"):
    """(model, tokenizer) from a local directory, offline, weights through safetensors only; the
    model is in eval mode with gradients off."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our commands show their own progress
    path = model_dir(spec)
    if dtype not in DTYPES:
        raise ModelError(f"dtype {dtype!r} not supported; expected one of {sorted(DTYPES)}")
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, local_files_only=True, use_safetensors=True, dtype=DTYPES[dtype]
        )
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise ModelError(f"{path}: cannot load the model ({e})") from e
    if tokenizer.pad_token_id is None:  # e.g. GPT-2's tokenizer: padding is masked out anyway
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device).eval().requires_grad_(False)
    return model, tokenizer


def model_name(spec: str | Path) -> str:
    """How a model is recorded in configs: 'builtin', or the directory's absolute path."""
    return BUILTIN if str(spec) == BUILTIN else str(Path(spec).resolve())


def direct_logit_path(model: nn.Module, hookpoint: str):
    """The map of a direction at `hookpoint` to the logits along the direct path: through the MLP's
    output projection for `mlp.neurons`, then the final norm taken as linear (its gain, and centring
    for LayerNorm; the per-token scale is left out, as in direct logit attribution), then the
    unembedding. [n, d_hook] -> [n, vocab]. None where the hookpoint is not a named one."""
    try:
        hook = named_hookpoints(model).get(hookpoint)
    except ModelError:
        return None
    if hook is None:
        return None
    fam = family_of(model)
    norm = model.get_submodule(fam.final_norm)
    unembed = model.get_submodule(fam.unembed)
    down = (
        model.get_submodule(f"{fam.blocks}.{hook.layer}.{fam.mlp_down}") if hookpoint.endswith("mlp.neurons") else None
    )

    def to_logits(directions: torch.Tensor) -> torch.Tensor:
        x = directions.to(unembed.weight.dtype)
        if down is not None:
            x = down(x) - down(torch.zeros_like(x[:1]))  # the projection without its bias
        if isinstance(norm, nn.LayerNorm):
            x = x - x.mean(-1, keepdim=True)
        gain = norm.weight
        if "Gemma" in type(norm).__name__:  # Gemma's RMSNorm scales by (1 + weight)
            gain = 1 + gain
        return (x * gain) @ unembed.weight.T

    return to_logits
