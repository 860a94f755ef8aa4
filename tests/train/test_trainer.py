"""monosemantic.train.trainer: schedules, initialisation from data, dead-latent bookkeeping, resampling,
exact in-process resume, and the errors that must stop a run without damaging it."""

import hashlib
import math
from pathlib import Path

import pytest
import torch

from monosemantic.config import ConfigError
from monosemantic.data.activations import ActivationDataError, TensorBatches
from monosemantic.sae import SAE, SAEConfig, create_sae
from monosemantic.train.checkpoint import CheckpointError, checkpoint_dirs
from monosemantic.train.data_init import geometric_median
from monosemantic.train.rundir import read_metrics
from monosemantic.train.trainer import TrainConfig, Trainer, TrainingError, lr_at


@pytest.fixture(autouse=True)
def _small_initialisation_sample(monkeypatch):
    """Read one batch to initialise (tests that need more set their own)."""
    monkeypatch.setattr("monosemantic.train.trainer.SCALE_TOKENS", 64)


def data(n=4096, d=8, seed=0, scale=20.0):
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(24, d, generator=g)
    coef = torch.rand(n, 24, generator=g) * (torch.rand(n, 24, generator=g) < 0.15)
    return (coef @ basis + 0.5) * scale


def sae_for(arch="topk", d=8, d_sae=32, k=3, dtype="float32"):
    torch.manual_seed(0)
    return create_sae(SAEConfig(arch=arch, d_in=d, d_sae=d_sae, k=k, dtype=dtype))


def cfg(**kw):
    base = dict(
        batch_size=64,
        total_tokens=64 * 40,
        lr=3e-3,
        log_every=5,
        checkpoint_every=10,
        dead_window=640,
        b_dec_init="mean",
    )
    base.update(kw)
    return TrainConfig(**base)


def weights(sae: SAE) -> dict:
    return {k: v.detach().clone() for k, v in sae.state_dict().items()}


def tree(path: Path) -> dict:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


# ---- schedules and initialisation ---------------------------------------------------------------


def test_learning_rate_schedule_by_hand():
    lr = [lr_at(s, 100, 1.0, 0.1, 0.2) for s in range(100)]
    assert lr[0] == pytest.approx(0.1) and lr[4] == pytest.approx(0.5) and lr[9] == pytest.approx(1.0)
    assert lr[10:80] == [1.0] * 70
    assert lr[80] == pytest.approx(1.0) and lr[90] == pytest.approx(0.5) and lr[99] == pytest.approx(0.05)


def test_geometric_median_minimises_the_sum_of_distances():
    torch.manual_seed(3)
    x = torch.cat([torch.randn(200, 3), torch.randn(20, 3) * 50 + 100])  # outliers pull the mean away
    m = geometric_median(x)
    cost = lambda y: (x.double() - y).norm(dim=1).sum()
    for _ in range(50):  # convex objective: no nearby point may do better
        assert cost(m) <= cost(m + torch.randn(3, dtype=torch.float64) * 1e-2)
    assert m.norm() < 1.0 < x.mean(0).norm()


def peeked(x, n_batches, batch_size=64):
    """The batches the trainer reads to initialise, read independently from the same source."""
    b = TensorBatches(x, batch_size)
    return torch.cat([next(b) for _ in range(n_batches)])


def test_normalisation_scale_and_exported_sae_takes_raw_activations(monkeypatch):
    monkeypatch.setattr("monosemantic.train.trainer.SCALE_TOKENS", 640)  # 10 batches
    x = data()
    trainer = Trainer(sae_for(), cfg(), progress=False)
    exported = trainer.fit(TensorBatches(x, 64))
    expected = math.sqrt(8) / peeked(x, 10).norm(dim=1).mean().item()  # E||s x|| = sqrt(d_in)
    assert trainer.state.scale == pytest.approx(expected, rel=1e-6)
    assert exported.cfg.activation_scale == pytest.approx(trainer.state.scale)
    s = trainer.state.scale
    trained = trainer.sae.eval()
    torch.testing.assert_close(exported.encode(x[:100]), trained.encode(x[:100] * s) / s, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        exported.decode(exported.encode(x[:100])), trained.decode(trained.encode(x[:100] * s)) / s, rtol=1e-4, atol=1e-4
    )


