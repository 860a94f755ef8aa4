"""monosemantic.sae.signed: the TopK SAEs with signed latents other tools make (SAELens abstopk,
OpenAI's TopK with an Identity post-activation): their activation by hand, save/load, the input-scale
fold, abstopk's exact unsigned twin, and the refusal of the readers that count z > 0 as firing."""

import pytest
import torch

from monosemantic import SAE, SAEConfig, create_sae, export_sae
from monosemantic.runmodel import RunModel
from monosemantic.sae import SAEFormatError
from monosemantic.sae.signed import SignedLatentsError, split_signed

D_IN, D_SAE, K = 8, 24, 3


def signed_sae(arch, **kw):
    torch.manual_seed(0)
    sae = create_sae(SAEConfig(arch=arch, d_in=D_IN, d_sae=D_SAE, k=K, **kw))
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.5)
        sae.b_dec.normal_(0, 0.5)
        if arch == "topk_identity":  # so that some of each token's top k are negative
            sae.b_enc.sub_(3.0)
    return sae


def by_hand(pre, arch):
    """The top k per row, chosen by |pre| (abstopk) or by pre (topk_identity), values as they are."""
    z = torch.zeros_like(pre)
    for r in range(pre.shape[0]):
        order = sorted(range(pre.shape[1]), key=lambda j: -(abs(pre[r, j]) if arch == "abstopk" else pre[r, j]))
        for j in order[:K]:
            z[r, j] = pre[r, j]
    return z


@pytest.mark.parametrize("arch", ["abstopk", "topk_identity"])
def test_signed_topk_keeps_the_sign_of_the_chosen_pre_activations(arch):
    sae = signed_sae(arch)
    x = torch.randn(20, D_IN) * 2
    pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    z = sae.encode(x)
    torch.testing.assert_close(z, by_hand(pre, arch))
    assert bool((z < 0).any()) and sae.signed_latents
    torch.testing.assert_close(sae(x).x_hat, z @ sae.W_dec + sae.b_dec)


@pytest.mark.parametrize("arch", ["abstopk", "topk_identity"])
def test_save_load_and_the_input_scale_fold(tmp_path, arch):
    sae = signed_sae(arch)
    x = torch.randn(20, D_IN)
    loaded = SAE.load(sae.save(tmp_path / arch))
    assert type(loaded) is type(sae)
    torch.testing.assert_close(loaded(x).x_hat, sae(x).x_hat, rtol=0, atol=0)
    loaded.fold_input_scale_(4.0)  # trained on 4x: takes raw x, latents divided by 4
    torch.testing.assert_close(loaded.encode(x), sae.encode(4 * x) / 4, rtol=1e-5, atol=1e-6)


def test_an_abstopk_sae_equals_its_split_unsigned_twin():
    sae = signed_sae("abstopk")
    twin = split_signed(sae)
    assert (twin.cfg.arch, twin.d_sae, twin.signed_latents) == ("topk", 2 * D_SAE, False)
    for scale in (1.0, 1000.0):
        x = torch.randn(50, D_IN) * scale
        z, z2 = sae.encode(x), twin.encode(x)
        assert bool((z2 >= 0).all())
        torch.testing.assert_close(z2[:, :D_SAE] - z2[:, D_SAE:], z, rtol=0, atol=0)
        torch.testing.assert_close(twin(x).x_hat, sae(x).x_hat, rtol=1e-5, atol=1e-5 * scale)
    with pytest.raises(SignedLatentsError, match="only an abstopk SAE splits"):
        split_signed(signed_sae("topk_identity"))


@pytest.mark.parametrize("arch", ["abstopk", "topk_identity"])
def test_feature_analysis_and_the_dashboard_refuse_signed_latents(tmp_path, arch):
    """RunModel is what analysis, dashboard, experiments and the benchmark read a run through."""
    signed_sae(arch, model="builtin", hookpoint="layers.2.resid.post").save(tmp_path / "run")
    twin = "--split-signed" if arch == "abstopk" else "encode/decode, eval and export work"
    with pytest.raises(SignedLatentsError, match=rf"feature analysis .* needs latents that fire with positive.*{twin}"):
        RunModel.of_run(tmp_path / "run")


def test_exports_refuse_what_the_peer_cannot_hold(tmp_path):
    with pytest.raises(SAEFormatError, match=r"SAELens has no architecture for arch='topk_identity'"):
        export_sae(signed_sae("topk_identity"), tmp_path / "a", "saelens")
    with pytest.raises(SAEFormatError, match=r"sparsify holds only TopK SAEs.*arch='abstopk'"):
        export_sae(signed_sae("abstopk"), tmp_path / "b", "sparsify")


def test_convert_split_signed_writes_the_twin_and_refuses_the_rest(tmp_path, capsys):
    from monosemantic.cli.main import main

    sae = signed_sae("abstopk")
    sae.save(tmp_path / "abs")
    assert main(["convert", str(tmp_path / "abs"), "--out", str(tmp_path / "twin"), "--split-signed"]) == 0
    twin, x = SAE.load(tmp_path / "twin"), torch.randn(10, D_IN)
    assert (twin.cfg.arch, twin.d_sae) == ("topk", 2 * D_SAE)
    torch.testing.assert_close(twin(x).x_hat, sae(x).x_hat, rtol=1e-5, atol=1e-5)
    signed_sae("topk_identity").save(tmp_path / "ident")
    assert main(["convert", str(tmp_path / "ident"), "--out", str(tmp_path / "no"), "--split-signed"]) == 2
    assert "only an abstopk SAE splits" in capsys.readouterr().err


@pytest.mark.parametrize("arch", ["abstopk", "topk_identity"])
def test_eval_counts_a_negative_latent_as_firing(arch):
    """L0, densities and dead latents count z != 0, so a latent firing negative counts: L0 is exactly k."""
    from monosemantic.eval.metrics import evaluate

    sae = signed_sae(arch)
    x = torch.randn(200, D_IN)
    result = evaluate(sae, [x])
    assert result.l0 == K and bool((sae.encode(x) < 0).any())
    fired = (sae.encode(x) != 0).any(0).double().mean().item()
    assert result.dead_fraction == pytest.approx(1 - fired)
