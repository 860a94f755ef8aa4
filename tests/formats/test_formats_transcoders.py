"""monosemantic.formats.transcoders: transcoders written by SAELens' and sparsify's own code load into
our transcoder classes and compute what the peer computes, on random inputs at scale 1 and 1000
(rtol 1e-5, atol 1e-5 x scale; float32), with their hookpoints translated."""

import json

import pytest
import torch

sae_lens = pytest.importorskip("sae_lens")  # imported at collection: its import runs git once
sparsify = pytest.importorskip("sparsify")

from monosemantic import SAEConfig, create_sae, export_sae, load_sae  # noqa: E402
from monosemantic.config import ConfigError  # noqa: E402
from monosemantic.sae import SAEFormatError  # noqa: E402

D_IN, D_OUT, D_SAE = 12, 10, 40


def randomise(module):
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.normal_(0, 0.3)
            if name == "threshold":
                p.uniform_(0.0, 0.4)
    return module


def assert_same(ours, encode, transcode, d_in=D_IN):
    for scale in (1.0, 1000.0):
        tol = {"rtol": 1e-5, "atol": 1e-5 * scale}
        x = torch.randn(64, d_in) * scale
        z = encode(x)
        assert 0 < int((z != 0).sum()) < z.numel()
        torch.testing.assert_close(ours.encode(x), z, **tol)
        torch.testing.assert_close(ours.transcode(x), transcode(x), **tol)


SAELENS = {
    "transcoder": ("TranscoderConfig", "Transcoder", "relu_transcoder"),
    "skip_transcoder": ("SkipTranscoderConfig", "SkipTranscoder", "relu_skip_transcoder"),
    "jumprelu_transcoder": ("JumpReLUTranscoderConfig", "JumpReLUTranscoder", "jumprelu_transcoder"),
    "jumprelu_skip_transcoder": ("JumpReLUSkipTranscoderConfig", "JumpReLUSkipTranscoder", "jumprelu_skip_transcoder"),
}


def saelens_transcoder(tmp_path, arch, **cfg):
    """A SAELens transcoder with random weights, written by its own save_model and read back by its
    own load_from_disk (the reference)."""
    cfg_name, cls_name, _ = SAELENS[arch]
    cfg = getattr(sae_lens, cfg_name)(d_in=D_IN, d_sae=D_SAE, d_out=D_OUT, apply_b_dec_to_input=False, **cfg)
    cfg.metadata.hook_name = "blocks.2.ln2.hook_normalized"
    cfg.metadata.hook_name_out = "blocks.2.hook_mlp_out"
    randomise(getattr(sae_lens, cls_name)(cfg)).save_model(tmp_path / arch)
    return sae_lens.SAE.load_from_disk(tmp_path / arch), tmp_path / arch


@pytest.mark.parametrize("arch", sorted(SAELENS))
def test_saelens_transcoders_match_saelens(tmp_path, arch):
    peer, path = saelens_transcoder(tmp_path, arch)
    ours = load_sae(path)
    assert (ours.cfg.arch, ours.d_out, ours.skip) == (SAELENS[arch][2], D_OUT, "skip" in arch)
    # the input name is before ln2's affine, which our mlp.in is after: kept as it is; the output translates
    assert (ours.cfg.hookpoint, ours.cfg.output_hookpoint) == ("blocks.2.ln2.hook_normalized", "layers.2.mlp.out")
    assert ours.cfg.origin["hook_name_out"] == "blocks.2.hook_mlp_out"
    assert_same(ours, peer.encode, peer)
    assert load_sae(ours.save(tmp_path / "ours")).cfg.arch == ours.cfg.arch
    with pytest.raises(ConfigError, match=r"loaded from other tools' files, not trained here.*--transcoder"):
        ours.training_forward(torch.randn(4, D_IN + D_OUT))
    back = sae_lens.SAE.load_from_disk(export_sae(ours, tmp_path / "export", "saelens"))  # and back to SAELens
    assert type(back) is type(peer) and back.cfg.metadata.hook_name_out == "blocks.2.hook_mlp_out"
    assert back.cfg.metadata.hook_name == "blocks.2.ln2.hook_normalized"
    assert_same(ours, back.encode, back)


def test_a_saelens_transcoder_with_a_normalised_input_is_refused(tmp_path):
    _, path = saelens_transcoder(tmp_path, "transcoder")
    cfg = json.loads((path / "cfg.json").read_text())
    (path / "cfg.json").write_text(json.dumps({**cfg, "normalize_activations": "layer_norm"}))
    with pytest.raises(SAEFormatError, match=r"'transcoder' with normalize_activations 'layer_norm' is not supported"):
        load_sae(path)


def sparsify_coder(tmp_path, name, **cfg):
    coder = sparsify.SparseCoder(D_IN, sparsify.SparseCoderConfig(k=5, num_latents=D_SAE, **cfg))
    randomise(coder).save_to_disk(tmp_path / name)
    peer = sparsify.SparseCoder.load_from_disk(tmp_path / name)

    def encode(x):
        top_acts, top_indices, _ = peer.encode(x)
        return torch.zeros(x.shape[0], D_SAE).scatter(-1, top_indices, top_acts)

    return peer, encode, lambda x: peer(x).sae_out


