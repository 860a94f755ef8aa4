"""Tests of monosemantic.config: field docstrings, dataclass <-> argparse flags, strict JSON loading,
and the help formatter."""

import argparse
import dataclasses
import re
from dataclasses import dataclass
from typing import Literal

import pytest

from monosemantic.config import (
    ConfigError,
    HelpFormatter,
    add_arguments,
    field_docs,
    from_args,
    from_dict,
    parse_int,
    to_dict,
)
from monosemantic.eval.toy import ToyConfig
from monosemantic.sae import SAEConfig
from monosemantic.train.trainer import TrainConfig


@dataclass
class Base:
    width: int = 8
    """width of the thing"""


@dataclass
class Demo(Base):
    steps: int = 4096
    """number of steps,
    spread over two lines"""
    rate: float = 0.5
    """learning rate"""
    name: str = "run"
    """name of the run"""
    mode: Literal["fast", "slow"] = "fast"
    """how to run"""
    check: bool = True
    """verify things"""
    limit: int | None = None
    """optional cap"""
    label: str | None = "x"
    """optional label"""
    shape: tuple[int, int] = (2, 3)
    """two sizes"""
    undocumented: int = 1
    after_comment: int = 2
    # a comment is not a docstring
    tail: int = 3


def parse(argv: list[str], **kwargs) -> Demo:
    parser = argparse.ArgumentParser(formatter_class=HelpFormatter)
    add_arguments(parser, Demo, **kwargs)
    return from_args(Demo, parser.parse_args(argv))


def squash(text: str) -> str:
    return " ".join(text.split())


# ---- field_docs ------------------------------------------------------------------------------


def test_field_docs_reads_the_docstring_under_each_field_including_bases():
    docs = field_docs(Demo)
    assert docs["width"] == "width of the thing"  # from the base class
    assert docs["steps"] == "number of steps, spread over two lines"  # whitespace collapsed
    assert docs["mode"] == "how to run"
    assert docs["shape"] == "two sizes"
    assert "undocumented" not in docs and "after_comment" not in docs and "tail" not in docs


@pytest.mark.parametrize("cls", [TrainConfig, SAEConfig, ToyConfig])
def test_every_shipped_config_field_is_documented(cls):
    docs = field_docs(cls)
    assert {f.name for f in dataclasses.fields(cls)} == set(docs)
    assert all(docs.values())


# ---- flags -----------------------------------------------------------------------------------


def test_no_flags_gives_the_defaults():
    assert parse([]) == Demo()


def test_flags_round_trip_every_field_type():
    got = parse(
        [
            "--width",
            "3",
            "--steps",
            "12",
            "--rate",
            "0.25",
            "--name",
            "abc",
            "--mode",
            "slow",
            "--no-check",
            "--limit",
            "7",
            "--label",
            "none",
            "--shape",
            "4",
            "5",
            "--undocumented",
            "9",
        ]
    )
    want = Demo(
        width=3,
        steps=12,
        rate=0.25,
        name="abc",
        mode="slow",
        check=False,
        limit=7,
        label=None,
        shape=(4, 5),
        undocumented=9,
    )
    assert got == want
    assert isinstance(got.shape, tuple)  # argparse gives a list; the dataclass holds a tuple


def test_bool_flags_have_a_negative_form():
    assert parse(["--no-check"]).check is False
    assert parse(["--no-check", "--check"]).check is True


@pytest.mark.parametrize(
    "text, value",
    [
        ("2e6", 2_000_000),
        ("10M", 10_000_000),
        ("1_000", 1000),
        ("4k", 4000),
        ("1.5k", 1500),
        ("3G", 3 * 10**9),
        (" 42 ", 42),
        ("-5", -5),
    ],
)
def test_int_flags_accept_scientific_suffixed_and_underscored_numbers(text, value):
    assert parse_int(text) == value
    assert parse(["--steps", text]).steps == value


@pytest.mark.parametrize("text", ["1.5", "2.5e0", "ten", "", "k", "1e-3"])
def test_parse_int_refuses_non_integers_naming_the_text(text):
    with pytest.raises(argparse.ArgumentTypeError, match=re.escape(repr(text))):
        parse_int(text)


@pytest.mark.parametrize("text, value", [("2.01k", 2010), ("4.02M", 4_020_000), ("4.03k", 4030)])
def test_parse_int_decimal_with_suffix_is_exact(text, value):
    assert parse_int(text) == value


