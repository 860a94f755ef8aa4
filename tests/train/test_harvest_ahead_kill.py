"""`train` on a model harvests its next chunk in a thread while the SAE trains (data/stream.py,
look_ahead): a run killed with SIGKILL mid-way, its thread in flight, resumes to the very bytes of
an uninterrupted run."""

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from test_resume_kill import files, finish, spawn, step_dirs  # noqa: F401  (spawn: a fixture)
from tiny_models import tiny_train_argv

pytestmark = [pytest.mark.process, pytest.mark.slow]

STEPS = 120  # of 512 tokens; chunks of 8 batches, so a chunk is always being harvested ahead


def train_argv(model_dir: Path, out: Path) -> list[str]:
    argv = tiny_train_argv(model_dir, out, "--checkpoint-every", "20", "--log-every", "10", tokens=str(STEPS * 512))
    return ["--threads", "1", *argv]


def rows(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "tokens_per_s"} for line in lines]


def test_a_killed_train_on_a_model_resumes_byte_identical(tiny_model_dirs, tmp_path, spawn):  # noqa: F811
    model_dir = tiny_model_dirs["gpt2"]
    a, b = tmp_path / "A", tmp_path / "B"
    reference = spawn(*train_argv(model_dir, a))
    victim = spawn(*train_argv(model_dir, b), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while victim.poll() is None and len(step_dirs(b)) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert victim.poll() is None, "the run ended before it could be killed: make it longer (STEPS)"
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)
    assert not (b / "sae.safetensors").exists()
    killed_at = int(step_dirs(b)[-1].removeprefix("step_"))
    assert 40 <= killed_at < STEPS

    err = finish(spawn("--threads", "1", "train", "--out", str(b), "--resume"))
    assert f"resumed from {b / 'checkpoints' / f'step_{killed_at:09d}'}" in err
    finish(reference)
    assert (b / "sae.safetensors").read_bytes() == (a / "sae.safetensors").read_bytes()
    assert files(b / "checkpoints") == files(a / "checkpoints")
    assert rows(b) == rows(a)
