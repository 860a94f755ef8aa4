"""The trainer stores a TopK / BatchTopK SAE's W_enc by latent (`SAE.encoder_layout_`), so that the
sparse fast path needs no transposing copy of it per step. The run must be the run it was with a
contiguous W_enc: the same latents every step, the same weights and Adam moments up to fp32 rounding
(BLAS reads the other layout in another order: ~1e-7 relative after 12 steps; Adam walking a
parameter and its moments in different layouts would be off by O(1)); the exported SAE contiguous."""

import pytest
import torch

from monosemantic.sae import SAEConfig, create_sae
from monosemantic.train.trainer import TrainConfig, Trainer
from tests.train.test_trainer import Crash, crashing


def batches(n_steps=12, batch=64, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(40, d, generator=g)
    return [torch.relu(torch.randn(batch, 40, generator=g)) @ basis for _ in range(n_steps)]


@pytest.fixture(autouse=True)
def _by_latent_from_512(monkeypatch):
    """Small SAEs stay contiguous in real runs (`BY_LATENT_FROM`); these take the by-latent layout."""
    monkeypatch.setattr("monosemantic.train.trainer.BY_LATENT_FROM", 512)
    monkeypatch.setattr("monosemantic.train.trainer.SCALE_TOKENS", 64)  # initialise from one batch


def trainer(arch: str, matmul_dtype: str) -> Trainer:
    torch.manual_seed(0)
    sae = create_sae(SAEConfig(arch=arch, d_in=16, d_sae=512, k=4))
    # a short dead window: AuxK (which reads W_enc^T too) runs in most steps
    cfg = TrainConfig(batch_size=64, total_tokens=64 * 12, lr=3e-3, dead_window=128, matmul_dtype=matmul_dtype)
    return Trainer(sae, cfg, progress=False)


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
@pytest.mark.parametrize("matmul_dtype", ["float32", "bfloat16"])
def test_steps_with_w_enc_by_latent_equal_those_with_a_contiguous_w_enc(arch, matmul_dtype):
    by_latent, contiguous = trainer(arch, matmul_dtype), trainer(arch, matmul_dtype)
    contiguous.sae.encoder_layout_(by_latent=False)  # the layout before this change
    assert by_latent.sae.W_enc.t().is_contiguous() and contiguous.sae.W_enc.is_contiguous()
    # W_enc^T (the exact values of the picked latents) is a view of the weights, not a copy
    W_T = by_latent.sae.transposed_copy("W_enc_T", by_latent.sae.W_enc)
    assert W_T.data_ptr() == by_latent.sae.W_enc.data_ptr() and W_T.is_contiguous()
    for x in batches():
        a, b = by_latent.step(x), contiguous.step(x)
        assert torch.equal(a.fired, b.fired) and torch.equal(a.l0, b.l0)  # the same latents
        torch.testing.assert_close(a.loss, b.loss)
        assert by_latent.sae.W_enc.t().is_contiguous()  # the gradient came in that layout: no copy
    for name, p in by_latent.sae.named_parameters():
        q = dict(contiguous.sae.named_parameters())[name]
        torch.testing.assert_close(p, q, msg=lambda m, n=name: f"{n}: {m}")
        for key in ("exp_avg", "exp_avg_sq"):
            a_m, b_m = by_latent.optimizer.state[p][key], contiguous.optimizer.state[q][key]
            torch.testing.assert_close(a_m, b_m, msg=lambda m, n=name, k=key: f"{n}.{k}: {m}")


def test_below_by_latent_from_w_enc_stays_contiguous(monkeypatch):
    monkeypatch.setattr("monosemantic.train.trainer.BY_LATENT_FROM", 1024)
    assert trainer("topk", "bfloat16").sae.W_enc.is_contiguous()


def test_the_exported_sae_is_contiguous_and_the_trainer_keeps_its_layout():
    t = trainer("topk", "float32")
    t.step(batches(1)[0])
    exported = t.export()
    assert exported is not None and exported.W_enc.is_contiguous()
    assert torch.equal(exported.W_enc, t.sae.W_enc)  # scale 1: nothing folded in
    assert t.sae.W_enc.t().is_contiguous()


def test_a_resume_with_w_enc_by_latent_is_bit_exact(tmp_path):
    """The checkpoint holds Adam's moments contiguous; restored in W_enc's layout or fused Adam
    would pair each weight with another's moments."""
    kw = dict(batch_size=64, total_tokens=64 * 12, lr=3e-3, dead_window=128, checkpoint_every=5)

    def run(path, source, resume=False):
        torch.manual_seed(0)
        sae = create_sae(SAEConfig(arch="topk", d_in=16, d_sae=512, k=4))
        return Trainer(sae, TrainConfig(**kw), path, progress=False).fit(source, resume=resume)

    full = run(tmp_path / "a", iter(batches()))
    with pytest.raises(Crash):
        run(tmp_path / "b", crashing(batches(), 8))
    resumed = run(tmp_path / "b", iter(batches()), resume=True)
    for (name, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
