"""Toy benchmark: can an SAE recover a known dictionary from activations in superposition?

Synthetic data after Elhage et al., "Toy Models of Superposition" and Sharkey et al., "Taking
features out of superposition with sparse autoencoders": `n_features` random unit vectors in R^d
(more features than dimensions), each active independently with a power-law frequency, with a
uniform [0, 1] magnitude, summed, plus Gaussian noise. Recovery is measured by MMCS, the mean over
true features of the best cosine similarity with any decoder row.

    data = ToyData(ToyConfig(d=64, n_features=256))
    rows = run_toy_benchmark(data, ["topk", "relu"])
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from monosemantic.config import ConfigError
from monosemantic.eval.metrics import evaluate, mmcs
from monosemantic.sae import SAEConfig, create_sae
from monosemantic.train.trainer import TrainConfig, Trainer


@dataclass
class ToyConfig:
    d: int = 64
    """dimension of the synthetic activations"""
    n_features: int = 256
    """number of true features (more than d: superposition)"""
    avg_active: float = 4.0
    """mean number of active features per sample"""
    power_law: float = 0.5
    """feature frequencies fall as (rank + 1)^-power_law"""
    noise: float = 0.01
    """standard deviation of the Gaussian noise in each dimension"""
    seed: int = 0
    """seed of the true dictionary and of the samples"""

    def __post_init__(self) -> None:
        if self.d < 1 or self.n_features < 1:
            raise ConfigError(f"d and n_features must be >= 1, got d={self.d}, n_features={self.n_features}")
        if not 0 < self.avg_active <= self.n_features:
            raise ConfigError(f"avg_active must be in (0, n_features], got {self.avg_active}")


def derived_seed(seed: int, purpose: str) -> int:
    """A seed for one purpose, far from `seed` itself: torch.manual_seed(0) must not reproduce the
    toy dictionary, or an SAE initialised from it would start out with the true features."""
    return int.from_bytes(hashlib.sha256(f"{purpose}:{seed}".encode()).digest()[:7], "little")


class ToyData:
    """The true dictionary and a sampler; batch i is a pure function of (seed, i)."""

    def __init__(self, cfg: ToyConfig):
        self.cfg = cfg
        g = torch.Generator().manual_seed(derived_seed(cfg.seed, "toy-dictionary"))
        features = torch.randn(cfg.n_features, cfg.d, generator=g)
        self.features = features / features.norm(dim=1, keepdim=True)  # [n_features, d]
        freq = (torch.arange(cfg.n_features, dtype=torch.float64) + 1) ** -cfg.power_law
        self.probs = (freq * cfg.avg_active / freq.sum()).clamp(max=1.0).float()  # [n_features]

    def sample(self, n: int, index: int) -> Tensor:
        """Batch number `index` of n samples: [n, d]."""
        g = torch.Generator().manual_seed(derived_seed(self.cfg.seed, f"toy-batch-{index}"))
        active = torch.rand(n, self.cfg.n_features, generator=g) < self.probs
        coef = active * torch.rand(n, self.cfg.n_features, generator=g)
        return coef @ self.features + self.cfg.noise * torch.randn(n, self.cfg.d, generator=g)


class ToyBatches:
    """Endless batches of `ToyData`, exactly resumable (the state is the batch index)."""

    def __init__(self, data: ToyData, batch_size: int, start: int = 0):
        self.data, self.batch_size, self.index = data, batch_size, start

    def __iter__(self) -> ToyBatches:
        return self

    def __next__(self) -> Tensor:
        self.index += 1
        return self.data.sample(self.batch_size, self.index - 1)

    def state_dict(self) -> dict:
        return {"index": self.index}

    def load_state_dict(self, state: dict) -> None:
        self.index = int(state["index"])


@dataclass
class ToyResult:
    arch: str
    d_sae: int
    k: int | None
    mmcs: float
    fvu: float
    l0: float
    dead_fraction: float
    seconds: float


EVAL_OFFSET = 10**9  # held-out batches: indices the training stream never reaches


def run_toy_benchmark(
    data: ToyData,
    archs: list[str],
    *,
    d_sae: int | None = None,
    k: int | None = None,
    l1_coefficient: float = 3.0,
    l0_coefficient: float = 10.0,
    matryoshka_prefixes: tuple[int, ...] | None = None,
    train: TrainConfig | None = None,
    progress: bool = False,
) -> list[ToyResult]:
    """Train one SAE per architecture on `data` and measure how well it recovers the dictionary."""
    cfg = data.cfg
    d_sae = d_sae or 2 * cfg.n_features
    k = k or max(1, round(cfg.avg_active))
    train = train or TrainConfig(
        batch_size=1024, total_tokens=2_000_000, lr=3e-3, dead_window=100_000, log_every=50, b_dec_init="mean"
    )
    results = []
    for arch in archs:
        torch.manual_seed(train.seed)
        sae = create_sae(
            SAEConfig(
                arch=arch,
                d_in=cfg.d,
                d_sae=d_sae,
                k=k,
                l1_coefficient=l1_coefficient,
                l0_coefficient=l0_coefficient,
                matryoshka_prefixes=matryoshka_prefixes if arch == "matryoshka" else None,
            )
        )
        start = time.perf_counter()
        trained = Trainer(sae, train, progress=progress).fit(ToyBatches(data, train.batch_size))
        seconds = time.perf_counter() - start
        assert trained is not None  # only a latent-sharded trainer's other ranks return None
        held_out = ToyBatches(data, 4096, start=EVAL_OFFSET)
        ev = evaluate(trained, (next(held_out) for _ in range(8)))
        k_used = k if arch in ("topk", "batchtopk", "matryoshka") else None
        results.append(
            ToyResult(arch, d_sae, k_used, mmcs(data.features, trained.W_dec), ev.fvu, ev.l0, ev.dead_fraction, seconds)
        )
    return results


def format_table(results: list[ToyResult]) -> str:
    header = f"{'arch':<10} {'d_sae':>6} {'k':>4} {'MMCS':>7} {'FVU':>7} {'L0':>7} {'dead':>7} {'time':>7}"
    lines = [header, "-" * len(header)]
    for r in results:
        lines.append(
            f"{r.arch:<10} {r.d_sae:>6} {r.k if r.k is not None else '-':>4} {r.mmcs:>7.3f} {r.fvu:>7.3f} "
            f"{r.l0:>7.2f} {r.dead_fraction:>7.1%} {r.seconds:>6.1f}s"
        )
    return "\n".join(lines)


def results_to_json(results: list[ToyResult]) -> list[dict]:
    return [asdict(r) for r in results]
