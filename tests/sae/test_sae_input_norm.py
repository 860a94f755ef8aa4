"""monosemantic.sae.base: the per-token input normalisations (`input_norm`, from OpenAI's and SAELens'
SAEs) against the formulas by hand, for every architecture, and the places that must refuse them."""

import pytest
import torch

from monosemantic.config import ConfigError
from monosemantic.eval.metrics import evaluate, fvu
from monosemantic.sae import SAEConfig, create_sae
from monosemantic.sae.config import SAE_ARCHS
from monosemantic.train.trainer import TrainConfig, Trainer


def make(arch, input_norm, apply_b_dec=True):
    sae = create_sae(
        SAEConfig(
            arch=arch, d_in=8, d_sae=20, k=4, dtype="float64", input_norm=input_norm, apply_b_dec_to_input=apply_b_dec
        )
    ).eval()
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.2)
        sae.b_dec.normal_(0, 0.3)
    return sae


def by_hand(input_norm, x):
    """(normalised x [N, d], function mapping a reconstruction back), written from the papers' code."""
    if input_norm == "layer_norm":  # openai/sparse_autoencoder model.py LN, eps=1e-5
        mu = x.mean(-1, keepdim=True)
        std = (x - mu).std(-1, keepdim=True)
        return (x - mu) / (std + 1e-5), lambda y: y * std + mu
    coeff = 8**0.5 / x.norm(dim=-1, keepdim=True)  # SAELens constant_norm_rescale
    return x * coeff, lambda y: y / coeff


@pytest.mark.parametrize("arch", sorted(set(SAE_ARCHS) - {"routed"}))  # routed refuses input_norm (as transcoders)
@pytest.mark.parametrize("input_norm", ["layer_norm", "constant_norm"])
def test_every_architecture_normalises_each_token_and_restores_it(arch, input_norm):
    sae = make(arch, input_norm)
    x = torch.randn(2, 5, 8, dtype=torch.float64) * 3 + 1
    x_n, restore = by_hand(input_norm, x.reshape(-1, 8))
    plain = make(arch, "none")
    plain.load_state_dict(sae.state_dict())
    z = sae.encode(x)
    torch.testing.assert_close(z.reshape(-1, 20), plain.encode(x_n))  # the SAE proper sees x_n
    x_hat = sae.decode(z, x)
    torch.testing.assert_close(x_hat.reshape(-1, 8), restore(plain.decode(plain.encode(x_n))))
    out = sae(x)
    torch.testing.assert_close(out.x_hat, x_hat)
    torch.testing.assert_close(out.latents, z)


def test_decode_without_the_input_is_a_clear_error():
    sae = make("topk", "layer_norm")
    z = sae.encode(torch.randn(3, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"input_norm='layer_norm'.*decode\(z, x\).*got nothing"):
        sae.decode(z)
    with pytest.raises(ValueError, match=r"got shape \[4, 8\]"):
        sae.decode(z, torch.randn(4, 8, dtype=torch.float64))


def test_evaluate_measures_the_restored_reconstruction():
    sae = make("relu", "layer_norm")
    x = torch.randn(64, 8, dtype=torch.float64) * 2 + 0.5
    result = evaluate(sae, [x[:40], x[40:]])
    assert result.fvu == pytest.approx(fvu(x, sae(x).x_hat.detach()).item(), rel=1e-9)


def test_folding_and_training_refuse_a_per_token_normalisation():
    sae = make("topk", "layer_norm")
    with pytest.raises(ValueError, match=r"input_norm='layer_norm' normalises each token"):
        sae.fold_input_scale_(2.0)
    with pytest.raises(ConfigError, match=r"cannot train an SAE with input_norm='layer_norm'"):
        Trainer(sae, TrainConfig(batch_size=8, total_tokens=16), progress=False)
    with pytest.raises(ConfigError, match=r"input_norm 'batch' not supported"):
        SAEConfig(arch="relu", d_in=4, d_sae=8, input_norm="batch")
