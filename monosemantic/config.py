"""Config dataclasses <-> JSON files and command-line flags.

Every config in monosemantic is a dataclass whose fields carry a one-line docstring; that docstring
is the flag's `--help` text (the sparsify convention). This file holds:

- `field_docs(cls)`: the docstring under each field, read from the class source.
- `add_arguments(parser, cls)` / `from_args(cls, args)`: dataclass -> argparse flags -> dataclass.
- `to_dict(obj)` / `from_dict(cls, data)`: JSON round-trip that rejects unknown or missing keys.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import decimal
import functools
import inspect
import textwrap
import types
import typing
from typing import Any, Literal, TypeVar

from monosemantic.errors import MonosemanticError

T = TypeVar("T")


class ConfigError(MonosemanticError, ValueError):
    """A config value, file or flag is not what it must be."""


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Map each field of dataclass `cls` (and its bases) to the docstring written under it."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        body = ast.parse(source).body[0].body  # type: ignore[attr-defined]
        for stmt, after in zip(body, body[1:]):
            if (
                isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[stmt.target.id] = " ".join(after.value.value.split())
    return docs


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    """`X | None` -> (X, True); anything else -> (tp, False)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


_SUFFIXES = {"k": 10**3, "m": 10**6, "g": 10**9, "b": 10**9}


def parse_int(text: str) -> int:
    """An integer written as 4096, 1_000_000, 2e6, 2.5k or 10M (k, M, G suffixes), parsed exactly."""
    t = text.strip().replace("_", "").lower()
    scale = _SUFFIXES.get(t[-1:], 1)
    if scale != 1:
        t = t[:-1]
    try:
        value = decimal.Decimal(t) * scale  # exact: 2.01k is 2010, not 2009.9999999999998
    except decimal.InvalidOperation:
        raise argparse.ArgumentTypeError(f"expected an integer such as 4096, 2e6 or 10M, got {text!r}") from None
    if not value.is_finite() or value != value.to_integral_value():
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")
    if abs(value) >= 2**63:  # counts end up in int64 tensors
        raise argparse.ArgumentTypeError(f"{text!r} is out of range (at most 2**63 - 1)")
    return int(value)


def _parser_for(tp: Any, optional: bool):
    convert = parse_int if tp is int else tp

    def parse(text: str):
        if optional and text.lower() == "none":
            return None
        return convert(text)

    parse.__name__ = getattr(tp, "__name__", str(tp))
    return parse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default, except where there is none to show (None, or an off switch)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or isinstance(action, argparse._StoreTrueAction):
            return action.help or ""
        return super()._get_help_string(action)


def non_negative_int(text: str) -> int:
    """A command-line integer (see parse_int) that must be at least 0."""
    value = parse_int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """A command-line integer (see parse_int) that must be at least 1."""
    value = parse_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def add_arguments(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    exclude: tuple[str, ...] = (),
    defaults: dict[str, Any] | None = None,
    aliases: dict[str, list[str]] | None = None,
) -> None:
    """Add one `--flag` per field of `cls`, with the field's docstring as help text (and any
    `aliases[field]` as further spellings of the flag)."""
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(cls.__name__)
    for f in dataclasses.fields(cls):
        if f.name in exclude or not f.init or f.metadata.get("no_flag"):
            continue
        flag = "--" + f.name.replace("_", "-")
        tp, optional = _strip_optional(hints[f.name])
        if defaults and f.name in defaults:
            default = defaults[f.name]
        elif f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = None
        help_text = docs.get(f.name, "").replace("%", "%%")  # argparse formats help with %
        shown = " (default: %(default)s)" if default is not None else ""
        kwargs: dict[str, Any] = {"dest": f.name, "default": default}
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
            help_text += shown
        elif typing.get_origin(tp) is Literal:
            kwargs["choices"] = list(typing.get_args(tp))
            kwargs["type"] = type(typing.get_args(tp)[0])
            help_text += shown
        elif typing.get_origin(tp) is tuple:
            item = typing.get_args(tp)[0]
            kwargs["nargs"] = "+" if typing.get_args(tp)[-1] is Ellipsis else len(typing.get_args(tp))
            kwargs["type"] = item
            kwargs["metavar"] = item.__name__.upper()
            help_text += shown
        elif tp in (int, float, str):
            kwargs["type"] = _parser_for(tp, optional)
            kwargs["metavar"] = tp.__name__.upper()
            help_text += shown
        else:
            raise TypeError(f"config field {cls.__name__}.{f.name}: unsupported type {tp!r}")
        group.add_argument(flag, *(aliases or {}).get(f.name, []), help=help_text, **kwargs)


def from_args(cls: type[T], args: argparse.Namespace, **overrides: Any) -> T:
    """Build a `cls` from the parsed flags that `add_arguments` added, plus `overrides`."""
    values = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if f.init and hasattr(args, f.name)
    }
    values.update(overrides)
    for name, value in values.items():
        if isinstance(value, list):
            values[name] = tuple(value)
    return cls(**values)


#: field metadata: leave the field out of `to_dict` while it is None (a field added to a config whose
#: files are a contract, e.g. SAEConfig's transcoder fields: the files of plain SAEs stay as they were)
OMIT_NONE = {"omit_none": True}
# a field the program fills in and saves (e.g. why "auto" chose a value): no --flag, and left out while None
RECORDED = {"omit_none": True, "no_flag": True}


def to_dict(obj: Any) -> dict[str, Any]:
    """The dataclass as JSON; a field with metadata `OMIT_NONE` is left out while None, so files
    written before it existed are written the same."""
    out = dataclasses.asdict(obj)
    for f in dataclasses.fields(obj):
        if f.metadata.get("omit_none") and out.get(f.name) is None:
            del out[f.name]
    return out


def from_dict(cls: type[T], data: dict[str, Any], *, source: str = "config") -> T:
    """Build a `cls` from a JSON object, refusing unknown keys and missing required ones."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a JSON object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown} for {cls.__name__}; expected some of {sorted(fields)}")
    missing = [
        name
        for name, f in fields.items()
        if name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
    ]
    if missing:
        raise ConfigError(f"{source}: missing required key(s) {missing} for {cls.__name__}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in data.items():
        tp, _ = _strip_optional(hints[name])
        if typing.get_origin(tp) is tuple and isinstance(value, list):
            value = tuple(value)
        values[name] = value
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{source}: {e}") from e


def derive_seed(seed: int, *parts: int) -> int:
    """A seed for one part of a job (a chunk, an epoch, a shard) from the job's `seed`: each part
    folds in as `seed * 1_000_003 + part` (a prime, so that nearby (seed, part) pairs never
    collide for parts below a million), so the streams of different parts are independent."""
    for part in parts:
        seed = seed * 1_000_003 + part
    return seed
