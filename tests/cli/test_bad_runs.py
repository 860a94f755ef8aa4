"""Bad input that used to strand a run directory or end in a traceback (issue 18, cases 2-5 and 7), each
run as a real `monosemantic` process (tests/bad_input.py): exit 2, one `error:` line naming the bad value,
and no run directory left behind. And two writers of one run directory at once: the second is refused,
naming the first's pid, and the run's metrics.jsonl stays as one writer leaves it."""

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from bad_input import assert_one_error, run_cli
from safetensors.torch import load_file, save_file
from tiny_models import save_tiny_model

from monosemantic.cli.main import main
from monosemantic.eval.toy import ToyConfig, ToyData
from monosemantic.train.rundir import read_metrics

pytestmark = pytest.mark.process  # every test starts `monosemantic` processes

# a small TopK SAE on the tiny GPT-2's layer-1 MLP neurons (tiny_models.tiny_train_argv, fewer tokens)
MODEL_RUN = ["-q", "--threads", "1", "train", "--hookpoint", "layers.1.mlp.neurons", "--expansion-factor", "2"]
MODEL_RUN += ["--k", "8", "--tokens", "4k", "--batch-size", "512", "--batch-tokens", "1024", "--chunk-tokens", "4096"]


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("models") / "gpt2", "gpt2")


@pytest.fixture(scope="module")
def nan_model(gpt2, tmp_path_factory) -> Path:
    """The tiny GPT-2 with one NaN in its first MLP's weights: every activation of layer 1 is NaN."""
    path = Path(shutil.copytree(gpt2, tmp_path_factory.mktemp("models") / "nan"))
    weights = load_file(path / "model.safetensors")
    weights["transformer.h.0.mlp.c_fc.weight"][0, 0] = float("nan")
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})
    return path


CORPORA = {
    "empty.txt": b"",
    "blank.txt": b"\n   \n\t\n",
    "bad.jsonl": b'{"text": "1 + 1 = 2"}\n{"text": 3\n',
    "latin1.txt": b"1 + 1 = 2\n2 + 2 = 4\nsoixante-dix-sept fran\xe7ais\n",  # byte 42: Latin-1, not UTF-8
}

# flags (after MODEL_RUN and --model), and what the one error line must name
BAD_MODEL_RUNS = {
    "nan weight": (["--model", "NAN"], ["batch 0", "NaN", "activations must be finite"]),
    "empty corpus": (["--corpus", "empty.txt"], ["empty.txt", "no text"]),
    "blank corpus": (["--corpus", "blank.txt"], ["blank.txt", "no text"]),
    "bad jsonl line": (["--corpus", "bad.jsonl"], ["bad.jsonl:2", "expected a JSON object"]),
    "invalid utf-8": (["--corpus", "latin1.txt"], ["latin1.txt:3", "invalid UTF-8 at byte 42"]),
    "chunk-tokens 0": (["--chunk-tokens", "0"], ["chunk_tokens must be >= 1, got 0"]),
    "seq-len 0": (["--seq-len", "0"], ["seq_len must be >= 1, got 0"]),
    "batch-tokens 0": (["--batch-tokens", "0"], ["batch_tokens must be >= 1, got 0"]),
    "relu l1 nan": (["--arch", "relu", "--l1-coefficient", "nan"], ["l1_coefficient", "nan"]),
    "d-sae 1e12": (["--d-sae", "1000000000000"], ["d_sae=1000000000000", "PB of memory", "available"]),
    "cuda": (["--device", "cuda"], ["device 'cuda'", "--device cpu"]),
}


@pytest.mark.parametrize("case", list(BAD_MODEL_RUNS))
def test_bad_training_input_leaves_no_run_directory(case, gpt2, nan_model, tmp_path):
    if case == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for name, data in CORPORA.items():
        (tmp_path / name).write_bytes(data)
    flags, needles = BAD_MODEL_RUNS[case]
    flags = [str(nan_model) if f == "NAN" else str(tmp_path / f) if f in CORPORA else f for f in flags]
    out = tmp_path / "run"
    run = run_cli(*MODEL_RUN, "--model", str(gpt2), "--out", str(out), *flags)
    assert_one_error(run, *needles)
    assert not out.exists()


