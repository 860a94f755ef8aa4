"""The tokens the model actually predicts, and logit effects ranked among them.

A feature's direct logit effects over the whole vocabulary are often led by tokens the model never
emits on its corpus (issue 21: the demo's #216 "promotes" `| ñ ≥ ? Ñ ≠` at indistinguishable values):
the unembedding rows of rare tokens are poorly trained, so any direction scores high on some of them.
The analysis therefore records the *predicted set*: every token that is the model's argmax next
token at some position of the first `PREDICTED_TOKENS` tokens of the analysed corpus (one forward
pass over them: bounded cost, a few seconds for the built-in model), with how often. The feature
page ranks each feature's direct logit effects within that set.

    counts, n = argmax_counts(model, tokenizer, texts, PREDICTED_TOKENS)   # [vocab], tokens read
    save_predicted(features_dir, counts, n, vocab)
    effects = logit_effects_within(logits_row, load_predicted(features_dir), vocab)
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import Tensor, nn

from monosemantic.atomic import atomic_write_json
from monosemantic.data.corpora import prompt_ids
from monosemantic.models import by_length, device_of, direct_logit_path

PREDICTED_FILE = "predicted_tokens.json"
PREDICTED_TOKENS = 20_000
DEFINITION = "the model's argmax next token at some position of the first {n} analysed tokens"


def predicted_batches(tokenizer, texts: Iterable[str], max_tokens: int, limit: int = 64) -> tuple[list[Tensor], int]:
    """The token batches `argmax_counts` reads (each text alone with BOS, cut to `limit` tokens, until
    `max_tokens` positions; texts of one length together, 64 a batch, without padding), and that count."""
    sequences, n = [], 0
    for text in texts:
        ids = prompt_ids(tokenizer, text)[:limit]
        sequences.append(ids[: max_tokens - n])
        n += len(sequences[-1])
        if n >= max_tokens:
            break
    batches = [
        torch.tensor([sequences[i] for i in members[start : start + 64]])
        for members in by_length(sequences).values()
        for start in range(0, len(members), 64)
    ]
    return batches, n


@torch.inference_mode()
def count_argmax(model: nn.Module, ids: Tensor, counts: Tensor) -> None:
    """Add to `counts` [vocab] the model's argmax next token at every position of `ids` [B, T]."""
    argmax = model(input_ids=ids.to(device_of(model)), use_cache=False).logits.argmax(-1).flatten().cpu()
    counts += torch.bincount(argmax, minlength=counts.shape[0])[: counts.shape[0]]


def argmax_counts(
    model: nn.Module, tokenizer, texts: Iterable[str], max_tokens: int, limit: int = 64
) -> tuple[Tensor, int]:
    """[vocab] how often each token is the model's argmax next token, over the texts' positions (each
    text read alone with BOS, cut to `limit` tokens), until `max_tokens` positions; and that count."""
    batches, n = predicted_batches(tokenizer, texts, max_tokens, limit)
    counts = torch.zeros(model.get_output_embeddings().weight.shape[0], dtype=torch.long)
    for ids in batches:
        count_argmax(model, ids, counts)
    return counts, n


def save_predicted(directory: str | Path, counts: Tensor, n_tokens: int, vocab: list[str]) -> Path:
    """FEATURES_DIR/predicted_tokens.json: the definition, the tokens read, {token id: count} of the set."""
    path = Path(directory) / PREDICTED_FILE
    ids = counts.nonzero().flatten().tolist()
    atomic_write_json(
        path,
        {
            "definition": DEFINITION.format(n=n_tokens),
            "tokens_read": n_tokens,
            "counts": {str(i): int(counts[i]) for i in ids},
            "tokens": [vocab[i] for i in ids],
        },
    )
    return path


def load_predicted(directory: str | Path) -> dict | None:
    """The saved predicted set ({"definition", "tokens_read", "counts": {id: count}}), or None (an
    analysis from before it was recorded)."""
    path = Path(directory) / PREDICTED_FILE
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    saved["counts"] = {int(k): v for k, v in saved["counts"].items()}
    return saved


def logit_effects_within(logits: Tensor, predicted: dict, vocab: list[str], n: int = 10) -> dict:
    """A feature's direct logit effects `logits` [vocab] ranked within the predicted set: the `n`
    it raises most and lowers most (token, effect, times predicted), and what the set is."""
    ids = torch.tensor(sorted(predicted["counts"]), dtype=torch.long)
    values = logits[ids].float()
    k = min(n, len(ids))
    top, bottom = values.topk(k), values.topk(k, largest=False)

    def rows(t) -> list[list]:
        return [[vocab[ids[j]], float(v), predicted["counts"][int(ids[j])]] for v, j in zip(t.values, t.indices)]

    return {
        "within": predicted["definition"],
        "set_size": len(ids),
        "promotes": rows(top),
        "suppresses": rows(bottom),
    }


class PredictedSet:
    """The predicted set of a run, counted a batch at a time (`step`), so that the analysis can run its
    forwards on its model thread while it does its bookkeeping; `save` counts what is left and saves it."""

    def __init__(self, run, max_tokens: int = PREDICTED_TOKENS):
        texts = (doc.text for doc in run.corpus.documents() if doc.text.strip())
        self.run = run
        self.batches, self.n = predicted_batches(run.tokenizer, texts, max_tokens, limit=run.seq_len)
        self.counts = torch.zeros(run.model.get_output_embeddings().weight.shape[0], dtype=torch.long)

    def step(self) -> None:
        if self.batches:
            count_argmax(self.run.model, self.batches.pop(0), self.counts)

    def save(self, directory: str | Path) -> Path:
        while self.batches:
            self.step()
        return save_predicted(directory, self.counts, self.n, self.run.vocab)


def record_predicted(run, directory: str | Path, max_tokens: int = PREDICTED_TOKENS) -> Path:
    """Count the predicted set on the first `max_tokens` tokens of the run's (analysed) corpus, each
    document read alone and cut to the run's row length as the analysis packs it; save it."""
    return PredictedSet(run, max_tokens).save(directory)


def ranked_logit_effects(run, predicted: dict, latent: int, n: int = 10) -> dict | None:
    """Latent `latent`'s direct logit effects (its decoder row along the direct path to the logits,
    `models.direct_logit_path`) ranked within the predicted set; None where the path is not known."""
    to_logits = direct_logit_path(run.model, run.hookpoint)
    if to_logits is None:
        return None
    with torch.inference_mode():
        logits = to_logits(run.sae.W_dec[latent : latent + 1].detach())[0].float().cpu()  # [vocab]
    return logit_effects_within(logits, predicted, run.vocab, n)
