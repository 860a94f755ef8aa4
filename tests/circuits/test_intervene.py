"""monosemantic.circuits.intervene: the hooked real model against a forward written out by hand
(attention recomputed, every MLP replaced by decode(edited latents) + the clean error)."""

import pytest
import torch
from tiny_transcoders import random_transcoders

from monosemantic.circuits.intervene import FeatureEditError, clean_run, intervene
from monosemantic.circuits.replacement import _attend, _norm, _pattern, _qkv
from monosemantic.data.corpora import prompt_ids
from monosemantic.models import load_model

TOKENS = [5, 9, 17, 30]


@pytest.fixture(scope="module")
def setup(tiny_model_dirs):
    model, tokenizer = load_model(tiny_model_dirs["gpt2"])
    model = model.double()
    ids = torch.tensor(prompt_ids(tokenizer, "47 + 35 = "))
    return model, ids


def by_hand(model, tcs, ids, edits):
    """The GPT-2 forward block by block; returns logits [vocab] at the last position. Errors come
    from a first, unedited pass through the same code with the real MLPs."""
    tr, T = model.transformer, ids.shape[0]

    def run(mlp):
        resid = tr.wte.weight[ids] + tr.wpe.weight[:T]
        for layer, block in enumerate(tr.h):
            h, _ = _norm(resid, block.ln_1)
            q, k, v = _qkv(block.attn, h)
            resid = resid + _attend(block.attn, _pattern(block.attn, layer, q, k), v)
            x, _ = _norm(resid, block.ln_2)
            resid = resid + mlp(layer, block, x)
        final, _ = _norm(resid, tr.ln_f)
        return final[-1] @ model.lm_head.weight.T

    errors = {}

    def real(layer, block, x):
        out = block.mlp(x)
        errors[layer] = out - tcs[layer].decode(tcs[layer].encode(x), x)
        return out

    def replaced(layer, block, x):
        z = tcs[layer].encode(x)
        for e in edits:
            if e["layer"] == layer:
                z[e["pos"], e["latent"]] = e["value"]
        return tcs[layer].decode(z, x) + errors[layer]

    with torch.no_grad():
        clean = run(real)
        return clean, run(replaced)


@pytest.mark.parametrize("arch", ["transcoder", "skip_transcoder"])
def test_without_edits_the_clean_logits_come_back_exactly(setup, arch):
    model, ids = setup
    tcs = random_transcoders(model.config.n_embd, model.config.n_layer, arch)
    out = intervene(model, tcs, ids, [], TOKENS)
    with torch.no_grad():
        expected = model(input_ids=ids[None]).logits[0, -1, TOKENS]
    assert out["clean"] == expected.tolist() and out["edited"] == expected.tolist()
    assert out["diff"] == [0.0] * len(TOKENS)


@pytest.mark.parametrize("arch", ["transcoder", "skip_transcoder"])
def test_edits_match_the_forward_written_out_by_hand(setup, arch):
    model, ids = setup
    tcs = random_transcoders(model.config.n_embd, model.config.n_layer, arch)
    # an active layer-0 feature at position 2 ablated, an inactive one at position 4 set, a layer-1 one steered
    clean_z = clean_run(model, tcs, ids).z
    active0 = int(clean_z[0][2].nonzero()[0])
    inactive0 = int((clean_z[0][4] == 0).nonzero()[0])
    active1 = int(clean_z[1][-1].nonzero()[0])
    edits = [
        {"layer": 0, "pos": 2, "latent": active0, "value": 0.0},
        {"layer": 0, "pos": 4, "latent": inactive0, "value": 1.5},
        {"layer": 1, "pos": len(ids) - 1, "latent": active1, "value": 3 * float(clean_z[1][-1, active1])},
    ]
    out = intervene(model, tcs, ids, edits, TOKENS)
    clean, edited = by_hand(model, tcs, ids, edits)
    torch.testing.assert_close(torch.tensor(out["clean"], dtype=torch.float64), clean[TOKENS])
    torch.testing.assert_close(torch.tensor(out["edited"], dtype=torch.float64), edited[TOKENS], rtol=1e-10, atol=1e-10)
    assert min(abs(d) for d in out["diff"]) > 1e-6  # the edits do move every logit
    assert out["edits"][0]["clean_value"] == pytest.approx(float(clean_z[0][2, active0]))
    assert out["edits"][1]["clean_value"] == 0.0


def test_an_edit_that_names_no_feature_is_refused(setup):
    model, ids = setup
    tcs = random_transcoders(model.config.n_embd, model.config.n_layer)
    with pytest.raises(FeatureEditError, match="edit layer 2: the transcoders cover layers 0-1"):
        intervene(model, tcs, ids, [{"layer": 2, "pos": 0, "latent": 0, "value": 0}], TOKENS)
    with pytest.raises(FeatureEditError, match="edit latent 64: layer 0's transcoder has 0-63"):
        intervene(model, tcs, ids, [{"layer": 0, "pos": 0, "latent": 64, "value": 0}], TOKENS)
    with pytest.raises(FeatureEditError, match=r"lacks \['value'\]"):
        intervene(model, tcs, ids, [{"layer": 0, "pos": 0, "latent": 1}], TOKENS)
