"""bf16 selection (the default `matmul_dtype` on CPUs with native bf16) against fp32 selection, on
real activations: the built-in model's residual stream at layer 3, harvested by the package's own
`ActivationStream`, encoded by the SAE shipped for it (in fp32).

A bf16 matmul is off by up to ~0.13 on these pre-activations (top-k values ~3), so picking the top k
from it alone swaps latents in a third of the tokens. The refined pick (`refined_topk`,
`refined_batch_topk`) must give the fp32 selection except where the two latents' fp32 values tie
to fp32 precision, and then the training step (losses, gradients) must be the fp32 path's."""

import dataclasses

import pytest
import torch

from monosemantic.data.stream import ActivationStream, HarvestConfig
from monosemantic.mathlm.corpus import MathCorpus
from monosemantic.mathlm.pretrained import load_pretrained
from monosemantic.models import load_model
from monosemantic.sae import create_sae
from monosemantic.sae.batchtopk import batch_topk_select, select_batch_topk
from monosemantic.sae.topk import centred, chunked_topk, encoder_preacts, select_topk

pytestmark = pytest.mark.integration  # harvests from the built-in model (seconds)

HOOK, TOKENS = "layers.3.resid.post", 2048
# Two fp32 sums of the same 192 products in different orders differ by < 1e-5 here (values ~1-5):
# latents closer than this are an fp32 tie, and either pick is the fp32 selection.
FP32_TIE = 1e-4
BF16_UNIT = 2.0**-8  # unit roundoff of bf16 (8-bit significand)


@pytest.fixture(scope="module")
def acts() -> torch.Tensor:
    model, tok = load_model("builtin")
    stream = ActivationStream(model, tok, HOOK, MathCorpus("train"), TOKENS, HarvestConfig(chunk_tokens=TOKENS))
    # distinct tokens only: a repeated context gives bit-identical activations, hence exact ties
    # (BatchTopK's threshold fell on one), where fp32 itself may keep either latent
    return next(iter(stream)).float().unique(dim=0)


@pytest.fixture(scope="module")
def sae():
    return load_pretrained(HOOK).train()  # fp32 copy of the shipped bf16 weights (d_sae 4096, k 32)


def swapped_gaps(pre32: torch.Tensor, picked: torch.Tensor, k: int) -> torch.Tensor:
    """Per token, fp32 value of its k-th fp32 latent minus the smallest fp32 value among `picked`
    [B, k] (0 where `picked` is the fp32 top k; > 0 by how much a wrong latent fell short)."""
    kth = pre32.topk(k, dim=-1).values[:, -1]
    return (kth - pre32.gather(1, picked).amin(1)).clamp_min(0)


def bf16_error_bound(sae, x: torch.Tensor) -> torch.Tensor:
    """Per token, a bound on |bf16 - fp32| of any pre-activation: inputs and weights each rounded
    (2u), the output rounded (u |pre|), with |sum x_i W_ij| <= ||x|| ||W_j|| (Cauchy-Schwarz)."""
    x_c = centred(sae, x)
    dot = x_c.norm(dim=1) * sae.W_enc.norm(dim=0).max()
    return (2 * BF16_UNIT + BF16_UNIT) * dot + BF16_UNIT * sae.b_enc.abs().max()


def test_refined_bf16_topk_is_the_fp32_topk_on_real_activations(acts, sae):
    k = sae.cfg.k
    with torch.no_grad():
        x = acts
        pre32 = encoder_preacts(sae, x, None).clone()
        pre16 = encoder_preacts(sae, x, torch.bfloat16).clone()
        _, naive = chunked_topk(pre16, k)  # the pick from the bf16 matmul alone
        _, refined, _ = select_topk(sae, x, pre16, k)
    naive_gaps, refined_gaps = swapped_gaps(pre32, naive, k), swapped_gaps(pre32, refined, k)
    # the unrefined pick: wrong in many tokens, by more than fp32 ties, but never beyond the bf16 bound
    assert int((naive_gaps > FP32_TIE).sum()) > len(x) // 10
    assert bool((naive_gaps <= 2 * bf16_error_bound(sae, x)).all())
    # the refined pick: the fp32 top k in every token, up to fp32 ties
    assert float(refined_gaps.max()) <= FP32_TIE, f"{int((refined_gaps > FP32_TIE).sum())} tokens differ"


def test_refined_bf16_batch_topk_is_the_fp32_batch_topk_on_real_activations(acts, sae):
    n = sae.cfg.k * len(acts)
    with torch.no_grad():
        pre32 = encoder_preacts(sae, acts, None).clone()
        pre16 = encoder_preacts(sae, acts, torch.bfloat16).clone()
        _, _, kept32, _ = batch_topk_select(pre32, n)
        naive_rows, naive_cols, _, _ = batch_topk_select(pre16, n)
        rows, cols, values, _, _ = select_batch_topk(sae, acts, pre16, n, None)
    nth = float(kept32.min())  # the fp32 threshold: the n-th largest fp32 pre-activation
    assert float(pre32[naive_rows, naive_cols].min()) < nth - FP32_TIE  # the unrefined pick is wrong
    assert rows.numel() == n and float(pre32[rows, cols].min()) >= nth - FP32_TIE
    torch.testing.assert_close(values, pre32[rows, cols], rtol=1e-5, atol=1e-5)  # fp32 values, not bf16
    assert bool(((rows * sae.d_sae + cols).diff() > 0).all())  # canonical (token, latent) order


def grads(sae, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    sae.zero_grad(set_to_none=True)
    loss.backward()
    return {name: p.grad.clone() for name, p in sae.named_parameters()}


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_the_bf16_training_step_is_the_fp32_step_on_real_activations(acts, sae, arch):
    """The step on the default bf16 path (refined pick, fp32 values) against the fp32 path, AuxK
    included (a quarter of the latents marked dead): same latents fired, same losses and gradients."""
    model = create_sae(dataclasses.replace(sae.cfg, arch=arch))
    model.load_state_dict(sae.state_dict(), strict=False)  # a BatchTopK SAE adds its threshold
    model.train()
    dead = torch.zeros(model.d_sae, dtype=torch.bool)
    dead[torch.randperm(model.d_sae, generator=torch.Generator().manual_seed(0))[: model.d_sae // 4]] = True
    fp32 = model.training_forward(acts, dead=dead, matmul_dtype=None)
    g32 = grads(model, fp32.loss)
    bf16 = model.training_forward(acts, dead=dead, matmul_dtype=torch.bfloat16)
    g16 = grads(model, bf16.loss)
    assert torch.equal(bf16.fired, fp32.fired)
    torch.testing.assert_close(bf16.x_hat, fp32.x_hat, rtol=1e-5, atol=1e-5)  # the same latents, the same values
    for name in fp32.losses:
        torch.testing.assert_close(bf16.losses[name], fp32.losses[name], rtol=1e-5, atol=1e-6)
    for name in g32:  # the values come from another fp32 sum order (row dots, not the matmul): ~1e-6
        scale = float(g32[name].abs().max())
        torch.testing.assert_close(g16[name], g32[name], rtol=1e-4, atol=1e-5 * scale, msg=name)
