"""What each dictionary of a training job reads: one hookpoint (an SAE), or an MLP's input and
output (a transcoder: `layers.L.mlp` stands for the pair `layers.L.mlp.in` -> `layers.L.mlp.out`).

    units = dictionary_units(model, "layers.*.mlp", "transcoder")
    [u.name for u in units]                 # ["layers.0.mlp", "layers.1.mlp", ...]
    hooks = flat_hooks(units)               # what the activation stream captures, in this order

A batch of the stream is the concatenation of `flat_hooks` in order, so the columns of unit i are
contiguous: an SAE's activations, or a transcoder's [input, target] side by side (sae/transcoder.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from monosemantic.models import Hookpoint, ModelError, resolve_hookpoints
from monosemantic.sae.config import TRANSCODER_ARCHS


@dataclass(frozen=True)
class Unit:
    """One dictionary's data: `inp` (and, for a transcoder, `out`); `name` its run directory's name."""

    name: str
    inp: Hookpoint
    out: Hookpoint | None = None

    @property
    def hooks(self) -> list[Hookpoint]:
        return [self.inp] if self.out is None else [self.inp, self.out]


def dictionary_units(model: nn.Module, patterns: str | list[str], arch: str) -> list[Unit]:
    """The units that `patterns` (names or globs; comma-separated in a string) select for `arch`."""
    patterns = patterns.split(",") if isinstance(patterns, str) else patterns
    if arch not in TRANSCODER_ARCHS:
        return [Unit(h.name, h) for h in resolve_hookpoints(model, patterns)]
    mlps = [p.removesuffix(".in").removesuffix(".out") for p in patterns]
    bad = [p for p in mlps if not p.endswith(".mlp")]
    if bad:
        raise ModelError(
            f"a transcoder reads an MLP's input and writes its output: give the MLP, e.g. 'layers.3.mlp' or "
            f"'layers.*.mlp'; got {bad[0]!r}"
        )
    ins = resolve_hookpoints(model, [f"{p}.in" for p in mlps])
    outs = {h.layer: h for h in resolve_hookpoints(model, [f"{p}.out" for p in mlps])}
    return [Unit(h.name.removesuffix(".in"), h, outs[h.layer]) for h in ins]


def flat_hooks(units: list[Unit]) -> list[Hookpoint]:
    return [h for u in units for h in u.hooks]


def unit_widths(units: list[Unit], widths: list[int]) -> list[tuple[int, int | None]]:
    """(d_in, d_out or None) per unit, from the widths of `flat_hooks(units)`."""
    out, i = [], 0
    for u in units:
        out.append((widths[i], widths[i + 1] if u.out is not None else None))
        i += len(u.hooks)
    return out
