"""Hook names across tools: our hookpoints (`layers.<i>.<site>`, see `monosemantic.models`) in the
names TransformerLens (hence SAELens) and sparsify use, both ways.

    site          ours                  TransformerLens            sparsify (GPT-2 | Llama-like | GPT-NeoX)
    resid.pre     layers.4.resid.pre    blocks.4.hook_resid_pre    h.3 | layers.3 | layers.3 (block 3's output)
    resid.mid     layers.4.resid.mid    blocks.4.hook_resid_mid    - (sparsify reads module outputs)
    resid.post    layers.4.resid.post   blocks.4.hook_resid_post   h.4 | layers.4 | layers.4
    attn.out      layers.4.attn.out     blocks.4.hook_attn_out     h.4.attn | layers.4.self_attn | layers.4.attention
    mlp.in        layers.4.mlp.in       -                          -
    mlp.neurons   layers.4.mlp.neurons  blocks.4.mlp.hook_post     h.4.mlp.act | - | layers.4.mlp.act
    mlp.out       layers.4.mlp.out      blocks.4.hook_mlp_out      h.4.mlp | layers.4.mlp | layers.4.mlp

TransformerLens names one site the same way in every family. sparsify names the output of a module
under the model's `base_model` (GPT-2: `h.4.mlp`), so its names depend on the family; where a site
is no module's output here (resid.mid, block 0's resid.pre, Llama's neurons, which are the input of
`down_proj`, and mlp.in, which sparsify's transcoders read as the MLP module's input) it has no
sparsify name. mlp.in (the MLP's input, after its norm) has no TransformerLens name either:
`ln2.hook_normalized` comes before the norm's weight and bias, so it equals mlp.in only once
TransformerLens has folded them into the MLP (`fold_ln`), which changes the weights a transcoder reads.
Names outside these tables are kept as they are.
"""

from __future__ import annotations

import json
import re

from monosemantic.models import FAMILIES, Family, ModelError, model_dir

TL_SITES = {
    "hook_resid_pre": "resid.pre",
    "hook_resid_mid": "resid.mid",
    "hook_resid_post": "resid.post",
    "hook_attn_out": "attn.out",
    "mlp.hook_post": "mlp.neurons",
    "hook_mlp_out": "mlp.out",
}
OUR_TO_TL = {site: tl for tl, site in TL_SITES.items()}
# sparsify's module names below `base_model`: block list, then attention, MLP and activation modules
SPARSIFY_SITES = {None: "resid.post", "mlp": "mlp.out", "mlp.act": "mlp.neurons"}
SPARSIFY_ATTN = ("attn", "self_attn", "attention")
OURS = re.compile(r"layers\.(\d+)\.(resid\.pre|resid\.mid|resid\.post|attn\.out|mlp\.neurons|mlp\.out)")


def from_transformer_lens(name: str) -> str | None:
    """Our hookpoint for a TransformerLens hook name (`blocks.4.hook_mlp_out` -> `layers.4.mlp.out`)."""
    m = re.fullmatch(r"blocks\.(\d+)\.(.+)", name)
    if m is None or m.group(2) not in TL_SITES:
        return None
    return f"layers.{m.group(1)}.{TL_SITES[m.group(2)]}"


def to_transformer_lens(hookpoint: str | None) -> str | None:
    """The TransformerLens hook name of our hookpoint, or None if it is not a named site."""
    m = OURS.fullmatch(hookpoint or "")
    return None if m is None else f"blocks.{m.group(1)}.{OUR_TO_TL[m.group(2)]}"


def from_sparsify(name: str) -> str | None:
    """Our hookpoint for a sparsify hookpoint (`h.4.mlp`, `layers.4.self_attn` -> ...)."""
    m = re.fullmatch(r"(?:h|layers)\.(\d+)(?:\.(.+))?", name)
    if m is None:
        return None
    suffix = m.group(2)
    site = "attn.out" if suffix in SPARSIFY_ATTN else SPARSIFY_SITES.get(suffix)
    return None if site is None else f"layers.{m.group(1)}.{site}"


def to_sparsify(hookpoint: str | None, family: Family) -> str | None:
    """sparsify's hookpoint (a module path under `base_model`) for our hookpoint in `family`, or None."""
    m = OURS.fullmatch(hookpoint or "")
    if m is None:
        return None
    layer, site = int(m.group(1)), m.group(2)
    blocks = family.blocks.split(".", 1)[1]  # "transformer.h" -> "h": relative to base_model
    if site == "resid.pre":
        return f"{blocks}.{layer - 1}" if layer > 0 else None
    module = {"resid.post": None, "attn.out": family.attn, "mlp.out": family.mlp}.get(site, "")
    if site == "mlp.neurons":
        module = family.neurons[0] if family.neurons[1] == "output" else ""
    if module == "":
        return None
    return f"{blocks}.{layer}" + (f".{module}" if module else "")


def family_of_model(model: str | None) -> Family | None:
    """The family of the model an SAE records (`builtin` or a local directory), if it can be read."""
    if model is None:
        return None
    try:
        path = model_dir(model)
        model_type = json.loads((path / "config.json").read_text()).get("model_type")
    except (ModelError, OSError, ValueError):
        return None
    return FAMILIES.get(model_type)
