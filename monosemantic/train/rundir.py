"""The run directory: everything one SAE's training, evaluation and analysis leave behind.

    RUN_DIR/
        cfg.json, sae.safetensors   the trained SAE; it takes raw activations (`SAE.load(RUN_DIR)`)
        train_config.json           how it was trained: SAE config, trainer config, data source
        metrics.jsonl               one JSON line per logged training step
        checkpoints/                resumable training state (see checkpoint.py)
        eval.json                   metrics written by `monosemantic eval`

Every command takes a run directory; this file names its parts and guards its creation.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TextIO

from monosemantic.atomic import atomic_write_json, atomic_write_text, fsync_dir
from monosemantic.errors import MonosemanticError

TRAIN_CONFIG_FILE = "train_config.json"
METRICS_FILE = "metrics.jsonl"
EVAL_FILE = "eval.json"
PARENT_FILE = "hookpoints.json"  # a job over several hookpoints: their list, above their run directories


class RunDirError(MonosemanticError, ValueError):
    """A run directory that cannot be used as asked (exists already, or is not a run)."""


def check_new_run_dir(path: str | Path) -> None:
    """Refuse a run directory that exists and is not empty."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise RunDirError(
            f"{path} already exists and is not empty; pass --resume to continue that run, or choose a new directory"
        )


def create_run_dir(path: str | Path, train_config: dict) -> Path:
    """Create a new run directory holding `train_config.json`; refuse to reuse a non-empty one."""
    path = Path(path)
    check_new_run_dir(path)
    path.mkdir(parents=True, exist_ok=True)
    fsync_dir(path.parent)
    atomic_write_json(path / TRAIN_CONFIG_FILE, train_config)
    return path


def read_train_config(path: str | Path) -> dict:
    file = Path(path) / TRAIN_CONFIG_FILE
    if not file.is_file():
        raise RunDirError(f"{path} is not a run directory: {TRAIN_CONFIG_FILE} is missing")
    return json.loads(file.read_text())


def read_metrics(path: str | Path) -> list[dict]:
    """Rows of `metrics.jsonl` (a torn last line, left by a kill, is skipped)."""
    file = Path(path) / METRICS_FILE
    rows = []
    if file.is_file():
        for line in file.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


class MetricsLog:
    """Appends rows to RUN_DIR/metrics.jsonl; on resume, drops rows newer than the checkpoint."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / METRICS_FILE
        self._file: TextIO | None = None

    def append(self, row: dict) -> None:
        if self._file is None:
            self._file = open(self.path, "a")
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    def flush(self) -> None:
        """Flush and fsync: a checkpoint must never be ahead of the log it resumes."""
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())

    def truncate_after(self, step: int) -> None:
        self.close()
        rows = [r for r in read_metrics(self.path.parent) if r.get("step", 0) <= step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in rows))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
