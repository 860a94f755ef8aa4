"""monosemantic.formats.saelens: SAEs written by SAELens' own code load with `load_sae` and encode and
decode as SAELens' own forward pass does; our SAEs exported to SAELens load in SAELens and match."""

import json

import pytest
import torch

sae_lens = pytest.importorskip("sae_lens")
from sae_lens import SAE as PeerSAE  # noqa: E402
from sae_lens import (  # noqa: E402  # noqa: E402
    GatedSAE,
    GatedSAEConfig,
    JumpReLUSAE,
    JumpReLUSAEConfig,
    StandardSAE,
    StandardSAEConfig,
    TopKSAE,
    TopKSAEConfig,
)
from sae_lens.training.activation_scaler import ActivationScaler  # noqa: E402

from monosemantic import SAE, SAEConfig, create_sae, export_sae, load_sae  # noqa: E402
from monosemantic.sae import SAEFormatError  # noqa: E402

PEERS = {
    "standard": (StandardSAE, StandardSAEConfig),
    "topk": (TopKSAE, TopKSAEConfig),
    "jumprelu": (JumpReLUSAE, JumpReLUSAEConfig),
    "gated": (GatedSAE, GatedSAEConfig),
}
TOL = {"rtol": 1e-5, "atol": 1e-5}


def peer_sae(arch, d_in=12, d_sae=40, **cfg):
    cls, cfg_cls = PEERS[arch]
    peer = cls(cfg_cls(d_in=d_in, d_sae=d_sae, **cfg))
    with torch.no_grad():  # random everything, decoder rows not unit norm: every term matters
        for p in peer.parameters():
            p.normal_(0, 0.3)
        if arch == "jumprelu":
            peer.threshold.uniform_(0.0, 0.5)
    return peer


def assert_same_forward(ours, peer, d_in=12):
    x = torch.randn(2, 15, d_in) * 2
    z_peer = peer.encode(x)
    torch.testing.assert_close(ours.encode(x), z_peer, **TOL)
    torch.testing.assert_close(ours.decode(z_peer, x), peer.decode(peer.encode(x)), **TOL)
    torch.testing.assert_close(ours(x).x_hat, peer(x), **TOL)
    assert 0 < int((z_peer != 0).sum()) < z_peer.numel()  # sparse, not trivially empty or dense


