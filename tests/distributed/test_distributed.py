"""Training under torchrun (distributed/world.py, distributed/sharded.py, distributed/checkpoint.py), with
real `torch.distributed.run` subprocesses of 2 gloo ranks on the CPU, bound to 127.0.0.1.

References are independent of the code under test: one process training on the concatenated batch
(the same global batches), the dense top k, the full SAE's own encode/decode. Tolerances are those of
float32 arithmetic done in another order (a mean of two half-batch gradient means is not bitwise the
full-batch mean; Adam's normalisation amplifies those last-bit differences a little, step after step).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

from monosemantic.cli.main import main
from monosemantic.config import ConfigError
from monosemantic.data.activations import TensorBatches
from monosemantic.distributed.world import RankRows, RankStream, World, check_same_config, rank_device
from monosemantic.eval.toy import ToyConfig, ToyData
from monosemantic.sae import SAE
from monosemantic.train.rundir import read_metrics

HERE = Path(__file__).parent
D = 16
STEPS, BATCH = 60, 128
# dead window of 2 steps: latents die early, so AuxK (and its sharded top k) is at work
SAE_FLAGS = [
    "--arch",
    "topk",
    "--k",
    "4",
    "--expansion-factor",
    "8",
    "--batch-size",
    str(BATCH),
    "--dead-window",
    "256",
]
TRAIN = [*SAE_FLAGS, "--total-tokens", str(STEPS * BATCH), "--checkpoint-every", "20", "--log-every", "10"]
WEIGHTS = dict(rtol=1e-4, atol=1e-5)
TIMING_FIELDS = {"tokens_per_s"}

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning"),
]  # DCP in one process


def torchrun_argv(*args: str, nproc: int = 2) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={nproc}",
        "--rdzv-backend=c10d",
        "--rdzv-endpoint=127.0.0.1:0",
        "--max-restarts=0",
        *args,
    ]


def torchrun_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "PYTHONPATH": str(HERE)}


def torchrun(*args: str, nproc: int = 2, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        torchrun_argv(*args, nproc=nproc), env=torchrun_env(), capture_output=True, text=True, timeout=timeout
    )


def cli_under_torchrun(*args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    done = torchrun("-m", "monosemantic", "-q", "--threads", "1", *args, nproc=nproc)
    assert done.returncode == 0, done.stderr[-5000:]
    return done


def weights(run: Path) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(run / "sae.safetensors")


def assert_same_sae(run: Path, reference: Path) -> None:
    got, want = weights(run), weights(reference)
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], **WEIGHTS, msg=name)


def assert_same_metrics(run: Path, reference: Path) -> None:
    got, want = read_metrics(run), read_metrics(reference)
    assert [r["step"] for r in got] == [r["step"] for r in want]
    for a, b in zip(got, want):
        assert a.keys() == b.keys(), (a, b)
        for key in a.keys() - TIMING_FIELDS:
            if isinstance(b[key], float):
                assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), (key, a, b)
            else:
                assert a[key] == b[key], (key, a, b)


@pytest.fixture(scope="module")
def acts(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "acts.npy"
    x = 50 * (ToyData(ToyConfig(d=D, n_features=2 * D, avg_active=2)).sample(4000, 0) + 0.5)
    np.save(path, x.numpy())
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory, acts) -> Path:
    """One process, the whole batch of 128 each step."""
    out = tmp_path_factory.mktemp("runs") / "reference"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["-q", "train-tensors", str(acts), "--out", str(out), *TRAIN]) == 0
    finally:
        torch.set_num_threads(threads)
    assert any("auxk" in row for row in read_metrics(out)), "no dead latents: AuxK was never at work"
    return out


# ---- the sharded top k and a sharded SAE's files ------------------------------------------------


@pytest.mark.process
def test_sharded_topk_reconstruction_and_gathered_sae_equal_the_dense_ones(tmp_path):
    done = torchrun(str(HERE / "dist_worker.py"), "shards", str(tmp_path))
    assert done.returncode == 0, done.stderr[-5000:]
    inputs = safetensors.torch.load_file(tmp_path / "inputs.safetensors")
    full = SAE.load(tmp_path / "full")
    k = full.cfg.k
    dense_vals, dense_ids = inputs["pre"].topk(k, dim=-1)
    expected_x_hat = full.decode(full.encode(inputs["x"]))
    for rank in (0, 1):
        got = safetensors.torch.load_file(tmp_path / f"rank{rank}.safetensors")
        order = got["vals"].argsort(dim=-1, descending=True)
        assert torch.equal(got["ids"].gather(1, order), dense_ids)  # the same latents on every rank...
        assert torch.equal(got["vals"].gather(1, order), dense_vals)  # ...with their exact values
        torch.testing.assert_close(got["x_hat"], expected_x_hat, rtol=1e-6, atol=1e-6)
    # gathered from the shards, saved, reloaded in one process: the same SAE, the same reconstructions
    gathered = SAE.load(tmp_path / "gathered")
    for name, tensor in full.state_dict().items():
        assert torch.equal(gathered.state_dict()[name], tensor), name
    assert torch.equal(gathered.decode(gathered.encode(inputs["x"])), expected_x_hat)


# ---- training equals one process on the concatenated batch ---------------------------------------


@pytest.mark.process
def test_data_parallel_training_equals_one_process_on_the_concatenated_batch(tmp_path, acts, reference):
    out = tmp_path / "ddp"
    cli_under_torchrun("train-tensors", str(acts), "--out", str(out), *TRAIN)
    assert_same_sae(out, reference)
    assert_same_metrics(out, reference)
    meta = json.loads((out / "checkpoints" / "step_000000060" / "trainer.json").read_text())
    assert meta["mesh"] == {"data": 2, "latent": 1}
    # the dead-latent counters were reduced over ranks: they equal the reference's
    ref_counters = safetensors.torch.load_file(reference / "checkpoints" / "step_000000060" / "trainer.safetensors")
    resumed_counters = _counters(out / "checkpoints" / "step_000000060")
    assert torch.equal(resumed_counters, ref_counters["tokens_since_fired"])


@pytest.mark.process
@pytest.mark.slow
def test_data_parallel_batchtopk_calibrates_its_threshold_on_the_last_global_batch(tmp_path, acts):
    # each rank selects the top k*b of its own half batch, so there is no one-process twin; the
    # threshold must still come from the whole last global batch (both halves), under the final weights
    out = tmp_path / "ddp_batchtopk"
    cli_under_torchrun(
        "train-tensors",
        str(acts),
        "--out",
        str(out),
        "--arch",
        "batchtopk",
        "--k",
        "4",
        "--expansion-factor",
        "8",
        "--batch-size",
        str(BATCH),
        "--total-tokens",
        str(STEPS * BATCH),
        "--log-every",
        "10",
    )
    sae = SAE.load(out)
    batches = TensorBatches(torch.from_numpy(np.load(acts)), BATCH, seed=0)  # train-tensors' global batches
    for _ in range(STEPS):
        last = next(batches)
    with torch.no_grad():
        pre = sae.pre_acts(last)  # raw units, like the exported threshold
    kth_largest = pre.flatten().sort(descending=True).values[4 * BATCH - 1]
    assert sae.threshold.item() == pytest.approx(kth_largest.item(), rel=1e-5)
    half = pre[: BATCH // 2].flatten().sort(descending=True).values[4 * BATCH // 2 - 1]
    assert half.item() != pytest.approx(kth_largest.item(), rel=1e-5)  # rank 0's half alone would differ


@pytest.mark.process
@pytest.mark.slow
def test_data_parallel_resampling_of_dead_latents_equals_one_process(tmp_path, acts, caplog):
    # relu + L1, dead latents resampled every 20 steps: every rank draws from the whole global batch.
    # lr 0.003: at 0.01 the many near-dead latents of relu's scaled initialisation have ~0 gradients,
    # which Adam scales up to lr-sized steps, so the ranks' different summation order (1e-7) grows
    # past float tolerance (7e-5 on W_dec) without any resampling draw differing; at 0.003 it stays 4e-7.
    argv = [
        "train-tensors",
        str(acts),
        "--arch",
        "relu",
        "--expansion-factor",
        "8",
        "--batch-size",
        str(BATCH),
        "--total-tokens",
        str(STEPS * BATCH),
        "--lr",
        "0.003",
        "--resample-every",
        "20",
        "--dead-window",
        "256",
        "--checkpoint-every",
        "30",
        "--log-every",
        "10",
    ]
    reference = tmp_path / "reference"
    with caplog.at_level("INFO", logger="monosemantic.train.trainer"):
        assert main(["-q", *argv, "--out", str(reference)]) == 0
    assert any("resampled" in m and not m.endswith("resampled 0 dead latents") for m in caplog.messages), (
        caplog.messages
    )
    out = tmp_path / "ddp"
    cli_under_torchrun(*argv, "--out", str(out))
    assert_same_sae(out, reference)
    assert_same_metrics(out, reference)


@pytest.mark.process
def test_latent_sharded_training_equals_one_process(tmp_path, acts, reference):
    out = tmp_path / "sharded"
    cli_under_torchrun("train-tensors", str(acts), "--out", str(out), *TRAIN, "--shard-latents")
    meta = json.loads((out / "checkpoints" / "step_000000060" / "trainer.json").read_text())
    assert meta["mesh"] == {"data": 1, "latent": 2}
    assert_same_sae(out, reference)  # the exported single-file SAE, gathered from the shards
    assert_same_metrics(out, reference)
    assert torch.equal(
        _counters(out / "checkpoints" / "step_000000060"),
        safetensors.torch.load_file(reference / "checkpoints" / "step_000000060" / "trainer.safetensors")[
            "tokens_since_fired"
        ],
    )


@pytest.mark.process
@pytest.mark.slow
def test_a_two_dimensional_mesh_equals_one_process(tmp_path, acts, reference):
    out = tmp_path / "mesh"
    cli_under_torchrun("train-tensors", str(acts), "--out", str(out), *TRAIN, "--shard-latents", "2", nproc=4)
    meta = json.loads((out / "checkpoints" / "step_000000060" / "trainer.json").read_text())
    assert meta["mesh"] == {"data": 2, "latent": 2}
    assert_same_sae(out, reference)
    assert_same_metrics(out, reference)


def _counters(checkpoint: Path) -> torch.Tensor:
    """The dead-latent counters of a distributed checkpoint, assembled from its shard files."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageReader

    counters = {"tokens_since_fired": torch.empty(D * 8, dtype=torch.long)}
    dcp.load(counters, storage_reader=HuggingFaceStorageReader(str(checkpoint)), no_dist=True)
    return counters["tokens_since_fired"]