def test_batchtopk_threshold_is_calibrated_on_the_last_batch_with_the_final_weights():
    x = data()
    trainer = Trainer(sae_for("batchtopk"), cfg(), progress=False)
    exported = trainer.fit(TensorBatches(x, 64, shuffle=False))
    last = x[39 * 64 : 40 * 64]  # the 40th batch (initialisation rewinds what it peeks)
    pre = exported.pre_acts(last).detach()  # raw units: the export folds the scale in
    kth_largest = pre.flatten().sort(descending=True).values[3 * 64 - 1]
    assert exported.threshold.item() == pytest.approx(kth_largest.item(), rel=1e-5)
    # the training EMA would have left it elsewhere: fire on about k per token on that batch
    assert int((exported.encode(last) > 0).sum()) in range(3 * 64 - 2, 3 * 64 + 1)


def test_b_dec_starts_at_the_geometric_median_of_the_scaled_sample(monkeypatch):
    monkeypatch.setattr("monosemantic.train.trainer.SCALE_TOKENS", 640)
    x = data()
    trainer = Trainer(sae_for(), cfg(b_dec_init="geometric_median"), progress=False)
    batches = TensorBatches(x, 64)
    trainer._initialise(batches)
    assert batches.state_dict() == {"epoch": 0, "index": 0}  # the peeked batches were rewound
    sample = peeked(x, 10) * trainer.state.scale
    torch.testing.assert_close(trainer.sae.b_dec.detach().double(), geometric_median(sample), rtol=1e-5, atol=1e-5)


def test_initialisation_of_a_plain_iterator_loses_no_batch(monkeypatch):
    monkeypatch.setattr("monosemantic.train.trainer.SCALE_TOKENS", 640)
    x = data()
    trainer = Trainer(sae_for(), cfg(), progress=False)
    replay = trainer._initialise(b for b in TensorBatches(x, 64))
    for expected in TensorBatches(x, 64):
        assert torch.equal(next(replay), expected)
        if trainer._batches_consumed > 12:
            break
        trainer._batches_consumed += 1


# ---- dead latents and resampling ------------------------------------------------------------


def _kill_latents(sae: SAE, ids: list[int]) -> None:
    with torch.no_grad():  # zero encoder column + very negative bias: a ReLU latent that cannot fire
        sae.W_enc[:, ids] = 0
        sae.b_enc[ids] = -100.0


def test_tokens_since_fired_counts_and_dead_fraction_is_logged_after_the_window(tmp_path):
    sae = sae_for("relu")
    _kill_latents(sae, [0, 1, 2, 3])
    trainer = Trainer(sae, cfg(b_dec_init="zeros", normalize_activations=False), tmp_path, progress=False)
    trainer.fit(TensorBatches(data(), 64))
    since = trainer.state.tokens_since_fired
    assert torch.equal(since[:4], torch.full((4,), 64 * 40))
    rows = read_metrics(tmp_path)
    before = [r for r in rows if r["tokens"] < 640]
    after = [r for r in rows if r["tokens"] >= 640]
    assert all(r["dead_fraction"] is None for r in before)  # not measurable before the window passed
    assert all(r["dead_fraction"] >= 4 / 32 for r in after) and after


