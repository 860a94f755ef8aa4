"""A set of transcoders, one per MLP of a model, as `monosemantic train --transcoder` leaves them:

RUN/hookpoints.json         the shared configuration (its model, corpus)
RUN/layers.0.mlp/           cfg.json + sae.safetensors of layer 0's transcoder
RUN/layers.1.mlp/ ...

tset = load_transcoder_set("runs/tc")      # .model (the model spec), .transcoders [layer]
with splice(model, {3: tset.transcoders[3]}):
    model(input_ids=ids)                    # layer 3's MLP output replaced by its transcoder's
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from monosemantic.atomic import read_json_object
from monosemantic.errors import MonosemanticError
from monosemantic.models import named_hookpoints
from monosemantic.sae import SAE
from monosemantic.sae.config import TRANSCODER_ARCHS
from monosemantic.train.rundir import PARENT_FILE


class TranscoderSetError(MonosemanticError, ValueError):
    """A directory that does not hold one transcoder per MLP layer."""


@dataclass
class TranscoderSet:
    path: Path
    model: str
    """the model they were trained on ('builtin' or a directory)"""
    corpus: str
    transcoders: list[SAE]
    """one per layer, in layer order"""


def load_transcoder_set(path: str | Path) -> TranscoderSet:
    """The transcoders of a `train --transcoder` run over every MLP (see the module docstring)."""
    path = Path(path)
    parent = path / PARENT_FILE
    if not parent.is_file():
        raise TranscoderSetError(
            f"{path}: no {PARENT_FILE}; expected the directory of `monosemantic train --transcoder "
            "--hookpoint 'layers.*.mlp' --out DIR` (one transcoder per layer)"
        )
    saved = read_json_object(parent, TranscoderSetError)
    arch = saved.get("sae_options", {}).get("arch")
    if arch not in TRANSCODER_ARCHS:
        raise TranscoderSetError(f"{path}: holds {arch!r} SAEs, not transcoders ({', '.join(TRANSCODER_ARCHS)})")
    names = saved["hookpoints"]
    layers = [int(n.split(".")[1]) for n in names]
    if layers != list(range(len(layers))):
        raise TranscoderSetError(
            f"{path}: has transcoders for layers {layers}; the replacement model needs one for every layer "
            "from 0 (train with --hookpoint 'layers.*.mlp')"
        )
    transcoders = [SAE.load(path / name) for name in names]
    return TranscoderSet(path, saved["data"]["model"], saved["data"]["corpus"], transcoders)


def check_fits(model: Any, transcoders: list[SAE]) -> None:
    """Refuse transcoders whose count or widths do not fit the model's MLPs."""
    named = named_hookpoints(model)
    n = sum(1 for name in named if name.endswith(".mlp.in"))
    if len(transcoders) != n:
        raise TranscoderSetError(f"the model has {n} MLP layers; got {len(transcoders)} transcoders")
    width = model.get_input_embeddings().weight.shape[1]
    bad = [i for i, tc in enumerate(transcoders) if tc.d_in != width]
    if bad:
        raise TranscoderSetError(
            f"transcoder {bad[0]} reads d_in={transcoders[bad[0]].d_in}; the model's width is {width}"
        )


@contextlib.contextmanager
def splice(model: nn.Module, transcoders: dict[int, SAE], keep: Tensor | None = None) -> Iterator[None]:
    """Replace the output of the MLP of each layer in `transcoders` by its transcoder's output on that
    MLP's own input (where `keep` [B, T] is true; elsewhere the MLP's output stays)."""
    named = named_hookpoints(model)
    handles = []

    def replacer(tc: SAE):
        def hook(_module, args, output):
            x = args[0]
            y = tc.transcode(x).to(output.dtype)  # type: ignore[operator]
            return y if keep is None else torch.where(keep[..., None], y, output)

        return hook

    try:
        for layer, tc in transcoders.items():
            module = model.get_submodule(named[f"layers.{layer}.mlp.out"].module)
            handles.append(module.register_forward_hook(replacer(tc)))
        yield
    finally:
        for h in handles:
            h.remove()
