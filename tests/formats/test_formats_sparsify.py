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
    return torch.zeros(top_acts.shape[0], d_sae, dtype=top_acts.dtype).scatter(-1, top_indices, top_acts)


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
    assert ours.cfg.hookpoint == "layers.4.mlp.out" and ours.cfg.origin["hookpoint"] == "layers.4.mlp"
    assert_same_forward(ours, peer)
    with pytest.raises(SAEFormatError, match="load with monosemantic.load_sae"):  # ours only
        SAE.load(tmp_path / "layers.4.mlp")


@pytest.mark.parametrize(
    "name, ours",
    [
        ("h.3", "layers.3.resid.post"),  # GPT-2
        ("h.3.attn", "layers.3.attn.out"),
        ("h.3.mlp.act", "layers.3.mlp.neurons"),
        ("layers.3.self_attn", "layers.3.attn.out"),  # Llama, Mistral, Qwen, Gemma
        ("layers.3.attention", "layers.3.attn.out"),  # GPT-NeoX
        ("layers.3.mlp.act", "layers.3.mlp.neurons"),
        ("embed_tokens", "embed_tokens"),  # no site of ours: kept
    ],
)
def test_sparsify_hookpoints_translate_to_ours(tmp_path, name, ours):
    peer_sae().save_to_disk(tmp_path / name)
    loaded = load_sae(tmp_path / name)
    assert (loaded.cfg.hookpoint, loaded.cfg.origin["hookpoint"]) == (ours, name)


def test_multi_seed_runs_take_the_hookpoint_from_above_the_seed(tmp_path):
    """sparsify's Trainer with init_seeds=[0, 1] saves each SAE to run/<hookpoint>/seed<i>
    (trainer.py: name = f"{hook}/seed{seed}"); the same save_to_disk call writes them here."""
    for seed in (0, 1):
        torch.manual_seed(seed)
        peer_sae().save_to_disk(tmp_path / "run" / "h.2.mlp" / f"seed{seed}")
    ours = load_sae(tmp_path / "run" / "h.2.mlp" / "seed1")
    assert ours.cfg.hookpoint == "layers.2.mlp.out"
    assert (ours.cfg.origin["hookpoint"], ours.cfg.origin["seed"]) == ("h.2.mlp", 1)
    assert_same_forward(ours, SparseCoder.load_from_disk(tmp_path / "run" / "h.2.mlp" / "seed1"))
    with pytest.raises(SAEFormatError, match=r"holds 2 SAEs, in seed0, seed1"):
        load_sae(tmp_path / "run" / "h.2.mlp")


def test_exports_are_named_after_sparsifys_hookpoint(tmp_path):
    """The built-in model is a GPT-2: sparsify names its layer-2 MLP `h.2.mlp`."""
    ours = create_sae(SAEConfig(arch="topk", d_in=12, d_sae=40, k=5, hookpoint="layers.2.mlp.out", model="builtin"))
    written = export_sae(ours.eval(), tmp_path / "run", "sparsify")
    assert written == tmp_path / "run" / "h.2.mlp"
    [(name, peer)] = SparseCoder.load_many(str(tmp_path / "run"), local=True).items()
    assert name == "h.2.mlp"
    assert_same_forward(ours, peer)
    assert load_sae(written).cfg.hookpoint == "layers.2.mlp.out"


def test_half_precision_files_keep_their_dtype_as_sparsify_does(tmp_path):
    peer = peer_sae().to(torch.bfloat16)
    peer.save_to_disk(tmp_path / "h.1")
    peer = SparseCoder.load_from_disk(tmp_path / "h.1")
    ours = load_sae(tmp_path / "h.1")
    assert ours.cfg.dtype == "bfloat16" and peer.W_dec.dtype == torch.bfloat16
    assert ours.cfg.origin["dtype_policy"] == "kept, as the tool's loader does"
    x = (torch.randn(30, 12) * 2).to(torch.bfloat16)
    top_acts, top_indices, _ = peer.encode(x)
    # both compute in bf16 (a unit in the last place is 2^-8 relative); the same latents are chosen
    torch.testing.assert_close(ours.encode(x), dense(top_acts, top_indices, 40), rtol=1e-2, atol=1e-2)
    assert load_sae(tmp_path / "h.1", dtype="float32").cfg.origin["dtype_policy"] == "float32, as asked (--dtype)"


def test_float16_export_folds_the_input_bias_in_float32(tmp_path):
    """sparsify always subtracts b_dec, so an SAE that does not is written with b_enc + b_dec @ W_enc:
    computed in float32, then cast; in float16 the sum over d_in = 512 terms was off by units."""
    torch.manual_seed(0)
    ours = create_sae(SAEConfig(arch="topk", d_in=512, d_sae=1024, k=8, apply_b_dec_to_input=False))
    with torch.no_grad():
        for p in ours.parameters():
            p.normal_(0, 1.0)
    ours = ours.with_dtype("float16")
    export_sae(ours, tmp_path / "hook", "sparsify")
    written = SparseCoder.load_from_disk(tmp_path / "hook").encoder.bias.detach()
    exact = ours.b_enc.double() + ours.b_dec.double() @ ours.W_enc.double()
    assert written.dtype == torch.float16
    # within one float16 rounding (relative 2^-10) of the exact fold
    torch.testing.assert_close(written.double(), exact, rtol=2**-10, atol=2**-14)


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
        ({"skip_connection": True}, r"missing tensor 'W_skip'"),
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
