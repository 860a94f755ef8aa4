"""monosemantic.formats.gemmascope: params.npz in Gemma Scope's published layout loads with `load_sae`
and matches the JumpReLU forward pass of the Gemma Scope tutorial, written out here."""

import numpy as np
import pytest
import torch

from monosemantic import SAE, load_sae
from monosemantic.sae import SAEFormatError

D_IN, D_SAE = 12, 40


def published_params(d_in=D_IN, d_sae=D_SAE) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "W_enc": rng.normal(0, 0.3, (d_in, d_sae)).astype(np.float32),
        "W_dec": rng.normal(0, 0.3, (d_sae, d_in)).astype(np.float32),
        "threshold": rng.uniform(0.1, 0.6, d_sae).astype(np.float32),
        "b_enc": rng.normal(0, 0.3, d_sae).astype(np.float32),
        "b_dec": rng.normal(0, 0.5, d_in).astype(np.float32),
    }


def reference(params, x):
    """The tutorial's JumpReLUSAE: pre = x @ W_enc + b_enc (no b_dec subtraction),
    acts = (pre > threshold) * ReLU(pre), recon = acts @ W_dec + b_dec."""
    p = {k: torch.from_numpy(v) for k, v in params.items()}
    pre = x @ p["W_enc"] + p["b_enc"]
    acts = (pre > p["threshold"]) * torch.relu(pre)
    return acts, acts @ p["W_dec"] + p["b_dec"]


def test_params_npz_matches_the_reference_forward(tmp_path):
    params = published_params()
    np.savez(tmp_path / "params.npz", **params)
    x = torch.randn(30, D_IN) * 2
    acts, recon = reference(params, x)
    for path in (tmp_path, tmp_path / "params.npz"):
        ours = load_sae(path)
        assert (ours.cfg.arch, ours.cfg.apply_b_dec_to_input) == ("jumprelu", False)
        torch.testing.assert_close(ours.encode(x), acts, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours.decode(acts), recon, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours(x).x_hat, recon, rtol=1e-5, atol=1e-5)
    assert 0 < int((acts != 0).sum()) < acts.numel()
    with pytest.raises(SAEFormatError, match="load with monosemantic.load_sae"):  # ours only
        SAE.load(tmp_path)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda p: p.pop("threshold"), r"missing tensor 'threshold'"),
        (
            lambda p: p.update(W_enc=p["W_enc"].T.copy()),
            r"'W_enc' has shape \[40, 12\]; expected \[d_in, d_sae\] = \[12, 40\] \(transposed\?\)",
        ),
        (
            lambda p: p.update(W_dec=p["W_dec"][:, :5].copy()),
            r"'W_dec' has shape \[40, 5\]; expected \[d_sae, d_in\] = \[40, 12\]",
        ),
        (lambda p: p.update(log_threshold=p["threshold"]), r"unexpected entries \['log_threshold'\]"),
    ],
)
def test_wrong_files_give_clear_errors(tmp_path, change, message):
    params = published_params()
    change(params)
    np.savez(tmp_path / "params.npz", **params)
    with pytest.raises(SAEFormatError, match=message):
        load_sae(tmp_path)


def test_square_matrices_need_the_callers_word(tmp_path):
    np.savez(tmp_path / "params.npz", **published_params(d_in=16, d_sae=16))
    with pytest.raises(SAEFormatError, match=r"d_in == d_sae == 16.*allow_square=True"):
        load_sae(tmp_path)
    assert load_sae(tmp_path, allow_square=True).cfg.d_in == 16


def test_object_arrays_are_refused_without_unpickling(tmp_path):
    params = published_params()
    params["W_enc"] = np.array([params["W_enc"], None], dtype=object)  # would need pickle to read
    np.savez(tmp_path / "params.npz", **params)
    with pytest.raises(SAEFormatError, match=r"not a readable .npz of plain arrays"):
        load_sae(tmp_path)


def assert_matches_reference(ours, params):
    """The tutorial's forward on float32 copies of the file's arrays (SAELens' Gemma loaders and the
    tutorial compute in float32): rtol 1e-5, atol 1e-5 x input scale."""
    upcast = {k: v.astype(np.float32) for k, v in params.items()}
    for scale in (1.0, 1000.0):
        x = torch.randn(30, D_IN) * 2 * scale
        acts, recon = reference(upcast, x)
        torch.testing.assert_close(ours.encode(x), acts, rtol=1e-5, atol=1e-5 * scale)
        torch.testing.assert_close(ours(x).x_hat, recon, rtol=1e-5, atol=1e-5 * scale)
        assert 0 < int((acts != 0).sum()) < acts.numel()


def test_lowercase_npz_keys_and_half_precision_load_as_saelens_maps_them(tmp_path):
    params = {k: v.astype(np.float16) for k, v in published_params().items()}
    np.savez(tmp_path / "params.npz", **{("w_" + k[2:] if k.startswith("W_") else k): v for k, v in params.items()})
    ours = load_sae(tmp_path)
    assert (ours.cfg.dtype, ours.cfg.origin["file_dtype"]) == ("float32", "float16")
    assert_matches_reference(ours, params)


def write_scope2(path, dtype=torch.bfloat16, **config):
    """Gemma Scope 2's layout: params.safetensors with lowercase w_enc / w_dec, and config.json."""
    import json

    import safetensors.torch

    params = published_params()
    tensors = {("w_" + k[2:] if k.startswith("W_") else k): torch.from_numpy(v).to(dtype) for k, v in params.items()}
    path.mkdir()
    safetensors.torch.save_file(tensors, path / "params.safetensors")
    cfg = {"architecture": "jump_relu", "model_name": "gemma-v3-1b-pt", "hf_hook_point_in": "model.layers.12.output"}
    (path / "config.json").write_text(json.dumps({**cfg, **config}))
    return {k: v.to(torch.float32).numpy() for k, v in zip(params, tensors.values())}


@pytest.mark.parametrize(
    "hook, ours",
    [
        ("model.layers.12.output", "layers.12.resid.post"),
        ("model.layers.12.post_feedforward_layernorm.output", "model.layers.12.post_feedforward_layernorm"),
        ("model.layers.12.self_attn.o_proj.input", "model.layers.12.self_attn.o_proj.input"),
    ],
)
def test_gemma_scope_2_safetensors_match_the_reference_forward(tmp_path, hook, ours):
    params = write_scope2(tmp_path / "layer_12_width_16k_l0_small", hf_hook_point_in=hook)
    for path in (
        tmp_path / "layer_12_width_16k_l0_small",
        tmp_path / "layer_12_width_16k_l0_small" / "params.safetensors",
    ):
        sae = load_sae(path)
        assert (sae.cfg.arch, sae.cfg.dtype, sae.cfg.hookpoint) == ("jumprelu", "float32", ours)
        assert sae.cfg.origin == {
            "format": "gemmascope",
            "file_dtype": "bfloat16",
            "dtype_policy": "upcast to float32, as SAELens' Gemma Scope loader does",
            "hf_hook_point_in": hook,
        }
        assert_matches_reference(sae, params)
