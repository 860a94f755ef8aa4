"""The predicted-token set (the model's argmax next tokens on the analysed corpus) and logit effects
ranked within it, against slow eager references: one forward per prefix, a Python sort."""

import json
from types import SimpleNamespace

import pytest
import torch
from tiny_models import tiny_model

from monosemantic.analysis.predicted import (
    PREDICTED_FILE,
    PredictedSet,
    argmax_counts,
    load_predicted,
    logit_effects_within,
    save_predicted,
)
from monosemantic.data.corpora import Document, prompt_ids
from monosemantic.mathlm.tokenizer import build_tokenizer

TEXTS = ["12 + 7 = 19", "3 × 4 = 12", "cinq plus deux égale sept", "22 ÷ 7 ≈ 3.14", "8 − 5 = 3"]


@pytest.fixture(scope="module")
def model_and_tokenizer():
    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    return tiny_model("gpt2", len(tokenizer)).eval(), tokenizer


@torch.inference_mode()
def eager_counts(model, tokenizer, texts, max_tokens, limit):
    """Each position alone: the argmax after the prefix ending there, until max_tokens positions."""
    counts, n = torch.zeros(len(tokenizer), dtype=torch.long), 0
    for text in texts:
        for t, _ in enumerate(prompt_ids(tokenizer, text)[:limit]):
            if n == max_tokens:
                return counts, n
            prefix = torch.tensor([prompt_ids(tokenizer, text)[: t + 1]])
            counts[int(model(input_ids=prefix).logits[0, -1].argmax())] += 1
            n += 1
    return counts, n


@pytest.mark.parametrize("max_tokens, limit", [(10_000, 64), (23, 64), (10_000, 5)])
def test_argmax_counts_match_one_forward_per_prefix(model_and_tokenizer, max_tokens, limit):
    model, tokenizer = model_and_tokenizer
    got, n = argmax_counts(model, tokenizer, iter(TEXTS), max_tokens, limit=limit)
    want, n_want = eager_counts(model, tokenizer, TEXTS, max_tokens, limit)
    assert n == n_want and torch.equal(got, want)


def test_saved_set_reads_back_and_says_what_it_is(model_and_tokenizer, tmp_path):
    model, tokenizer = model_and_tokenizer
    counts, n = argmax_counts(model, tokenizer, TEXTS, 10_000)
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    save_predicted(tmp_path, counts, n, vocab)
    saved = load_predicted(tmp_path)
    assert saved["counts"] == {i: int(c) for i, c in enumerate(counts.tolist()) if c}
    assert saved["tokens_read"] == n and f"first {n} analysed tokens" in saved["definition"]
    assert json.loads((tmp_path / PREDICTED_FILE).read_text())["tokens"] == [vocab[i] for i in saved["counts"]]
    assert load_predicted(tmp_path / "missing") is None


def test_effects_are_ranked_only_among_predicted_tokens():
    vocab = [f"t{i}" for i in range(8)]
    logits = torch.tensor([9.0, -1.0, 0.5, -7.0, 2.0, 8.0, -3.0, 1.0])  # t0, t5 and t3 never predicted
    predicted = {"definition": "d", "counts": {1: 4, 2: 1, 4: 7, 6: 2, 7: 3}}
    got = logit_effects_within(logits, predicted, vocab, n=3)
    members = sorted(predicted["counts"], key=lambda i: -logits[i])  # by hand: a Python sort of the set
    assert got["promotes"] == [[vocab[i], float(logits[i]), predicted["counts"][i]] for i in members[:3]]
    assert got["suppresses"] == [[vocab[i], float(logits[i]), predicted["counts"][i]] for i in members[::-1][:3]]
    assert got["set_size"] == 5 and got["within"] == "d"


def test_the_predicted_set_counted_a_step_at_a_time_is_argmax_counts(model_and_tokenizer, tmp_path):
    """`analyze` runs the set's forwards one step per batch on its model thread; `save` does the rest."""
    model, tokenizer = model_and_tokenizer
    docs = [Document(i, text) for i, text in enumerate(TEXTS * 30)]  # several length groups, > 64 a group
    corpus = SimpleNamespace(documents=lambda: iter(docs))
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    run = SimpleNamespace(model=model, tokenizer=tokenizer, corpus=corpus, seq_len=6, vocab=vocab)
    counted = PredictedSet(run, max_tokens=500)
    assert len(counted.batches) > 2
    counted.step()
    counted.step()
    counted.save(tmp_path)
    want, n = argmax_counts(model, tokenizer, TEXTS * 30, 500, limit=6)
    saved = load_predicted(tmp_path)
    assert saved["tokens_read"] == n and saved["counts"] == {i: int(c) for i, c in enumerate(want.tolist()) if c}