# ---- resume after a kill, at another world size -------------------------------------------------

KILL_STEPS = 400
KILL_TRAIN = [*SAE_FLAGS, "--total-tokens", str(KILL_STEPS * BATCH), "--checkpoint-every", "25", "--log-every", "25"]


@pytest.mark.process
@pytest.mark.slow  # minutes of whole-run training on 2 cores: `make test-slow` (CI runs it)
def test_resume_after_a_kill_at_other_world_sizes(tmp_path, acts):
    reference = tmp_path / "reference"
    assert main(["-q", "train-tensors", str(acts), "--out", str(reference), *KILL_TRAIN]) == 0
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        torchrun_argv(
            "-m", "monosemantic", "-q", "--threads", "1", "train-tensors", str(acts), "--out", str(killed), *KILL_TRAIN
        ),
        env=torchrun_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not (killed / "checkpoints" / "step_000000050").is_dir():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both ranks, mid-run: a machine going down
    proc.wait()
    proc.stderr.close()
    assert not (killed / "sae.safetensors").exists(), "the run finished before the kill; make it longer"

    two = Path(shutil.copytree(killed, tmp_path / "resumed_sharded"))
    cli_under_torchrun("train-tensors", "--out", str(two), "--resume", "--shard-latents")  # data 2 -> latent 2
    assert_same_sae(two, reference)
    one = Path(shutil.copytree(killed, tmp_path / "resumed_alone"))
    assert main(["-q", "train-tensors", "--out", str(one), "--resume"]) == 0  # world size 1, no torchrun
    assert_same_sae(one, reference)
    assert [r["step"] for r in read_metrics(one)] == [r["step"] for r in read_metrics(reference)]


