"""One text through a run's model and SAE, for interactive use (the dashboard, `inspect`): the
latents of every token, their top latents and totals, a document's activations as the analysis saw
them, and next-token predictions and greedy continuations with or without interventions.

    src = Source.of_run("runs/demo")                     # analyze.py: SAE + model + tokenizer
    ids = prompt_ids(src.tokenizer, "12 + 7 = 19")
    lat = text_latents(src, ids)                         # tokens, z [n_tokens, d_sae]
    top_latents(lat.z, k=5), latent_totals(lat.z, limit=20)
    predict(src, prompt_ids(src.tokenizer, "12 + 7 ="), [steer(123, 8.0)], new_tokens=8)

None of these functions is thread-safe with respect to the model: callers that serve several
requests at once run them one at a time (the dashboard holds a lock).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from monosemantic.data.corpora import Document, kept_tokens, pack
from monosemantic.errors import MonosemanticError
from monosemantic.experiments.interventions import Intervention, intervene


class ProbeError(MonosemanticError, ValueError):
    """A text or request the model cannot be run on as asked (too long, empty)."""


def context_length(model) -> int | None:
    """Positions the model can attend over (None when its config does not say)."""
    cfg = model.config
    return getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)


def _cache_argument(model) -> str:
    """The name the model's forward takes its KV cache under: transformers 5.24 renamed
    `past_key_values` (deprecated, removed in 5.40) to `cache`; `pyproject.toml` allows both."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


@dataclass
class TextLatents:
    tokens: list[str]  # the text's tokens, BOS left out
    z: Tensor  # [n_tokens, d_sae] their latents


def text_latents(src, ids: list[int]) -> TextLatents:
    """The SAE latents of every token of `ids` (a `prompt_ids` list) but BOS."""
    input_ids = torch.tensor([ids])
    keep = torch.ones_like(input_ids, dtype=torch.bool)
    if src.tokenizer.bos_token_id is not None:
        keep &= input_ids != src.tokenizer.bos_token_id
    if not keep.any():
        return TextLatents([], torch.zeros(0, src.sae.d_sae))
    with torch.inference_mode():
        z = src.latents(input_ids, None, keep)
    return TextLatents([src.vocab[t] for t in input_ids[keep].tolist()], z)


def top_latents(z: Tensor, k: int) -> list[list[tuple[int, float]]]:
    """Per row of z [n, d_sae], its (at most) k most active latents that fire, highest first."""
    if z.shape[0] == 0:
        return []
    top = z.topk(min(k, z.shape[1]), dim=1)
    return [
        [(j, v) for j, v in zip(idx, vals) if v > 0] for idx, vals in zip(top.indices.tolist(), top.values.tolist())
    ]


@dataclass
class LatentTotal:
    latent: int
    total: float  # sum of its activations over the tokens
    max: float
    active: int  # tokens it fires on
    acts: list[float]  # its activation on every token


def latent_totals(z: Tensor, limit: int) -> list[LatentTotal]:
    """The `limit` latents of largest total activation over the rows of z [n, d_sae] (those that fire)."""
    if z.shape[0] == 0:
        return []
    totals = z.sum(0)
    best = totals.topk(min(limit, z.shape[1]))
    return [
        LatentTotal(j, t, float(z[:, j].max()), int((z[:, j] > 0).sum()), z[:, j].tolist())
        for j, t in zip(best.indices.tolist(), best.values.tolist())
        if t > 0
    ]


@dataclass
class DocumentActivations:
    positions: list[int]  # position of each token in the document (0 is BOS, left out)
    tokens: list[str]
    acts: list[float]  # the latent's activation on each token


def document_activations(src, doc: Document, latent: int, batch_tokens: int = 4096) -> DocumentActivations:
    """A latent's activation on every token of a document, computed as the analysis computed it
    (the document packed alone into rows of the run's `seq_len`, split where it is longer)."""
    rows = []
    with torch.inference_mode():
        for batch in pack([doc], src.tokenizer, src.seq_len, batch_tokens):
            keep = kept_tokens(batch, src.tokenizer)
            z = src.latents(batch.input_ids, batch.attention_mask, keep)[:, latent]
            rows += zip(batch.positions[keep].tolist(), batch.input_ids[keep].tolist(), z.tolist())
    rows.sort()
    return DocumentActivations([p for p, _, _ in rows], [src.vocab[t] for _, t, _ in rows], [a for _, _, a in rows])


@dataclass
class Prediction:
    next_tokens: list[tuple[str, float]]  # the most probable next tokens after the prompt, with probabilities
    continuation: list[str]  # greedy continuation, token by token (ends early at EOS)


def predict(
    src, ids: list[int], interventions: Sequence[Intervention] = (), *, top: int = 10, new_tokens: int = 16
) -> Prediction:
    """Next-token distribution and greedy continuation of the prompt `ids`, with the SAE spliced in
    and `interventions` applied at every position (the clean model when there are none)."""
    if any(iv.positions is not None for iv in interventions):
        raise ProbeError(
            "predict applies interventions at every position (they are cached with the keys and "
            "values); give interventions without positions"
        )
    limit = context_length(src.model)
    if not ids:
        raise ProbeError("empty prompt; give some text to continue")
    if limit is not None and len(ids) + new_tokens > limit:
        raise ProbeError(
            f"a prompt of {len(ids)} tokens plus {new_tokens} new ones exceeds the model's context of {limit} tokens"
        )
    device = next(src.model.parameters()).device
    step = torch.tensor([ids], device=device)
    edit = intervene(src.model, src.sae, interventions) if interventions else contextlib.nullcontext()
    continuation, first, past = [], None, None
    cache_arg = _cache_argument(src.model)
    with edit, torch.inference_mode():
        # with the KV cache each step reads one new token; the cached positions were computed under
        # the same interventions, so this equals rerunning the whole sequence (tests check it against
        # Hugging Face's generate)
        for _ in range(max(new_tokens, 1)):
            out = src.model(input_ids=step, use_cache=True, **{cache_arg: past})
            logits, past = out.logits[0, -1].float(), out[cache_arg]  # [vocab]
            if first is None:
                first = logits.softmax(-1).topk(min(top, logits.shape[0]))
            nxt = int(logits.argmax())
            if nxt == src.tokenizer.eos_token_id or len(continuation) == new_tokens:
                break
            continuation.append(src.vocab[nxt])
            step = torch.tensor([[nxt]], device=device)
    return Prediction([(src.vocab[j], p) for j, p in zip(first.indices.tolist(), first.values.tolist())], continuation)
