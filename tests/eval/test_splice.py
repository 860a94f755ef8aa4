"""monosemantic.eval.splice: CE loss recovered and KL against cases whose answer is known exactly (a
perfect SAE recovers 100%, an SAE that outputs nothing equals zero ablation), and against the
model's own loss computed independently."""

import pytest
import torch
import torch.nn.functional as F

from monosemantic.data.corpora import kept_tokens, pack
from monosemantic.eval.splice import spliced_eval
from monosemantic.hooks import capture, patch
from monosemantic.mathlm.corpus import MathCorpus
from monosemantic.models import ModelError, load_model
from monosemantic.sae import SAEConfig, create_sae

pytestmark = pytest.mark.integration  # trains or analyses whole runs: see tests/conftest.py

HOOK = "layers.1.mlp.neurons"


@pytest.fixture(scope="module")
def gpt2(tiny_model_dirs):
    return load_model(tiny_model_dirs["gpt2"])


def identity_sae(d: int):
    """relu(x) - relu(-x) = x: a ReLU SAE with d_sae = 2d that reconstructs every input exactly."""
    sae = create_sae(SAEConfig(arch="relu", d_in=d, d_sae=2 * d, apply_b_dec_to_input=False))
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], 1))
        sae.W_dec.copy_(torch.cat([eye, -eye], 0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def silent_sae(d: int):
    sae = create_sae(SAEConfig(arch="topk", d_in=d, d_sae=8, k=2))
    with torch.no_grad():
        sae.W_dec.zero_()
        sae.b_dec.zero_()
    return sae


def manual_ce(model, tok, corpus, tokens, edit=None) -> float:
    """Mean next-token CE over kept targets, straight from the logits (patched by `edit` on kept tokens)."""
    total, n = 0.0, 0
    for batch in pack(corpus.documents(), tok, 64, 2048):
        keep = kept_tokens(batch, tok)
        hooks = {} if edit is None else {HOOK: lambda x: torch.where(keep[..., None], edit(x), x)}  # noqa: B023
        with patch(model, hooks):
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
        ce = F.cross_entropy(logits.transpose(1, 2), batch.input_ids[:, 1:], reduction="none")
        total += ce[keep[:, 1:]].sum().item()
        n += int(keep[:, 1:].sum())
        if int(kept_tokens(batch, tok).sum()) and n >= tokens:
            break
    return total / n


def kept_activations(model, tok, corpus, tokens) -> torch.Tensor:
    """[N, d] float64 hookpoint activations of the kept tokens of whole batches, until `tokens` are kept."""
    rows, n = [], 0
    for batch in pack(corpus.documents(), tok, 64, 2048):
        keep = kept_tokens(batch, tok)
        with capture(model, HOOK) as acts:
            model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        rows.append(acts[HOOK][keep].double())
        n += int(keep.sum())
        if n >= tokens:
            return torch.cat(rows)
    raise AssertionError(f"the corpus holds fewer than {tokens} tokens")


def test_a_perfect_sae_recovers_all_of_the_loss(gpt2):
    model, tok = gpt2
    r = spliced_eval(model, tok, identity_sae(128), HOOK, MathCorpus("heldout"), 2000, progress=False)
    assert r.ce_spliced == pytest.approx(r.ce_clean, abs=1e-6)
    assert r.ce_loss_recovered == pytest.approx(1.0, abs=1e-4)
    assert r.ce_loss_recovered_mean_ablation == pytest.approx(1.0, abs=1e-4)
    assert r.kl_spliced == pytest.approx(0.0, abs=1e-6) and r.fvu == pytest.approx(0.0, abs=1e-9)
    assert r.ce_clean == pytest.approx(manual_ce(model, tok, MathCorpus("heldout"), 2000), rel=1e-6)
    assert r.ce_zero_ablated == pytest.approx(
        manual_ce(model, tok, MathCorpus("heldout"), 2000, edit=torch.zeros_like), rel=1e-6
    )
    assert r.kl_zero_ablated > 0 and r.ce_zero_ablated != r.ce_clean


def test_an_sae_that_outputs_nothing_equals_zero_ablation(gpt2):
    model, tok = gpt2
    r = spliced_eval(model, tok, silent_sae(128), HOOK, MathCorpus("heldout"), 1000, progress=False)
    assert r.ce_spliced == pytest.approx(r.ce_zero_ablated, rel=1e-6)
    assert r.ce_loss_recovered == pytest.approx(0.0, abs=1e-6)
    assert r.kl_spliced == pytest.approx(r.kl_zero_ablated, rel=1e-5)
    # x_hat = 0: the squared error is sum ||x||^2 itself, so the normalised MSE is 1 to the last bit, and the
    # FVU is sum ||x||^2 / sum ||x - mean||^2 = 1 + N ||mean||^2 / sum ||x - mean||^2, above 1 by the mean
    x = kept_activations(model, tok, MathCorpus("heldout"), 1000)
    sum_sq, spread = x.pow(2).sum().item(), (x - x.mean(0)).pow(2).sum().item()
    assert r.normalized_mse == 1.0
    assert r.fvu == pytest.approx(sum_sq / spread, rel=1e-9) and r.fvu > 1.0
    assert r.explained_variance == pytest.approx(1 - sum_sq / spread, rel=1e-9)


def test_a_width_mismatch_between_sae_and_hookpoint_is_one_clear_error(gpt2):
    model, tok = gpt2
    with pytest.raises(
        ModelError,
        match=r"hookpoint 'layers.1.resid.post' has width 32, but the SAE expects "
        r"d_in=128",
    ):
        spliced_eval(model, tok, identity_sae(128), "layers.1.resid.post", MathCorpus("heldout"), 100, progress=False)


def test_the_report_warns_when_ablation_barely_matters():
    from monosemantic.eval.splice import SplicedEval
    from monosemantic.eval.tables import format_spliced

    base = dict(
        n_tokens=100,
        ce_clean=0.88,
        ce_spliced=0.877,
        ce_zero_ablated=0.887,
        ce_mean_ablated=0.878,
        ce_loss_recovered=1.31,
        ce_loss_recovered_mean_ablation=-0.4,
        kl_spliced=0.002,
        kl_zero_ablated=0.037,
        kl_mean_ablated=0.01,
        fvu=0.08,
        explained_variance=0.92,
        normalized_mse=0.08,
        l0=32.0,
        dead_fraction=0.01,
        dense_fraction=0.0,
        density_histogram={},
    )
    assert "costs the model only 0.0070 nats (zero) / -0.0020 (mean)" in format_spliced(SplicedEval(**base))
    big = {**base, "ce_zero_ablated": 2.5, "ce_mean_ablated": 1.9}
    assert "note:" not in format_spliced(SplicedEval(**big))


def test_a_wide_sae_is_evaluated_a_few_tokens_at_a_time_with_the_same_result(gpt2, monkeypatch):
    """Latents are held [rows, d_sae] at a time (`LATENT_BUDGET`); a budget of 3 tokens' latents
    gives the whole-batch result (the FVU's streaming merge is exact up to float64 rounding)."""
    import monosemantic.eval.splice as splice

    model, tok = gpt2
    torch.manual_seed(0)
    sae = create_sae(SAEConfig(arch="topk", d_in=128, d_sae=256, k=4))
    whole = spliced_eval(model, tok, sae, HOOK, MathCorpus("heldout"), 600, progress=False)
    monkeypatch.setattr(splice, "LATENT_BUDGET", 3 * 256)
    assert splice.latent_rows(256) == 3
    pieces = spliced_eval(model, tok, sae, HOOK, MathCorpus("heldout"), 600, progress=False)
    for name, value in vars(whole).items():
        if isinstance(value, float):
            assert getattr(pieces, name) == pytest.approx(value, rel=1e-9, abs=1e-12), name
        else:
            assert getattr(pieces, name) == value, name
