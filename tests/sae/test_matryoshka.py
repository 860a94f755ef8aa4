"""monosemantic.sae.matryoshka: the loss against a slow eager version written out by hand, the fast
path against the dense reference, inference equal to BatchTopK's, save/load, export to SAELens."""

import json

import pytest
import torch

from monosemantic.config import ConfigError
from monosemantic.formats import export_sae, load_sae
from monosemantic.sae import SAE, BatchTopKSAE, MatryoshkaSAE, SAEConfig, create_sae
from monosemantic.sae.base import CFG_FILE

PREFIXES = (3, 10, 40)


def make(prefixes=PREFIXES, d_in=12, d_sae=40, k=3, dtype="float64", **kw):
    sae = create_sae(
        SAEConfig(arch="matryoshka", d_in=d_in, d_sae=d_sae, k=k, dtype=dtype, matryoshka_prefixes=prefixes, **kw)
    )
    with torch.no_grad():  # non-trivial biases, so that every term of the maths is exercised
        sae.b_enc.normal_(0, 0.1)
        sae.b_dec.normal_(0, 0.5)
    return sae


def eager_loss(sae, x, dead, k, prefixes, k_aux, auxk_coef):
    """The Matryoshka BatchTopK loss spelled out token by token from the paper's definition."""
    W_enc, b_enc, W_dec, b_dec = sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec
    B, d_sae = x.shape[0], W_enc.shape[1]
    prefixes = prefixes if prefixes[-1] == d_sae else (*prefixes, d_sae)  # the outer level is the whole SAE
    pre = (x - b_dec) @ W_enc + b_enc
    order = pre.detach().flatten().argsort(descending=True)[: k * B]  # BatchTopK by a full sort
    keep = torch.zeros(B * d_sae, dtype=torch.bool)
    keep[order] = True
    z = torch.relu(pre) * keep.view(B, d_sae)
    loss = 0.0
    x_hat_full = None
    for m in prefixes:  # sum over prefixes of each prefix's own reconstruction error
        err = 0.0
        for b in range(B):
            x_hat = b_dec + sum(z[b, j] * W_dec[j] for j in range(m))
            err = err + ((x[b] - x_hat) ** 2).sum()
        loss = loss + err / B
        if m == d_sae:
            x_hat_full = torch.stack([b_dec + sum(z[b, j] * W_dec[j] for j in range(m)) for b in range(B)])
    aux = 0.0
    ids = dead.nonzero().squeeze(1)
    for b in range(B):  # AuxK: the top k_aux dead latents reconstruct the full residual
        top = ids[pre[b, ids].detach().argsort(descending=True)[:k_aux]]
        e_hat = sum(torch.relu(pre[b, j]) * W_dec[j] for j in top.tolist())
        aux = aux + (((x[b] - x_hat_full[b]).detach() - e_hat) ** 2).sum()
    return loss + auxk_coef * aux / B


def grads(sae, loss):
    return dict(zip([n for n, _ in sae.named_parameters()], torch.autograd.grad(loss, list(sae.parameters()))))


@pytest.mark.parametrize("prefixes", [(3, 10, 40), (1, 39), (40,)])
def test_loss_and_gradients_equal_the_eager_reference(prefixes):
    sae = make(prefixes, k_aux=4, auxk_coef=0.25).train()
    x = torch.randn(10, 12, dtype=torch.float64)
    dead = torch.zeros(40, dtype=torch.bool)
    dead[torch.randperm(40)[:9]] = True
    fast = sae.training_forward(x, dead=dead)
    ref = eager_loss(sae, x, dead, 3, prefixes, 4, 0.25)
    torch.testing.assert_close(fast.loss, ref)
    inner = [m for m in prefixes if m < 40]
    assert set(fast.losses) == {"mse", "auxk"} | {f"mse_prefix_{m}" for m in inner}
    g_fast, g_ref = grads(sae, fast.loss), grads(sae, ref)
    for name in g_ref:
        torch.testing.assert_close(g_fast[name], g_ref[name], msg=lambda m, n=name: f"grad {n}: {m}")


def test_inner_prefix_losses_are_what_make_it_differ_from_batchtopk():
    """The outer level alone is BatchTopK's loss; each inner prefix adds its own error."""
    sae = make().train()
    twin = BatchTopKSAE(SAEConfig(arch="batchtopk", d_in=12, d_sae=40, k=3, dtype="float64")).train()
    twin.load_state_dict(sae.state_dict())
    x = torch.randn(16, 12, dtype=torch.float64)
    out, base = sae.training_forward(x), twin.training_forward(x)
    torch.testing.assert_close(out.losses["mse"], base.losses["mse"])
    inner = out.losses["mse_prefix_3"] + out.losses["mse_prefix_10"]
    assert inner > out.losses["mse"]  # fewer latents reconstruct worse
    torch.testing.assert_close(out.loss, base.loss + inner)


