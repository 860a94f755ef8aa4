"""The analysis' settings (`AnalyzeConfig`), apart from the analysis itself so that what reads a
store (its integrity checks' repair advice) can name them without loading torch."""

from __future__ import annotations

from dataclasses import dataclass

from monosemantic.config import ConfigError


@dataclass
class AnalyzeConfig:
    tokens: int = 200_000
    """tokens of the corpus to analyse (the first part chooses label rules, the rest scores them)"""
    corpus: str | None = None
    """corpus to analyse (default: the run's training corpus)"""
    top_k: int = 16
    """top activating contexts kept per feature"""
    samples: int = 4
    """examples kept per activation range (2 ranges per decade): the quantile samples"""
    window: int = 32
    """tokens of context kept around each example (3/4 of them before it)"""
    shard_latents: int = 8192
    """latents per shard; each shard is one pass over the tokens, written to disk when done (a latent's
    examples take ~20 KB, in memory while its shard runs and on disk: 8192 latents ~160 MB)"""
    label_fit: float = 0.5
    """fraction of the tokens on which label rules are chosen; they are scored on the rest"""
    batch_tokens: int = 4096
    """tokens per model forward"""
    seed: int = 0
    """seed of the quantile sampling"""

    def check(self) -> None:
        for name in ("tokens", "top_k", "samples", "window", "shard_latents", "batch_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if not 0 < self.label_fit < 1:
            raise ConfigError(f"label_fit must be between 0 and 1 (exclusive), got {self.label_fit}")
