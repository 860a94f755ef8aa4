"""Read and write activations at hookpoints, with forward hooks that always remove themselves.

    with capture(model, "layers.4.mlp.neurons", stop=True) as acts:
        model(input_ids=ids)              # stops right after layer 4's neurons are computed
    acts["layers.4.mlp.neurons"]          # [B, T, d_mlp]

    with patch(model, {"layers.4.mlp.neurons": lambda x: 0 * x}):
        logits = model(input_ids=ids).logits

    hookpoint_width(model, "layers.4.mlp.neurons")   # d_mlp, read on a one-token forward

Hooks are removed when the block ends, also when the forward raises. With `stop=True` the forward
is cut short (by an exception the block swallows) once every requested hookpoint has been read,
so put only the forward call inside the block.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import cast

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from monosemantic.models import Hookpoint, ModelError, resolve_hookpoints


class _StopForward(Exception):
    """Raised inside a hook to end a forward pass early; caught by `capture`."""


def _first(value) -> Tensor:
    return value if isinstance(value, Tensor) else value[0]


def _replace_first(value, new: Tensor):
    return new if isinstance(value, Tensor) else (new, *value[1:])


def attach(model: nn.Module, hook: Hookpoint, fn: Callable[[Tensor], Tensor | None]) -> RemovableHandle:
    """Call `fn` on the activation at `hook` during every forward; if it returns a tensor, that tensor
    replaces the activation."""
    module = model.get_submodule(hook.module)
    if hook.kind == "output":

        def on_output(_module, _args, output):
            new = fn(_first(output))
            return None if new is None else _replace_first(output, new)

        return module.register_forward_hook(on_output)

    def on_input(_module, args, kwargs):
        if args:
            new = fn(args[0])
            return None if new is None else ((new, *args[1:]), kwargs)
        if "hidden_states" not in kwargs:
            raise ModelError(f"{hook.module} received no positional input to read for hookpoint {hook.name!r}")
        new = fn(kwargs["hidden_states"])
        return None if new is None else (args, {**kwargs, "hidden_states": new})

    return module.register_forward_pre_hook(on_input, with_kwargs=True)


@contextlib.contextmanager
def capture(
    model: nn.Module, hookpoints: str | list[str] | list[Hookpoint], *, stop: bool = False, detach: bool = True
) -> Iterator[dict[str, Tensor]]:
    """Collect the activations at `hookpoints` (names, globs or module paths, or `Hookpoint`s already
    resolved, as a stream that runs many forwards holds them) into a dict by name."""
    if not isinstance(hookpoints, str) and all(isinstance(h, Hookpoint) for h in hookpoints):
        hooks = cast(list[Hookpoint], hookpoints)
    else:
        hooks = resolve_hookpoints(model, cast(str | list[str], hookpoints))
    acts: dict[str, Tensor] = {}

    def reader(h: Hookpoint):
        def read(t: Tensor) -> None:
            acts[h.name] = t.detach() if detach else t
            if stop and len(acts) == len(hooks):
                raise _StopForward

        return read

    handles: list[RemovableHandle] = []
    try:
        for h in hooks:
            handles.append(attach(model, h, reader(h)))
        yield acts
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def patch(model: nn.Module, edits: dict[str, Callable[[Tensor], Tensor]]) -> Iterator[None]:
    """Replace the activation at each hookpoint by `fn(activation)` during forwards in the block."""
    handles: list[RemovableHandle] = []
    try:
        for pattern, fn in edits.items():
            for h in resolve_hookpoints(model, pattern):
                handles.append(attach(model, h, fn))
        yield
    finally:
        for handle in handles:
            handle.remove()


def run_and_capture(
    model: nn.Module,
    input_ids: Tensor,
    hookpoints: str | list[str] | list[Hookpoint],
    attention_mask: Tensor | None = None,
) -> dict[str, Tensor]:
    """Activations at `hookpoints` for `input_ids`, running the model only as far as needed."""
    with capture(model, hookpoints, stop=True) as acts:
        model(input_ids=input_ids, attention_mask=attention_mask)
    return acts


def hookpoint_widths(model: nn.Module, hookpoints: list[str] | list[Hookpoint]) -> list[int]:
    """The width (last dimension) of the activation at each hookpoint (names, or `Hookpoint`s
    already resolved), read on a one-token forward that stops after the last of them (any token
    will do: only the shape is read)."""
    ids = torch.zeros(1, 1, dtype=torch.long, device=next(model.parameters()).device)
    # with the mask given, a model whose pad token is 0 does not warn about the missing one
    acts = run_and_capture(model, ids, hookpoints, torch.ones_like(ids))
    return [acts[h.name if isinstance(h, Hookpoint) else h].shape[-1] for h in hookpoints]


def hookpoint_width(model: nn.Module, hookpoint: str | Hookpoint) -> int:
    """The width of the activation at one hookpoint (a name or module path, or resolved)."""
    [width] = hookpoint_widths(model, [hookpoint])  # type: ignore[list-item]  (one kind in the list)
    return width