# ---- errors ---------------------------------------------------------------------------------------


@pytest.mark.process
def test_ranks_that_disagree_on_the_config_get_a_clear_error(tmp_path, acts):
    out = tmp_path / "run"
    done = torchrun(str(HERE / "dist_worker.py"), "disagree", str(out), "-q", "train-tensors", str(acts), *TRAIN)
    assert done.returncode != 0
    assert "error: ranks disagree on the configuration: train.lr is None on rank 0 but 0.002 on rank 1" in done.stderr
    assert not out.exists()


def test_shard_latents_outside_torchrun_is_refused(tmp_path, acts, capsys):
    assert main(["-q", "train-tensors", str(acts), "--out", str(tmp_path / "run"), *TRAIN, "--shard-latents", "2"]) == 2
    assert "--shard-latents 2 needs several ranks: start the command with torchrun" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.process
@pytest.mark.slow
def test_ten_consecutive_runs_end_cleanly(tmp_path, acts):
    """Every rank passes a barrier before the process group is destroyed: no rank tears down while
    another still talks to it, which would abort it ("Connection closed by peer") or leave torchrun
    reporting a failure."""
    for i in range(10):
        done = cli_under_torchrun("train-tensors", str(acts), "--out", str(tmp_path / f"run{i}"), *TRAIN)
        assert done.stderr == "", (i, done.stderr[-3000:])
        assert done.stdout.splitlines()[-1].startswith("saved topk SAE"), (i, done.stdout)


