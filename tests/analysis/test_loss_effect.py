"""Loss effects of features on their stored top examples, against a slow reference: one example per
forward, the feature's decoder contribution removed by hand at its hookpoint (`hooks.patch`)."""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

from monosemantic.analysis.loss_effect import example_rises, load_loss_effects, loss_effects
from monosemantic.hooks import patch
from monosemantic.runmodel import RunModel

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]


@torch.inference_mode()
def reference_rise(run: RunModel, latent: int, ids: list[int]) -> float:
    """Rise of -log p(last token) at the position before it, the latent's share of the reconstruction
    (decode(z) - decode(z without it)) subtracted from the activation there."""

    def remove(x):
        p = x.shape[1] - 2
        z = run.sae.encode(x[:, p].float())
        without = z.clone()
        without[:, latent] = 0
        x = x.clone()
        x[:, p] -= (run.sae.decode(z) - run.sae.decode(without)).to(x.dtype)
        return x

    t = torch.tensor([ids])
    clean = F.cross_entropy(run.model(input_ids=t).logits[0, -2], t[0, -1])
    with patch(run.model, {run.hookpoint: remove}):
        ablated = F.cross_entropy(run.model(input_ids=t).logits[0, -2], t[0, -1])
    return float(ablated - clean)


def test_rises_match_one_forward_per_example_with_the_contribution_removed_by_hand(analysed_run):
    run = RunModel.of_run(analysed_run)
    features = analysed_run / "features"
    window = json.loads((features / "manifest.json").read_text())["settings"]["analysis"]["window"]
    before = window * 3 // 4
    (shard,) = features.glob("latents_*.safetensors")
    with safe_open(shard, "pt") as f:
        windows, values = f.get_tensor("top_ctx_tokens"), f.get_tensor("top_value")
    checked = 0
    for latent in (82, 5, 201):
        rows = [w for w, v in zip(windows[latent].tolist(), values[latent].tolist()) if v > 0]
        got = example_rises(run.model, run.sae, run.hookpoint, latent, rows, before)
        usable = [w[: before + 2] for w in rows if w[before + 1] >= 0]
        usable = [[t for t in w if t >= 0] for w in usable]
        want = sorted((w[-1], reference_rise(run, latent, w)) for w in usable)
        assert [t for t, _ in sorted(got)] == [t for t, _ in want]
        assert [r for _, r in sorted(got)] == pytest.approx([r for _, r in want], abs=1e-5)  # float32, batched
        assert any(abs(r) > 1e-4 for _, r in got)  # the ablation changes something
        checked += len(got)
    assert checked > 10


def test_effects_are_mean_rises_per_next_token_largest_first():
    vocab = ["a", "b", "c", "d"]
    rises = [(1, 0.5), (2, 0.125), (1, 0.25), (3, 1.0), (3, -2.0), (0, 0.375), (2, 0.625)]  # exact in binary
    assert loss_effects(rises, vocab, n=3) == [["a", 0.375, 1], ["b", 0.375, 2], ["c", 0.375, 2]]  # ties: lower id
    assert loss_effects(rises, vocab)[-1] == ["d", -0.5, 2]


def test_analyze_stored_each_features_effects_from_its_top_windows(analysed_run):
    run = RunModel.of_run(analysed_run)
    features = analysed_run / "features"
    manifest = json.loads((features / "manifest.json").read_text())
    before = manifest["settings"]["analysis"]["window"] * 3 // 4
    (shard,) = features.glob("latents_*.safetensors")
    with safe_open(shard, "pt") as f:
        windows, values = f.get_tensor("top_ctx_tokens"), f.get_tensor("top_value")
    for latent in (82, 5):
        rows = [w for w, v in zip(windows[latent].tolist(), values[latent].tolist()) if v > 0]
        want = loss_effects(example_rises(run.model, run.sae, run.hookpoint, latent, rows, before), run.vocab)
        got = load_loss_effects(features, latent, manifest["shard_latents"], manifest["n_latents"])
        assert got["effects"] == [[t, pytest.approx(r, abs=1e-6), n] for t, r, n in want] and want
