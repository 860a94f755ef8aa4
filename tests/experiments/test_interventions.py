"""Interventions with the SAE spliced in and the error term kept, against hand computations."""

import pytest
import torch

from monosemantic.experiments.interventions import InterventionError, clamp, intervene, mean_ablate, steer, zero
from monosemantic.hooks import capture
from monosemantic.models import load_model
from monosemantic.sae import SAEConfig, create_sae

HOOK = "layers.1.mlp.neurons"


@pytest.fixture(scope="module")
def setup(tiny_model_dirs):
    model, tok = load_model(tiny_model_dirs["gpt2"])
    torch.manual_seed(0)
    sae = create_sae(SAEConfig(arch="topk", d_in=128, d_sae=256, k=8, hookpoint=HOOK))
    ids = torch.tensor([tok("12 + 7 = 19")["input_ids"], tok("3 × 4 = 12 ")["input_ids"]])
    return model, sae, ids


def acts_and_logits(model, ids, sae=None, interventions=()):
    import contextlib

    ctx = intervene(model, sae, interventions) if sae is not None else contextlib.nullcontext()
    with ctx, capture(model, HOOK) as acts:  # capture registered last: it sees the edited activation
        logits = model(input_ids=ids).logits
    return acts[HOOK], logits


def test_no_intervention_reproduces_the_clean_model(setup):
    model, sae, ids = setup
    clean_acts, clean = acts_and_logits(model, ids)
    acts, logits = acts_and_logits(model, ids, sae)
    torch.testing.assert_close(acts, clean_acts, rtol=0, atol=1e-5)
    torch.testing.assert_close(logits, clean, rtol=0, atol=1e-5)
    assert not torch.equal(sae.decode(sae.encode(clean_acts)), clean_acts)  # the SAE alone is not exact


def test_zero_ablation_removes_exactly_that_latents_contribution(setup):
    model, sae, ids = setup
    clean_acts, _ = acts_and_logits(model, ids)
    z = sae.encode(clean_acts)
    j = int(z[0, 3].argmax())  # a latent active at position 3
    acts, _ = acts_and_logits(model, ids, sae, [zero(j, positions=[3])])
    expected = clean_acts.clone()
    expected[:, 3] -= z[:, 3, j, None] * sae.W_dec[j]
    torch.testing.assert_close(acts, expected, rtol=0, atol=1e-5)


def test_mean_clamp_and_steer_by_hand(setup):
    model, sae, ids = setup
    clean_acts, _ = acts_and_logits(model, ids)
    z = sae.encode(clean_acts)
    a, b = 5, 17
    acts, _ = acts_and_logits(
        model,
        ids,
        sae,
        [mean_ablate([a, b], [0.5, 0.25]), clamp(a, 3.0, positions=[-1]), steer(b, 2.0, positions=[0, 1])],
    )
    z_new = z.clone()
    z_new[..., a], z_new[..., b] = 0.5, 0.25
    z_new[:, -1, a] = 3.0
    expected = clean_acts + (z_new - z) @ sae.W_dec
    expected[:, :2] += 2.0 * sae.W_dec[b]
    torch.testing.assert_close(acts, expected, rtol=0, atol=1e-4)


def test_hooks_are_removed_after_an_exception(setup):
    model, sae, ids = setup
    with pytest.raises(RuntimeError, match="boom"):
        with intervene(model, sae, [zero(1)]):
            raise RuntimeError("boom")
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_bad_interventions_are_clear_errors(setup):
    model, sae, ids = setup
    with pytest.raises(InterventionError, match=r"feature\(s\) \[256\] do not exist; this SAE has features 0-255"):
        with intervene(model, sae, [zero([3, 256])]):
            pass
    with pytest.raises(InterventionError, match="2 values for 3 features"):
        with intervene(model, sae, [clamp([1, 2, 3], [1.0, 2.0])]):
            pass
    with pytest.raises(InterventionError, match="outside a sequence"):
        acts_and_logits(model, ids, sae, [zero(1, positions=[40])])
    assert all(not m._forward_hooks for m in model.modules())


def test_input_normalised_saes_take_the_general_path(setup):
    model, _, ids = setup
    torch.manual_seed(1)
    sae = create_sae(SAEConfig(arch="topk", d_in=128, d_sae=256, k=8, hookpoint=HOOK, input_norm="layer_norm"))
    clean_acts, clean = acts_and_logits(model, ids)
    acts, logits = acts_and_logits(model, ids, sae)
    torch.testing.assert_close(logits, clean, rtol=0, atol=1e-4)
    z = sae.encode(clean_acts)
    j = int(z[0, 2].argmax())
    acts, _ = acts_and_logits(model, ids, sae, [zero(j)])
    edited = z.clone()
    edited[..., j] = 0
    expected = sae.decode(edited, clean_acts) + clean_acts - sae.decode(z, clean_acts)
    torch.testing.assert_close(acts, expected, rtol=0, atol=1e-4)
    assert not torch.allclose(acts, clean_acts, atol=1e-4)