@pytest.mark.parametrize("dead_count", [0, 7, 40])
@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_fast_path_equals_dense_reference(dead_count, apply_b_dec):
    sae = make((4, 16, 64), d_in=16, d_sae=64, k=6, k_aux=8, apply_b_dec_to_input=apply_b_dec).train()
    x = torch.randn(24, 16, dtype=torch.float64) * 2
    dead = torch.zeros(64, dtype=torch.bool)
    dead[torch.randperm(64)[:dead_count]] = True
    fast = sae.training_forward(x, dead=dead)
    ref = SAE.training_forward(sae, x, dead=dead)  # the base class: dense forward, plain autograd
    assert fast.losses.keys() == ref.losses.keys()
    for key in ref.losses:
        torch.testing.assert_close(fast.losses[key], ref.losses[key])
    torch.testing.assert_close(fast.x_hat, ref.x_hat)
    assert torch.equal(fast.fired, ref.fired)
    g_fast, g_ref = grads(sae, fast.loss), grads(sae, ref.loss)
    for name in g_ref:
        torch.testing.assert_close(g_fast[name], g_ref[name], msg=lambda m, n=name: f"grad {n}: {m}")


def test_inference_is_batchtopks_threshold_rule():
    sae = make()
    with torch.no_grad():
        sae.threshold.fill_(0.3)
    twin = BatchTopKSAE(SAEConfig(arch="batchtopk", d_in=12, d_sae=40, k=3, dtype="float64"))
    twin.load_state_dict(sae.state_dict())
    x = torch.randn(2, 7, 12, dtype=torch.float64)
    pre = sae.pre_acts(x.reshape(-1, 12)).detach()
    z = sae.eval().encode(x)
    torch.testing.assert_close(z.reshape(-1, 40), torch.where(pre > 0.3, pre, torch.zeros_like(pre)))
    assert torch.equal(z, twin.eval().encode(x))
    assert torch.equal(sae(x).x_hat, twin(x).x_hat)


def test_training_calibrates_the_threshold_like_batchtopk():
    sae = make().train()
    x = torch.randn(16, 12, dtype=torch.float64)
    sae.training_forward(x)
    assert sae.threshold.item() > 0  # the EMA of the smallest kept activation is under way
    sae.calibrate_(x)
    kth = sae.pre_acts(x).detach().flatten().sort(descending=True).values[3 * 16 - 1]
    assert sae.threshold.item() == kth.item()


def test_save_load_round_trip_keeps_the_prefixes(tmp_path):
    sae = make()
    with torch.no_grad():
        sae.threshold.fill_(0.2)
    sae.save(tmp_path / "s")
    assert json.loads((tmp_path / "s" / CFG_FILE).read_text())["matryoshka_prefixes"] == [3, 10, 40]
    loaded = SAE.load(tmp_path / "s")
    assert type(loaded) is MatryoshkaSAE and loaded.cfg == sae.cfg and loaded.prefixes == PREFIXES
    for (name, a), (_, b) in zip(sae.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    x = torch.randn(5, 12, dtype=torch.float64)
    assert torch.equal(sae.eval().encode(x), loaded.encode(x))


def test_default_prefixes_grow_fourfold_to_d_sae():
    assert make(None, d_sae=1024).prefixes == (16, 64, 256, 1024)
    assert make(None, d_sae=40).prefixes == (2, 10, 40)
    assert make((5, 20), d_sae=40).prefixes == (5, 20, 40)  # d_sae appended, as SAELens does
    # the config states them, so cfg.json says which prefixes were trained
    assert make(None, d_sae=1024).cfg.matryoshka_prefixes == (16, 64, 256, 1024)
    assert SAEConfig(arch="matryoshka", d_in=4, d_sae=40, k=2, matryoshka_prefixes=[5, 20]).matryoshka_prefixes == (
        5,
        20,
        40,
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(matryoshka_prefixes=(10, 5)), r"strictly increasing .* got \[10, 5\]"),
        (dict(matryoshka_prefixes=(0, 40)), r"between 1 and d_sae=40"),
        (dict(matryoshka_prefixes=(10, 50)), r"between 1 and d_sae=40"),
        (dict(matryoshka_prefixes=()), r"strictly increasing"),
        (dict(k=None), r"needs k"),
    ],
)
def test_bad_configs_are_refused(kwargs, message):
    base = dict(arch="matryoshka", d_in=8, d_sae=40, k=4)
    with pytest.raises(ConfigError, match=message):
        SAEConfig(**{**base, **kwargs})


def test_prefixes_on_another_architecture_are_refused():
    with pytest.raises(ConfigError, match="matryoshka_prefixes is for arch='matryoshka', not 'topk'"):
        SAEConfig(arch="topk", d_in=8, d_sae=40, k=4, matryoshka_prefixes=(10, 40))


@pytest.mark.process  # importing sae_lens runs `git rev-parse`
def test_export_loads_in_saelens_with_the_same_forward(tmp_path):
    """SAELens saves its trained Matryoshka SAEs as jumprelu (one threshold per latent): ours too."""
    peer_sae = pytest.importorskip("sae_lens").SAE
    sae = make(dtype="float32", hookpoint="layers.2.mlp.out")
    with torch.no_grad():
        for p in sae.parameters():
            p.normal_(0, 0.3)
        sae.threshold.fill_(0.25)
    export_sae(sae, tmp_path / "out", "saelens")
    peer = peer_sae.load_from_disk(tmp_path / "out")
    assert peer.cfg.architecture() == "jumprelu"
    for scale in (1.0, 1000.0):
        x = torch.randn(64, 12) * scale
        z = sae.eval().encode(x)
        torch.testing.assert_close(peer.encode(x), z, rtol=1e-5, atol=1e-5 * scale)
        torch.testing.assert_close(peer.decode(z), sae.decode(z), rtol=1e-5, atol=1e-5 * scale)
    back = load_sae(tmp_path / "out")
    assert torch.equal(back.encode(x), peer.encode(x))
