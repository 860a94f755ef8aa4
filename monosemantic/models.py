"""Language models: load a Hugging Face causal LM from a local directory (or the built-in one), and
name the places where activations can be read or written (hookpoints).

A hookpoint is `layers.<i>.<site>`, with sites
    resid.pre     the residual stream entering block i
    resid.mid     the residual stream between attention and MLP (not in parallel-residual blocks)
    resid.post    the residual stream leaving block i
    attn.out      the attention sublayer's output
    mlp.in        the MLP's input, after its norm (what a transcoder reads)
    mlp.neurons   the MLP's hidden activations after the nonlinearity ("the neurons")
    mlp.out       the MLP sublayer's output
or the path of any module (its output), e.g. `transformer.h.3.mlp.c_fc`. Glob patterns select several
(`layers.*.mlp.neurons`).

Also what every user of a model shares: its context length, greedy decoding and next-token
log-probabilities.

    model, tokenizer = load_model("builtin")
    [hook] = resolve_hookpoints(model, "layers.4.mlp.neurons")
    context_length(model)                                         # 64
    greedy_complete(model, tokenizer, ["12 + 7 = "], max_new=4)   # ["19."]
"""

from __future__ import annotations

import fnmatch
import inspect
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from monosemantic.data.corpora import prompt_ids
from monosemantic.errors import MonosemanticError

log = logging.getLogger(__name__)

BUILTIN = "builtin"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SITES = ("resid.pre", "resid.mid", "resid.post", "attn.out", "mlp.in", "mlp.neurons", "mlp.out")


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
            "mlp.in": (f"{block}.{fam.mlp}", "input"),
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
    check_weight_index(path / "model.safetensors.index.json")
    return path


def check_weight_index(index: Path) -> None:
    """Refuse a sharded-weights index that names anything but .safetensors files in its directory:
    transformers would load a `.bin` it names with torch.load, i.e. unpickle it."""
    if not index.is_file():
        return
    try:
        raw = json.loads(index.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelError(f"{index}: not valid JSON ({e})") from e
    weight_map = raw.get("weight_map") if isinstance(raw, dict) else None
    if not isinstance(weight_map, dict):
        raise ModelError(f"{index}: expected a 'weight_map' object of tensor name -> .safetensors file")
    # a plain file name: transformers joins it to the directory, so "../x" or "/x" would leave it
    bad = sorted({repr(f) for f in weight_map.values() if not (isinstance(f, str) and _safetensors_name(f))})
    if bad:
        raise ModelError(
            f"{index}: weight_map names {', '.join(bad[:3])}, not .safetensors files of this "
            "directory; pickled weights are not loaded, since unpickling can run code: convert them to safetensors"
        )


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


def _safetensors_name(name: str) -> bool:
    return name.endswith(".safetensors") and name == Path(name).name and name not in (".", "..")


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


def context_length(model: nn.Module) -> int | None:
    """Positions the model can attend over (None when its config does not say)."""
    cfg = model.config
    return getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)


def device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


# ---- decoding ------------------------------------------------------------------------------------


