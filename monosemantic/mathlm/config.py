"""The recipe of the built-in math LM (a config dataclass, kept free of heavy imports for the CLI)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class MathLMConfig:
    n_layer: int = 8
    """transformer blocks"""
    d_model: int = 192
    """residual stream width (MLP: 4x)"""
    n_head: int = 6
    """attention heads"""
    seq_len: int = 64
    """context length in tokens (one document per row; every math document fits in half of it)"""
    tokens: int = 38_000_000
    """training tokens (padding included)"""
    batch_tokens: int = 4096
    """tokens per step (rows of one document each, batched by length)"""
    lr: float = 2e-3
    """peak AdamW learning rate (linear warm-up, cosine decay)"""
    warmup: float = 0.02
    """fraction of steps of learning-rate warm-up"""
    min_lr: float = 0.1
    """final learning rate as a fraction of the peak"""
    weight_decay: float = 0.1
    """AdamW weight decay on matrices"""
    grad_clip: float = 1.0
    """gradient-norm clip"""
    bf16: bool = True
    """bf16 autocast for the matmuls (about 2x faster on CPUs with AVX-512 bf16); weights stay fp32"""
    seed: int = 0
    """seed of the initialisation and of the corpus"""
    eval_every: int = 1000
    """steps between held-out loss evaluations"""
    checkpoint_every: int = 250
    """steps between checkpoints"""
    init_from: str = ""
    """a model directory to continue from (a second phase of training; 'builtin' for the shipped
    model); empty: random initialisation"""
    mixture: str = ""
    """corpus generator weights overriding the defaults, e.g. 'add_3d=60,sub_3d=60' (a curriculum
    towards the categories that lag); the held-out loss always uses the default mixture"""

    def mixture_weights(self) -> dict[str, float]:
        """`mixture` as {generator: weight}."""
        out: dict[str, float] = {}
        for item in filter(None, (part.strip() for part in self.mixture.split(","))):
            name, sep, value = item.partition("=")
            try:
                out[name.strip()] = float(value)
            except ValueError:
                sep = ""
            if not sep:
                raise ValueError(f"mixture entries must be NAME=WEIGHT, got {item!r}")
        return out

    @property
    def steps(self) -> int:
        return self.tokens // self.batch_tokens
