"""Damaged stores and checkpoints, pickles behind a weight index, full disks and read-only places, met as
a user meets them: each command runs as a real process, ends an expected failure with one `error:` line
naming the path and what to do (tests/bad_input.py), and what can be repaired is (issue 18, cases 8-12
and 19).

A full disk is a file-size limit here (`prlimit --fsize`: a write past it fails with EFBIG, which the
code meets where it meets ENOSPC); a read-only place is `chmod a-w`, and when the tests run as root
(whom file modes do not stop) the command runs without the capabilities that let root write anyway.
"""

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from bad_input import assert_one_error, run_cli
from safetensors.torch import load_file

from monosemantic.analysis.store import DB_FILE, MANIFEST
from monosemantic.cli.main import main

pytestmark = [pytest.mark.process, pytest.mark.usefixtures("one_thread")]

ANALYZE_FLAGS = ("--tokens", "6000", "--batch-tokens", "1024", "--top-k", "6", "--window", "8")  # analysed_run's
AS_A_USER = (
    ("setpriv", "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search", "--")
    if os.geteuid() == 0
    else ()
)
needs_prlimit = pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit (util-linux)")
needs_a_user = pytest.mark.skipif(bool(AS_A_USER) and shutil.which("setpriv") is None, reason="root without setpriv")


def file_size_limit(n_bytes: int) -> tuple[str, ...]:
    return ("prlimit", f"--fsize={n_bytes}", "--")


@contextlib.contextmanager
def read_only(path: Path):
    """`path` and everything under it without write permission, for the block."""
    subprocess.run(["chmod", "-R", "a-w", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(path)], check=True)


def labelled_latent(run_dir: Path) -> tuple[int, str]:
    db = sqlite3.connect(run_dir / "features" / DB_FILE)
    latent, label = db.execute("SELECT latent, label FROM features WHERE label IS NOT NULL ORDER BY latent").fetchone()
    db.close()
    return latent, label


