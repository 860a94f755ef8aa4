"""Where a training run's time goes: the trainer times its stages and, at the end of `fit`, logs
the breakdown (stderr, through the CLI's logging) and writes it to RUN_DIR/timing.json.

    clock = StageClock()
    clock.begin()
    with clock("harvest"):
        x = next(batches)           # the model forward to the hookpoint and the hook's copy (or a cache read)
    clock.breakdown()               # {"wall_s": ..., "seconds": {...}, "share": {...}}

Stages are disjoint (none runs inside another), so "other" (batch checks and scaling, the final
calibration, export, the optimiser-free glue) is the wall time less the timed stages, and the
shares sum to 1. The wall time runs from `Trainer.setup` (reading the first batches for the
normalisation scalar and b_dec counts as harvest) to the end of `Trainer.finish`; a resumed run
times only its own process. On CUDA each SAE step already waits for the GPU (the loss is checked
for finiteness), so the step's time is not billed to the next stage.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path

from monosemantic.atomic import atomic_write_json

log = logging.getLogger(__name__)

TIMING_FILE = "timing.json"
STAGES = ("harvest", "sae_step", "checkpoint", "logging")
"""harvest: waiting for the next batch (model forward + hook copy, or the cache; `train` harvests the
next chunk in a thread while the SAE trains, so this is the harvest the overlap did not hide); sae_step: forward,
backward, Adam, decoder norm, dead-latent counts; checkpoint: writing checkpoints; logging: the
metrics rows (their FVU, L0 and dead fraction) and the progress bar"""


class StageClock:
    """Seconds spent in each of `STAGES` since `begin`."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self._t0: float | None = None

    def begin(self) -> None:
        self._t0 = time.perf_counter()

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - start

    def breakdown(self, tokens: int = 0) -> dict:
        """{"wall_s", "tokens", "tokens_per_s", "seconds": {stage: s, "other": s}, "share": {stage: fraction}}."""
        assert self._t0 is not None, "begin() first"
        wall = time.perf_counter() - self._t0
        seconds = {**self.seconds, "other": max(0.0, wall - sum(self.seconds.values()))}
        return {
            "wall_s": wall,
            "tokens": tokens,
            "tokens_per_s": tokens / wall if wall > 0 else None,
            "seconds": seconds,
            "share": {k: v / wall if wall > 0 else 0.0 for k, v in seconds.items()},
        }


def report(breakdown: dict, run_dir: Path | None) -> None:
    """Log the breakdown as one line and write it to RUN_DIR/timing.json (when there is one)."""
    parts = ", ".join(
        f"{k.replace('_', ' ')} {s:.1f} s ({breakdown['share'][k]:.0%})" for k, s in breakdown["seconds"].items()
    )
    log.info("time: %.1f s wall; %s", breakdown["wall_s"], parts)
    if run_dir is not None:
        atomic_write_json(run_dir / TIMING_FILE, breakdown)
