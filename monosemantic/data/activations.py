"""Activation data: files of activation vectors and the batch iterators the trainer consumes.

- `load_activation_file(path)`: an [N, d] tensor from `.npy` or `.safetensors`, validated (float
  dtype, finite values, squared norms within float32; errors name the first bad row).
- `TensorBatches`: shuffled batches from an [N, d] tensor, epoch after epoch, with
  `state_dict()` / `load_state_dict()` so that a resumed run reads exactly the batches it would have.

The trainer only needs an `Iterator[Tensor]` of [B, d] batches; anything with `state_dict` and
`load_state_dict` resumes in O(1), anything else is fast-forwarded.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import safetensors
import safetensors.torch
import torch
from torch import Tensor

from monosemantic.config import derive_seed
from monosemantic.errors import MonosemanticError


class ActivationDataError(MonosemanticError, ValueError):
    """Activation data that cannot be trained on: wrong format, shape, dtype or non-finite values."""


def check_finite(x: Tensor, source: str, row_offset: int = 0) -> None:
    """Raise ActivationDataError naming the first row of x [N, d] that holds NaN or inf."""
    bad = ~torch.isfinite(x).all(dim=-1)
    if bool(bad.any()):
        row = int(bad.nonzero()[0, 0]) + row_offset
        kind = "NaN" if bool(torch.isnan(x[row - row_offset]).any()) else "inf"
        raise ActivationDataError(
            f"{source}: row {row} contains {kind} ({int(bad.sum())} bad rows in this range); activations must be finite"
        )


F32_MAX = torch.finfo(torch.float32).max


def check_norms(x: Tensor, source: str, row_offset: int = 0) -> None:
    """Raise ActivationDataError naming the first row of x [N, d] (finite) whose squared norm,
    computed in float64, is beyond float32's range: the normalisation scale and the SAE's float32
    losses would overflow on it (to inf, and a scale of 0)."""
    if x.numel() == 0 or float(x.abs().max()) ** 2 * x.shape[1] <= F32_MAX:
        return  # no row can reach it
    squared = x.double().square().sum(dim=1)
    bad = squared > F32_MAX
    if bool(bad.any()):
        row = int(bad.nonzero()[0, 0])
        raise ActivationDataError(
            f"{source}: row {row + row_offset} has squared norm {float(squared[row]):.3g}, beyond float32's "
            f"{F32_MAX:.3g} ({int(bad.sum())} such rows in this range); divide the activations by a constant "
            "before training"
        )


def load_activation_file(path: str | Path, key: str | None = None) -> Tensor:
    """Load activations [N, d] from a .npy file or a .safetensors file (tensor `key`, or its only tensor).

    Leading dimensions are flattened ([batch, seq, d] -> [batch * seq, d]). The whole tensor is
    checked for NaN/inf, and for squared norms beyond float32 (`check_norms`), before anything is
    trained on it.
    """
    path = Path(path)
    if not path.is_file():
        raise ActivationDataError(f"{path}: no such file")
    if path.suffix == ".npy":
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, EOFError, OSError) as e:
            raise ActivationDataError(f"{path}: not a plain numeric .npy array ({e or 'empty file'})") from e
        if not array.dtype.isnative:  # e.g. big-endian, written on another machine
            array = array.astype(array.dtype.newbyteorder("="))
        with warnings.catch_warnings():  # read-only memory map; we never write to it
            warnings.simplefilter("ignore", UserWarning)
            try:
                x = torch.from_numpy(array)
            except (TypeError, ValueError) as e:
                raise ActivationDataError(f"{path}: unsupported array dtype {array.dtype} ({e})") from e
    elif path.suffix == ".safetensors":
        try:
            tensors = safetensors.torch.load_file(path)
        except (safetensors.SafetensorError, OSError) as e:
            raise ActivationDataError(f"{path}: not a readable safetensors file ({e})") from e
        if key is None:
            if len(tensors) != 1:
                raise ActivationDataError(f"{path}: holds tensors {sorted(tensors)}; name one with --key")
            key = next(iter(tensors))
        if key not in tensors:
            raise ActivationDataError(f"{path}: no tensor {key!r}; it holds {sorted(tensors)}")
        x = tensors[key]
    else:
        raise ActivationDataError(f"{path}: expected a .npy or .safetensors file, got {path.suffix or 'no suffix'!r}")
    if x.ndim < 2:
        raise ActivationDataError(f"{path}: expected activations of shape [N, d] (or [..., d]), got {list(x.shape)}")
    if not x.is_floating_point():
        raise ActivationDataError(f"{path}: expected floating-point activations, got dtype {x.dtype}")
    x = x.reshape(-1, x.shape[-1])
    if x.shape[0] == 0:
        raise ActivationDataError(f"{path}: holds no activation vectors (shape {list(x.shape)})")
    chunk = max(1, (1 << 24) // x.shape[1])
    for start in range(0, x.shape[0], chunk):
        check_finite(x[start : start + chunk], str(path), row_offset=start)
        check_norms(x[start : start + chunk], str(path), row_offset=start)
    return x


class TensorBatches:
    """Shuffled [batch_size, d] batches of an [N, d] tensor, forever; exactly resumable.

    Epoch e visits the rows in the order of a permutation seeded by (seed, e); the last partial
    batch of an epoch is dropped so that every batch has the same size.
    """

    def __init__(
        self, data: Tensor, batch_size: int, *, seed: int = 0, shuffle: bool = True, dtype: torch.dtype = torch.float32
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if data.shape[0] < batch_size:
            raise ActivationDataError(
                f"only {data.shape[0]} activation vectors, fewer than one batch of {batch_size}; "
                "lower --batch-size or provide more data"
            )
        self.data, self.batch_size, self.seed, self.shuffle, self.dtype = data, batch_size, seed, shuffle, dtype
        self.batches_per_epoch = data.shape[0] // batch_size
        self.epoch, self.index = 0, 0
        self._order: tuple[int, Tensor] | None = None

    @property
    def d(self) -> int:
        return self.data.shape[1]

    def _permutation(self) -> Tensor:
        if self._order is None or self._order[0] != self.epoch:
            n = self.data.shape[0]
            if self.shuffle:
                g = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))
                order = torch.randperm(n, generator=g)
            else:
                order = torch.arange(n)
            self._order = (self.epoch, order)
        return self._order[1]

    def __iter__(self) -> TensorBatches:
        return self

    def __next__(self) -> Tensor:
        rows = self._permutation()[self.index * self.batch_size : (self.index + 1) * self.batch_size]
        batch = self.data[rows]
        self.index += 1
        if self.index == self.batches_per_epoch:
            self.epoch, self.index = self.epoch + 1, 0
        return batch.to(self.dtype)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