CASES = {
    "standard": ("standard", {}),
    "standard, b_dec not subtracted": ("standard", {"apply_b_dec_to_input": False}),
    "topk": ("topk", {"k": 5}),
    "topk, rescaled by decoder norm": ("topk", {"k": 5, "rescale_acts_by_decoder_norm": True}),
    "jumprelu": ("jumprelu", {}),
    "gated": ("gated", {}),
    "topk, layer_norm": ("topk", {"k": 5, "normalize_activations": "layer_norm"}),
    "standard, constant_norm_rescale": ("standard", {"normalize_activations": "constant_norm_rescale"}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_files_written_by_saelens_match_its_forward_pass(tmp_path, case):
    arch, cfg = CASES[case]
    peer_sae(arch, **cfg).save_model(tmp_path)
    peer = PeerSAE.load_from_disk(tmp_path)  # the peer's own loader is the reference
    ours = load_sae(tmp_path)
    assert ours.cfg.apply_b_dec_to_input == cfg.get("apply_b_dec_to_input", True)
    assert_same_forward(ours, peer)
    with pytest.raises(SAEFormatError, match="load with monosemantic.load_sae"):  # ours only
        SAE.load(tmp_path)


def test_expected_average_normalisation_folds_saelens_scaler(tmp_path):
    peer_sae("jumprelu", normalize_activations="expected_average_only_in").save_model(tmp_path)
    with pytest.raises(SAEFormatError, match=r"expected_average_only_in.*activation_scaler.json.*is missing"):
        load_sae(tmp_path)
    ActivationScaler(scaling_factor=2.5).save(str(tmp_path / "activation_scaler.json"))
    peer = PeerSAE.load_from_disk(tmp_path)
    peer.fold_activation_norm_scaling_factor(2.5)  # what SAELens does with the factor at the end of training
    ours = load_sae(tmp_path)
    assert ours.cfg.activation_scale == 2.5 and ours.cfg.input_norm == "none"
    assert_same_forward(ours, peer)


@pytest.mark.parametrize("activation", ["relu", "topk"])
def test_configs_of_saelens_before_6_load(tmp_path, activation):
    arch = "topk" if activation == "topk" else "standard"
    peer_sae(arch, **({"k": 6} if arch == "topk" else {})).save_model(tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    old = {
        "model_name": "gpt2-small",
        "hook_point": "blocks.3.hook_resid_pre",
        "hook_point_layer": 3,
        "d_in": cfg["d_in"],
        "d_sae": cfg["d_sae"],
        "dtype": "torch.float32",
        "device": "cpu",
        "activation_fn_str": activation,
        "apply_b_dec_to_input": True,
        "normalize_activations": False,
        "sae_lens_training_version": "3.13.0",
        "context_size": 128,
    }
    if activation == "topk":
        old["activation_fn_kwargs"] = {"k": 6}
    (tmp_path / "cfg.json").write_text(json.dumps(old))
    peer = PeerSAE.load_from_disk(tmp_path)
    ours = load_sae(tmp_path)
    assert (ours.cfg.arch, ours.cfg.hookpoint, ours.cfg.model) == (
        "topk" if arch == "topk" else "relu",
        "layers.3.resid.pre",  # the TransformerLens name translated; cfg.origin keeps it
        "gpt2-small",
    )
    assert ours.cfg.origin["hook_name"] == "blocks.3.hook_resid_pre"
    assert_same_forward(ours, peer)


def ours_sae(arch, **kw):
    sae = create_sae(SAEConfig(arch=arch, d_in=12, d_sae=40, k=5, hookpoint="layers.2.mlp.out", **kw)).eval()
    with torch.no_grad():
        for p in sae.parameters():
            p.normal_(0, 0.3)
        if arch in ("jumprelu", "batchtopk"):
            sae.threshold.uniform_(0.1, 0.5)
    return sae


@pytest.mark.parametrize(
    "arch, kw",
    [
        ("relu", {}),
        ("topk", {}),
        ("batchtopk", {}),
        ("jumprelu", {}),
        ("gated", {}),
        ("topk", {"input_norm": "layer_norm"}),
        ("relu", {"apply_b_dec_to_input": False}),
        ("jumprelu", {"input_norm": "constant_norm"}),
    ],
)
def test_exported_files_load_in_saelens_and_match(tmp_path, arch, kw):
    ours = ours_sae(arch, **kw)
    export_sae(ours, tmp_path / "out", "saelens")
    peer = PeerSAE.load_from_disk(tmp_path / "out")
    assert peer.cfg.metadata.hook_name == "blocks.2.hook_mlp_out"  # TransformerLens' name of layers.2.mlp.out
    assert_same_forward(ours, peer)
    back = load_sae(tmp_path / "out")
    assert_same_forward(back, peer)


def write_weights(path, **tensors):
    import safetensors.torch

    safetensors.torch.save_file(tensors, path / "sae_weights.safetensors")


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda p, c: c.update(architecture="crosscoder"),
            r"architecture 'crosscoder' not supported; expected one of",
        ),
        (lambda p, c: c.pop("d_sae"), r"cfg.json: missing key 'd_sae'"),
        (lambda p, c: c.update(d_in="12"), r"key 'd_in' is '12'; expected int"),
        (lambda p, c: c.update(normalize_activations="covariance_whitening"), r"'covariance_whitening' not supported"),
        (
            lambda p, c: write_weights(
                p, W_enc=torch.zeros(40, 12), W_dec=torch.zeros(40, 12), b_dec=torch.zeros(12), b_enc=torch.zeros(40)
            ),
            r"'W_enc' has shape \[40, 12\]; expected \[d_in, d_sae\] = \[12, 40\] \(transposed\?\)",
        ),
        (
            lambda p, c: write_weights(p, W_enc=torch.zeros(12, 40), W_dec=torch.zeros(40, 12), b_dec=torch.zeros(12)),
            r"missing tensor 'b_enc'",
        ),
        (
            lambda p, c: write_weights(
                p,
                W_enc=torch.zeros(12, 40),
                W_dec=torch.zeros(40, 12),
                b_dec=torch.zeros(12),
                b_enc=torch.zeros(40),
                W_skip=torch.zeros(12, 12),
            ),
            r"unexpected entries \['W_skip'\]",
        ),
    ],
)
def test_wrong_files_give_clear_errors(tmp_path, damage, message):
    peer_sae("standard").save_model(tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    damage(tmp_path, cfg)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(SAEFormatError, match=message):
        load_sae(tmp_path)


def test_square_matrices_need_the_callers_word(tmp_path):
    peer_sae("standard", d_in=16, d_sae=16).save_model(tmp_path)
    with pytest.raises(SAEFormatError, match=r"d_in == d_sae == 16.*orientation cannot be checked.*allow_square=True"):
        load_sae(tmp_path)
    assert_same_forward(load_sae(tmp_path, allow_square=True), PeerSAE.load_from_disk(tmp_path), d_in=16)