@pytest.mark.parametrize("text", ["1e400", "infk"])
def test_parse_int_overflow_is_a_usage_error(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_int(text)


def test_none_sets_optional_fields_only(capsys):
    assert parse(["--limit", "none"]).limit is None
    assert parse(["--limit", "NONE"]).limit is None
    with pytest.raises(SystemExit):
        parse(["--steps", "none"])  # steps is a plain int
    assert "--steps" in capsys.readouterr().err


def test_literal_fields_become_choices(capsys):
    with pytest.raises(SystemExit):
        parse(["--mode", "medium"])
    err = capsys.readouterr().err
    assert "medium" in err and "'fast'" in err and "'slow'" in err


def test_exclude_and_default_overrides():
    parser = argparse.ArgumentParser()
    add_arguments(parser, Demo, exclude=("name",), defaults={"steps": 7})
    args = parser.parse_args([])
    assert not hasattr(args, "name")
    assert from_args(Demo, args) == Demo(steps=7)
    assert from_args(Demo, args, name="given") == Demo(steps=7, name="given")


def test_shipped_configs_round_trip_through_their_flags():
    parser = argparse.ArgumentParser()
    add_arguments(parser, TrainConfig)
    assert from_args(TrainConfig, parser.parse_args([])) == TrainConfig()
    args = parser.parse_args(
        ["--total-tokens", "5M", "--lr", "1e-3", "--no-normalize-activations", "--b-dec-init", "mean"]
    )
    assert from_args(TrainConfig, args) == TrainConfig(
        total_tokens=5_000_000, lr=1e-3, normalize_activations=False, b_dec_init="mean"
    )


def test_help_shows_each_fields_docstring():
    parser = argparse.ArgumentParser(formatter_class=HelpFormatter)
    add_arguments(parser, Demo)
    text = squash(parser.format_help())
    for name, doc in field_docs(Demo).items():
        assert doc in text, name


# ---- JSON ------------------------------------------------------------------------------------


def test_to_dict_from_dict_round_trip():
    cfg = Demo(steps=3, limit=None, shape=(7, 8))
    data = to_dict(cfg)
    assert data["shape"] == (7, 8)
    data["shape"] = [7, 8]  # what json.loads gives back
    assert from_dict(Demo, data) == cfg


def test_from_dict_refuses_unknown_keys_naming_them():
    with pytest.raises(ConfigError, match=r"my\.json.*unknown key\(s\) \['bogus', 'typo_rate'\]"):
        from_dict(Demo, {"steps": 1, "bogus": 2, "typo_rate": 3}, source="my.json")


def test_from_dict_refuses_missing_required_keys_naming_them():
    data = to_dict(SAEConfig(arch="relu", d_in=4, d_sae=8))
    del data["d_in"], data["d_sae"]
    with pytest.raises(ConfigError, match=r"missing required key\(s\) \['d_in', 'd_sae'\]"):
        from_dict(SAEConfig, data)


def test_from_dict_accepts_missing_optional_keys():
    assert from_dict(Demo, {"steps": 5}) == Demo(steps=5)


def test_from_dict_wraps_invalid_values_and_non_objects():
    with pytest.raises(ConfigError, match=r"cfg\.json: .*batch_size must be >= 1, got 0"):
        from_dict(TrainConfig, {"batch_size": 0}, source="cfg.json")
    with pytest.raises(ConfigError, match="expected a JSON object, got list"):
        from_dict(Demo, [1, 2])


# ---- HelpFormatter ---------------------------------------------------------------------------


def help_line(parser: argparse.ArgumentParser, flag: str) -> str:
    """The help line of `flag` (formatted wide, so that each option's help is one line)."""
    parser.formatter_class = lambda prog: HelpFormatter(prog, width=10_000, max_help_position=10_000)
    lines = [line.strip() for line in parser.format_help().splitlines() if line.strip().startswith(flag)]
    assert len(lines) == 1, lines
    return lines[0]


def test_help_formatter_shows_defaults_but_not_none_or_off_switches():
    parser = argparse.ArgumentParser(formatter_class=HelpFormatter)
    parser.add_argument("--alpha", type=int, default=5, help="alpha value")
    parser.add_argument("--beta", type=int, default=None, help="beta value")
    parser.add_argument("--gamma", action="store_true", help="gamma switch")
    parser.add_argument("--delta", default="text", help="delta value")
    assert "(default: 5)" in help_line(parser, "--alpha")
    assert "(default" not in help_line(parser, "--beta")
    assert "(default" not in help_line(parser, "--gamma")
    assert "(default: text)" in help_line(parser, "--delta")


def test_flags_from_add_arguments_show_their_default_once():
    parser = argparse.ArgumentParser(formatter_class=HelpFormatter)
    add_arguments(parser, Demo)
    assert help_line(parser, "--steps").count("(default: 4096)") == 1
    assert help_line(parser, "--width").count("(default: 8)") == 1
    assert help_line(parser, "--check, --no-check").count("(default: True)") == 1
    assert "(default" not in help_line(parser, "--limit")


def test_help_formatter_shows_a_zero_default():
    parser = argparse.ArgumentParser(formatter_class=HelpFormatter)
    parser.add_argument("--zeta", type=int, default=0, help="zeta value")
    assert "(default: 0)" in help_line(parser, "--zeta")
