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
