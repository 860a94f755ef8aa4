"""Interventions on transcoder features in the real model, for the graph view (a stand-in with the
signature of `circuits/intervene.py`, which the circuits branch writes; the graph view calls whichever
is there, see `graphs.intervene_fn`).

    intervene(model, transcoders, ids, [{"layer": 3, "pos": 9, "latent": 40, "value": 0.0}], [284, 17])
    -> {"logit_tokens", "clean", "edited"}: the logits of `logit_tokens` at the last position, and "top"

Every MLP's output becomes its transcoder's decode of the (edited) feature activations plus the error
term of the clean pass (MLP output minus the transcoder's, per position), so that with no edits the model
is exactly itself, and an edit changes the output by exactly (value - z) * W_dec[latent] at its layer;
later layers' features are recomputed from their changed inputs. Attention and norms run as usual.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from monosemantic.models import named_hookpoints
from monosemantic.sae import SAE


@contextlib.contextmanager
def _mlp_hooks(model: nn.Module, hook_of_layer) -> Iterator[None]:
    named = named_hookpoints(model)
    handles = []
    try:
        for layer in range(sum(1 for n in named if n.endswith(".mlp.out"))):
            module = model.get_submodule(named[f"layers.{layer}.mlp.out"].module)
            handles.append(module.register_forward_hook(hook_of_layer(layer)))
        yield
    finally:
        for h in handles:
            h.remove()


def _errors(model: nn.Module, transcoders: list[SAE], ids: Tensor) -> tuple[list[Tensor], Tensor]:
    """Per layer the clean error [T, d_out] (MLP output minus transcoder output), and the clean logits [T, vocab]."""
    errors: list[Tensor] = [torch.empty(0)] * len(transcoders)

    def record(layer: int):
        def hook(_module, args, output):
            errors[layer] = output[0] - transcoders[layer].transcode(args[0][0]).to(output.dtype)

        return hook

    with _mlp_hooks(model, record):
        logits = model(input_ids=ids[None]).logits[0]
    return errors, logits


@torch.no_grad()
def intervene(model: nn.Module, transcoders: list[SAE], ids: Tensor, edits: list[dict], logit_tokens: list[int]) -> dict:
    """The logits of `logit_tokens` after `ids` [T] in the model, clean and with each edit's feature
    (`latent` of layer `layer`'s transcoder at position `pos`) set to `value`; see the module docstring."""
    errors, clean = _errors(model, transcoders, ids)
    by_layer: dict[int, list[dict]] = {}
    for e in edits:
        by_layer.setdefault(int(e["layer"]), []).append(e)

    def replace(layer: int):
        tc = transcoders[layer]

        def hook(_module, args, output):
            x = args[0][0]  # [T, d_in]
            z = tc.encode(x)  # [T, d_sae]
            for e in by_layer.get(layer, []):
                z[int(e["pos"]), int(e["latent"])] = float(e["value"])
            return (tc.decode(z, x).to(output.dtype) + errors[layer])[None]

        return hook

    with _mlp_hooks(model, replace):
        edited = model(input_ids=ids[None]).logits[0]
    tokens = torch.tensor(logit_tokens, dtype=torch.long)
    after = edited[-1].float().softmax(-1)
    top = after.topk(min(10, after.shape[0]))
    return {
        "logit_tokens": list(logit_tokens),
        "clean": clean[-1, tokens].tolist(),
        "edited": edited[-1, tokens].tolist(),
        "clean_probs": clean[-1].float().softmax(-1)[tokens].tolist(),
        "edited_probs": after[tokens].tolist(),
        "top": list(zip(top.indices.tolist(), top.values.tolist())),
    }