def leftovers(root: Path) -> list[str]:
    """Temporaries of interrupted writes under `root`."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.tmp"))


# ---- 8: a damaged checkpoint ---------------------------------------------------------------------

TRAIN = ["--arch", "topk", "--k", "4", "--expansion-factor", "4", "--batch-size", "128", "--total-tokens", "5120"]


def flip_a_weight_bit(path: Path) -> None:
    """Flip the lowest mantissa bit of the first float of the tensor data: a finite, plausible value."""
    data = bytearray(path.read_bytes())
    data[8 + int.from_bytes(data[:8], "little")] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_damaged_newest_checkpoint_is_refused_and_the_previous_one_resumes(tmp_path):
    acts = tmp_path / "acts.npy"
    np.save(acts, np.random.default_rng(0).standard_normal((4000, 16)).astype(np.float32) + 2.0)
    whole = tmp_path / "whole"
    argv = ["-q", "train-tensors", str(acts), "--out", str(whole), *TRAIN, "--checkpoint-every", "10"]
    assert main([*argv, "--keep-checkpoints", "3"]) == 0  # 40 steps: checkpoints 20, 30, 40
    killed = Path(shutil.copytree(whole, tmp_path / "killed"))  # as if killed after the checkpoint of step 30
    shutil.rmtree(killed / "checkpoints" / "step_000000040")
    (killed / "cfg.json").unlink()
    (killed / "sae.safetensors").unlink()
    flip_a_weight_bit(killed / "checkpoints" / "step_000000030" / "sae.safetensors")

    run = run_cli("-q", "train-tensors", "--out", str(killed), "--resume")
    assert_one_error(run, "step_000000030: damaged checkpoint", "sae.safetensors", "--resume-from step_20")
    assert not (killed / "sae.safetensors").exists()
    run = run_cli("-q", "train-tensors", "--out", str(killed), "--resume-from", "step_7")
    assert_one_error(run, "no checkpoint of step 7", "step_20, step_30")

    run = run_cli("-q", "train-tensors", "--out", str(killed), "--resume-from", "step_20")
    assert run.returncode == 0, run.stderr
    assert (killed / "sae.safetensors").read_bytes() == (whole / "sae.safetensors").read_bytes()


# ---- 9, 10, 19: a damaged feature store, and analyze repairing it ----------------------------------


def damage_database(db: Path, how: str, label: str) -> None:
    data = bytearray(db.read_bytes())
    if how == "truncated":
        data = data[: len(data) // 3]
    elif how == "header":
        data[3] ^= 0xFF  # "SQLite format 3" -> not a database
    else:  # one byte of a label, same length: SQLite's own integrity_check still says ok
        at = data.find(label.encode())
        data[at + 1] ^= 0x01
    db.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["truncated", "header", "label"])
def test_a_damaged_database_is_one_error_naming_the_repair(analysed_run, tmp_path, how):
    run_dir = Path(shutil.copytree(analysed_run, tmp_path / "run"))
    db = run_dir / "features" / DB_FILE
    latent, label = labelled_latent(run_dir)
    damage_database(db, how, label)
    if how == "label":
        assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    run = run_cli("feature", str(run_dir), str(latent))
    assert_one_error(run, str(db), f"monosemantic analyze {run_dir} --tokens 6000", "repair")


@pytest.mark.parametrize(
    "lost",
    [pytest.param("database", marks=pytest.mark.slow), pytest.param("shard", marks=pytest.mark.slow), "manifest"],
)
def test_analyze_again_repairs_a_damaged_store(analysed_run, tmp_path, lost):
    run_dir = Path(shutil.copytree(analysed_run, tmp_path / "run"))
    store = run_dir / "features"
    [shard] = store.glob("latents_*.safetensors")
    manifest, shard_bytes = json.loads((store / MANIFEST).read_text()), shard.read_bytes()
    damaged = {"database": store / DB_FILE, "shard": shard, "manifest": store / MANIFEST}[lost]
    if lost == "manifest":
        damaged.write_text('{"format": "monosemantic-features/1", "shards": ')
    else:
        damaged.unlink()
    latent, _ = labelled_latent(analysed_run)

    assert_one_error(run_cli("feature", str(run_dir), str(latent)), str(damaged), "monosemantic analyze")
    run = run_cli("-q", "--threads", "1", "analyze", str(run_dir), *ANALYZE_FLAGS, timeout=900)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    run = run_cli("feature", str(run_dir), str(latent))
    assert run.returncode == 0, run.stderr
    assert json.loads((store / MANIFEST).read_text()) == manifest  # the same store, row hashes included
    assert shard.read_bytes() == shard_bytes


# ---- 11: a read-only copy ------------------------------------------------------------------------


@pytest.fixture(params=["alone", pytest.param("with empty -wal and -shm", marks=pytest.mark.slow)])
def read_only_copy(request, analysed_run, tmp_path):
    """A copy of analysed_run that no one may write, its database alone (as `analyze` leaves it) or
    with the empty log files a reader open elsewhere leaves beside it."""
    run_dir = Path(shutil.copytree(analysed_run, tmp_path / "run"))
    db = run_dir / "features" / DB_FILE
    logs = [db.with_name(DB_FILE + "-wal"), db.with_name(DB_FILE + "-shm")]
    if request.param == "alone":
        assert not logs[0].exists() or logs[0].stat().st_size == 0  # analyze folded the log in
        for log in logs:
            log.unlink(missing_ok=True)
    else:
        logs[0].write_bytes(b"")
        logs[1].write_bytes(bytes(32768))  # the size of SQLite's first -shm region
    with read_only(run_dir):
        yield run_dir


@needs_a_user
@pytest.mark.parametrize(
    "command", [("feature", "{latent}"), ("features", "--search", "="), ("inspect", "12 + 7 = 19")], ids=lambda c: c[0]
)
def test_read_only_commands_read_a_read_only_copy(read_only_copy, command):
    latent, label = labelled_latent(read_only_copy)
    name, *rest = command
    run = run_cli(name, str(read_only_copy), *(a.format(latent=latent) for a in rest), prefix=AS_A_USER)
    assert run.returncode == 0, run.stderr
    if name == "feature":
        assert label in run.stdout


@needs_a_user
def test_ablate_on_a_read_only_copy_says_where_it_cannot_write(read_only_copy):
    latent, _ = labelled_latent(read_only_copy)
    run = run_cli(
        "ablate", str(read_only_copy), "--features", str(latent), "--n", "8", "--controls", "1", prefix=AS_A_USER
    )
    assert_one_error(run, str(read_only_copy / "experiments"), "cannot write", "writable")
    assert "ablating" not in run.stdout  # refused before the experiment ran


@needs_a_user
def test_view_serves_a_read_only_copy(read_only_copy):
    latent, label = labelled_latent(read_only_copy)
    argv = [*AS_A_USER, sys.executable, "-m", "monosemantic", "--threads", "1", "view", str(read_only_copy)]
    proc = subprocess.Popen([*argv, "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = next((line.split()[-4] for line in proc.stdout if "http://" in line), None)
        assert url is not None, proc.stderr.read()
        with urllib.request.urlopen(f"{url}api/feature/{latent}", timeout=60) as response:
            assert json.loads(response.read())["label"]["text"] == label
    finally:
        proc.terminate()
        proc.wait(timeout=60)


# ---- 12: a weight index naming a pickle ----------------------------------------------------------


def test_a_weight_index_naming_a_pickle_is_refused_before_transformers_reads_it(tiny_model_dirs, tmp_path):
    model = Path(shutil.copytree(tiny_model_dirs["gpt2"], tmp_path / "model"))
    weights = load_file(model / "model.safetensors")
    (model / "model.safetensors").unlink()
    torch.save(weights, model / "pytorch_model.bin")  # a benign pickle: transformers would load it
    index = model / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": {name: "pytorch_model.bin" for name in weights}}))
    out = tmp_path / "run"
    run = run_cli(
        "-q",
        "train",
        "--model-path",
        str(model),
        "--hookpoint",
        "layers.1.mlp.neurons",
        "--tokens",
        "8k",
        "--out",
        str(out),
    )
    assert_one_error(run, str(index), "'pytorch_model.bin'", "not .safetensors", "unpickling")
    assert not out.exists()


# ---- 19: garbage manifests, full disks, read-only places --------------------------------------------


def test_a_garbage_cache_manifest_is_one_error(tiny_model_dirs, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "manifest.json").write_bytes(b"\x00garbage")
    argv = ["--model-path", str(tiny_model_dirs["gpt2"]), "--hookpoint", "layers.1.mlp.neurons", "--tokens", "8k"]
    run = run_cli("-q", "train", *argv, "--cache", str(cache), "--out", str(tmp_path / "run"))
    assert_one_error(run, str(cache / "manifest.json"), "not valid JSON", f"delete {cache}")


@needs_prlimit
def test_a_full_disk_while_training_leaves_no_half_written_checkpoint(tmp_path):
    acts = tmp_path / "acts.npy"
    np.save(acts, np.random.default_rng(0).standard_normal((2000, 64)).astype(np.float32))
    out = tmp_path / "run"
    argv = ["--arch", "topk", "--k", "4", "--expansion-factor", "16", "--batch-size", "128", "--total-tokens", "2560"]
    run = run_cli(
        "-q", "train-tensors", str(acts), "--out", str(out), *argv, "--checkpoint-every", "5",
        prefix=file_size_limit(100_000),  # a checkpoint's weights alone are 260 kB
    )  # fmt: skip
    assert_one_error(run, str(out / "checkpoints" / "step_000000005"), "cannot write")
    assert leftovers(out) == [] and not (out / "checkpoints" / "step_000000005").exists()


@needs_prlimit
def test_a_full_disk_while_analysing_leaves_the_store_consistent(tiny_run, tmp_path):
    run_dir = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    run = run_cli("-q", "analyze", str(run_dir), *ANALYZE_FLAGS, prefix=file_size_limit(300_000), timeout=900)
    assert_one_error(run, str(run_dir / "features" / "latents_"), "cannot write")
    assert json.loads((run_dir / "features" / MANIFEST).read_text())["shards"] == {}
    assert leftovers(run_dir) == []


@needs_a_user
def test_a_read_only_directory_is_one_error_naming_it(tiny_run, tmp_path):
    run_dir = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    with read_only(run_dir):
        run = run_cli("-q", "analyze", str(run_dir), *ANALYZE_FLAGS, prefix=AS_A_USER)
    assert_one_error(run, str(run_dir), "cannot write", "make it writable")
    assert not (run_dir / "features").exists()
