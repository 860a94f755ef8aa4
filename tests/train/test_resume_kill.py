"""Durability of training (real subprocesses, SIGKILL): a run killed between checkpoints and resumed with
`--resume` ends byte-identical to the same run left alone (weights, config, checkpoints, metrics.jsonl,
timings aside), for topk (AuxK at work) and relu (resampling at work); the leftovers of an interrupted
checkpoint write are ignored and removed."""

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from monosemantic.cli.main import main
from monosemantic.eval.toy import ToyConfig, ToyData
from monosemantic.train.rundir import read_metrics

pytestmark = pytest.mark.integration  # trains or analyses whole runs: see tests/conftest.py

TIMING_FIELDS = {"tokens_per_s"}
STEPS = 2000


def train_argv(acts: Path, out: Path, arch: str) -> list[str]:
    # short dead windows, so that latents die early: AuxK (topk) and resampling (relu, every 200 steps)
    # are at work on both sides of the kill
    if arch == "relu":
        extra = ["--resample-every", "200", "--dead-window", "2k"]
    else:
        extra = ["--k", "4", "--dead-window", "5k"]
    return [
        "-q",
        "--threads",
        "1",
        "train-tensors",
        str(acts),
        "--out",
        str(out),
        "--arch",
        arch,
        "--expansion-factor",
        "4",
        "--batch-size",
        "256",
        "--total-tokens",
        str(STEPS * 256),
        "--checkpoint-every",
        "100",
        *extra,
    ]


def finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return err


def metrics(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMING_FIELDS} for row in rows]


def resample_steps(log: str) -> list[int]:
    """Steps at which a log (stderr) reports resampling at least one dead latent."""
    found = (re.match(r"step (\d+): resampled (\d+) dead latents$", line) for line in log.splitlines())
    return [int(m.group(1)) for m in found if m and int(m.group(2)) > 0]


def auxk_steps(rows: list[dict]) -> list[int]:
    """Logged steps whose loss had an AuxK term (there were dead latents)."""
    return [r["step"] for r in rows if "auxk" in r]


def step_dirs(run: Path) -> list[str]:
    root = run / "checkpoints"
    return sorted(p.name for p in root.iterdir() if p.name.startswith("step_")) if root.is_dir() else []


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_same_run(a: Path, b: Path) -> None:
    assert (b / "sae.safetensors").read_bytes() == (a / "sae.safetensors").read_bytes()
    assert json.loads((b / "cfg.json").read_text()) == json.loads((a / "cfg.json").read_text())
    assert files(b / "checkpoints") == files(a / "checkpoints")
    rows_a, rows_b = metrics(a), metrics(b)
    steps = [r["step"] for r in rows_b]
    assert len(steps) == len(set(steps)), "duplicated steps in metrics.jsonl"
    assert steps == [r["step"] for r in rows_a]
    assert rows_b == rows_a


@pytest.fixture
def spawn():
    """Start `python -m monosemantic ARGS` (output piped unless given); kill what is left at the end."""
    procs = []

    def start(*args: str, stdout=subprocess.PIPE, stderr=subprocess.PIPE) -> subprocess.Popen:
        procs.append(
            subprocess.Popen([sys.executable, "-m", "monosemantic", *args], stdout=stdout, stderr=stderr, text=True)
        )
        return procs[-1]

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def acts(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "acts.npy"
    np.save(path, ToyData(ToyConfig(d=32, n_features=64, avg_active=2)).sample(20_000, 0).numpy())
    return path


def wait_for_kill_point(victim: subprocess.Popen, run: Path, log: Path, arch: str) -> bool:
    """Wait for a moment to kill: past the second checkpoint, with rows newer than the latest checkpoint
    logged (resume must drop them), and with the latest checkpoint taken after dead latents appeared
    (topk: AuxK in use) or after a resampling that found some (relu)."""
    deadline = time.monotonic() + 240
    while victim.poll() is None and time.monotonic() < deadline:
        dirs = step_dirs(run)
        latest = int(dirs[-1].removeprefix("step_")) if dirs else 0
        rows = read_metrics(run)  # skips a line torn by the kill
        dead_since = resample_steps(log.read_text()) if arch == "relu" else auxk_steps(rows)
        if len(dirs) >= 2 and rows and dead_since and dead_since[0] <= latest < rows[-1]["step"]:
            return True
        time.sleep(0.01)
    return False


@pytest.mark.process
@pytest.mark.parametrize("arch", ["topk", pytest.param("relu", marks=pytest.mark.slow)])
def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path, acts, spawn, arch):
    a, b, victim_log = tmp_path / "A", tmp_path / "B", tmp_path / "victim.err"
    reference = spawn(*train_argv(acts, a, arch))  # one thread each (train_argv): the two share two cores
    with open(victim_log, "w") as log:
        victim = spawn(*train_argv(acts, b, arch), stdout=subprocess.DEVNULL, stderr=log)
    ready = wait_for_kill_point(victim, b, victim_log, arch)
    assert victim.poll() is None, "the run ended before it could be killed: make it longer (STEPS)"
    assert ready, "the run did not reach the point to kill it within the deadline"
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    assert not (b / "sae.safetensors").exists()
    killed_at = int(step_dirs(b)[-1].removeprefix("step_"))
    assert 200 <= killed_at < STEPS

    err = finish(spawn("-q", "--threads", "1", "train-tensors", "--out", str(b), "--resume"))
    assert f"resumed from {b / 'checkpoints' / f'step_{killed_at:09d}'}" in err
    finish(reference)
    # the dead-latent machinery was at work before the kill and after the resume
    if arch == "relu":
        assert resample_steps(victim_log.read_text())[0] <= killed_at < resample_steps(err)[-1]
    else:
        assert auxk_steps(metrics(a))[0] <= killed_at < auxk_steps(metrics(a))[-1]
    assert_same_run(a, b)


