"""monosemantic.formats.saelens, round two: the training checkpoints SAELens' own `SAETrainer` writes
(batchtopk, matryoshka_batchtopk, abstopk), the architectures refused with their reason, an
expected_average_only_in factor passed by the caller, and TransformerLens hook names both ways.

The reference is SAELens' own inference SAE of the same weights (`save_inference_model`, then
`SAE.load_from_disk`), on random inputs at scale 1 and 1000: rtol 1e-5, atol 1e-5 x scale.
"""

import json

import pytest
import torch

sae_lens = pytest.importorskip("sae_lens")
from sae_lens import SAE as PeerSAE  # noqa: E402
from sae_lens.config import SAETrainerConfig  # noqa: E402
from sae_lens.training.sae_trainer import SAETrainer  # noqa: E402

from monosemantic import SAEConfig, create_sae, export_sae, load_sae  # noqa: E402
from monosemantic.sae import SAEFormatError  # noqa: E402

D_IN, D_SAE = 12, 40
TRAINING = {
    "batchtopk": (sae_lens.BatchTopKTrainingSAE, sae_lens.BatchTopKTrainingSAEConfig, {"k": 4.0}),
    "matryoshka_batchtopk": (
        sae_lens.MatryoshkaBatchTopKTrainingSAE,
        sae_lens.MatryoshkaBatchTopKTrainingSAEConfig,
        {"k": 4.0, "matryoshka_widths": [10, 25, 40]},
    ),
    "abstopk": (sae_lens.AbsTopKTrainingSAE, sae_lens.AbsTopKTrainingSAEConfig, {"k": 4}),
    "topk": (sae_lens.TopKTrainingSAE, sae_lens.TopKTrainingSAEConfig, {"k": 4}),
}


def checkpoint(tmp_path, arch, hook_name="blocks.3.hook_resid_post", **cfg):
    """What SAETrainer.save_checkpoint writes (it is called here, not imitated), for a training SAE
    with random weights, decoder rows not unit norm, and a trained-looking BatchTopK threshold."""
    cls, cfg_cls, kw = TRAINING[arch]
    sae = cls(cfg_cls(d_in=D_IN, d_sae=D_SAE, **{**kw, **cfg}))
    sae.cfg.metadata.hook_name = hook_name
    with torch.no_grad():
        for p in sae.parameters():
            p.normal_(0, 0.3)
        if hasattr(sae, "topk_threshold"):
            sae.topk_threshold.fill_(0.35)
    trainer_cfg = SAETrainerConfig(total_training_samples=100, train_batch_size_samples=10, lr_end=3e-4)
    SAETrainer(trainer_cfg, sae, iter([])).save_checkpoint("ck", base_path=tmp_path / "run")
    return sae, tmp_path / "run" / "ck"


def inference_peer(sae, tmp_path):
    sae.save_inference_model(tmp_path / "inference")  # SAELens' own conversion of the trained SAE
    return PeerSAE.load_from_disk(tmp_path / "inference")


def assert_same_forward(ours, peer):
    for scale in (1.0, 1000.0):
        tol = {"rtol": 1e-5, "atol": 1e-5 * scale}
        x = torch.randn(64, D_IN) * scale
        z = peer.encode(x)
        torch.testing.assert_close(ours.encode(x), z, **tol)
        torch.testing.assert_close(ours.decode(z), peer.decode(z), **tol)
        torch.testing.assert_close(ours(x).x_hat, peer(x), **tol)
        assert 0 < int((z != 0).sum()) < z.numel()


@pytest.mark.parametrize("arch", ["batchtopk", "matryoshka_batchtopk"])
@pytest.mark.parametrize("rescale", [True, False])
def test_batchtopk_training_checkpoints_match_saelens_inference_sae(tmp_path, arch, rescale):
    sae, path = checkpoint(tmp_path, arch, rescale_acts_by_decoder_norm=rescale)
    ours = load_sae(path)
    ours_arch = "matryoshka" if arch == "matryoshka_batchtopk" else "batchtopk"
    assert (ours.cfg.arch, ours.cfg.k, ours.cfg.hookpoint) == (ours_arch, 4, "layers.3.resid.post")
    assert ours.cfg.origin["architecture"] == arch and ours.cfg.origin["hook_name"] == "blocks.3.hook_resid_post"
    if arch == "matryoshka_batchtopk":  # the peer's widths are our prefixes, and survive our save / load
        assert ours.prefixes == (10, 25, 40) and "matryoshka_widths are its prefixes" in ours.cfg.origin["note"]
        assert load_sae(ours.save(tmp_path / "ours")).prefixes == (10, 25, 40)
    assert_same_forward(ours, inference_peer(sae, tmp_path))
    back = PeerSAE.load_from_disk(export_sae(ours, tmp_path / "export", "saelens"))  # as SAELens' own: jumprelu
    assert_same_forward(ours, back)


