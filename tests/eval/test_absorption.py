"""monosemantic.eval.absorption: on hand-built SAEs where absorption is planted on a known share of a
concept's tokens the measure returns that share, and 0 where it is not planted; the main-latent and
per-token rules against cases worked by hand; the benchmark on a real (tiny) run."""

import math

import pytest
import torch

from monosemantic.eval.absorption import absorbed, absorption_benchmark, absorption_scores, main_latents
from monosemantic.sae import SAEConfig, create_sae

D, CHILDREN, OTHERS = 32, 10, 21  # dims: e0 parent, e1..e10 children, e11..e31 unrelated features


def toy_tokens(n_parent_only: int, n_child: int, n_other: int, seed: int = 0):
    """Activations x [n, D] and the parent concept y [n], every token written twice in a row (2i, 2i+1)
    so that the even / odd split puts exactly half of each kind in each half.

    parent-only tokens: a e0; child tokens (child i of the parent, e.g. "digit 7" of "digit"):
    a e0 + c e_{1+i}; other tokens: c e_{11+j}; a, c in [0.9, 1.1]; noise 0.01."""
    g = torch.Generator().manual_seed(seed)
    rows: list[tuple] = [(0, None)] * n_parent_only
    rows += [(0, 1 + i % CHILDREN) for i in range(n_child)]
    rows += [(None, 1 + CHILDREN + i % OTHERS) for i in range(n_other)]
    x = torch.zeros(2 * len(rows), D)
    y = torch.zeros(2 * len(rows), dtype=torch.bool)
    for r, (parent, other) in enumerate(rows):
        for t in (2 * r, 2 * r + 1):
            if parent is not None:
                x[t, parent] = 0.9 + 0.2 * torch.rand(1, generator=g).item()
                y[t] = True
            if other is not None:
                x[t, other] = 0.9 + 0.2 * torch.rand(1, generator=g).item()
    return x + 0.01 * torch.randn(x.shape, generator=g), y


def hand_sae(absorbing: bool):
    """A ReLU SAE built by hand, one latent per dim. absorbing: the parent latent is switched off by
    any child (encoder e0 - 10 sum e_child) and each child latent's decoder is (e0 + e_child) / sqrt 2,
    so it carries the parent on the child's tokens; otherwise every latent reads and writes its own dim."""
    sae = create_sae(SAEConfig(arch="relu", d_in=D, d_sae=D, apply_b_dec_to_input=False))
    eye = torch.eye(D)
    W_enc, W_dec = eye.clone(), eye.clone()
    if absorbing:
        W_enc[1 : 1 + CHILDREN, 0] = -10.0
        for i in range(1, 1 + CHILDREN):
            W_dec[i] = (eye[0] + eye[i]) / math.sqrt(2)
    with torch.no_grad():
        sae.W_enc.copy_(W_enc)
        sae.W_dec.copy_(W_dec)
        sae.b_enc.fill_(-0.05)  # 5 sigma of the noise: no latent fires on noise alone
        sae.b_dec.zero_()
    return sae.eval()


def score(sae, x, y):
    z = sae.encode(x).detach()
    train = torch.arange(x.shape[0]) % 2 == 0
    return absorption_scores(x, z, y[:, None], ["parent"], train, sae.W_dec.detach(), sae.b_dec.detach())


@pytest.mark.parametrize("n_parent_only, n_child, share", [(1500, 500, 0.25), (1800, 200, 0.1), (1400, 600, 0.3)])
def test_planted_absorption_is_measured_at_its_share(n_parent_only, n_child, share):
    x, y = toy_tokens(n_parent_only, n_child, 3000)
    out = score(hand_sae(absorbing=True), x, y)
    [row] = out["per_concept"]
    assert row["probe_f1"] == 1.0 and row["probe_true_positives"] == n_parent_only + n_child
    assert row["main_latents"] == [0]  # each child latent covers too few parent tokens to be a main one
    assert row["absorbed"] == n_child
    assert row["absorption"] == pytest.approx(share, abs=1e-12)
    assert out["mean_absorption"] == out["pooled_absorption"] == row["absorption"]


