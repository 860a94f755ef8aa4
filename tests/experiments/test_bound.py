"""The ablation bound and position-restricted ablations against ablations made by hand: a forward hook
registered in the test on the tiny GPT-2's first block, positions found from the prompt's characters,
every item scored alone (`hand_scoring.py`)."""

import numpy as np
import pytest
import torch
from hand_scoring import assert_scores_match, task_scores

from monosemantic.experiments.ablate import run_ablation
from monosemantic.experiments.bound import activation_means
from monosemantic.experiments.positions import parse_positions
from monosemantic.experiments.tasks import builtin_task
from monosemantic.hooks import capture
from monosemantic.models import load_model
from monosemantic.sae import SAEConfig, create_sae

HOOK = "layers.0.resid.post"  # the output of transformer.h[0]
SITES = ("all", "firing", "relation", "answer_start")
TEXTS = ["12 + 7 = 19", "3 × 4 = 12", "22 ÷ 7 ≈ 3.14", "veinte menos tres es igual a diecisiete"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tiny_model_dirs):
    model, tok = load_model(tiny_model_dirs["gpt2"])
    torch.manual_seed(0)
    sae = create_sae(SAEConfig(arch="topk", d_in=32, d_sae=64, k=4, hookpoint=HOOK)).eval()
    task = builtin_task("relation", 4)
    zs = []
    for item in task.items:
        with capture(model, HOOK) as acts:
            model(input_ids=torch.tensor([tok(item.prompt + item.target)["input_ids"]]))
        zs.append(sae.encode(acts[HOOK][0, 1:]))
    order = torch.argsort((torch.cat(zs) != 0).float().mean(0), descending=True, stable=True).tolist()
    features, control = order[:2], order[2:4]  # latents that fire often, but not everywhere
    means = {i: 0.5 + 0.01 * i for i in range(64)}
    mean = activation_means(model, tok, [HOOK], TEXTS)[HOOK]
    result = run_ablation(
        model,
        tok,
        sae,
        task,
        features,
        [control],
        "mean",
        means,
        sites=[parse_positions(s) for s in SITES],
        bound_mean=mean,
    )
    clean, clean_lps = task_scores(model, tok, task.items)
    return model, tok, sae, task, features, control, means, mean, result, clean, clean_lps


def hand_positions(tok, item, site, firing=None):
    """[T] bool over the sequence as the model reads it (BOS + prompt + answer so far), by hand."""
    prompt = tok(item.prompt)["input_ids"]

    def mask(x, z):
        t = torch.arange(x.shape[1])
        if site == "all":
            return t >= 1
        if site == "firing":
            return (t >= 1) & (z[0][:, firing] != 0).any(-1)
        if site == "answer_start":
            return t == len(prompt) - 1
        chars = tok.convert_ids_to_tokens(prompt)
        return torch.tensor([j < len(chars) and chars[j] in ("=", "≈") for j in range(x.shape[1])])

    return mask


def test_activation_means_by_hand(setup):
    model, tok, *_ = setup
    rows = []
    for text in TEXTS:
        ids = [tok.bos_token_id, *tok(text, add_special_tokens=False)["input_ids"], tok.eos_token_id]
        with torch.no_grad():
            hidden = model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[1]
        rows.append(hidden[0, 1:])  # every token but BOS
    expected = torch.cat(rows).double().mean(0).float()
    torch.testing.assert_close(setup[7], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("site", SITES)
def test_bound_equals_a_mean_ablation_by_hand(setup, site):
    model, tok, sae, task, features, _, _, mean, result, clean, clean_lps = setup

    def edit_for(i):
        where = hand_positions(tok, task.items[i], site, features)

        def edit(x):
            mask = where(x, sae.encode(x))
            return torch.where(mask[None, :, None], mean, x)

        return edit

    expected, _ = task_scores(model, tok, task.items, model.transformer.h[0], edit_for, clean_lps)
    assert_scores_match(result.sites[site].bound, expected)
    assert_scores_match(result.clean, clean)
    assert not np.allclose(expected["ce"], clean["ce"], rtol=0, atol=1e-4)  # the bound moves something


@pytest.mark.parametrize("site", SITES)
def test_position_restricted_ablation_matches_one_by_hand(setup, site):
    """Features and control mean-ablated at the site's positions only, error term kept; at `firing`
    each set where its own latents fire."""
    model, tok, sae, task, features, control, means, _, result, _, clean_lps = setup

    def ablation_for(ids):
        def edit_for(i):
            where = hand_positions(tok, task.items[i], site, ids)

            def edit(x):
                z = sae.encode(x)
                edited = z.clone()
                mask = where(x, z)
                edited[0, mask.nonzero()[:, 0].unsqueeze(1), torch.tensor(ids)] = torch.tensor([means[j] for j in ids])
                return sae.decode(edited) + (x - sae.decode(z))

            return edit

        return edit_for

    module = model.transformer.h[0]
    expected, _ = task_scores(model, tok, task.items, module, ablation_for(features), clean_lps)
    assert_scores_match(result.sites[site].ablated, expected)
    expected_control, _ = task_scores(model, tok, task.items, module, ablation_for(control), clean_lps)
    assert_scores_match(result.sites[site].controls[0], expected_control)


def test_restricted_ablations_differ_from_the_all_position_one(setup):
    result = setup[8]
    ce = {site: result.sites[site].ablated.ce for site in SITES}
    for site in ("firing", "relation", "answer_start"):
        assert not np.allclose(ce[site], ce["all"], rtol=0, atol=1e-5), site
    assert result.sites["relation"].touched == 4 and result.sites["firing"].touched is None