@pytest.mark.parametrize("rescale", [True, False])
def test_abstopk_loads_with_signed_latents_and_exports_back(tmp_path, rescale):
    sae, path = checkpoint(tmp_path, "abstopk", rescale_acts_by_decoder_norm=rescale)
    ours = load_sae(path)
    assert (ours.cfg.arch, ours.cfg.k, ours.signed_latents) == ("abstopk", 4, True)
    peer = inference_peer(sae, tmp_path)
    assert bool((peer.encode(torch.randn(64, D_IN)) < 0).any())  # the case worth checking: negative latents
    assert_same_forward(ours, peer)
    back = PeerSAE.load_from_disk(export_sae(ours, tmp_path / "export", "saelens"))
    assert type(back).__name__ == "AbsTopKSAE"
    assert_same_forward(ours, back)


def test_a_topk_training_checkpoint_matches(tmp_path):
    sae, path = checkpoint(tmp_path, "topk")  # rescale_acts_by_decoder_norm is on by default here
    assert_same_forward(load_sae(path), inference_peer(sae, tmp_path))


@pytest.mark.parametrize(
    "arch, why",
    [
        ("matching_pursuit", r"'matching_pursuit' not supported: matching pursuit encodes by greedy residual"),
        ("temporal", r"'temporal' not supported: the temporal SAE's encoder attends over previous tokens"),
    ],
)
def test_unsupported_architectures_are_refused_with_the_reason(tmp_path, arch, why):
    _, path = checkpoint(tmp_path, "abstopk")  # a real SAELens directory; only the architecture differs
    cfg = json.loads((path / "cfg.json").read_text())
    (path / "cfg.json").write_text(json.dumps({**cfg, "architecture": arch}))
    with pytest.raises(SAEFormatError, match=why):
        load_sae(path)


def test_a_missing_scaling_factor_says_what_it_is_and_how_to_pass_it(tmp_path):
    sae, path = checkpoint(tmp_path, "topk", normalize_activations="expected_average_only_in")
    with pytest.raises(
        SAEFormatError, match=r"factor S = sqrt\(d_in\) / mean \|\|x\|\|.*has scaling_factor null.*activation_scale=S"
    ):
        load_sae(path)
    (path / "activation_scaler.json").unlink()
    with pytest.raises(SAEFormatError, match=r"activation_scaler.json is missing.*--activation-scale S"):
        load_sae(path)
    ours = load_sae(path, activation_scale=2.5)
    sae.fold_activation_norm_scaling_factor(2.5)  # what SAETrainer does with the factor at the end
    assert ours.cfg.activation_scale == 2.5
    assert_same_forward(ours, inference_peer(sae, tmp_path))


@pytest.mark.parametrize("rescale", [True, False])
def test_a_batchtopk_checkpoint_with_its_scaling_factor_matches(tmp_path, rescale):
    """Mid-training, the weights expect inputs times the factor in activation_scaler.json; SAETrainer
    folds it at the end (with the threshold, when it is in decoder-norm units)."""
    sae, path = checkpoint(
        tmp_path, "batchtopk", normalize_activations="expected_average_only_in", rescale_acts_by_decoder_norm=rescale
    )
    (path / "activation_scaler.json").write_text(json.dumps({"scaling_factor": 2.5, "has_whitening": False}))
    ours = load_sae(path)
    sae.fold_activation_norm_scaling_factor(2.5)
    assert_same_forward(ours, inference_peer(sae, tmp_path))


@pytest.mark.parametrize(
    "hook_name, ours",
    [
        ("blocks.4.hook_resid_pre", "layers.4.resid.pre"),
        ("blocks.4.hook_resid_mid", "layers.4.resid.mid"),
        ("blocks.4.hook_resid_post", "layers.4.resid.post"),
        ("blocks.4.hook_attn_out", "layers.4.attn.out"),
        ("blocks.4.mlp.hook_post", "layers.4.mlp.neurons"),
        ("blocks.4.hook_mlp_out", "layers.4.mlp.out"),
        ("blocks.4.attn.hook_z", "blocks.4.attn.hook_z"),  # no site of ours: kept as it is
    ],
)
def test_transformer_lens_hook_names_translate_both_ways(tmp_path, hook_name, ours):
    _, path = checkpoint(tmp_path, "topk", hook_name=hook_name)
    loaded = load_sae(path)
    assert loaded.cfg.hookpoint == ours and loaded.cfg.origin["hook_name"] == hook_name
    loaded.save(tmp_path / "converted")
    back = export_sae(load_sae(tmp_path / "converted"), tmp_path / "export", "saelens")
    assert PeerSAE.load_from_disk(back).cfg.metadata.hook_name == hook_name


def test_our_hookpoints_are_exported_under_their_transformer_lens_name(tmp_path):
    sae = create_sae(SAEConfig(arch="topk", d_in=D_IN, d_sae=D_SAE, k=4, hookpoint="layers.2.mlp.neurons"))
    export_sae(sae, tmp_path / "out", "saelens")
    assert PeerSAE.load_from_disk(tmp_path / "out").cfg.metadata.hook_name == "blocks.2.mlp.hook_post"
    assert load_sae(tmp_path / "out").cfg.hookpoint == "layers.2.mlp.neurons"