def test_a_damaged_cache_shard_leaves_no_run_directory(gpt2, tmp_path, one_thread):
    cache = tmp_path / "cache"
    assert main([*MODEL_RUN, "--model", str(gpt2), "--cache", str(cache), "--out", str(tmp_path / "first")]) == 0
    shard = cache / "shard_00000.safetensors"
    data = bytearray(shard.read_bytes())
    data[-100] ^= 0xFF  # one byte of the activations
    shard.write_bytes(bytes(data))
    out = tmp_path / "second"
    run = run_cli(*MODEL_RUN, "--model", str(gpt2), "--cache", str(cache), "--out", str(out))
    assert_one_error(run, str(shard), "sha256", "rebuild the cache")
    assert not out.exists()


def test_activations_whose_squared_norm_overflows_float32_are_refused(tmp_path):
    # finite float32 values near its maximum: in float32 their norm is inf, and the scale was 0
    x = ToyData(ToyConfig(d=16, n_features=32, avg_active=2)).sample(2000, 0).numpy()
    x[1500:] = np.float32(3e38)
    np.save(tmp_path / "huge.npy", x)
    out = tmp_path / "run"
    run = run_cli("-q", "train-tensors", str(tmp_path / "huge.npy"), "--batch-size", "256", "--out", str(out))
    assert_one_error(run, "huge.npy", "row 1500", "squared norm", "float32")
    assert not out.exists()


# ---- two writers at once ------------------------------------------------------------------------

STEPS = 200_000  # the first writer would train for minutes: it is stopped (Ctrl-C) once the others are refused
TENSOR_RUN = ["--arch", "topk", "--k", "4", "--expansion-factor", "2", "--batch-size", "256"]
TENSOR_RUN += ["--total-tokens", str(STEPS * 256), "--checkpoint-every", "100", "--log-every", "10"]


def start(*argv: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "monosemantic", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_until_training(proc: subprocess.Popen, run: Path, seconds: float = 120) -> None:
    """Wait until `proc`, resuming `run` from step 100, logs a newer step (or ends, or time runs out)."""
    deadline = time.monotonic() + seconds
    while proc.poll() is None and time.monotonic() < deadline:
        rows = read_metrics(run)
        if rows and rows[-1]["step"] > 100:
            return
        time.sleep(0.05)


def assert_running(proc: subprocess.Popen, when: str) -> None:
    if proc.poll() is not None:
        pytest.fail(f"the first writer ended {when}, with status {proc.returncode}: {proc.communicate()[1]}")


def test_a_second_writer_of_a_run_is_refused_naming_the_first(tmp_path, one_thread, interrupted_training):
    acts = tmp_path / "acts.npy"
    np.save(acts, ToyData(ToyConfig(d=16, n_features=32, avg_active=2)).sample(4000, 0).numpy())
    run = tmp_path / "run"
    interrupted_training(["-q", "train-tensors", str(acts), "--out", str(run), *TENSOR_RUN])  # after step 100

    first = start("-q", "--threads", "1", "train-tensors", "--out", str(run), "--resume")
    try:
        wait_until_training(first, run)
        assert_running(first, "before the others started")
        second = run_cli("-q", "--threads", "1", "train-tensors", "--out", str(run), "--resume")
        analysis = run_cli("-q", "analyze", str(run))
        assert_running(first, "while the others ran")
        first.send_signal(signal.SIGINT)  # a clean Ctrl-C: the first writer checkpoints and ends
        _, err = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 130, err
    for refused in (second, analysis):
        assert_one_error(refused, str(run), f"in use by another monosemantic process (pid {first.pid}")
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] > 100 and steps == list(range(10, steps[-1] + 1, 10))  # one writer's rows, each step once
