"""Checks a training job makes before it allocates anything: is the device there, and does the
machine have the memory the SAEs need. Both refuse with a message (a ConfigError) rather than
leaving torch to fail with an AssertionError or an allocator traceback.

    check_device("cuda")  # on a CPU-only torch: "device 'cuda': this torch was built without CUDA; ..."
    check_memory([cfg], 4096, torch.device("cpu"))  # d_sae 1e12: "... needs at least 20.5 PB of memory
                                                    # (...); cpu has 24.0 GB available of 25.3 GB: ..."
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from monosemantic.config import ConfigError
from monosemantic.sae import SAEConfig, create_sae
from monosemantic.sae.routed import TOPK_ROWS


def check_device(device: str | torch.device) -> torch.device:
    """`device` (a valid torch device, see TrainConfig) as a torch.device, refused unless this
    machine and this torch build have it."""
    dev = torch.device(device)
    if dev.type == "cuda":
        if torch.version.cuda is None and torch.version.hip is None:
            raise ConfigError(f"device {str(device)!r}: this torch was built without CUDA; use --device cpu")
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"device {str(device)!r}: no CUDA device is visible on this machine; use --device cpu")
        if dev.index is not None and dev.index >= count:
            raise ConfigError(f"device {str(device)!r}: this machine has {count} CUDA device(s), cuda:0-{count - 1}")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {str(device)!r}: MPS is not available on this machine; use --device cpu")
    return dev


def training_bytes(cfg: SAEConfig, batch_size: int, shards: int = 1, matmul_dtype: str = "float32") -> dict[str, int]:
    """A lower bound on the memory that training the SAE `cfg` takes on one rank (1 / `shards` of
    its latents): the parameters, their gradients and Adam's two moments, and the [batch, d_sae]
    pre-activations of one step (in the SAE's dtype, or bfloat16 with that `matmul_dtype`); a
    routed SAE has no full-size gradients and holds one group of tokens' pre-activations in one
    expert's latents at a time."""
    meta = create_sae(cfg, device="meta")  # shapes without memory
    params = sum(p.numel() for p in meta.parameters()) // shards  # a shard: its latents' rows, and all of b_dec
    item = torch.empty((), dtype=cfg.torch_dtype).element_size()
    latents = batch_size * (cfg.d_sae // shards) * (2 if matmul_dtype == "bfloat16" else item)
    if cfg.experts is not None:  # routed (sae/routed.py): row gradients only, one group of tokens per expert block
        return {
            "parameters": params * item,
            "gradients and Adam": 2 * params * item,
            "one batch of latents": min(batch_size, TOPK_ROWS) * (cfg.d_sae // cfg.experts) * item,
        }
    return {"parameters": params * item, "gradients and Adam": 3 * params * item, "one batch of latents": latents}


def available_bytes(device: torch.device) -> tuple[int, int] | None:
    """(available, total) bytes of memory on `device`, or None where that cannot be asked."""
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return int(free), int(total)
    if device.type != "cpu":
        return None
    info = _meminfo()
    total = info.get("MemTotal") or os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    available = info.get("MemAvailable", total)
    limit = _cgroup_limit()  # a container's own limit, when it has one
    if limit is not None:
        available, total = min(available, limit[0]), min(total, limit[1])
    return available, total


def _meminfo() -> dict[str, int]:
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
    except OSError:
        return {}
    fields = (line.split() for line in lines)
    return {f[0].rstrip(":"): int(f[1]) * 1024 for f in fields if len(f) >= 2 and f[1].isdigit()}


def _cgroup_limit() -> tuple[int, int] | None:
    """(limit - usage, limit) of this process's cgroup (v2), if it sets a memory limit."""
    try:
        root = Path("/sys/fs/cgroup")
        limit = (root / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int((root / "memory.current").read_text()), int(limit)
    except (OSError, ValueError):
        return None


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def check_memory(
    configs: list[SAEConfig], batch_size: int, device: torch.device, shards: int = 1, matmul_dtype: str = "float32"
) -> None:
    """Refuse SAEs whose training (on `batch_size` rows a step) needs more memory (`training_bytes`,
    summed) than `device` has available, naming both figures."""
    have = available_bytes(device)
    if have is None:
        return
    parts: dict[str, int] = {}
    for cfg in configs:
        for name, n in training_bytes(cfg, batch_size, shards, matmul_dtype).items():
            parts[name] = parts.get(name, 0) + n
    need = sum(parts.values())
    if need > have[0]:
        what = ", ".join(f"{name} {human_bytes(n)}" for name, n in parts.items())
        sizes = ", ".join(sorted({f"d_in={c.d_in} x d_sae={c.d_sae}" for c in configs}))
        raise ConfigError(
            f"training {'this SAE' if len(configs) == 1 else f'these {len(configs)} SAEs'} ({sizes}) needs at least "
            f"{human_bytes(need)} of memory ({what}); {device} has {human_bytes(have[0])} available of "
            f"{human_bytes(have[1])}: lower --d-sae / --expansion-factor or --batch-size"
        )