@pytest.mark.parametrize(
    "cfg, arch, sites",
    [
        ({"transcode": True}, "transcoder", ("layers.2.mlp.in", "layers.2.mlp.out")),
        ({"transcode": True, "skip_connection": True}, "skip_transcoder", ("layers.2.mlp.in", "layers.2.mlp.out")),
        ({"skip_connection": True}, "skip_transcoder", ("layers.2.mlp.out", "layers.2.mlp.out")),  # an SAE + skip
    ],
)
def test_sparsify_transcoders_match_sparsify(tmp_path, cfg, arch, sites):
    _, encode, transcode = sparsify_coder(tmp_path, "h.2.mlp", **cfg)
    ours = load_sae(tmp_path / "h.2.mlp")
    assert (ours.cfg.arch, ours.cfg.k, ours.d_out) == (arch, 5, D_IN)
    assert (ours.cfg.hookpoint, ours.cfg.output_hookpoint, ours.cfg.origin["hookpoint"]) == (*sites, "h.2.mlp")
    assert_same(ours, encode, transcode)


def test_a_sparsify_block_transcoder_reads_the_blocks_input(tmp_path):
    sparsify_coder(tmp_path, "layers.5", transcode=True)
    ours = load_sae(tmp_path / "layers.5")
    assert (ours.cfg.hookpoint, ours.cfg.output_hookpoint) == ("layers.5.resid.pre", "layers.5.resid.post")


@pytest.mark.parametrize("affine", [False, True])
def test_gemma_scope_2_transcoders_match_saelens_gemma_3_loading(tmp_path, affine):
    """params.safetensors (lowercase w_enc / w_dec, affine_skip_connection [d_in, d_out]) + config.json;
    the reference is SAELens' JumpReLU(Skip)Transcoder given the state dict as its Gemma 3 loader maps it."""
    import safetensors.torch

    g = torch.Generator().manual_seed(0)
    raw = {
        "w_enc": torch.randn(D_IN, D_SAE, generator=g) * 0.3,
        "w_dec": torch.randn(D_SAE, D_OUT, generator=g) * 0.3,
        "b_enc": torch.randn(D_SAE, generator=g) * 0.3,
        "b_dec": torch.randn(D_OUT, generator=g) * 0.3,
        "threshold": torch.rand(D_SAE, generator=g) * 0.4,
    }
    if affine:
        raw["affine_skip_connection"] = torch.randn(D_IN, D_OUT, generator=g) * 0.3
    (tmp_path / "t").mkdir()
    safetensors.torch.save_file(
        {k: v.to(torch.bfloat16) for k, v in raw.items()}, tmp_path / "t" / "params.safetensors"
    )
    hooks = {"hf_hook_point_in": "model.layers.3.pre_feedforward_layernorm.output"}
    hooks["hf_hook_point_out"] = "model.layers.3.post_feedforward_layernorm.output"
    cfg = {"architecture": "jump_relu", "model_name": "gemma-v3-1b-pt", "affine_connection": affine, **hooks}
    (tmp_path / "t" / "config.json").write_text(json.dumps(cfg))
    ours = load_sae(tmp_path / "t")
    arch = "jumprelu_skip_transcoder" if affine else "jumprelu_transcoder"
    assert (ours.cfg.arch, ours.cfg.dtype, ours.d_out) == (arch, "float32", D_OUT)
    want = ("model.layers.3.pre_feedforward_layernorm", "model.layers.3.post_feedforward_layernorm")
    assert (ours.cfg.hookpoint, ours.cfg.output_hookpoint) == want
    state = {k: v.to(torch.bfloat16).float() for k, v in raw.items()}  # what the file holds, upcast
    state = {"W_enc": state["w_enc"], "W_dec": state["w_dec"], **{k: state[k] for k in ("b_enc", "b_dec", "threshold")}}
    if affine:
        state["W_skip"] = raw["affine_skip_connection"].to(torch.bfloat16).float().T.contiguous()
    cfg_name, cls_name, _ = SAELENS[arch]
    peer_cfg = getattr(sae_lens, cfg_name)(d_in=D_IN, d_sae=D_SAE, d_out=D_OUT, apply_b_dec_to_input=False)
    peer = getattr(sae_lens, cls_name)(peer_cfg)
    peer.load_state_dict(state)
    assert_same(ours, peer.encode, peer)


@pytest.mark.parametrize("arch", ["transcoder", "skip_transcoder"])
def test_our_topk_transcoders_export_to_sparsify(tmp_path, arch):
    cfg = SAEConfig(arch=arch, d_in=D_IN, d_sae=D_SAE, k=5, apply_b_dec_to_input=False, model="builtin")
    cfg.hookpoint, cfg.output_hookpoint = "layers.2.mlp.in", "layers.2.mlp.out"
    ours = randomise(create_sae(cfg)).eval()
    written = export_sae(ours, tmp_path / "out", "sparsify")
    assert written == tmp_path / "out" / "h.2.mlp"  # the module whose input it reads and output it writes
    peer = sparsify.SparseCoder.load_from_disk(written)
    assert (peer.cfg.transcode, peer.cfg.skip_connection) == (True, arch == "skip_transcoder")

    def encode(x):
        top_acts, top_indices, _ = peer.encode(x)
        return torch.zeros(x.shape[0], D_SAE).scatter(-1, top_indices, top_acts)

    assert_same(ours, encode, lambda x: peer(x).sae_out)
    again = load_sae(written)
    assert (again.cfg.arch, again.cfg.hookpoint, again.cfg.output_hookpoint) == (
        arch,
        "layers.2.mlp.in",
        "layers.2.mlp.out",
    )
    with pytest.raises(SAEFormatError, match=r"SAELens' transcoders are ReLU or JumpReLU.*to sparsify"):
        export_sae(ours, tmp_path / "saelens", "saelens")


def test_sparsify_refuses_a_transcoder_of_another_width(tmp_path):
    cfg = SAEConfig(arch="transcoder", d_in=D_IN, d_out=D_OUT, d_sae=D_SAE, k=5, apply_b_dec_to_input=False)
    with pytest.raises(SAEFormatError, match=r"reads 12 and writes d_out=10"):
        export_sae(create_sae(cfg), tmp_path / "out", "sparsify")
