"""Sparse probing and feature splitting on hand-built cases where the answer is known."""

import math

import pytest
import torch

from monosemantic.eval.probing import linear_probe, logistic_fit, sparse_probe, threshold_fit
from monosemantic.eval.splitting import find_splits, match_fraction


def test_threshold_fit_by_hand():
    x = torch.tensor([[1.0, 5.0], [2.0, 4.0], [3.0, 3.0], [4.0, 2.0]])
    y = torch.tensor([0, 0, 1, 1])
    acc, threshold, sign = threshold_fit(x, y)
    assert acc.tolist() == [1.0, 1.0]
    assert threshold[0].item() == pytest.approx(2.5) and sign[0] == 1  # x > 2.5
    assert sign[1] == -1 and threshold[1].item() == pytest.approx(-3.5)  # -x > -3.5, i.e. x < 3.5


def make_data(n=2000, d=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.rand(n, generator=g) < 0.5
    x = torch.randn(n, d, generator=g)
    x[:, 7] = y.float() * 2 + 0.3 * torch.randn(n, generator=g)  # one latent carries the label
    return x, y


def test_the_single_best_latent_is_the_one_that_carries_the_label():
    x, y = make_data()
    result = sparse_probe(x, y, k=4)
    assert result.single_index == 7 and result.single > 0.97
    assert 7 in result.top_k_indices and result.top_k > 0.97


def test_k_latents_beat_one_when_the_label_needs_two():
    g = torch.Generator().manual_seed(1)
    n = 3000
    a, b = torch.randn(n, generator=g), torch.randn(n, generator=g)
    y = a + b > 0
    x = torch.cat([a[:, None], b[:, None], torch.randn(n, 10, generator=g)], 1)
    result = sparse_probe(x, y, k=2)
    assert sorted(result.top_k_indices) == [0, 1] and result.top_k > 0.97
    assert 0.65 < result.single < 0.85  # one of the two alone: 1/2 + arcsin(1/sqrt 2)/pi = 0.75
    assert 0.5 + math.asin(1 / math.sqrt(2)) / math.pi == pytest.approx(0.75)
    assert linear_probe(x, y) > 0.97


def test_noise_probes_sit_at_chance():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(2000, 20, generator=g), torch.rand(2000, generator=g) < 0.5
    assert 0.4 < sparse_probe(x, y, k=4).single < 0.6 and 0.4 < linear_probe(x, y) < 0.6


def test_logistic_fit_separates_a_separable_set():
    x = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    w, b = logistic_fit(x, torch.tensor([0, 0, 1, 1]))
    assert ((x @ w + b > 0).long().tolist()) == [0, 0, 1, 1]


def rotate(v: torch.Tensor, towards: torch.Tensor, degrees: float) -> torch.Tensor:
    t = math.radians(degrees)
    return math.cos(t) * v + math.sin(t) * towards


def test_splits_are_found_where_built():
    eye = torch.eye(8)
    narrow = eye[:4] * 3.0  # 4 features along e0..e3 (norms do not matter)
    wide = torch.stack(
        [
            rotate(eye[0], eye[6], 20),
            rotate(eye[0], eye[7], -20),  # e0 splits in two
            rotate(eye[1], eye[6], 25),
            rotate(eye[1], eye[7], 25),
            rotate(eye[1], eye[5], 30),  # e1 in three
            eye[2],  # e2 stays one
            eye[4],
            eye[5] + eye[6],  # unrelated to any narrow feature
        ]
    )
    splits = find_splits(narrow, wide, threshold=0.6)
    assert [(s.parent, sorted(s.children)) for s in splits] == [(1, [2, 3, 4]), (0, [0, 1])]
    assert splits[1].cosines == pytest.approx([math.cos(math.radians(20))] * 2, rel=1e-5)
    assert match_fraction(narrow, wide, 0.6) == pytest.approx(6 / 8)
    with pytest.raises(ValueError, match="different widths d_in: 8 and 4"):
        find_splits(narrow, wide[:, :4])
