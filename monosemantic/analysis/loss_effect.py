"""Loss effect of a feature (sae_vis' and Neuronpedia's "ablation" lists): on its top examples, which
next tokens' loss rises most when the feature is removed where it fires.

Each example is the stored context window of a top activation (`latent_stats.Examples`: `before`
tokens before the firing token, the firing token, the ones after). The model reads the window up to
the token after the firing one, twice: clean, and with the SAE spliced in at its hookpoint (error term
kept) and the feature zeroed at the firing position, which removes exactly its decoder contribution
act x W_dec[i] there (`experiments/interventions.py`). The rise of the next-token loss
(-log p(next token)) at that position is grouped by the next token and averaged.

The context is the stored window, not the whole document: the feature's activation is the one the
window gives (the one that is removed), which can differ from the analysed activation.

    rises = example_rises(model, sae, hookpoint, latent, windows, before)   # [(next token id, rise)]
    loss_effects(rises, vocab)   # [[token, mean rise, examples]], largest rise first
    record_loss_effects(run, features_dir, lo, hi, before)   # FEATURES_DIR/loss_effect/LO-HI.json

Cost: two forwards of the model per feature, over its top_k windows (`before` + 2 tokens each).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn
from tqdm.auto import tqdm

from monosemantic.analysis.store import shard_file
from monosemantic.atomic import atomic_write_json
from monosemantic.experiments.interventions import intervene, zero
from monosemantic.models import by_length, device_of

LOSS_EFFECT_DIR = "loss_effect"
DEFINITION = (
    "mean rise of the next token's loss (nats) when the feature is zeroed where it fires, over its stored top "
    "examples' context windows, by next token"
)


def _prefixes(windows: list[list[int]], before: int) -> list[list[int]]:
    """Each window cut after the token following the firing one; windows at a document's start are
    padded with -1 on the left (dropped), windows without a next token are skipped."""
    out = []
    for w in windows:
        if before + 1 < len(w) and w[before] >= 0 and w[before + 1] >= 0:
            prefix = w[: before + 2]
            out.append(prefix[next(k for k, t in enumerate(prefix) if t >= 0) :])
    return out


@torch.inference_mode()
def example_rises(
    model: nn.Module, sae: nn.Module, hookpoint: str, latent: int, windows: list[list[int]], before: int
) -> list[tuple[int, float]]:
    """(next token, rise of its loss when `latent` is zeroed at the firing token) of each usable window,
    windows of one length in one batch (no padding)."""
    sequences = _prefixes(windows, before)
    out: list[tuple[int, float]] = []
    for members in by_length(sequences).values():
        ids = torch.tensor([sequences[m] for m in members], device=device_of(model))
        target = ids[:, -1]
        clean = F.cross_entropy(model(input_ids=ids).logits[:, -2].float(), target, reduction="none")
        with intervene(model, sae, [zero(latent, positions=[-2])], hookpoint=hookpoint):
            ablated = F.cross_entropy(model(input_ids=ids).logits[:, -2].float(), target, reduction="none")
        out += zip(target.tolist(), (ablated - clean).tolist())
    return out


def loss_effects(rises: list[tuple[int, float]], vocab: list[str], n: int = 10) -> list[list]:
    """The `n` next tokens of largest mean rise: [[token, mean rise, examples]], largest first (ties: lower id)."""
    by_token: dict[int, list[float]] = {}
    for token, rise in rises:
        by_token.setdefault(token, []).append(rise)
    means = sorted(((-sum(r) / len(r), t, len(r)) for t, r in by_token.items()))
    return [[vocab[t], -neg, count] for neg, t, count in means[:n]]


def loss_effect_file(directory: str | Path, lo: int, hi: int) -> Path:
    return Path(directory) / LOSS_EFFECT_DIR / f"{lo:08d}-{hi:08d}.json"


def record_loss_effects(run, directory: str | Path, lo: int, hi: int, before: int, *, progress: bool = True) -> Path:
    """FEATURES_DIR/loss_effect/LO-HI.json: per latent of the shard its loss effects (`loss_effects`),
    from the top windows in the shard's tensors file (about 300 bytes per latent)."""
    with safe_open(Path(directory) / shard_file(lo, hi), "pt") as f:
        windows, values = f.get_tensor("top_ctx_tokens").tolist(), f.get_tensor("top_value").tolist()
    effects = []
    for i in tqdm(range(hi - lo), desc=f"loss effects {lo}-{hi - 1}", unit="feature", disable=not progress):
        rows = [w for w, v in zip(windows[i], values[i]) if v > 0]
        effects.append(loss_effects(example_rises(run.model, run.sae, run.hookpoint, lo + i, rows, before), run.vocab))
    path = loss_effect_file(directory, lo, hi)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"definition": DEFINITION, "effects": effects})
    return path


def load_loss_effects(directory: str | Path, i: int, shard_latents: int, n_latents: int) -> dict | None:
    """Latent i's loss effects ({"definition", "effects": [[token, mean rise, examples]]}); None where its
    shard's file is absent (a store analysed before they were recorded)."""
    lo = i - i % shard_latents
    path = loss_effect_file(directory, lo, min(n_latents, lo + shard_latents))
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    return {"definition": saved["definition"], "effects": saved["effects"][i - lo]}
