"""monosemantic.formats.openai: state dicts in the published layout of openai/sparse_autoencoder
(`Autoencoder.state_dict()`, torch.save) load with `load_sae`, and match a reference forward pass
written here from that repository's model.py (it has no installable package)."""

import pytest
import torch
import torch.nn.functional as F

from monosemantic import SAE, load_sae
from monosemantic.sae import SAEFormatError

D_IN, D_SAE, K = 12, 40, 5
TOL = {"rtol": 1e-5, "atol": 1e-5}


def published_state(
    activation="TopK", tied=False, d_in=D_IN, d_sae=D_SAE, submodule_entries=False, postact="ReLU"
) -> dict:
    """The keys, shapes and extras of Autoencoder.state_dict(): nn.Linear layouts, a tied decoder kept
    as decoder.linear (TiedTranspose), training-statistics buffers, the activation's name and state."""
    encoder = torch.randn(d_sae, d_in) * 0.3
    state = {
        "pre_bias": torch.randn(d_in) * 0.5,
        "latent_bias": torch.randn(d_sae) * 0.3,
        "stats_last_nonzero": torch.zeros(d_sae, dtype=torch.long),
        "latents_activation_frequency": torch.ones(d_sae),
        "latents_mean_square": torch.zeros(d_sae),
        "encoder.weight": encoder,
        "activation": activation,
    }
    if tied:
        state["decoder.linear.weight"] = encoder
    else:
        state["decoder.weight"] = torch.randn(d_in, d_sae) * 0.3
    if activation == "TopK":
        state["activation_state_dict"] = {"k": K, "postact_fn": postact}
        if submodule_entries:  # nn.Module.state_dict recurses into the TopK module, whose state_dict adds them
            state.update({"activation.k": K, "activation.postact_fn": postact})
    return state


def reference(state, x):
    """openai/sparse_autoencoder model.py's forward, re-derived: LN iff TopK, pre_bias subtracted,
    ReLU on the top k (or everywhere; with postact_fn Identity the top k as they are), decoder + pre_bias,
    LN undone."""
    topk = state["activation"] == "TopK"
    if topk:
        mu = x.mean(-1, keepdim=True)
        std = (x - mu).std(-1, keepdim=True)
        x = (x - mu) / (std + 1e-5)
    pre = F.linear(x - state["pre_bias"], state["encoder.weight"], state["latent_bias"])
    if topk:
        top = pre.topk(K, dim=-1)
        identity = state["activation_state_dict"]["postact_fn"] == "Identity"
        latents = torch.zeros_like(pre).scatter(-1, top.indices, top.values if identity else F.relu(top.values))
    else:
        latents = F.relu(pre)
    decoder = state["decoder.linear.weight"].T if "decoder.linear.weight" in state else state["decoder.weight"]
    recons = F.linear(latents, decoder) + state["pre_bias"]
    return latents, recons * std + mu if topk else recons


@pytest.mark.parametrize(
    "activation, tied, entries",
    [("TopK", False, False), ("ReLU", False, False), ("TopK", True, False), ("TopK", False, True)],
)
def test_published_state_dicts_match_the_reference_forward(tmp_path, activation, tied, entries):
    state = published_state(activation, tied, submodule_entries=entries)
    torch.save(state, tmp_path / "ae.pt")
    ours = load_sae(tmp_path / "ae.pt")
    assert ours.cfg.arch == ("topk" if activation == "TopK" else "relu")
    assert ours.cfg.input_norm == ("layer_norm" if activation == "TopK" else "none")
    x = torch.randn(30, D_IN) * 3 + 1
    latents, recons = reference(state, x)
    torch.testing.assert_close(ours.encode(x), latents, **TOL)
    torch.testing.assert_close(ours.decode(latents, x), recons, **TOL)
    torch.testing.assert_close(ours(x).x_hat, recons, **TOL)
    with pytest.raises(SAEFormatError, match="load with monosemantic.load_sae"):  # ours only
        SAE.load(tmp_path / "ae.pt")


