"""The run directory: everything one SAE's training, evaluation and analysis leave behind.

    RUN_DIR/
        cfg.json, sae.safetensors   the trained SAE; it takes raw activations (`SAE.load(RUN_DIR)`)
        train_config.json           how it was trained: SAE config, trainer config, data source
        metrics.jsonl               one JSON line per logged training step
        checkpoints/                resumable training state (see checkpoint.py)
        eval.json                   metrics written by `monosemantic eval`
        run.lock                    held (flock) by the training or `analyze` writing the directory

Every command takes a run directory; this file names its parts, guards its creation and locks it.
A directory that a run left before its first checkpoint (killed, or stopped by a data error it
could only meet later) is "unstarted": a new run may take it over, and `--resume` starts it from
step 0.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from monosemantic.atomic import atomic_write_json, atomic_write_text, fsync_dir, write_error
from monosemantic.errors import MonosemanticError

TRAIN_CONFIG_FILE = "train_config.json"
METRICS_FILE = "metrics.jsonl"
EVAL_FILE = "eval.json"
PARENT_FILE = "hookpoints.json"  # a job over several hookpoints: their list, above their run directories
SWEEP_FILE = "sweep.json"  # a sweep: its grid, above the run directories of its points
LOCK_FILE = "run.lock"
CHECKPOINTS_DIR = "checkpoints"  # its contents: checkpoint.py
# what a run writes before its first checkpoint (a parent: its record, and such runs below it)
_BEFORE_CHECKPOINT = {TRAIN_CONFIG_FILE, METRICS_FILE, PARENT_FILE, SWEEP_FILE, LOCK_FILE}

log = logging.getLogger(__name__)


class RunDirError(MonosemanticError, ValueError):
    """A run directory that cannot be used as asked (exists already, or is not a run)."""


def _temporary(entry: Path) -> bool:
    return entry.name.startswith(".") and entry.name.endswith(".tmp")  # what atomic.py's writes leave


def is_unstarted(path: str | Path, *, below: bool = False) -> bool:
    """Whether directory `path` holds only what a run writes before its first checkpoint: its
    config, metrics rows, lock, an empty `checkpoints/` (or one with an interrupted write), and,
    for the parent of several runs, such runs (`below`: `path` is one of them)."""
    for entry in Path(path).iterdir():
        if _temporary(entry) or (entry.name in _BEFORE_CHECKPOINT and entry.is_file()):
            continue
        if entry.name == CHECKPOINTS_DIR and entry.is_dir() and all(map(_temporary, entry.iterdir())):
            continue
        if not below and entry.is_dir() and (entry / TRAIN_CONFIG_FILE).is_file() and is_unstarted(entry, below=True):
            continue
        return False
    return True


def check_new_run_dir(path: str | Path) -> None:
    """Refuse a run directory that exists and is neither empty nor unstarted (`is_unstarted`)."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or not is_unstarted(path)):
        raise RunDirError(
            f"{path} already exists and is not empty; pass --resume to continue that run, or choose a new directory"
        )


def clear_unstarted(path: Path) -> None:
    """Remove what an unstarted run left in `path` (its lock aside), for a new run to take its place."""
    removed = []
    for entry in sorted(path.iterdir()):
        if entry.name == LOCK_FILE:
            continue
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        removed.append(entry.name)
    if removed:
        fsync_dir(path)
        log.info("%s held a run that never reached its first checkpoint; starting afresh", path)


def create_run_dir(
    path: str | Path, train_config: dict, stack: contextlib.ExitStack | None = None, *, file: str = TRAIN_CONFIG_FILE
) -> Path:
    """Create a new run directory holding `train_config` (as `file`: train_config.json, or the
    record of a parent of several runs), or take over an unstarted one; refuse any other non-empty
    one. With `stack`, the directory stays locked (`locked_run_dir`) until the stack closes."""
    path = Path(path)
    check_new_run_dir(path)
    path.mkdir(parents=True, exist_ok=True)
    fsync_dir(path.parent)
    with contextlib.ExitStack() as lock:
        lock.enter_context(locked_run_dir(path))
        check_new_run_dir(path)  # again, now that no other process can be writing it
        clear_unstarted(path)
        atomic_write_json(path / file, train_config)
        if stack is not None:
            stack.enter_context(lock.pop_all())
    return path


@contextlib.contextmanager
def locked_run_dir(path: str | Path) -> Iterator[Path]:
    """Hold an exclusive lock on run directory `path` (flock on RUN_DIR/run.lock, which holds the
    holder's pid) for the block; another process asking for it gets a RunDirError naming that pid.
    The lock goes with the process, however it ends."""
    file = Path(path) / LOCK_FILE
    try:
        fd = os.open(file, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise write_error(file, e) from e
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise RunDirError(
                f"{path} is in use by another monosemantic process (pid {holder}, holding {file}); "
                "wait for it to end, or stop it"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield Path(path)
    finally:
        os.close(fd)  # releases the lock


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
