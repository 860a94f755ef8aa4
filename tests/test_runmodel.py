"""runmodel.py on a tiny analysed run: latents of a text, top latents and totals, a document's
activations against the analysis' own examples, predictions against Hugging Face's generate."""

import contextlib

import pytest
import torch

from monosemantic.analysis.store import FeatureStore
from monosemantic.data.corpora import prompt_ids
from monosemantic.experiments.interventions import clamp, intervene, steer, zero
from monosemantic.hooks import capture
from monosemantic.runmodel import RunModel, RunModelError, latent_totals, token_features, top_latents

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def store(analysed_run):
    return FeatureStore.open(analysed_run)


@pytest.fixture(scope="module")
def run(analysed_run, store):
    return RunModel.of_run(analysed_run, store.settings["corpus"])


def test_text_latents_are_the_sae_of_the_hookpoint_activations(run):
    text = "12 + 7 = 19"
    ids = prompt_ids(run.tokenizer, text)
    assert ids[0] == run.tokenizer.bos_token_id and ids[-1] != run.tokenizer.eos_token_id and len(ids) == len(text) + 1
    lat = run.text_latents(ids)
    with capture(run.model, run.hookpoint) as acts:
        run.model(input_ids=torch.tensor([ids]))
    expected = run.sae.encode(acts[run.hookpoint][0, 1:])  # BOS left out
    torch.testing.assert_close(lat.z, expected)
    assert "".join(lat.tokens) == text
    assert run.text_latents(prompt_ids(run.tokenizer, "")).z.shape == (0, run.sae.d_sae)


def test_top_latents_and_totals_by_hand():
    z = torch.tensor([[0.0, 3.0, 1.0, 0.0], [2.0, 0.0, 0.5, 0.0], [0.0, 0.0, 0.0, 0.0]])
    assert top_latents(z, 2) == [[(1, 3.0), (2, 1.0)], [(0, 2.0), (2, 0.5)], []]
    totals = latent_totals(z, 10)
    assert [(t.latent, t.total, t.max, t.active) for t in totals] == [
        (1, 3.0, 3.0, 1),
        (0, 2.0, 2.0, 1),
        (2, 1.5, 1.0, 2),
    ]
    assert totals[2].acts == [1.0, 0.5, 0.0]
    assert [t.latent for t in latent_totals(z, 1)] == [1]


def test_document_activations_reproduce_the_analysis_examples(store, run):
    for i in (0, 82, 200):
        f = store.feature(i)
        for ex in f.top_examples[:3] + [e for r in f.samples for e in r.examples][:3]:
            doc = run.document_activations(store.document(ex.doc), i)
            at = doc.positions.index(ex.position)
            assert doc.acts[at] == pytest.approx(ex.value, rel=1e-5, abs=1e-6)
            assert doc.tokens[at] == ex.tokens[ex.active]
            by_position = dict(zip(doc.positions, doc.acts))
            for j, act in enumerate(ex.acts):  # the window (stored in float16), but for BOS, which has no activation
                if ex.position - ex.active + j in by_position:
                    assert by_position[ex.position - ex.active + j] == pytest.approx(act, rel=2e-3, abs=1e-4)


def reference_generate(run, ids, new_tokens, interventions=()):
    """Greedy decoding by Hugging Face's generate (KV cache and all), under the same interventions."""
    edit = intervene(run.model, run.sae, interventions) if interventions else contextlib.nullcontext()
    with edit, torch.inference_mode():
        out = run.model.generate(
            torch.tensor([ids]),
            max_new_tokens=new_tokens,
            do_sample=False,
            eos_token_id=run.tokenizer.eos_token_id,
            pad_token_id=run.tokenizer.pad_token_id,
        )
    tokens = out[0, len(ids) :].tolist()
    if run.tokenizer.eos_token_id in tokens:
        tokens = tokens[: tokens.index(run.tokenizer.eos_token_id)]
    return [run.vocab[t] for t in tokens]


@pytest.mark.parametrize("edits", [(), (steer(82, 60.0),), (zero([1, 2, 3]), clamp(200, 5.0))])
def test_predictions_match_greedy_generate(run, edits):
    ids = prompt_ids(run.tokenizer, "3 + 4 = ")
    got = run.predict(ids, edits, top=5, new_tokens=10)
    assert got.continuation == reference_generate(run, ids, 10, edits)
    with intervene(run.model, run.sae, edits) if edits else contextlib.nullcontext(), torch.inference_mode():
        probs = run.model(input_ids=torch.tensor([ids])).logits[0, -1].softmax(-1)
    top = probs.topk(5)
    assert [t for t, _ in got.next_tokens] == [run.vocab[j] for j in top.indices.tolist()]
    assert [p for _, p in got.next_tokens] == pytest.approx(top.values.tolist(), rel=1e-5)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in run.model.modules())


def test_steering_changes_the_continuation_and_limits_are_errors(run):
    ids = prompt_ids(run.tokenizer, "3 + 4 = ")
    steered = run.predict(ids, [steer(82, 200.0)], new_tokens=8)
    assert steered.continuation != run.predict(ids, new_tokens=8).continuation
    with pytest.raises(RunModelError, match="interventions without positions"):
        run.predict(ids, [steer(82, 2.0, positions=[-1])])
    assert run.predict(ids, new_tokens=0).continuation == [] and len(run.predict(ids, new_tokens=0).next_tokens) == 10
    with pytest.raises(RunModelError, match="exceeds the model's context of 64 tokens"):
        run.predict(ids, new_tokens=60)
    with pytest.raises(RunModelError, match="empty prompt"):
        run.predict([], new_tokens=1)


def test_store_mean_activation_document_and_top_features(store, run):
    f = store.feature(82)
    assert store.mean_activation([82, 82]) == pytest.approx([f.density * f.mean_act] * 2)
    assert store.document(f.top_examples[0].doc).id == f.top_examples[0].doc
    with pytest.raises(ValueError, match="feature 256 does not exist"):
        store.mean_activation([256])
    with pytest.raises(ValueError, match="document -1 is not in the corpus"):
        store.document(-1)
    per_token = token_features(run, "1" * 100, 2, store.labels)
    assert len(per_token) == run.seq_len - 1  # cut to the run's seq_len, BOS included
