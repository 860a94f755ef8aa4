"""A run's SAE spliced into its model, for reading text through both: the latents of every token,
a document's activations as the analysis saw them, the top features of a text, and next-token
predictions and greedy continuations with or without interventions.

    run = RunModel.of_run("runs/demo")                   # SAE + model + tokenizer + the run's settings
    lat = run.text_latents(prompt_ids(run.tokenizer, "12 + 7 = 19"))   # tokens, z [n_tokens, d_sae]
    top_latents(lat.z, k=5), latent_totals(lat.z, limit=20)
    run.predict(prompt_ids(run.tokenizer, "12 + 7 ="), [steer(123, 8.0)], new_tokens=8)
    token_features(run, "12 + 7 = 19", 5, FeatureStore.open("runs/demo").labels)

Nothing here is thread-safe with respect to the model: callers that serve several requests at once
run them one at a time (the dashboard holds a lock).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from monosemantic.config import ConfigError
from monosemantic.data.corpora import Corpus, Document, kept_tokens, open_corpus, pack, prompt_ids
from monosemantic.errors import MonosemanticError
from monosemantic.experiments.interventions import Intervention, intervene
from monosemantic.formats import load_sae
from monosemantic.hooks import hookpoint_width, run_and_capture
from monosemantic.models import (
    Hookpoint,
    ModelError,
    context_length,
    device_of,
    greedy_decode,
    load_model,
    model_name,
    resolve_hookpoints,
)
from monosemantic.sae import SAE
from monosemantic.sae.signed import require_unsigned
from monosemantic.train.rundir import TRAIN_CONFIG_FILE, read_train_config

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


class RunModelError(MonosemanticError, ValueError):
    """A text or request the model cannot be run on as asked (too long, empty)."""


@dataclass
class TextLatents:
    tokens: list[str]  # the text's tokens, BOS left out
    z: Tensor  # [n_tokens, d_sae] their latents


@dataclass
class DocumentActivations:
    positions: list[int]  # position of each token in the document (0 is BOS, left out)
    tokens: list[str]
    acts: list[float]  # the latent's activation on each token


@dataclass
class Prediction:
    next_tokens: list[tuple[str, float]]  # the most probable next tokens after the prompt, with probabilities
    continuation: list[str]  # greedy continuation, token by token (ends early at EOS)


@dataclass
class TokenFeatures:
    token: str
    features: list[tuple[int, float, str | None]]  # (latent, activation, label)


@dataclass
class RunModel:
    """The SAE of a run, the model it is spliced into, where, and the text the run reads."""

    sae: SAE
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    model_spec: str  # as configs record it: 'builtin' or an absolute path
    hook: Hookpoint  # resolved once, read on every forward
    corpus: Corpus
    corpus_spec: str
    seq_len: int  # the run's row length: how the analysis packed its documents
    vocab: list[str]  # the text of every token id

    @property
    def hookpoint(self) -> str:
        """The hookpoint's name, e.g. layers.3.resid.post."""
        return self.hook.name

    @classmethod
    def of_run(cls, run_dir: str | Path, corpus: str | None = None, device: str = "cpu") -> RunModel:
        """Load the run's SAE and its model; `corpus` defaults to the run's training corpus."""
        run_dir = Path(run_dir)
        sae = load_sae(run_dir, device=device)  # ours, or any format another tool wrote
        # every reader of a RunModel (analysis, dashboard, experiments, benchmark) counts z > 0 as firing
        require_unsigned(
            sae, f"{run_dir}: feature analysis (top examples, densities), the dashboard and the experiments"
        )
        saved = read_train_config(run_dir) if (run_dir / TRAIN_CONFIG_FILE).exists() else {}
        data = saved.get("data", {})
        model_spec, hookpoint = data.get("model") or sae.cfg.model, sae.cfg.hookpoint
        if model_spec is None or hookpoint is None:
            raise ConfigError(
                f"{run_dir}: the SAE does not record its model and hookpoint, so it cannot be "
                "analysed on text (train it with `monosemantic train`)"
            )
        corpus_spec = corpus or data.get("corpus") or "mathlm"
        model, tokenizer = load_model(model_spec, dtype=data.get("model_dtype", "float32"), device=device)
        [hook] = resolve_hookpoints(model, hookpoint)
        vocab_size = max(len(tokenizer), model.get_output_embeddings().weight.shape[0])
        vocab = [tokenizer.decode([i]) for i in range(vocab_size)]
        run = cls(
            sae,
            model,
            tokenizer,
            model_name(model_spec),
            hook,
            open_corpus(corpus_spec),
            corpus_spec,
            saved.get("harvest", {}).get("seq_len", 64),
            vocab,
        )
        width = hookpoint_width(model, hook)
        if width != sae.d_in:
            raise ModelError(
                f"the SAE reads d_in={sae.d_in}, but hookpoint {hook.name!r} of {model_spec} has width {width}"
            )
        return run

    def latents(self, input_ids: Tensor, attention_mask: Tensor | None, keep: Tensor) -> Tensor:
        """[n_kept, d_sae] SAE latents (on the CPU) of the tokens of input_ids [B, T] where keep [B, T]."""
        return self.sae.encode(self.hook_acts(input_ids, attention_mask, keep)).cpu()

    def hook_acts(self, input_ids: Tensor, attention_mask: Tensor | None, keep: Tensor) -> Tensor:
        """[n_kept, d_in] float32 activations at the hookpoint (on the model's device) of the tokens
        of input_ids [B, T] where keep [B, T]: what the SAE encodes."""
        device = device_of(self.model)
        acts = run_and_capture(
            self.model,
            input_ids.to(device),
            [self.hook],
            None if attention_mask is None else attention_mask.to(device),
        )[self.hook.name]
        return acts[keep.to(device)].float()

    def text_latents(self, ids: list[int]) -> TextLatents:
        """The SAE latents of every token of `ids` (a `prompt_ids` list) but BOS."""
        input_ids = torch.tensor([ids])
        keep = torch.ones_like(input_ids, dtype=torch.bool)
        if self.tokenizer.bos_token_id is not None:
            keep &= input_ids != self.tokenizer.bos_token_id
        if not keep.any():
            return TextLatents([], torch.zeros(0, self.sae.d_sae))
        with torch.inference_mode():
            z = self.latents(input_ids, None, keep)
        return TextLatents([self.vocab[t] for t in input_ids[keep].tolist()], z)

    def document_activations(self, doc: Document, latent: int, batch_tokens: int = 4096) -> DocumentActivations:
        """A latent's activation on every token of a document, computed as the analysis computed it
        (the document packed alone into rows of the run's `seq_len`, split where it is longer)."""
        rows: list[tuple[int, int, float]] = []
        with torch.inference_mode():
            for batch in pack([doc], self.tokenizer, self.seq_len, batch_tokens):
                keep = kept_tokens(batch, self.tokenizer)
                z = self.latents(batch.input_ids, batch.attention_mask, keep)[:, latent]
                rows += zip(batch.positions[keep].tolist(), batch.input_ids[keep].tolist(), z.tolist())
        rows.sort()
        return DocumentActivations(
            [p for p, _, _ in rows], [self.vocab[t] for _, t, _ in rows], [a for _, _, a in rows]
        )

    def predict(
        self, ids: list[int], interventions: Sequence[Intervention] = (), *, top: int = 10, new_tokens: int = 16
    ) -> Prediction:
        """Next-token distribution and greedy continuation of the prompt `ids`, with the SAE spliced
        in and `interventions` applied at every position (the clean model when there are none)."""
        if any(iv.positions is not None for iv in interventions):
            raise RunModelError(
                "predict applies interventions at every position (they are cached with the keys and "
                "values); give interventions without positions"
            )
        limit = context_length(self.model)
        if not ids:
            raise RunModelError("empty prompt; give some text to continue")
        if limit is not None and len(ids) + new_tokens > limit:
            raise RunModelError(
                f"a prompt of {len(ids)} tokens plus {new_tokens} new ones exceeds the model's context "
                f"of {limit} tokens"
            )
        eos = self.tokenizer.eos_token_id
        edit = intervene(self.model, self.sae, interventions) if interventions else contextlib.nullcontext()
        with edit, torch.inference_mode():
            # the KV cache holds positions computed under the same interventions, so this equals
            # rerunning the whole sequence (tests check it against Hugging Face's generate)
            out = greedy_decode(
                self.model, torch.tensor([ids], device=device_of(self.model)), new_tokens, eos, cache=True
            )
        logits = out.first_logits[0]  # [vocab]
        first = logits.softmax(-1).topk(min(top, logits.shape[0]))
        tokens = out.tokens[0].tolist()
        if eos in tokens:
            tokens = tokens[: tokens.index(eos)]
        return Prediction(
            [(self.vocab[j], p) for j, p in zip(first.indices.tolist(), first.values.tolist())],
            [self.vocab[t] for t in tokens],
        )


