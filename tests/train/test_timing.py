"""monosemantic.train.timing: every `fit` ends with where its time went, logged and in timing.json.

No timed assertions: a batch source that sleeps a known time per batch gives harvest a lower bound,
and the breakdown must add up to its own wall time, which lies inside the time `fit` took."""

import json
import logging
import time

import pytest
import torch

from monosemantic.sae import SAEConfig, create_sae
from monosemantic.train.timing import STAGES, TIMING_FILE
from monosemantic.train.trainer import TrainConfig, Trainer

SLEEP = 0.02


def slow_batches(n_rows=64, d=8):
    """Endless batches, each after a SLEEP-second wait (a stand-in for a model forward)."""
    g = torch.Generator().manual_seed(0)
    while True:
        time.sleep(SLEEP)
        yield torch.randn(n_rows, d, generator=g) * 3 + 1


def test_fit_writes_and_logs_where_the_time_went(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr("monosemantic.train.trainer.SCALE_TOKENS", 64)  # one batch read to initialise
    torch.manual_seed(0)
    sae = create_sae(SAEConfig(arch="topk", d_in=8, d_sae=32, k=3))
    cfg = TrainConfig(batch_size=64, total_tokens=64 * 20, lr=1e-3, log_every=5, checkpoint_every=10)
    run = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="monosemantic.train.timing"):
        start = time.perf_counter()
        Trainer(sae, cfg, run, progress=False).fit(slow_batches())
        elapsed = time.perf_counter() - start

    timing = json.loads((run / TIMING_FILE).read_text())
    assert set(timing["seconds"]) == set(timing["share"]) == {*STAGES, "other"}
    # the stages are disjoint and "other" is the rest: they add up to the wall time (to float rounding)
    assert sum(timing["seconds"].values()) == pytest.approx(timing["wall_s"], rel=1e-9)
    assert sum(timing["share"].values()) == pytest.approx(1.0, rel=1e-9)
    assert 0 < timing["wall_s"] <= elapsed
    # 20 batches slept in all: the one read to initialise is replayed as the first step's, not read twice
    assert timing["seconds"]["harvest"] >= 20 * SLEEP
    assert all(timing["seconds"][s] > 0 for s in ("sae_step", "checkpoint", "logging"))
    assert timing["tokens"] == 64 * 20
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("time: ")]
    assert all(s.replace("_", " ") in line for s in (*STAGES, "other")), line
