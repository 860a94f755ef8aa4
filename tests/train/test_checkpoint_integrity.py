"""monosemantic.train.checkpoint: every checkpoint lists the sha256 of its files (sha256.json); a resume
refuses a changed or missing file by name, offers the previous checkpoint, and goes on from it exactly."""

import hashlib
import json
import shutil

import pytest
import torch

from monosemantic.sae import SAEConfig, create_sae
from monosemantic.train.checkpoint import SHA256_FILE, CheckpointError, checkpoint_dirs
from monosemantic.train.trainer import TrainConfig, Trainer

FILES = ("sae.safetensors", "optimizer.safetensors", "trainer.safetensors", "trainer.json")


@pytest.fixture(autouse=True)
def _small_initialisation_sample(monkeypatch):
    monkeypatch.setattr("monosemantic.train.trainer.SCALE_TOKENS", 64)


def batches():
    return iter((torch.randn(4096, 8, generator=torch.Generator().manual_seed(0)) + 3.0).split(64))


def fit(run_dir, *, resume=False, step=None, keep=2):
    torch.manual_seed(0)
    sae = create_sae(SAEConfig(arch="topk", d_in=8, d_sae=32, k=3))
    train = TrainConfig(batch_size=64, total_tokens=64 * 40, checkpoint_every=10, keep_checkpoints=keep)
    return Trainer(sae, train, run_dir, progress=False).fit(batches(), resume=resume, step=step)


def change_one_byte(path):
    """A change no parser notices: the lowest bit of the first tensor value, or a digit of the scale."""
    data = bytearray(path.read_bytes())
    if path.suffix == ".json":
        at = data.index(b'"scale": ') + len(b'"scale": ')
    else:
        at = 8 + int.from_bytes(data[:8], "little")  # after the header: the first tensor's first byte
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def test_every_checkpoint_lists_the_sha256_of_each_of_its_files(tmp_path):
    fit(tmp_path)
    for ckpt in checkpoint_dirs(tmp_path):
        listed = json.loads((ckpt / SHA256_FILE).read_text())
        assert listed == {name: hashlib.sha256((ckpt / name).read_bytes()).hexdigest() for name in FILES}


@pytest.mark.parametrize("name", FILES)
def test_a_changed_file_is_refused_and_the_previous_checkpoint_resumes_exactly(tmp_path, name):
    whole = fit(tmp_path / "whole")
    run = tmp_path / "run"
    shutil.copytree(tmp_path / "whole", run)
    change_one_byte(run / "checkpoints" / "step_000000040" / name)
    with pytest.raises(CheckpointError, match=rf"step_000000040: damaged checkpoint: {name} does not match its sha256"):
        fit(run, resume=True)
    with pytest.raises(CheckpointError, match="resume from the previous checkpoint with --resume-from step_30"):
        fit(run, resume=True)
    again = fit(run, resume=True, step=30)
    for key, value in whole.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key


def test_a_missing_file_or_listing_is_named(tmp_path):
    fit(tmp_path, keep=1)
    ckpt = tmp_path / "checkpoints" / "step_000000040"
    (ckpt / "optimizer.safetensors").unlink()
    with pytest.raises(CheckpointError, match="optimizer.safetensors is missing; it has no earlier checkpoint"):
        fit(tmp_path, resume=True)
    (ckpt / SHA256_FILE).write_text("[1, 2")
    with pytest.raises(CheckpointError, match=f"{SHA256_FILE} is unreadable"):
        fit(tmp_path, resume=True)


def test_a_checkpoint_made_before_sha256_json_still_resumes(tmp_path):
    fit(tmp_path)
    for ckpt in checkpoint_dirs(tmp_path):
        (ckpt / SHA256_FILE).unlink()
    fit(tmp_path, resume=True)


def test_resume_from_a_step_without_a_checkpoint_lists_those_there_are(tmp_path):
    fit(tmp_path)
    with pytest.raises(CheckpointError, match=r"no checkpoint of step 25 to resume from \(it has: step_30, step_40\)"):
        fit(tmp_path, resume=True, step=25)