def test_resume_ignores_and_removes_an_interrupted_checkpoint_write(tmp_path, one_thread):
    acts = tmp_path / "acts.npy"
    np.save(acts, ToyData(ToyConfig(d=16, n_features=32, avg_active=2)).sample(4000, 0).numpy())
    a, b = tmp_path / "A", tmp_path / "B"
    argv = [
        "-q",
        "train-tensors",
        str(acts),
        "--arch",
        "topk",
        "--k",
        "4",
        "--expansion-factor",
        "2",
        "--batch-size",
        "256",
        "--total-tokens",
        str(500 * 256),
        "--checkpoint-every",
        "100",
        "--keep-checkpoints",
        "10",
        "--dead-window",
        "20k",
    ]
    assert main([*argv, "--out", str(a)]) == 0

    # B: A's run as it would be after a kill while step 300 was being written
    shutil.copytree(a, b)
    for name in ("step_000000300", "step_000000400", "step_000000500"):
        shutil.rmtree(b / "checkpoints" / name)
    (b / "sae.safetensors").unlink()
    (b / "cfg.json").unlink()
    partial = b / "checkpoints" / ".step_000000300.xyz.tmp"
    partial.mkdir()
    complete = (a / "checkpoints" / "step_000000300" / "sae.safetensors").read_bytes()
    (partial / "sae.safetensors").write_bytes(complete[:200])

    assert main(["-q", "train-tensors", "--out", str(b), "--resume"]) == 0
    assert not [p for p in (b / "checkpoints").iterdir() if p.name.endswith(".tmp")]
    assert_same_run(a, b)


def wait_for_first_rows(victim: subprocess.Popen, run: Path, seconds: float = 240) -> bool:
    """Wait until the victim has logged rows (and written no checkpoint: it writes one only at the end)."""
    deadline = time.monotonic() + seconds
    while victim.poll() is None and time.monotonic() < deadline:
        if read_metrics(run):
            return True
        time.sleep(0.01)
    return False


@pytest.mark.process
def test_sigkill_before_the_first_checkpoint_leaves_a_restartable_run(tmp_path, acts, spawn, one_thread):
    """Killed after train_config.json and some metrics rows, before any checkpoint: `--resume` starts from
    step 0, and a new run into the directory takes it over; both end as the run left alone."""
    argv = train_argv(acts, tmp_path / "A", "topk")
    argv[argv.index("--total-tokens") + 1] = str(600 * 256)
    argv[argv.index("--checkpoint-every") + 1] = "0"  # only at the end
    reference = spawn(*argv)
    b = tmp_path / "B"
    victim = spawn(*[str(b) if a == str(tmp_path / "A") else a for a in argv])
    ready = wait_for_first_rows(victim, b)
    assert victim.poll() is None, "the run ended before it could be killed: make it longer"
    assert ready, "the run logged no row within the deadline"
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)
    assert (b / "train_config.json").is_file() and read_metrics(b) and not step_dirs(b)
    c = Path(shutil.copytree(b, tmp_path / "C"))
    finish(reference)

    err = finish(spawn("-q", "--threads", "1", "train-tensors", "--out", str(b), "--resume"))
    assert "no checkpoint to resume from; training from step 0" in err
    assert_same_run(tmp_path / "A", b)
    assert main([*[str(c) if a == str(tmp_path / "A") else a for a in argv]]) == 0  # a new run, into C
    assert_same_run(tmp_path / "A", c)
