"""`TrainConfig.matmul_dtype="auto"` (the default): resolved once, when the config is made, to
bfloat16 where the device multiplies bf16 natively and float32 elsewhere; the run's
train_config.json records the dtype and why, and a resume trains with the recorded value."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from monosemantic.cli.main import main
from monosemantic.config import from_dict, to_dict
from monosemantic.data.activations import TensorBatches
from monosemantic.sae import SAEConfig, create_sae
from monosemantic.train.checkpoint import CheckpointError
from monosemantic.train.config import read_saved_run
from monosemantic.train.precision import native_bf16, resolve_matmul_dtype
from monosemantic.train.trainer import TrainConfig, Trainer
from tests.train.test_trainer import Crash, crashing

NATIVE, FOUND = native_bf16("cpu")


@pytest.fixture(autouse=True)
def _small_initialisation_sample(monkeypatch):
    monkeypatch.setattr("monosemantic.train.trainer.SCALE_TOKENS", 64)


def sae():
    torch.manual_seed(0)
    return create_sae(SAEConfig(arch="topk", d_in=8, d_sae=256, k=4))


def cfg(**kw) -> TrainConfig:
    return TrainConfig(batch_size=64, total_tokens=64 * 30, lr=3e-3, checkpoint_every=10, b_dec_init="mean", **kw)


def test_auto_resolves_by_the_devices_native_bf16_and_says_why():
    expected = "bfloat16" if NATIVE else "float32"
    c = TrainConfig()
    assert c.matmul_dtype == expected and FOUND in (c.matmul_dtype_reason or "")
    assert to_dict(c)["matmul_dtype"] == expected and to_dict(c)["matmul_dtype_reason"] == c.matmul_dtype_reason
    assert resolve_matmul_dtype("float32", "cpu") == ("float32", None)  # an explicit choice stays
    explicit = to_dict(TrainConfig(matmul_dtype="float32"))
    assert explicit["matmul_dtype"] == "float32" and "matmul_dtype_reason" not in explicit  # files as before
    assert from_dict(TrainConfig, to_dict(c)) == c  # read back as recorded, not resolved again


def test_a_run_records_the_resolved_dtype_and_resumes_bit_exact_with_it(tmp_path):
    x = torch.randn(4096, 8) * 3
    full = Trainer(sae(), cfg(), tmp_path / "a", progress=False).fit(TensorBatches(x, 64, seed=1))
    with pytest.raises(Crash):
        Trainer(sae(), cfg(), tmp_path / "b", progress=False).fit(crashing(TensorBatches(x, 64, seed=1), 25))
    saved = json.loads((tmp_path / "b" / "train_config.json").read_text())["train"]
    assert saved["matmul_dtype"] == ("bfloat16" if NATIVE else "float32")
    assert saved["matmul_dtype_reason"].startswith("auto: ")
    resumed_cfg = from_dict(TrainConfig, saved)  # what --resume reads
    resumed = Trainer(sae(), resumed_cfg, tmp_path / "b", progress=False).fit(
        (b for b in TensorBatches(x, 64, seed=1)), resume=True
    )
    for (name, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name


def test_a_resume_with_another_matmul_dtype_is_refused(tmp_path):
    x = torch.randn(4096, 8) * 3
    with pytest.raises(Crash):
        Trainer(sae(), cfg(matmul_dtype="bfloat16"), tmp_path, progress=False).fit(
            crashing(TensorBatches(x, 64, seed=1), 15)
        )
    with pytest.raises(CheckpointError, match="train.matmul_dtype: checkpoint has 'bfloat16', now 'float32'"):
        Trainer(sae(), cfg(matmul_dtype="float32"), tmp_path, progress=False).fit(
            (b for b in TensorBatches(x, 64, seed=1)), resume=True
        )


def test_a_run_saved_before_the_field_existed_resumes_with_fp32_selection(tmp_path):
    record = {
        "sae": to_dict(SAEConfig(arch="topk", d_in=8, d_sae=32, k=4)),
        "train": {k: v for k, v in to_dict(TrainConfig(matmul_dtype="float32")).items() if k != "matmul_dtype"},
        "data": {"model": "builtin", "hookpoint": "layers.3.resid.post"},
        "harvest": {},
        "source": {},
    }
    (tmp_path / "train_config.json").write_text(json.dumps(record))
    assert read_saved_run(tmp_path).run.train.matmul_dtype == "float32"


def forget_matmul_dtype(run: Path) -> None:
    """Make `run` look as a run saved before the field existed: no matmul_dtype in its config files
    (train_config.json and each checkpoint's trainer.json, whose sha256 is written again)."""
    config = run / "train_config.json"
    record = json.loads(config.read_text())
    record["train"].pop("matmul_dtype")
    config.write_text(json.dumps(record))
    for step in (run / "checkpoints").iterdir():
        state = json.loads((step / "trainer.json").read_text())
        assert state["configs"]["train"].pop("matmul_dtype") == "float32"
        (step / "trainer.json").write_text(json.dumps(state))
        sums = json.loads((step / "sha256.json").read_text())
        sums["trainer.json"] = hashlib.sha256((step / "trainer.json").read_bytes()).hexdigest()
        (step / "sha256.json").write_text(json.dumps(sums))


def test_train_tensors_resumes_a_run_saved_before_the_field_with_fp32_selection(tmp_path, interrupted_training):
    torch.manual_seed(0)
    acts = tmp_path / "acts.npy"
    np.save(acts, torch.randn(2000, 8).numpy())
    out = tmp_path / "run"
    flags = ["--arch", "topk", "--k", "4", "--expansion-factor", "4", "--batch-size", "64", "--total-tokens", "1920"]
    flags += ["--checkpoint-every", "10", "--matmul-dtype", "float32"]
    interrupted_training(["-q", "train-tensors", str(acts), "--out", str(out), *flags])
    forget_matmul_dtype(out)
    assert main(["-q", "train-tensors", "--out", str(out), "--resume"]) == 0
    newest = sorted((out / "checkpoints").iterdir())[-1]  # written by the resumed run: it selected in fp32
    assert newest.name == "step_000000030"
    assert json.loads((newest / "trainer.json").read_text())["configs"]["train"]["matmul_dtype"] == "float32"
