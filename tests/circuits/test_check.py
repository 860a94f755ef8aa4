"""monosemantic.circuits.check: the predicted effects of ablations by hand and against the frozen
linear model stepped through layer by layer; correlations and bootstrap by hand; one prompt end to end."""

import math

import pytest
import torch
from tiny_transcoders import random_transcoders

from monosemantic.circuits.attribution import NodeIndex, adjacency, node_index, target_values
from monosemantic.circuits.check import CheckConfig, bootstrap_mean, check_graph, pearson, predicted_ablation
from monosemantic.circuits.intervene import intervene
from monosemantic.circuits.replacement import Leaves, freeze
from monosemantic.config import ConfigError
from monosemantic.data.corpora import prompt_ids
from monosemantic.models import load_model


def test_predicted_ablation_of_a_chain_by_hand():
    """f0 (a=1) -> f1 (a=4) -> logit: A[f1, f0] = 2, A[logit, f1] = 3, A[logit, f0] = 1."""
    index = NodeIndex(n_features=2, n_layers=1, n_pos=1, n_logits=1)  # f0, f1, e, t, logit
    A = torch.zeros(5, 5, dtype=torch.float64)
    A[1, 0], A[4, 1], A[4, 0] = 2.0, 3.0, 1.0
    pred = predicted_ablation(A, index, torch.tensor([1.0, 4.0], dtype=torch.float64))
    # removing f0 moves f1 by -2 (a unit of f1 is worth 3/4 on the logit): -1 - 2 * 3/4 = -2.5
    torch.testing.assert_close(pred["total"], torch.tensor([-2.5, -3.0], dtype=torch.float64))
    torch.testing.assert_close(pred["direct"], torch.tensor([-1.0, -3.0], dtype=torch.float64))


def test_pearson_and_bootstrap_by_hand():
    # x - mean = (-1, 0, 1), y - mean = (-7/3, -1/3, 8/3): r = 5 / (sqrt(2) sqrt(38/3))
    assert pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(5 / math.sqrt(2 * 38 / 3))
    assert math.isnan(pearson([1, 1, 1], [2, 4, 7]))
    same = bootstrap_mean([0.5, float("nan"), 0.5], 100, 0)
    assert same == {"mean": 0.5, "lo": 0.5, "hi": 0.5, "n": 2}
    two = bootstrap_mean([0.0, 1.0], 4000, 0)
    assert two["mean"] == 0.5 and two["lo"] == 0.0 and two["hi"] == 1.0  # all-0 and all-1 resamples: 1/4 each


@pytest.fixture(scope="module")
def tiny(tiny_model_dirs):
    model, tokenizer = load_model(tiny_model_dirs["gpt2"])
    model = model.double()
    return model, tokenizer, random_transcoders(model.config.n_embd, model.config.n_layer)


def test_total_effect_equals_the_frozen_model_stepped_layer_by_layer(tiny):
    """Remove a layer-0 feature, let each later feature move with its pre-activation, read the logit."""
    model, tokenizer, tcs = tiny
    frozen = freeze(model, tcs, torch.tensor(prompt_ids(tokenizer, "47 + 35 = ")))
    tok = torch.tensor([7])
    index = node_index(frozen, 1)
    A = adjacency(frozen, tok)
    acts = torch.cat([f.act for f in frozen.features])
    pred = predicted_ablation(A, index, acts)
    n0 = frozen.features[0].pos.shape[0]
    full = target_values(frozen, frozen.leaves(1), tok)[0]
    checked = 0
    for i in range(0, n0, max(1, n0 // 6)):
        leaves = frozen.leaves(1)
        leaves = Leaves(leaves.emb.detach(), [a.detach() for a in leaves.acts], [e.detach() for e in leaves.errors])
        leaves.acts[0][0, i] = 0
        moved = target_values(frozen, leaves, tok)[0]
        leaves.acts[1][0] += (moved - full)[n0 : index.n_features]  # layer 1 follows its pre-activations
        after = target_values(frozen, leaves, tok)[0]
        assert float(pred["total"][i]) == pytest.approx(float(after[-1] - full[-1]), rel=1e-9, abs=1e-12)
        checked += abs(float(pred["total"][i] - pred["direct"][i])) > 1e-6
    assert checked > 0  # some layer-0 features act through layer 1, where total and direct differ
    torch.testing.assert_close(pred["total"][n0:], pred["direct"][n0:])  # the last layer has no later features


def test_one_prompt_end_to_end(tiny):
    model, tokenizer, tcs = tiny
    cfg = CheckConfig(nodes=3)
    out = check_graph(model, tokenizer, tcs, "47 + 35 = ", "82", cfg)
    assert out["target"] == "8" and [r["group"] for r in out["rows"]] == ["graph"] * 3 + ["random"] * 3
    top = out["rows"][0]
    assert top["influence"] >= max(r["influence"] for r in out["rows"][3:])
    # the real effect is the demeaned target logit's change under intervene's ablation
    ids = prompt_ids(tokenizer, "47 + 35 = ")
    edit = [{"layer": top["layer"], "pos": top["pos"], "latent": top["latent"], "value": 0.0}]
    every = list(range(model.config.vocab_size))
    res = intervene(model, tcs, ids, edit, every)
    t = tokenizer.encode("8", add_special_tokens=False)[0]
    diff = torch.tensor(res["diff"], dtype=torch.float64)
    assert top["real"] == pytest.approx(float(diff[t] - diff.mean()), rel=1e-9)
    assert set(out["correlation"]) == {"graph_total", "graph_direct", "random_total", "random_direct"}


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="unknown categories \\['add_9d'\\]"):
        CheckConfig(categories="add_2d,add_9d")
    with pytest.raises(ConfigError, match="nodes must be >= 2"):
        CheckConfig(nodes=1)
