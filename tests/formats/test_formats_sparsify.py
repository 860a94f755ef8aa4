"""monosemantic.formats.sparsify: SAEs written by sparsify's own code load with `load_sae` and match its
forward pass; our TopK SAEs exported to sparsify load in sparsify and match."""

import json

import pytest
import torch

sparsify = pytest.importorskip("sparsify")
from sparsify import SparseCoder, SparseCoderConfig  # noqa: E402

from monosemantic import SAE, SAEConfig, create_sae, export_sae, load_sae  # noqa: E402
from monosemantic.sae import SAEFormatError  # noqa: E402

TOL = {"rtol": 1e-5, "atol": 1e-5}


def peer_sae(d_in=12, **cfg):
    peer = SparseCoder(d_in, SparseCoderConfig(**{"k": 5, "num_latents": 40, **cfg}))
    with torch.no_grad():
        for p in peer.parameters():
            p.normal_(0, 0.3)
    return peer


def dense(top_acts, top_indices, d_sae):
    return torch.zeros(top_acts.shape[0], d_sae).scatter(-1, top_indices, top_acts)


def assert_same_forward(ours, peer, d_in=12):
    x = torch.randn(30, d_in) * 2
    top_acts, top_indices, _ = peer.encode(x)
    torch.testing.assert_close(ours.encode(x), dense(top_acts, top_indices, ours.d_sae), **TOL)
    torch.testing.assert_close(ours.decode(ours.encode(x)), peer.decode(top_acts, top_indices), **TOL)
    if not peer.cfg.multi_topk:  # then sparsify's forward returns the 4k-latent reconstruction of its loss
        torch.testing.assert_close(ours(x).x_hat, peer(x).sae_out, **TOL)


@pytest.mark.parametrize("cfg", [{}, {"num_latents": 0, "expansion_factor": 3}, {"multi_topk": True}])
def test_files_written_by_sparsify_match_its_forward_pass(tmp_path, cfg):
    peer_sae(**cfg).save_to_disk(tmp_path / "layers.4.mlp")
    peer = SparseCoder.load_from_disk(tmp_path / "layers.4.mlp")
    ours = load_sae(tmp_path / "layers.4.mlp")
    assert (ours.cfg.arch, ours.cfg.k, ours.cfg.d_sae) == ("topk", 5, peer.num_latents)
    assert ours.cfg.hookpoint == "layers.4.mlp"
    assert_same_forward(ours, peer)
    with pytest.raises(SAEFormatError, match="load with monosemantic.load_sae"):  # ours only
        SAE.load(tmp_path / "layers.4.mlp")


def test_a_run_with_several_hookpoints_asks_which(tmp_path):
    for hookpoint in ("layers.0.mlp", "layers.1.mlp"):
        peer_sae().save_to_disk(tmp_path / hookpoint)
    with pytest.raises(SAEFormatError, match=r"holds 2 SAEs, in layers.0.mlp, layers.1.mlp; pass the directory"):
        load_sae(tmp_path)


@pytest.mark.parametrize("kw", [{}, {"apply_b_dec_to_input": False}])
def test_exported_topk_saes_load_in_sparsify_and_match(tmp_path, kw):
    ours = create_sae(SAEConfig(arch="topk", d_in=12, d_sae=40, k=5, **kw)).eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.normal_(0, 0.3)
    export_sae(ours, tmp_path / "hook", "sparsify")
    peer = SparseCoder.load_from_disk(tmp_path / "hook")
    assert_same_forward(ours, peer)
    assert_same_forward(load_sae(tmp_path / "hook"), peer)


def test_export_refuses_what_sparsify_cannot_hold(tmp_path):
    relu = create_sae(SAEConfig(arch="relu", d_in=12, d_sae=40))
    with pytest.raises(SAEFormatError, match=r"only TopK SAEs.*arch='relu'"):
        export_sae(relu, tmp_path, "sparsify")
    with pytest.raises(SAEFormatError, match=r"cannot export to 'dictionary_learning'; expected one of"):
        export_sae(relu, tmp_path, "dictionary_learning")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"transcode": True}, r"transcode is true.*only sparse autoencoders load"),
        ({"skip_connection": True}, r"skip_connection is true"),
        ({"activation": "groupmax"}, r"activation 'groupmax' not supported; expected 'topk'"),
        ({"k": "5"}, r"key 'k' is '5'; expected int"),
        ({"num_latents": 41}, r"'encoder.weight' has shape \[40, 12\]; expected \[d_sae, d_in\] = \[41, 12\]"),
    ],
)
def test_wrong_files_give_clear_errors(tmp_path, change, message):
    peer_sae().save_to_disk(tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    cfg.update(change)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(SAEFormatError, match=message):
        load_sae(tmp_path)


def test_square_matrices_need_the_callers_word(tmp_path):
    peer_sae(d_in=16, num_latents=16).save_to_disk(tmp_path)
    with pytest.raises(SAEFormatError, match=r"d_in == d_sae == 16"):
        load_sae(tmp_path)
    assert_same_forward(load_sae(tmp_path, allow_square=True), SparseCoder.load_from_disk(tmp_path), d_in=16)