# ---- one process: the same code, collectives that are identities ----------------------------------


def test_one_process_world_reduces_nothing():
    world = World()
    t = torch.tensor([True, False])
    assert world.data_any(t) is t and world.data_gather(t) is t and world.writer and not world.distributed
    check_same_config(world, {"train": {"lr": 1}})  # nothing to compare with


def test_rank_rows_split_every_global_batch_and_keep_its_position():
    source = TensorBatches(torch.arange(40.0).view(20, 2), 4, shuffle=False)
    rows = [RankRows(TensorBatches(torch.arange(40.0).view(20, 2), 4, shuffle=False), r, 2) for r in range(2)]
    for _ in range(3):
        whole = next(source)
        assert torch.equal(torch.cat([next(r) for r in rows]), whole)
    assert rows[0].state_dict() == rows[1].state_dict() == source.state_dict()
    with pytest.raises(ConfigError, match="a batch of 4 rows does not split over 3 data-parallel ranks"):
        next(RankRows(source, 0, 3))


def test_a_rank_stream_refuses_the_position_of_another_world_size():
    stream = RankStream(TensorBatches(torch.zeros(8, 2), 2), 1, 2)
    saved = stream.state_dict()
    assert saved == {"data_rank": 1, "data_ranks": 2, "epoch": 0, "index": 0}
    with pytest.raises(
        ConfigError,
        match="saved by data rank 1 of 2, each harvesting its own corpus shard; this is "
        "data rank 1 of 3: resume with 2 data-parallel ranks",
    ):
        RankStream(TensorBatches(torch.zeros(8, 2), 2), 1, 3).load_state_dict(saved)


def test_rank_device(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert rank_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="each rank uses the GPU of its LOCAL_RANK; pass --device cuda"):
        rank_device("cuda:0")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available on this machine"):
            rank_device("cuda")