def test_without_absorption_the_measure_is_zero():
    x, y = toy_tokens(1500, 500, 3000)
    [row] = score(hand_sae(absorbing=False), x, y)["per_concept"]
    assert row["main_latents"] == [0] and row["probe_true_positives"] == 2000
    assert row["absorbed"] == 0 and row["absorption"] == 0.0


def test_a_concept_without_a_clean_probe_direction_is_skipped():
    x, _ = toy_tokens(1500, 500, 3000)
    noise = torch.rand(x.shape[0], generator=torch.Generator().manual_seed(1)) < 0.3  # unrelated to x
    sae = hand_sae(absorbing=True)
    train = torch.arange(x.shape[0]) % 2 == 0
    out = absorption_scores(x, sae.encode(x).detach(), noise[:, None], ["noise"], train, sae.W_dec, sae.b_dec)
    assert out == {"concepts": 0, "mean_absorption": None, "pooled_absorption": None, "per_concept": []}


def test_main_latents_are_added_while_f1_rises_by_at_least_003():
    y = torch.tensor([1] * 10 + [0] * 10, dtype=torch.bool)
    fires = torch.zeros(20, 4, dtype=torch.bool)
    fires[:6, 0] = True  # recall 0.6: F1 0.75
    fires[6:9, 1] = True  # with it: recall 0.9, F1 0.947 (+0.197)
    fires[9, 2] = True  # with it: recall 1.0, F1 1.0 (+0.053)
    fires[10:, 3] = True  # negatives only: never helps
    assert main_latents(fires, y) == [0, 1, 2]
    fires[9, 2] = False
    fires[9, 2] = fires[10, 2] = fires[11, 2] = fires[12, 2] = True  # +1 TP, +3 FP: F1 0.909, a fall
    assert main_latents(fires, y) == [0, 1]


def test_the_per_token_rule_by_hand():
    """Tokens as SAEBench's rule sees them: main silent, top latent aligned and carrying >= 0.4."""
    p = torch.tensor([1.0, 0.0, 0.0])
    W_dec = torch.tensor([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.02, 0.0, 0.9998], [0.0, 1.0, 0.0]])
    x_c = torch.tensor([[1.0, 1.0, 0.0]] * 5)
    z = torch.tensor(
        [
            [0.0, 1.0, 0.0, 0.0],  # absorbed: projection 0.6 of 1.0
            [0.1, 1.0, 0.0, 0.0],  # the main latent fires
            [0.0, 0.6, 0.0, 0.0],  # projection 0.36 < 0.4
            [0.0, 0.0, 30.0, 0.0],  # top latent's cosine 0.02 < 0.025 (projection 0.6)
            [0.0, 0.0, 0.0, 1.0],  # nothing projects on p
        ]
    )
    assert absorbed(z, x_c, [0], p, W_dec).tolist() == [True, False, False, False, False]
    assert absorbed(z[:1], -x_c[:1], [0], p, W_dec).tolist() == [False]  # the token's own projection < 0


@pytest.mark.integration
@pytest.mark.usefixtures("one_thread")
def test_the_benchmark_scores_the_math_corpus_concepts_of_a_run(tiny_run):
    out = absorption_benchmark(tiny_run, tokens=3000)
    assert out is not None and out["tokens"] >= 3000
    assert out["concepts"] == len(out["per_concept"]) > 0
    names = {r["concept"] for r in out["per_concept"]}
    assert "answer digit" in names, names  # the roles' concepts, in words (a random tiny model probes few cleanly)
    for r in out["per_concept"]:
        assert r["probe_f1"] >= 0.6 and 1 <= len(r["main_latents"]) <= 10
        assert 0 <= r["absorbed"] <= r["probe_true_positives"] and r["absorption"] == pytest.approx(
            r["absorbed"] / max(r["probe_true_positives"], 1)
        )
    assert 0 <= out["mean_absorption"] <= 1 and 0 <= out["pooled_absorption"] <= 1
