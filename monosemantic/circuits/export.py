"""Export a transcoder set (one per MLP) in circuit-tracer's layout (circuit-tracer 0.5.0,
`circuit_tracer/transcoder/single_layer_transcoder.py` and `utils/hf_utils.py`):

OUT/config.yaml             model_kind: transcoder_set, feature_input_hook, feature_output_hook,
                            transcoders (the layer files' absolute paths, in layer order), model_name,
                            scan; circuit-tracer's cache loader globs layer_*.safetensors instead
OUT/layer_0.safetensors     W_enc [d_sae, d_in], W_dec [d_sae, d_out], b_enc [d_sae], b_dec [d_out],
OUT/layer_1.safetensors     W_skip [d_out, d_in] (skip transcoders: it computes x @ W_skip.T), ...

circuit-tracer's `load_relu_transcoder` applies ReLU, or JumpReLU where the file has
`activation_function.threshold`; it has no TopK for per-layer transcoders. Our transcoders are TopK,
so config.yaml records `activation: topk` and `k`, and after loading the activation must be set:

    for tc in transcoder_set: tc.activation_function = TopK(k)   # circuit_tracer.transcoder.activation_functions

The hooks are TransformerLens names as circuit-tracer wraps each MLP (`mlp.hook_in`: the MLP's
input after its norm, `mlp.hook_out`: its output), i.e. our `layers.L.mlp.in` and `layers.L.mlp.out`.
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml  # type: ignore[import-untyped]  # a dependency of transformers
from safetensors.torch import save

from monosemantic.atomic import atomic_write_bytes, atomic_write_text
from monosemantic.circuits.transcoders import TranscoderSet

FEATURE_INPUT_HOOK = "mlp.hook_in"
FEATURE_OUTPUT_HOOK = "mlp.hook_out"


def circuit_tracer_tensors(tc) -> dict[str, torch.Tensor]:
    """One transcoder's tensors under circuit-tracer's names and orientation (float32, contiguous).
    Our transcoders never normalise their input nor subtract b_dec from it (SAEConfig refuses both),
    so the encoder is x @ W_enc + b_enc as circuit-tracer's."""
    with torch.no_grad():
        out = {"W_enc": tc.W_enc.T, "W_dec": tc.W_dec, "b_enc": tc.b_enc, "b_dec": tc.b_dec}
        if getattr(tc, "skip", False):
            out["W_skip"] = tc.W_skip.T
    return {k: v.detach().float().cpu().contiguous().clone() for k, v in out.items()}


def export_circuit_tracer(tset: TranscoderSet, out: str | Path, model_name: str | None = None) -> Path:
    """Write `tset` to directory `out` in circuit-tracer's layout (see the module docstring)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for layer, tc in enumerate(tset.transcoders):
        name = f"layer_{layer}.safetensors"
        atomic_write_bytes(out / name, save(circuit_tracer_tensors(tc), metadata={"format": "pt"}))
        files.append(str((out / name).resolve()))
    first = tset.transcoders[0].cfg
    config = {
        "model_kind": "transcoder_set",
        "model_name": model_name or tset.model,
        "feature_input_hook": FEATURE_INPUT_HOOK,
        "feature_output_hook": FEATURE_OUTPUT_HOOK,
        "scan": f"monosemantic:{tset.path.name}",
        "activation": "topk",
        "k": first.k,
        "transcoders": files,
    }
    atomic_write_text(out / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    return out / "config.yaml"