def test_the_default_dead_window_is_scaled_to_the_run_so_every_run_reports_dead_latents(tmp_path):
    assert TrainConfig(total_tokens=2_000_000).dead_window == 500_000  # the demo: a quarter of its tokens
    assert TrainConfig(total_tokens=10**9).dead_window == 10_000_000  # long runs: Anthropic's 10M
    assert TrainConfig(total_tokens=2_000_000, dead_window=3000).dead_window == 3000  # as given
    trainer = Trainer(sae_for(), cfg(dead_window=0), tmp_path, progress=False)
    assert trainer.cfg.dead_window == 64 * 40 // 4
    trainer.fit(TensorBatches(data(), 64))
    rows = read_metrics(tmp_path)
    after = [r for r in rows if r["tokens"] >= 64 * 40 // 4]
    assert len(after) >= len(rows) - 3 and all(r["dead_fraction"] is not None for r in after)


def test_resampling_reinitialises_dead_latents_from_the_batch():
    sae = sae_for("relu")
    _kill_latents(sae, [5, 6, 7])
    batches = []

    class Recording(TensorBatches):
        def __next__(self):
            batches.append(super().__next__())
            return batches[-1]

    # resampling is due at step 11, when 11 * 64 tokens have passed: more than the dead window
    trainer = Trainer(
        sae,
        cfg(
            total_tokens=64 * 12,
            resample_every=11,
            b_dec_init="zeros",
            normalize_activations=False,
            dead_window=64 * 10,
        ),
        progress=False,
    )
    trainer.fit(Recording(data(), 64))
    W_dec, W_enc = trainer.sae.W_dec.detach(), trainer.sae.W_enc.detach()
    x = batches[11]  # [0] is the batch peeked to initialise, then steps 1..12: step 11 resampled
    unit = x / x.norm(dim=1, keepdim=True)
    for j in (5, 6, 7):
        # decoder row: one of the batch's inputs, normalised (then moved by one more Adam step)
        assert (unit @ W_dec[j]).max() > 0.99
        assert trainer.state.tokens_since_fired[j] < 64 * 10
    assert W_enc[:, [5, 6, 7]].norm(dim=0).max() < 0.5  # 0.2 x the mean alive encoder norm (~1)


def test_resampling_resets_adam_moments_of_the_resampled_entries():
    from monosemantic.train.trainer import resample_dead_latents

    sae = sae_for("relu")
    trainer = Trainer(sae, cfg(), progress=False)
    x = data()[:64]
    trainer.step(x)
    dead = torch.zeros(32, dtype=torch.bool)
    dead[[2, 9]] = True
    n = resample_dead_latents(trainer.sae, trainer.optimizer, x, dead, trainer.generator)
    state = trainer.optimizer.state
    assert n == 2
    for key in ("exp_avg", "exp_avg_sq"):
        assert state[sae.W_dec][key][[2, 9]].abs().sum() == 0
        assert state[sae.W_enc][key][:, [2, 9]].abs().sum() == 0
        assert state[sae.b_enc][key][[2, 9]].abs().sum() == 0
        assert state[sae.W_dec][key][~dead].abs().sum() > 0  # the others are untouched
    torch.testing.assert_close(sae.W_dec[[2, 9]].norm(dim=1), torch.ones(2))
    assert sae.b_enc[[2, 9]].abs().sum() == 0


# ---- fast path vs dense reference over a whole training run -------------------------------------


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_fast_and_dense_reference_training_agree(arch):
    x = data().double()
    runs = []
    for dense in (False, True):
        sae = sae_for(arch, dtype="float64")
        runs.append(
            Trainer(sae, cfg(dead_window=128), progress=False, dense_reference=dense).fit(
                TensorBatches(x, 64, dtype=torch.float64)
            )
        )
    for (name, a), (_, b) in zip(runs[0].state_dict().items(), runs[1].state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9, msg=lambda m, n=name: f"{n}: {m}")


# ---- resume --------------------------------------------------------------------------------------


class Crash(Exception):
    pass


def crashing(batches, after: int):
    for i, b in enumerate(batches):
        if i == after:
            raise Crash
        yield b


@pytest.mark.parametrize("arch, matmul", [("topk", "float32"), ("batchtopk", "bfloat16"), ("relu", "float32")])
@pytest.mark.parametrize("resumable", [True, False])
def test_resume_after_a_crash_is_bit_exact(tmp_path, arch, matmul, resumable):
    x = data()
    kw = dict(matmul_dtype=matmul, resample_every=7 if arch == "relu" else 0)

    def source():
        b = TensorBatches(x, 64, seed=3)
        return b if resumable else (t for t in b)  # a plain generator is resumed by skipping

    full = Trainer(sae_for(arch), cfg(**kw), tmp_path / "a", progress=False).fit(source())
    with pytest.raises(Crash):
        Trainer(sae_for(arch), cfg(**kw), tmp_path / "b", progress=False).fit(
            crashing(source(), 25) if not resumable else _CrashingBatches(x, 25)
        )
    assert [p.name for p in checkpoint_dirs(tmp_path / "b")] == ["step_000000010", "step_000000020"]
    resumed = Trainer(sae_for(arch), cfg(**kw), tmp_path / "b", progress=False).fit(source(), resume=True)
    for (name, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    drop = {"tokens_per_s"}
    clean = lambda rows: [{k: v for k, v in r.items() if k not in drop} for r in rows]
    assert clean(read_metrics(tmp_path / "a")) == clean(read_metrics(tmp_path / "b"))


class _CrashingBatches(TensorBatches):
    def __init__(self, x, after):
        super().__init__(x, 64, seed=3)
        self.after, self.count = after, 0

    def __next__(self):
        self.count += 1
        if self.count > self.after:
            raise Crash
        return super().__next__()


def test_resume_refuses_a_different_configuration_but_allows_operational_changes(tmp_path):
    x = data()
    with pytest.raises(Crash):
        Trainer(sae_for(), cfg(), tmp_path, progress=False).fit(_CrashingBatches(x, 15))
    with pytest.raises(CheckpointError, match=r"train.lr: checkpoint has 0.003, now 0.001"):
        Trainer(sae_for(), cfg(lr=1e-3), tmp_path, progress=False).fit(TensorBatches(x, 64, seed=3), resume=True)
    with pytest.raises(CheckpointError, match=r"sae.k: checkpoint has 3, now 4"):
        Trainer(sae_for(k=4), cfg(), tmp_path, progress=False).fit(TensorBatches(x, 64, seed=3), resume=True)
    Trainer(sae_for(), cfg(log_every=3, keep_checkpoints=1), tmp_path, progress=False).fit(
        TensorBatches(x, 64, seed=3), resume=True
    )
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step_000000040"]


def test_resume_without_a_checkpoint_is_an_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint to resume from"):
        Trainer(sae_for(), cfg(), tmp_path, progress=False).fit(TensorBatches(data(), 64), resume=True)


# ---- errors ------------------------------------------------------------------------------------


def test_nan_in_the_data_names_the_step_and_keeps_the_last_checkpoint(tmp_path):
    x = data()

    def batches():
        for i, b in enumerate(TensorBatches(x, 64)):
            if i == 23:  # batch 0 is peeked and replayed: batch 23 is read at step 23
                b = b.clone()
                b[9, 2] = float("nan")
            yield b

    with pytest.raises(ActivationDataError, match=r"batch at step 23: row 9 contains NaN"):
        Trainer(sae_for(), cfg(), tmp_path, progress=False).fit(batches())
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step_000000010", "step_000000020"]
    assert not (tmp_path / "sae.safetensors").exists()  # no half-trained SAE published
    before = tree(tmp_path)
    clean = (b for b in TensorBatches(x, 64))  # the data fixed: the run resumes from step 20
    Trainer(sae_for(), cfg(), tmp_path, progress=False).fit(clean, resume=True)
    assert (tmp_path / "sae.safetensors").exists()
    assert {k: v for k, v in before.items() if k.startswith("checkpoints/step_000000020")}


def test_nan_in_the_first_batches_is_caught_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr("monosemantic.train.trainer.SCALE_TOKENS", 640)  # batches 0-9 are read first
    x = data()
    x[100, 1] = float("inf")
    # unshuffled batches of 64: global row 100 is row 36 of batch 1
    with pytest.raises(ActivationDataError, match=r"batch 1 \(read to initialise\): row 36 contains inf"):
        Trainer(sae_for(), cfg(), tmp_path / "run", progress=False).fit(TensorBatches(x, 64, shuffle=False))
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_a_non_finite_loss_names_the_step():
    x = torch.full((640, 8), 4e18)  # the inputs' squared norms fit in float32, the reconstruction errors' do not
    trainer = Trainer(sae_for(), cfg(normalize_activations=False, b_dec_init="zeros"), progress=False)
    with pytest.raises(TrainingError, match=r"loss became inf at step 0"):
        trainer.fit(TensorBatches(x, 64))


def test_activations_whose_squared_norm_overflows_float32_are_refused_before_training():
    x = data()
    x[10] = 1e20  # in float32 the norm of this row is inf (and the scale was 0); in float64 it is 2.8e20
    trainer = Trainer(sae_for(), cfg(), progress=False)
    with pytest.raises(ActivationDataError, match=r"batch 0 \(read to initialise\): row 10 has squared norm 8e\+40"):
        trainer.fit(TensorBatches(x, 64, shuffle=False))
    assert trainer.state.step == 0


def test_wrong_width_and_exhausted_data_are_clear_errors():
    trainer = Trainer(sae_for(), cfg(), progress=False)
    with pytest.raises(ActivationDataError, match=r"shape \[64, 5\]; expected \[batch, 8\]"):
        trainer.fit(iter([torch.randn(64, 5)] * 100))
    trainer = Trainer(sae_for(), cfg(), progress=False)
    with pytest.raises(TrainingError, match=r"data ran out after 3 batches, at step 3 of 40"):
        trainer.fit(iter([torch.randn(64, 8)] * 3))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(batch_size=0), "batch_size must be >= 1"),
        (dict(total_tokens=10), "less than one batch"),
        (dict(lr=-1.0), "lr must be > 0"),
        (dict(lr_warmup=1.5), "lr_warmup is a fraction"),
        (dict(lr_warmup=0.6, lr_decay=0.6), "exceeds 1"),
        (dict(dead_window=-1), "dead_window must be >= 1"),
    ],
)
def test_bad_train_configs(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**kwargs)