def top_latents(z: Tensor, k: int, last: set[int] | None = None) -> list[list[tuple[int, float]]]:
    """Per row of z [n, d_sae], its (at most) k most active latents that fire, highest first; the
    latents in `last` (dense features) only after all others that fire."""
    if z.shape[0] == 0:
        return []
    ranked = z
    if last:
        ranked = z.clone()
        ahead = torch.ones(z.shape[1], dtype=torch.bool)
        ahead[torch.tensor(sorted(last), dtype=torch.long)] = False
        lift = (z > 0) & ahead  # firing and not demoted: ranked above every demoted activation
        ranked[lift] += z.max() + 1
    top = ranked.topk(min(k, z.shape[1]), dim=1).indices
    values = z.gather(1, top)
    return [[(j, v) for j, v in zip(idx, vals) if v > 0] for idx, vals in zip(top.tolist(), values.tolist())]


@dataclass
class LatentTotal:
    latent: int
    total: float  # sum of its activations over the tokens
    max: float
    active: int  # tokens it fires on
    acts: list[float]  # its activation on every token


def latent_totals(z: Tensor, limit: int, last: set[int] | None = None) -> list[LatentTotal]:
    """The `limit` latents of largest total activation over the rows of z [n, d_sae] (those that
    fire), those in `last` (dense features) after all others."""
    if z.shape[0] == 0:
        return []
    totals = z.sum(0)
    best = top_latents(totals[None, :], limit, last)[0]
    return [LatentTotal(j, t, float(z[:, j].max()), int((z[:, j] > 0).sum()), z[:, j].tolist()) for j, t in best]


def token_features(
    run: RunModel,
    text: str,
    k: int,
    labels: Callable[[list[int]], dict[int, str | None]],
    dense: set[int] | None = None,
) -> list[TokenFeatures]:
    """Per token of `text` (cut to the run's `seq_len`), its `k` most active features, named by
    `labels` (e.g. `FeatureStore.labels`: latent ids -> their labels), `dense` ones (e.g.
    `FeatureStore.dense_latents()`) after all others."""
    lat = run.text_latents(prompt_ids(run.tokenizer, text)[: run.seq_len])
    top = top_latents(lat.z, k, dense)
    names = labels(sorted({j for row in top for j, _ in row}))
    return [TokenFeatures(tok, [(j, v, names.get(j)) for j, v in row]) for tok, row in zip(lat.tokens, top)]
