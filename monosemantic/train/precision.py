"""The dtype of the TopK / BatchTopK encoder matmul: what `TrainConfig.matmul_dtype="auto"` becomes.

A bf16 matmul only *picks* the active latents (their values and every gradient are recomputed in
fp32 from fp32 master weights, and the pick is refined to the fp32 one: `sae/topk.refined_topk`), so
it is worth it wherever the hardware multiplies bf16 natively: about 2x the fp32 rate on CPUs with
AVX512-BF16 / AMX, and on CUDA GPUs with bf16 tensor cores. Elsewhere bf16 is emulated (slower than
fp32), so "auto" keeps fp32. The check runs once per process and device type.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch


def _cpu_flags() -> set[str]:
    """The CPU feature flags of /proc/cpuinfo (Linux; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.partition(":")[2].split())


@functools.cache
def native_bf16(device_type: str) -> tuple[bool, str]:
    """(whether `device_type` multiplies bf16 natively, what was found)."""
    if device_type == "cuda":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False):
            return True, f"{torch.cuda.get_device_name()} has bf16 tensor cores"
        return False, "this CUDA device has no native bf16"
    if device_type != "cpu":
        return False, f"no bf16 check for device type {device_type!r}"
    found = sorted({"avx512_bf16", "amx_bf16"} & _cpu_flags())
    if not found:  # torch's own check (non-Linux), where it has one
        found = [n for n in ("avx512_bf16", "amx_tile") if getattr(torch.cpu, f"_is_{n}_supported", lambda: False)()]
    if found and torch.backends.mkldnn.is_available():  # torch's bf16 CPU matmul runs through oneDNN
        return True, f"the CPU has {' and '.join(found)}"
    return False, "the CPU has no native bf16 (no avx512_bf16 / amx_bf16)" if not found else "torch has no oneDNN"


def resolve_matmul_dtype(requested: str, device: str) -> tuple[str, str | None]:
    """(dtype, why) for `TrainConfig.matmul_dtype`: "auto" becomes bfloat16 where `device` has
    native bf16, else float32; an explicit dtype stays (why: None)."""
    if requested != "auto":
        return requested, None
    native, found = native_bf16(torch.device(device).type)
    if native:
        return "bfloat16", f"auto: {found}; the bf16 matmul only picks latents (values stay fp32)"
    return "float32", f"auto: {found}"
