"""`monosemantic view builtin`: a shipped SAE (pretrained.py) as an analysed run directory, made in
the user's cache on first use and reused after.

    run_dir = pretrained_run(3)      # ~/.cache/monosemantic/builtin/layers.3.resid.post/
    create_app(run_dir)              # what `monosemantic view RUN_DIR` serves

The cache is `$MONOSEMANTIC_CACHE`, else `$XDG_CACHE_HOME/monosemantic`, else `~/.cache/monosemantic`.
A run directory there holds what the dashboard reads: the SAE upcast to float32, its
train_config.json and metrics.jsonl, an eval.json of the manifest's held-out metrics, features/ from
`analyze` (on `VIEW_ANALYSIS.tokens` tokens: well under a minute on 2 cores), and `builtin.json`,
what it was made from (the SAE's and the model's sha256, the analysis settings). When any of these
differs, or the feature store does not open, it is rebuilt. It is built under a temporary name and
renamed into place in one step, under a lock: a killed first use leaves no half cache (its
temporary directory is cleared by the next use), and two processes never build it at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from monosemantic.analysis.analyze import AnalyzeConfig, analyze
from monosemantic.analysis.store import FeatureStore
from monosemantic.atomic import atomic_directory, atomic_write_json, remove_stale_temporaries
from monosemantic.config import to_dict
from monosemantic.data.pack_cache import cache_root
from monosemantic.errors import MonosemanticError
from monosemantic.mathlm.pretrained import (
    HELDOUT,
    PRETRAINED_DIR,
    layer_hookpoint,
    load_pretrained,
    manifest_entry,
    read_manifest,
)
from monosemantic.train.rundir import EVAL_FILE, METRICS_FILE, TRAIN_CONFIG_FILE

log = logging.getLogger(__name__)

DEFAULT_LAYER = 3  # the demo's hookpoint (`make demo`): layers.3.resid.post
STAMP_FILE = "builtin.json"
STAMP_FORMAT = "monosemantic-builtin-view/1"
# First use pays for this analysis: 4096 latents over 100k tokens of the math corpus, the first half
# choosing label rules and the second scoring them
VIEW_ANALYSIS = AnalyzeConfig(tokens=100_000)


@contextlib.contextmanager
def locked(file: Path) -> Iterator[None]:
    """An exclusive lock on `file` for the block; the kernel drops it if the process dies."""
    file.parent.mkdir(parents=True, exist_ok=True)
    with open(file, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another monosemantic process that is building %s ...", file.parent)
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def is_current(run_dir: Path, stamp: dict) -> bool:
    """Whether `run_dir` was made from what `stamp` describes, and its feature store opens."""
    try:
        if json.loads((run_dir / STAMP_FILE).read_text()) != stamp:
            return False
        FeatureStore.open(run_dir).db.close()
    except (OSError, ValueError, MonosemanticError):
        return False
    return True


def pretrained_run(
    layer: int = DEFAULT_LAYER,
    *,
    directory: str | Path = PRETRAINED_DIR,
    cache: str | Path | None = None,
    analysis: AnalyzeConfig = VIEW_ANALYSIS,
    device: str = "cpu",
    progress: bool = True,
) -> Path:
    """The analysed run directory of the pretrained SAE of `layer` in `directory`, under `cache`
    (default `cache_root()`)/builtin/; made, or remade when stale, before it is returned."""
    directory = Path(directory)
    hookpoint = layer_hookpoint(layer)
    manifest = read_manifest(directory)
    entry = manifest_entry(manifest, hookpoint, directory)
    stamp = {
        "format": STAMP_FORMAT,
        "hookpoint": hookpoint,
        "sae_sha256": entry["sha256"],
        "model_sha256": manifest["model_sha256"],
        "analysis": to_dict(analysis),
    }
    run_dir = Path(cache or cache_root()) / "builtin" / hookpoint
    with locked(run_dir.parent / ".lock"):
        if is_current(run_dir, stamp):
            log.info("%s: analysed before, in %s", hookpoint, run_dir)
            return run_dir
        why = "its SAE, model or analysis settings changed" if (run_dir / STAMP_FILE).exists() else "first use"
        log.info(
            "%s (%d features): %s, analysing them on %s tokens into %s (once; under a minute on 2 cores) ...",
            hookpoint,
            entry["d_sae"],
            why,
            f"{analysis.tokens:,}",
            run_dir,
        )
        start = time.perf_counter()
        remove_stale_temporaries(run_dir.parent)  # what a killed build left
        with atomic_directory(run_dir) as tmp:
            build_run(tmp, directory, hookpoint, entry, analysis, device=device, progress=progress)
            atomic_write_json(tmp / STAMP_FILE, stamp)
        log.info("analysed in %.0f s", time.perf_counter() - start)
    return run_dir


def build_run(
    out: Path, directory: Path, hookpoint: str, entry: dict, analysis: AnalyzeConfig, *, device: str, progress: bool
) -> None:
    """Write into the empty directory `out` the run directory of the pretrained SAE at `hookpoint`."""
    load_pretrained(hookpoint, directory).save(out)
    for name in (TRAIN_CONFIG_FILE, METRICS_FILE):
        if (directory / hookpoint / name).is_file():
            shutil.copyfile(directory / hookpoint / name, out / name)
    heldout = entry["heldout"]
    atomic_write_json(
        out / EVAL_FILE,
        {
            "data": f"{HELDOUT}, first {heldout['tokens']} tokens (measured when the set was exported)",
            "metrics": heldout,
        },
    )
    analyze(out, analysis, device=device, progress=progress)
