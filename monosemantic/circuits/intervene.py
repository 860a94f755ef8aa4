"""Interventions on transcoder features in the real model: every MLP's output replaced by its
transcoder's decode of its (edited) activations plus that layer's error term from the clean run,
kept fixed (Ameisen et al. 2025, "Circuit Tracing", §"Intervention experiments"). Attention and
norms run as usual, so downstream features respond to an edit as the model would make them.

    out = intervene(model, transcoders, ids, [{"layer": 3, "pos": 6, "latent": 40, "value": 0}], [8, 9])
    out["clean"], out["edited"], out["diff"]     # logits of tokens 8, 9 at the last position

An edit's value 0 ablates the feature; any other value sets its activation (steering). With no edits
the result is the clean model's logits exactly: where a layer's input at a position is bit-for-bit its
clean input and no edit touches that position, the MLP's clean output is used as is, which is what
decode + error gives up to rounding.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from monosemantic.errors import MonosemanticError
from monosemantic.models import named_hookpoints
from monosemantic.sae import SAE


class FeatureEditError(MonosemanticError, ValueError):
    """An edit that names no feature of the prompt's transcoders."""


@dataclass(frozen=True)
class Edit:
    layer: int
    pos: int
    latent: int
    value: float


@dataclass
class CleanRun:
    """What the clean forward leaves per layer: MLP input x and output [T, d], latents z [T, d_sae],
    error (output minus the transcoder's decode) [T, d]; and the logits [T, vocab]."""

    x: list[Tensor]
    out: list[Tensor]
    z: list[Tensor]
    errors: list[Tensor]
    logits: Tensor


def parse_edits(edits: Sequence[dict], transcoders: list[SAE], n_pos: int) -> list[Edit]:
    """Edits as dicts {layer, pos, latent, value}, checked against the transcoders and the prompt."""
    out = []
    for e in edits:
        missing = {"layer", "pos", "latent", "value"} - set(e)
        if missing:
            raise FeatureEditError(f"edit {e!r} lacks {sorted(missing)}; give layer, pos, latent and value")
        edit = Edit(int(e["layer"]), int(e["pos"]), int(e["latent"]), float(e["value"]))
        if not 0 <= edit.layer < len(transcoders):
            raise FeatureEditError(f"edit layer {edit.layer}: the transcoders cover layers 0-{len(transcoders) - 1}")
        if not -n_pos <= edit.pos < n_pos:
            raise FeatureEditError(f"edit pos {edit.pos}: the prompt has positions 0-{n_pos - 1}")
        d_sae = transcoders[edit.layer].cfg.d_sae
        if not 0 <= edit.latent < d_sae:
            raise FeatureEditError(f"edit latent {edit.latent}: layer {edit.layer}'s transcoder has 0-{d_sae - 1}")
        out.append(Edit(edit.layer, edit.pos % n_pos, edit.latent, edit.value))
    return out


def _mlp_modules(model: Any, n_layers: int) -> list[Any]:
    named = named_hookpoints(model)
    return [model.get_submodule(named[f"layers.{layer}.mlp.out"].module) for layer in range(n_layers)]


def _mlp_input(args: tuple, kwargs: dict) -> Tensor:
    return args[0] if args else kwargs["hidden_states"]


@torch.no_grad()
def clean_run(model: Any, transcoders: list[SAE], ids: Tensor) -> CleanRun:
    """The model's own forward over ids [T], recording each MLP's input and output on the way."""
    xs: list[Tensor] = []
    outs: list[Tensor] = []

    def record(_module, args, kwargs, output):
        xs.append(_mlp_input(args, kwargs)[0].detach())
        outs.append(output[0].detach())

    handles = [m.register_forward_hook(record, with_kwargs=True) for m in _mlp_modules(model, len(transcoders))]
    try:
        logits = model(input_ids=ids[None]).logits[0]
    finally:
        for h in handles:
            h.remove()
    zs = [tc.encode(x) for tc, x in zip(transcoders, xs)]
    errors = [out - tc.decode(z, x).to(out.dtype) for tc, x, z, out in zip(transcoders, xs, zs, outs)]
    return CleanRun(xs, outs, zs, errors, logits)


@contextlib.contextmanager
def replaced_mlps(model: Any, transcoders: list[SAE], clean: CleanRun, edits: list[Edit]) -> Iterator[None]:
    """Within the block, each MLP's output is its transcoder's decode of the edited latents of its
    actual input, plus the clean error term (batch 1)."""
    modules = _mlp_modules(model, len(transcoders))

    def replacer(layer: int):
        tc, mine = transcoders[layer], [e for e in edits if e.layer == layer]

        def hook(_module, args, kwargs, output):
            x = _mlp_input(args, kwargs)[0]  # [T, d]
            z = tc.encode(x)
            for e in mine:
                z[e.pos, e.latent] = e.value
            y = tc.decode(z, x).to(output.dtype) + clean.errors[layer]
            untouched = (x == clean.x[layer]).all(-1)  # [T]
            untouched[[e.pos for e in mine]] = False
            return torch.where(untouched[:, None], clean.out[layer], y)[None]

        return hook

    handles = [m.register_forward_hook(replacer(i), with_kwargs=True) for i, m in enumerate(modules)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def edited_logits(model: Any, transcoders: list[SAE], clean: CleanRun, ids: Tensor, edits: list[Edit]) -> Tensor:
    """The logits [vocab] at the last position of ids [T] with `edits` (of `clean_run(.., ids)`)."""
    with replaced_mlps(model, transcoders, clean, edits):
        return model(input_ids=ids[None]).logits[0, -1]


@torch.no_grad()
def intervene(
    model: Any, transcoders: list[SAE], ids: Tensor | Sequence[int], edits: Sequence[dict], logit_tokens: Sequence[int]
) -> dict:
    """Logits of `logit_tokens` at the last position, clean and with the feature `edits` applied
    (see the module docstring), their difference, and each edited feature's clean activation."""
    device = next(model.parameters()).device
    ids = torch.as_tensor(ids, device=device).reshape(-1)
    parsed = parse_edits(edits, transcoders, ids.shape[0])
    clean = clean_run(model, transcoders, ids)
    edited = edited_logits(model, transcoders, clean, ids, parsed)
    tokens = torch.as_tensor(list(logit_tokens), device=device, dtype=torch.long)
    before, after = clean.logits[-1, tokens], edited[tokens]
    return {
        "tokens": tokens.tolist(),
        "clean": before.tolist(),
        "edited": after.tolist(),
        "diff": (after - before).tolist(),
        "edits": [
            {
                "layer": e.layer,
                "pos": e.pos,
                "latent": e.latent,
                "value": e.value,
                "clean_value": float(clean.z[e.layer][e.pos, e.latent]),
            }
            for e in parsed
        ],
    }