def _cache_argument(model: nn.Module) -> str:
    """The name the model's forward takes its KV cache under: transformers 5.24 renamed
    `past_key_values` (deprecated, removed in 5.40) to `cache`; `pyproject.toml` allows both."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


@dataclass
class Greedy:
    tokens: Tensor  # [B, n] the new tokens; a row that produced EOS repeats it to the end
    first_logits: Tensor  # [B, vocab] float32, the next-token logits right after the prompt


def _next_logits(model: nn.Module, ids: Tensor, past, cache_arg: str | None) -> tuple[Tensor, object]:
    """[B, vocab] float32 logits of the token after ids [B, T], and the new KV cache (with `cache_arg`,
    the forward reads only the last token and the cache `past` holds the others)."""
    if cache_arg is None:
        return model(input_ids=ids).logits[:, -1].float(), None
    out = model(input_ids=ids if past is None else ids[:, -1:], use_cache=True, **{cache_arg: past})
    return out.logits[:, -1].float(), out[cache_arg]


@torch.no_grad()
def greedy_decode(model: nn.Module, input_ids: Tensor, max_new: int, eos: int | None, *, cache: bool = False) -> Greedy:
    """Greedy continuation of the rows of input_ids [B, T] (prompts of one length: no padding) until
    every row has produced EOS, or `max_new` tokens; one forward per new token (and one for 0).

    Without `cache` each step reruns the whole sequence, so interventions that select positions
    (`positions=slice(1, None)`) see all of them; with it each step feeds only the new token and
    the KV cache holds the rest, which is faster but shows such interventions one position a step."""
    cache_arg = _cache_argument(model) if cache else None
    logits, past = _next_logits(model, input_ids, None, cache_arg)
    first, ids = logits, input_ids
    done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    new: list[Tensor] = []
    while len(new) < max_new:
        nxt = logits.argmax(-1)  # [B]
        if eos is not None:
            nxt = torch.where(done, torch.full_like(nxt, eos), nxt)  # finished rows pad with EOS
            done |= nxt == eos
        new.append(nxt)
        ids = torch.cat([ids, nxt[:, None]], dim=1)
        if len(new) == max_new or bool(done.all()):
            break
        logits, past = _next_logits(model, ids, past, cache_arg)
    tokens = torch.stack(new, 1) if new else input_ids.new_zeros(input_ids.shape[0], 0)
    return Greedy(tokens, first)


def by_length(sequences: list[list[int]]) -> dict[int, list[int]]:
    """Indices of the sequences grouped by their length (groups run as batches without padding)."""
    groups: dict[int, list[int]] = {}
    for i, seq in enumerate(sequences):
        groups.setdefault(len(seq), []).append(i)
    return groups


def greedy_complete(
    model: nn.Module, tokenizer, prompts: list[str], max_new: int, batch_size: int = 256, progress: bool = False
) -> list[str]:
    """Greedy continuations (until EOS, `max_new` tokens or the end of the context) of each prompt,
    as text; prompts of one length are decoded together. `progress`: a bar over the prompts."""
    from tqdm.auto import tqdm

    device, eos = device_of(model), tokenizer.eos_token_id
    encoded = [prompt_ids(tokenizer, p) for p in prompts]
    limit = context_length(model) or 10**9
    out: list[str] = [""] * len(prompts)
    bar = tqdm(total=len(prompts), desc="decoding", unit="prompt", disable=not progress)
    for length, members in by_length(encoded).items():
        n = min(max_new, limit - length)
        if n <= 0:
            bar.update(len(members))
            continue  # no room left in the context: an empty continuation
        for start in range(0, len(members), batch_size):
            idx = members[start : start + batch_size]
            ids = torch.tensor([encoded[i] for i in idx], device=device)
            for i, tokens in zip(idx, greedy_decode(model, ids, n, eos).tokens.tolist()):
                if eos in tokens:
                    tokens = tokens[: tokens.index(eos)]
                out[i] = tokenizer.decode(tokens, skip_special_tokens=True)
            bar.update(len(idx))
    bar.close()
    return out


# ---- log-probabilities ---------------------------------------------------------------------------


@torch.inference_mode()
def last_logprobs(model: nn.Module, sequences: list[list[int]]) -> Tensor:
    """[n, vocab] next-token log-probabilities after each token sequence (on the CPU); sequences
    of one length run together, without padding."""
    rows: dict[int, Tensor] = {}
    for members in by_length(sequences).values():
        ids = torch.tensor([sequences[i] for i in members], device=device_of(model))
        logits = model(input_ids=ids).logits[:, -1].float()  # [len(members), vocab]
        rows.update(zip(members, F.log_softmax(logits, -1).cpu()))
    return torch.stack([rows[i] for i in range(len(sequences))])


@torch.inference_mode()
def target_logprobs(
    model: nn.Module, pairs: list[tuple[list[int], list[int]]], pad: int, batch_size: int = 64
) -> list[Tensor]:
    """Per (prompt, target) pair of token lists, the [len(target), vocab] log-probabilities of the
    next token at each target position, teacher forced (on the CPU); batches are right-padded with
    `pad` and masked."""
    out = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        width = max(len(p) + len(t) for p, t in chunk)
        ids = torch.full((len(chunk), width), pad)
        mask = torch.zeros(len(chunk), width, dtype=torch.long)
        for r, (p, t) in enumerate(chunk):
            ids[r, : len(p) + len(t)] = torch.tensor(p + t)
            mask[r, : len(p) + len(t)] = 1
        device = device_of(model)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float().cpu()
        for r, (p, t) in enumerate(chunk):
            out.append(F.log_softmax(logits[r, len(p) - 1 : len(p) - 1 + len(t)], -1))
    return out
