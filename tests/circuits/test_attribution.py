"""monosemantic.circuits: the frozen replacement model against the real model, the batched-backward
edges against the slow one-source-at-a-time reference, and pruning/scores against values by hand."""

import pytest
import torch
from tiny_transcoders import random_transcoders as transcoders

from monosemantic.circuits.attribution import (
    adjacency,
    node_index,
    reference_adjacency,
    target_values,
)
from monosemantic.circuits.prune import influence, normalize, prune, scores
from monosemantic.circuits.replacement import Leaves, freeze, linear_forward
from monosemantic.data.corpora import prompt_ids
from monosemantic.models import load_model


@pytest.fixture(scope="module")
def model_and_ids(tiny_model_dirs):
    model, tokenizer = load_model(tiny_model_dirs["gpt2"])
    return model.double(), torch.tensor(prompt_ids(tokenizer, "47 + 35 = "))


@pytest.fixture(scope="module", params=["transcoder", "skip_transcoder"])
def frozen(request, model_and_ids):
    model, ids = model_and_ids
    return freeze(model, transcoders(model.config.n_embd, model.config.n_layer, request.param), ids)


def test_the_clean_pass_is_the_models_forward_and_the_linear_model_reproduces_it(frozen, model_and_ids):
    model, ids = model_and_ids
    with torch.no_grad():
        expected = model(input_ids=ids[None]).logits[0]
        torch.testing.assert_close(frozen.logits, expected)
        mlp_ins, final = linear_forward(frozen, frozen.leaves(2))
    torch.testing.assert_close(final[1] @ model.lm_head.weight.T, expected)
    for got, clean in zip(mlp_ins, frozen.mlp_in):
        torch.testing.assert_close(got[0], clean)
    assert all(f.pos.shape[0] == 4 * ids.shape[0] or bool((f.act > 0).all()) for f in frozen.features)


def test_batched_backward_edges_equal_the_one_source_at_a_time_reference(frozen):
    tokens = torch.tensor([5, 9, 17])
    A = adjacency(frozen, tokens, batch_size=7)  # batches that cut across positions and layers
    ref = reference_adjacency(frozen, tokens)
    index = node_index(frozen, 3)
    assert A.shape == (index.n_nodes, index.n_nodes) and index.n_features > 20
    torch.testing.assert_close(A, ref, rtol=1e-9, atol=1e-10)
    # what the check covers: features of layer 0 feed those of layer 1, and nothing feeds its own layer
    n0 = frozen.features[0].pos.shape[0]
    assert A[n0 : index.n_features, :n0].abs().sum() > 0
    assert A[:n0, : index.n_features].abs().sum() == 0


def test_each_targets_edges_sum_to_its_value_less_the_biases(frozen):
    """The model is linear in its leaves: a target's value is the sum of its incoming edges plus
    what the constants (biases) give with every leaf at zero."""
    tokens = torch.tensor([5])
    A = adjacency(frozen, tokens)
    leaves = frozen.leaves(1)
    zero = Leaves(
        torch.zeros_like(leaves.emb),
        [torch.zeros_like(a) for a in leaves.acts],
        [torch.zeros_like(e) for e in leaves.errors],
    )
    full, bias = target_values(frozen, leaves, tokens)[0], target_values(frozen, zero, tokens)[0]
    index = node_index(frozen, 1)
    rows = torch.cat([torch.arange(index.n_features), torch.arange(index.logit_start, index.n_nodes)])
    torch.testing.assert_close(A[rows].sum(1), full - bias)


def toy_graph():
    """feature f (0), error e (1), tokens t0 (2), t1 (3), logit (4): t0 -> f (2), t1 -> f (-1),
    f -> logit (3), e -> logit (1), t1 -> logit (0.5)."""
    from monosemantic.circuits.attribution import NodeIndex

    A = torch.zeros(5, 5, dtype=torch.float64)
    A[0, 2], A[0, 3] = 2.0, -1.0
    A[4, 0], A[4, 1], A[4, 3] = 3.0, 1.0, 0.5
    return A, NodeIndex(n_features=1, n_layers=1, n_pos=1, n_logits=1)


def test_influence_and_scores_by_hand():
    A, _ = toy_graph()
    # normalised: row f = [.., 2/3, 1/3, ..]; row logit = [3/4.5, 1/4.5, 0, 0.5/4.5]
    w = torch.tensor([0, 0, 0, 0, 1.0], dtype=torch.float64)
    inf = influence(normalize(A), w)
    f, e, t1 = 3 / 4.5, 1 / 4.5, 0.5 / 4.5
    torch.testing.assert_close(inf, torch.tensor([f, e, f * 2 / 3, t1 + f / 3, 0], dtype=torch.float64))
    # NodeIndex(1 feature, 1 layer x 1 position, 1 logit) would have 1 token; the toy has 2
    from monosemantic.circuits.attribution import NodeIndex

    index = NodeIndex(n_features=1, n_layers=1, n_pos=2, n_logits=1)
    A6 = torch.zeros(6, 6, dtype=torch.float64)  # errors are per (layer, position): add a silent one
    keep = [0, 1, 3, 4, 5]
    A6[torch.tensor(keep)[:, None], torch.tensor(keep)[None, :]] = A
    replacement, completeness = scores(A6, index)
    tokens = f * 2 / 3 + t1 + f / 3
    assert replacement == pytest.approx(tokens / (tokens + e))
    out = torch.tensor([f, e, 0, f * 2 / 3, t1 + f / 3, 1])
    non_error = torch.tensor([1, 1, 1, 1, 1, 1 - e])
    assert completeness == pytest.approx(float((non_error * out).sum() / out.sum()))


def test_pruning_keeps_the_influential_nodes_and_always_tokens_and_logits():
    A, index = toy_graph()
    index = type(index)(n_features=1, n_layers=1, n_pos=2, n_logits=1)
    A6 = torch.zeros(6, 6, dtype=torch.float64)
    keep = [0, 1, 3, 4, 5]
    A6[torch.tensor(keep)[:, None], torch.tensor(keep)[None, :]] = A
    full = prune(A6, index, node_threshold=1.0, edge_threshold=1.0)
    assert full.node_mask.tolist() == [True, True, False, True, True, True]  # the silent error goes
    tight = prune(A6, index, node_threshold=0.5, edge_threshold=0.98)
    assert tight.node_mask.tolist() == [True, False, False, True, True, True]  # f holds 0.67 > 0.5 alone
    assert not tight.edge_mask[:, 1].any() and tight.edge_mask[5, 0]
