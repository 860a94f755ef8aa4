"""The learning-rate schedule of the trainer: OpenAI's width-scaled default, linear warm-up and decay."""

from __future__ import annotations

import math


def default_lr(d_sae: int) -> float:
    return 2e-4 / math.sqrt(d_sae / 2**14)


def lr_at(step: int, steps: int, base: float, warmup: float, decay: float) -> float:
    """Linear warm-up over the first `warmup` fraction, linear decay to 0 over the last `decay`."""
    n_warm, n_decay = warmup * steps, decay * steps
    if step < n_warm:
        return base * (step + 1) / n_warm
    if step >= steps - n_decay:
        return base * (steps - step) / n_decay
    return base