def save_changed(path, change):
    state = published_state()
    change(state)
    torch.save(state, path)
    return path


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: s.pop("pre_bias"), r"missing tensor 'pre_bias'"),
        (
            lambda s: s.update({"encoder.weight": s["encoder.weight"].T.contiguous()}),
            r"'encoder.weight' has shape \[12, 40\]; expected \[d_sae, d_in\] = \[40, 12\] \(transposed\?\)",
        ),
        (lambda s: s.update(activation="Identity"), r"activation 'Identity' not supported; expected 'ReLU' or 'TopK'"),
        (
            lambda s: s["activation_state_dict"].update(postact_fn="GELU"),
            r"TopK postact_fn 'GELU' not supported; expected 'ReLU' or 'Identity'",
        ),
        (lambda s: s.update({"activation.k": K + 1}), r"TopK k is 5 in activation_state_dict but 6"),
        (
            lambda s: s["activation_state_dict"].pop("k"),
            r"activation_state_dict: missing key 'k' \(and no 'activation.k'\)",
        ),
        (lambda s: s.update(extra=torch.zeros(3)), r"unexpected entries \['extra'\]"),
        (
            lambda s: s.update(latent_bias=torch.zeros(40, 1)),
            r"'latent_bias' is \[40, 1\]; expected a 1-D tensor \[d_sae\]",
        ),
    ],
)
def test_wrong_state_dicts_give_clear_errors(tmp_path, change, message):
    with pytest.raises(SAEFormatError, match=message):
        load_sae(save_changed(tmp_path / "ae.pt", change))


def test_square_matrices_need_the_callers_word(tmp_path):
    state = published_state(d_in=16, d_sae=16)
    torch.save(state, tmp_path / "square.pt")
    with pytest.raises(SAEFormatError, match=r"square.pt: d_in == d_sae == 16"):
        load_sae(tmp_path / "square.pt")
    assert load_sae(tmp_path / "square.pt", allow_square=True).cfg.d_sae == 16


def test_a_file_that_is_not_a_state_dict_is_refused(tmp_path):
    torch.save([torch.zeros(3)], tmp_path / "list.pt")
    with pytest.raises(SAEFormatError, match=r"expected a state dict \(a dict of tensors\), got a list"):
        load_sae(tmp_path / "list.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(SAEFormatError, match=r"junk.pt: (not a readable torch.save file|refused to unpickle)"):
        load_sae(tmp_path / "junk.pt")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("activation", ["TopK", "ReLU"])
def test_half_precision_files_compute_in_float32_as_from_state_dict_does(tmp_path, dtype, activation):
    """Autoencoder.from_state_dict builds float32 modules and copies the file into them: the reference
    is the float32 forward of the upcast weights; rtol 1e-5, atol 1e-5 x input scale."""
    state = published_state(activation, submodule_entries=activation == "TopK")
    half = {k: v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in state.items()}
    torch.save(half, tmp_path / "ae.pt")
    upcast = {k: v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in half.items()}
    ours = load_sae(tmp_path / "ae.pt")
    assert (ours.cfg.dtype, ours.cfg.origin["file_dtype"]) == ("float32", str(dtype).removeprefix("torch."))
    for scale in (1.0, 1000.0):
        x = (torch.randn(200, D_IN) * 3 + 1) * scale
        latents, recons = reference(upcast, x)
        torch.testing.assert_close(ours.encode(x), latents, rtol=1e-5, atol=1e-5 * scale)
        torch.testing.assert_close(ours(x).x_hat, recons, rtol=1e-5, atol=1e-5 * scale)
    kept = load_sae(tmp_path / "ae.pt", dtype=str(dtype).removeprefix("torch."))  # --dtype: the file's own
    assert kept.W_enc.dtype == dtype and kept.cfg.origin["dtype_policy"].endswith("as asked (--dtype)")


@pytest.mark.parametrize("entries", [False, True])
def test_topk_with_an_identity_postact_keeps_the_sign_of_its_top_k(tmp_path, entries):
    """TopK(k, postact_fn=nn.Identity()): the top k pre-activations as they are, negative ones too
    (latent_bias is shifted down so that every token has some); rtol 1e-5, atol 1e-5 x scale."""
    state = published_state(postact="Identity", submodule_entries=entries)
    state["latent_bias"] -= 2.0
    torch.save(state, tmp_path / "ae.pt")
    ours = load_sae(tmp_path / "ae.pt")
    assert (ours.cfg.arch, ours.cfg.k, ours.cfg.input_norm) == ("topk_identity", K, "layer_norm")
    for scale in (1.0, 1000.0):
        tol = {"rtol": 1e-5, "atol": 1e-5 * scale}
        x = (torch.randn(30, D_IN) * 3 + 1) * scale
        latents, recons = reference(state, x)
        z = ours.encode(x)
        assert bool((latents < 0).any()) and int((z != 0).sum(-1).min()) == K
        torch.testing.assert_close(z, latents, rtol=1e-5, atol=1e-5)  # latents: the input's LN removes the scale
        torch.testing.assert_close(ours.decode(latents, x), recons, **tol)
        torch.testing.assert_close(ours(x).x_hat, recons, **tol)
