"""Interventions on SAE latents inside a running model, built on `hooks.patch`.

The SAE is spliced in at its hookpoint with the error term kept: the activation x becomes
    decode(z') + (x - decode(z)),   z = encode(x),  z' = z after the interventions,
so with no intervention the model computes what it computed before (to float precision), and an
intervention changes exactly the edited latents' contribution to the reconstruction.

    with intervene(model, sae, [zero([12, 345]), steer(7, alpha=4.0, positions=[-1])]):
        logits = model(input_ids=ids).logits

Interventions compose in order, can be limited to token positions (a list of positions, negative
from the end, a slice such as `slice(1, None)`: all but the first, a [B, T] bool mask, or
`Firing(latents)`: wherever one of those latents fires in the forward being run), and the hooks are
removed when the block ends, also on error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from monosemantic.errors import MonosemanticError
from monosemantic.hooks import patch


class InterventionError(MonosemanticError, ValueError):
    """An intervention that cannot apply: unknown latents, bad values or positions."""


@dataclass(frozen=True)
class Firing:
    """The positions, among `within`, where any of `latents` is nonzero in the SAE's encoding of the
    activation of the forward being run (so a greedy continuation's new tokens count too)."""

    latents: tuple[int, ...]
    within: Sequence[int] | slice | None = field(default_factory=lambda: slice(1, None))


Positions = Sequence[int] | slice | Tensor | Firing | None


@dataclass(frozen=True)
class Intervention:
    """Edit `latents`: set to 0 ("zero"), to `values` ("mean", "clamp"), or add alpha x their decoder
    directions to the output ("steer"), at `positions` (None: every position)."""

    kind: Literal["zero", "mean", "clamp", "steer"]
    latents: tuple[int, ...]
    values: tuple[float, ...] = ()
    positions: Positions = None

    def check(self, d_sae: int) -> None:
        firing = self.positions.latents if isinstance(self.positions, Firing) else ()
        bad = sorted({i for i in (*self.latents, *firing) if not 0 <= i < d_sae})
        if bad:
            raise InterventionError(f"feature(s) {bad} do not exist; this SAE has features 0-{d_sae - 1}")
        if self.kind != "zero" and len(self.values) not in (1, len(self.latents)):
            raise InterventionError(
                f"{self.kind}: {len(self.values)} values for {len(self.latents)} features; "
                "give one value, or one per feature"
            )


def _ids(latents: int | Sequence[int]) -> tuple[int, ...]:
    return (int(latents),) if isinstance(latents, int) else tuple(int(i) for i in latents)


def zero(latents: int | Sequence[int], positions: Positions = None) -> Intervention:
    """Zero ablation."""
    return Intervention("zero", _ids(latents), (), positions)


def mean_ablate(
    latents: int | Sequence[int], means: float | Sequence[float], positions: Positions = None
) -> Intervention:
    """Set latents to their mean activation over a dataset (e.g. `FeatureStore.mean_activation`)."""
    values = (float(means),) if isinstance(means, (int, float)) else tuple(float(v) for v in means)
    return Intervention("mean", _ids(latents), values, positions)


def clamp(latents: int | Sequence[int], value: float | Sequence[float], positions: Positions = None) -> Intervention:
    """Clamp latents to a value (e.g. 5 x their max activation)."""
    values = (float(value),) if isinstance(value, (int, float)) else tuple(float(v) for v in value)
    return Intervention("clamp", _ids(latents), values, positions)


def steer(latents: int | Sequence[int], alpha: float | Sequence[float], positions: Positions = None) -> Intervention:
    """Add alpha x the latent's decoder direction to the activation (steering)."""
    values = (float(alpha),) if isinstance(alpha, (int, float)) else tuple(float(v) for v in alpha)
    return Intervention("steer", _ids(latents), values, positions)


def position_mask(positions: Positions, shape: tuple[int, int], device, z: Tensor | None = None) -> Tensor:
    """[B, T] bool: where an intervention applies; `Firing` positions read the latents z [B*T, d_sae]."""
    if isinstance(positions, Firing):
        if z is None:
            raise InterventionError("positions where latents fire need the SAE's latents of the activation")
        fires = (z[:, list(positions.latents)] != 0).any(-1).reshape(shape)
        return fires & position_mask(positions.within, shape, device)
    if positions is None:
        return torch.ones(shape, dtype=torch.bool, device=device)
    if isinstance(positions, slice):
        mask = torch.zeros(shape, dtype=torch.bool, device=device)
        mask[:, positions] = True
        return mask
    if isinstance(positions, Tensor) and positions.dtype == torch.bool:
        if tuple(positions.shape) != shape:
            raise InterventionError(f"position mask of shape {tuple(positions.shape)} for activations of shape {shape}")
        return positions.to(device)
    cols = torch.as_tensor(list(positions) if not isinstance(positions, Tensor) else positions, dtype=torch.long)
    if ((cols >= shape[1]) | (cols < -shape[1])).any():
        raise InterventionError(f"positions {cols.tolist()} outside a sequence of {shape[1]} tokens")
    mask = torch.zeros(shape, dtype=torch.bool, device=device)
    mask[:, cols.to(device) % shape[1]] = True
    return mask


def edit_activations(sae: nn.Module, x: Tensor, interventions: Sequence[Intervention]) -> Tensor:
    """x [B, T, d_in] -> the activation with the SAE spliced in, error term kept, latents edited."""
    shape = x.shape[:2]
    flat = x.reshape(-1, x.shape[-1]).float()
    z = sae.encode(flat)  # [B*T, d_sae]
    edited = z.clone()
    steering = torch.zeros_like(flat)
    for iv in interventions:
        mask = position_mask(iv.positions, shape, x.device, z).reshape(-1)  # [B*T]
        ids = torch.tensor(iv.latents, device=x.device)
        if iv.kind == "steer":
            alpha = torch.tensor(iv.values, device=x.device, dtype=flat.dtype).expand(len(iv.latents))
            steering[mask] += alpha @ sae.W_dec[ids].to(flat.dtype)
            continue
        new = (
            torch.zeros(len(iv.latents), device=x.device)
            if iv.kind == "zero"
            else torch.tensor(iv.values, device=x.device).expand(len(iv.latents))
        )
        rows = edited[mask]
        rows[:, ids] = new.to(rows.dtype)
        edited[mask] = rows
    if sae.cfg.input_norm == "none":
        # decode is affine, so decode(z') + (x - decode(z)) = x + (z' - z) W_dec: only the edited
        # latents' rows of the decoder are needed
        cols = sorted({i for iv in interventions if iv.kind != "steer" for i in iv.latents})
        out = flat + steering
        if cols:
            ids = torch.tensor(cols, device=x.device)
            out = out + (edited[:, ids] - z[:, ids]).to(sae.W_dec.dtype) @ sae.W_dec[ids]
    else:  # per-token input normalisation: decode is not affine in z across tokens' scales
        out = sae.decode(edited, flat) + (flat - sae.decode(z, flat)) + steering
    return out.reshape(x.shape).to(x.dtype)


@contextlib.contextmanager
def intervene(
    model: nn.Module, sae: nn.Module, interventions: Sequence[Intervention] = (), *, hookpoint: str | None = None
) -> Iterator[None]:
    """Run forwards in the block with `sae` spliced in at its hookpoint (or `hookpoint`) and
    `interventions` applied; the hooks are gone when the block ends."""
    hookpoint = hookpoint or sae.cfg.hookpoint
    if hookpoint is None:
        raise InterventionError("the SAE does not record its hookpoint; pass hookpoint=")
    for iv in interventions:
        iv.check(sae.d_sae)
    with patch(model, {hookpoint: lambda x: edit_activations(sae, x, interventions)}):
        yield
