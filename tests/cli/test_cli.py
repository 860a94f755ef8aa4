"""Tests of the command line (monosemantic.cli.main), in-process through `main([...])` and, for a few cases, as
a real subprocess: --help everywhere, train-tensors and its run directory, eval, bench toy, and user
errors that must exit with code 2, print one `error:` line naming the bad value and change nothing."""

import argparse
import dataclasses
import hashlib
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from bad_input import without_first_line

import monosemantic
import monosemantic.cli.main
from monosemantic.cli.main import activation_batches, build_parser, main
from monosemantic.errors import MonosemanticError
from monosemantic.eval.metrics import evaluate
from monosemantic.eval.toy import ToyConfig, ToyData
from monosemantic.sae import SAE

D = 16
RAW_SCALE = 50.0  # raw activations far from unit scale, so that an SAE without the folded scale would fail
TRAIN = [
    "--arch",
    "topk",
    "--k",
    "4",
    "--expansion-factor",
    "2",
    "--batch-size",
    "256",
    "--total-tokens",
    "60k",
    "--checkpoint-every",
    "100",
    "--dead-window",
    "20k",
]


def toy_acts(n: int, index: int = 0, d: int = D) -> np.ndarray:
    # an offset far from the origin as well, so that the biases (b_dec: their geometric median) matter
    return (RAW_SCALE * (ToyData(ToyConfig(d=d, n_features=2 * d, avg_active=2)).sample(n, index) + 0.5)).numpy()


def snapshot(root: Path) -> dict[str, str]:
    """Every path under root, with a hash of each file's bytes."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(root.rglob("*"))
    }


def assert_one_error_line(err: str, *needles: str) -> None:
    lines = without_first_line(err.strip().splitlines())
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, err)


pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def acts(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "acts.npy"
    np.save(path, toy_acts(4000))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, acts) -> Path:
    """One finished run; tests that change a run work on a copy (`run_copy`)."""
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(["-q", "train-tensors", str(acts), "--out", str(out), *TRAIN]) == 0
    return out


@pytest.fixture
def run_copy(trained, tmp_path) -> Path:
    return Path(shutil.copytree(trained, tmp_path / "run"))


# ---- help ------------------------------------------------------------------------------------


def parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(argv prefix, parser) for the top-level parser and every subcommand, recursively."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from parsers(sub, path + (name,))


ALL_PARSERS = [path for path, _ in parsers(build_parser())]


def test_the_expected_subcommands_exist():
    assert {(), ("train-tensors",), ("eval",), ("bench",), ("bench", "toy")} <= set(ALL_PARSERS)


@pytest.mark.parametrize("path", ALL_PARSERS, ids=lambda p: " ".join(p) or "top")
def test_help_works_and_lists_every_option(path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*path, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: monosemantic" + "".join(" " + p for p in path))
    parser = dict(parsers(build_parser()))[path]
    for action in parser._actions:
        for flag in action.option_strings:
            assert flag in out


@pytest.mark.parametrize("path", ALL_PARSERS, ids=lambda p: " ".join(p) or "top")
def test_every_option_subcommand_and_positional_has_help(path):
    parser = dict(parsers(build_parser()))[path]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:  # the one-line help of each subcommand
                assert choice.help and choice.help.strip(), f"{path} {choice.dest}"
            continue
        name = "/".join(action.option_strings) or action.dest
        assert action.help and action.help != argparse.SUPPRESS and action.help.strip(), f"{path}: {name}"
        assert action.help.strip() != "(default: %(default)s)", f"{path}: {name} has only a default"


@pytest.mark.process
def test_help_and_version_as_real_processes():
    exe = Path(sys.executable)
    run = subprocess.run([exe, "-m", "monosemantic", "--version"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.strip() == f"monosemantic {monosemantic.__version__}"
    script = exe.parent / "monosemantic"
    run = subprocess.run([script, "train-tensors", "--help"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "--total-tokens" in run.stdout and run.stderr == ""


# ---- train-tensors ---------------------------------------------------------------------------


def test_train_tensors_writes_a_complete_run_directory(trained, acts):
    assert sorted(p.name for p in trained.iterdir()) == [
        "cfg.json",
        "checkpoints",
        "metrics.jsonl",
        "plots",
        "run.lock",  # which process writes the run, while one does
        "sae.safetensors",
        "timing.json",  # where the training's time went
        "train_config.json",
    ]
    assert (trained / "plots" / "training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    steps = 60_000 // 256
    assert sorted(p.name for p in (trained / "checkpoints").iterdir()) == [f"step_{200:09d}", f"step_{steps:09d}"]
    saved = json.loads((trained / "train_config.json").read_text())
    assert saved["sae"]["arch"] == "topk" and saved["sae"]["k"] == 4
    assert saved["sae"]["d_in"] == D and saved["sae"]["d_sae"] == 2 * D
    assert saved["train"]["total_tokens"] == 60_000 and saved["train"]["dead_window"] == 20_000
    assert saved["data"] == {"path": str(acts.resolve()), "key": None, "shape": [4000, D]}
    rows = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(20, steps, 20)) + [steps]


def test_saved_sae_takes_raw_activations(trained, acts):
    sae = SAE.load(trained)
    x = torch.from_numpy(np.load(acts)).double()
    with torch.no_grad():
        x_hat = sae(x.float()).x_hat.double()
    fvu_by_hand = ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    reported = evaluate(sae, activation_batches([str(acts)], None, D, 4096))
    assert fvu_by_hand.item() == pytest.approx(reported.fvu, rel=1e-5)
    # the training log's FVU was measured on one normalised batch of 256; FVU is scale-free, so the raw
    # data must give about the same number (margin for batch-to-batch spread; without the scale folded
    # into the biases the FVU here is ~4)
    last = json.loads((trained / "metrics.jsonl").read_text().splitlines()[-1])
    assert fvu_by_hand.item() == pytest.approx(last["fvu"], abs=0.05)
    # the scale folded in: E||x * scale|| = sqrt(d_in), estimated from the first batches (~all rows)
    expected_scale = math.sqrt(D) / x.norm(dim=1).mean().item()
    assert sae.cfg.activation_scale == pytest.approx(expected_scale, rel=0.01)


@pytest.mark.process
def test_a_real_training_process(tmp_path, acts):
    out = tmp_path / "run"
    argv = [
        "-q",
        "--threads",
        "1",
        "train-tensors",
        str(acts),
        "--out",
        str(out),
        "--arch",
        "relu",
        "--expansion-factor",
        "2",
        "--batch-size",
        "256",
        "--total-tokens",
        "20k",
    ]
    run = subprocess.run([sys.executable, "-m", "monosemantic", *argv], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert f"saved relu SAE (d_in={D}, d_sae={2 * D})" in run.stdout
    assert SAE.load(out).cfg.arch == "relu"


def test_resume_of_a_finished_run_changes_nothing(run_copy, capsys):
    before = snapshot(run_copy)
    assert main(["-q", "train-tensors", "--out", str(run_copy), "--resume"]) == 0
    assert snapshot(run_copy) == before
    assert "saved topk SAE" in capsys.readouterr().out


# ---- eval ------------------------------------------------------------------------------------


def test_eval_prints_and_writes_the_metrics_of_evaluate(run_copy, acts, capsys):
    assert main(["eval", str(run_copy), str(acts)]) == 0
    out = capsys.readouterr().out
    written = json.loads((run_copy / "eval.json").read_text())
    direct = evaluate(SAE.load(run_copy), torch.from_numpy(np.load(acts)).split(4096))
    assert written == {"data": [str(acts.resolve())], "metrics": json.loads(json.dumps(direct.to_dict()))}
    printed = dict(re.split(r"\s{2,}", line.strip()) for line in out.strip().splitlines())
    assert printed["tokens"] == "4000"
    assert printed["FVU"] == f"{direct.fvu:.4f}" and printed["L0"] == f"{direct.l0:.2f}"
    assert printed["normalised MSE"] == f"{direct.normalized_mse:.4f}"


def test_eval_of_several_files_with_a_token_limit(run_copy, acts, tmp_path):
    other = tmp_path / "other.npy"
    np.save(other, toy_acts(1000, index=1))
    assert main(["eval", str(run_copy), str(acts), str(other), "--batch-size", "300"]) == 0
    assert json.loads((run_copy / "eval.json").read_text())["metrics"]["n_tokens"] == 5000
    assert main(["eval", str(run_copy), str(acts), str(other), "--max-tokens", "4.5k", "--batch-size", "1000"]) == 0
    written = json.loads((run_copy / "eval.json").read_text())
    both = np.concatenate([np.load(acts), np.load(other)])[:4500]
    direct = evaluate(SAE.load(run_copy), [torch.from_numpy(both)])
    assert written["metrics"]["n_tokens"] == 4500
    assert written["metrics"]["fvu"] == pytest.approx(direct.fvu, rel=1e-9)
    assert written["metrics"]["l0"] == pytest.approx(direct.l0, rel=1e-12)


# ---- bench -----------------------------------------------------------------------------------


def test_bench_toy_prints_a_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "out.json"
    assert (
        main(
            [
                "-q",
                "bench",
                "toy",
                "--archs",
                "topk",
                "--d",
                "16",
                "--n-features",
                "32",
                "--avg-active",
                "2",
                "--tokens",
                "100k",
                "--batch-size",
                "256",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    written = json.loads(out.read_text())
    assert written["toy"] == dataclasses.asdict(ToyConfig(d=16, n_features=32, avg_active=2))
    [result] = written["results"]
    assert result["arch"] == "topk" and result["d_sae"] == 64 and result["k"] == 2
    assert 0 < result["mmcs"] <= 1 and 0 <= result["fvu"] < 1
    [row] = [line.split() for line in text.splitlines() if line.startswith("topk ")]
    assert row[:6] == ["topk", "64", "2", f"{result['mmcs']:.3f}", f"{result['fvu']:.3f}", f"{result['l0']:.2f}"]


# ---- errors: exit 2, one `error:` line naming the bad value, nothing changed -----------------


def test_nan_in_the_activations(tmp_path, capsys):
    x = toy_acts(500)
    x[321, 3] = np.nan
    np.save(tmp_path / "bad.npy", x)
    before = snapshot(tmp_path)
    assert main(["-q", "train-tensors", str(tmp_path / "bad.npy"), "--out", str(tmp_path / "run"), *TRAIN]) == 2
    assert_one_error_line(capsys.readouterr().err, "bad.npy", "row 321", "NaN")
    assert snapshot(tmp_path) == before


def test_k_larger_than_d_sae(tmp_path, acts, capsys):
    argv = ["-q", "train-tensors", str(acts), "--out", str(tmp_path / "run"), "--expansion-factor", "2", "--k", "40"]
    before = snapshot(tmp_path)
    assert main(argv) == 2
    assert_one_error_line(capsys.readouterr().err, "k=40", f"d_sae={2 * D}")
    assert snapshot(tmp_path) == before  # no run directory


def test_existing_out_without_resume(tmp_path, acts, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    assert main(["-q", "train-tensors", str(acts), "--out", str(out), *TRAIN]) == 2
    assert_one_error_line(capsys.readouterr().err, str(out), "--resume")
    assert snapshot(tmp_path) == before


def test_eval_with_activations_of_the_wrong_width(run_copy, tmp_path, capsys):
    np.save(tmp_path / "narrow.npy", toy_acts(300, d=8))
    before = snapshot(tmp_path)
    assert main(["eval", str(run_copy), str(tmp_path / "narrow.npy")]) == 2
    assert_one_error_line(capsys.readouterr().err, "narrow.npy", "width 8", f"d_in={D}")
    assert snapshot(tmp_path) == before
    assert not (run_copy / "eval.json").exists()


@pytest.mark.parametrize("recorded_sha", [True, False])
def test_eval_on_a_truncated_sae(run_copy, acts, tmp_path, capsys, recorded_sha):
    weights = run_copy / "sae.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    if not recorded_sha:  # e.g. an SAE saved by another tool: only the file format can tell
        cfg = json.loads((run_copy / "cfg.json").read_text())
        del cfg["sha256"]
        (run_copy / "cfg.json").write_text(json.dumps(cfg))
    before = snapshot(tmp_path)
    assert main(["eval", str(run_copy), str(acts)]) == 2
    assert_one_error_line(capsys.readouterr().err, str(weights), "sha256" if recorded_sha else "truncated")
    assert snapshot(tmp_path) == before


def test_resume_without_checkpoints(run_copy, tmp_path, capsys):
    shutil.rmtree(run_copy / "checkpoints")
    (run_copy / "checkpoints").mkdir()  # killed before the first checkpoint
    before = snapshot(tmp_path)
    assert main(["-q", "train-tensors", "--out", str(run_copy), "--resume"]) == 2
    assert_one_error_line(capsys.readouterr().err, str(run_copy), "no checkpoint to resume from")
    assert snapshot(tmp_path) == before


def test_resume_with_activations_of_another_shape(run_copy, tmp_path, capsys):
    np.save(tmp_path / "other.npy", toy_acts(1000))
    before = snapshot(tmp_path)
    assert main(["-q", "train-tensors", str(tmp_path / "other.npy"), "--out", str(run_copy), "--resume"]) == 2
    assert_one_error_line(capsys.readouterr().err, "other.npy", f"[1000, {D}]", f"[4000, {D}]")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("kind", ["empty", "missing"])
def test_resume_of_something_that_is_not_a_run(tmp_path, capsys, kind):
    out = tmp_path / "run"
    if kind == "empty":
        out.mkdir()
    before = snapshot(tmp_path)
    assert main(["-q", "train-tensors", "--out", str(out), "--resume"]) == 2
    assert_one_error_line(capsys.readouterr().err, str(out), "train_config.json is missing")
    assert snapshot(tmp_path) == before


@pytest.mark.process
def test_errors_from_a_real_process_have_no_traceback(tmp_path):
    x = toy_acts(300)
    x[7, 0] = np.inf
    np.save(tmp_path / "bad.npy", x)
    script = Path(sys.executable).parent / "monosemantic"
    run = subprocess.run(
        [script, "-q", "train-tensors", str(tmp_path / "bad.npy"), "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert_one_error_line(run.stderr, "row 7", "inf")
    assert not (tmp_path / "run").exists()


def test_any_error_of_ours_is_one_error_line(monkeypatch, capsys):
    class SomeNewError(MonosemanticError):
        pass

    def cmd_convert(args):
        """Convert (failing)."""
        raise SomeNewError("the bad value is 7")

    monkeypatch.setattr(monosemantic.cli.main, "cmd_convert", cmd_convert)
    assert main(["convert", "src", "--out", "dst"]) == 2
    assert_one_error_line(capsys.readouterr().err, "the bad value is 7")


def test_an_os_error_is_one_error_line(tmp_path, acts, capsys):
    (tmp_path / "a_file").write_text("")
    assert main(["-q", "train-tensors", str(acts), "--out", str(tmp_path / "a_file" / "run"), *TRAIN]) == 2
    assert_one_error_line(capsys.readouterr().err, "a_file")


def test_fewer_rows_than_one_batch_creates_no_run(tmp_path, capsys):
    np.save(tmp_path / "few.npy", toy_acts(100))
    argv = ["-q", "train-tensors", str(tmp_path / "few.npy"), "--out", str(tmp_path / "run"), *TRAIN]
    assert main(argv) == 2
    assert_one_error_line(capsys.readouterr().err, "only 100 activation vectors")
    assert not (tmp_path / "run").exists()


def test_invalid_device_is_a_user_error(tmp_path, acts, capsys):
    argv = ["-q", "train-tensors", str(acts), "--out", str(tmp_path / "run"), *TRAIN, "--device", "gpu0"]
    assert main(argv) == 2
    assert_one_error_line(capsys.readouterr().err, "gpu0")
    assert not (tmp_path / "run").exists()


def test_eval_with_no_tokens_is_a_usage_error(run_copy, acts, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", str(run_copy), str(acts), "--max-tokens", "0"])
    assert exit_info.value.code == 2
    assert "--max-tokens/--tokens: expected a positive integer, got '0'" in capsys.readouterr().err
    assert not (run_copy / "eval.json").exists()


def test_resume_refuses_a_changed_training_flag(run_copy, capsys):
    before = snapshot(run_copy)
    assert main(["-q", "train-tensors", "--out", str(run_copy), "--resume", "--lr", "0.5", "--k", "7"]) == 2
    assert_one_error_line(capsys.readouterr().err, "--lr", "--k", "cannot change", "--checkpoint-every")
    assert snapshot(run_copy) == before


def test_resume_applies_an_operational_flag(tmp_path, acts, interrupted_training):
    run = tmp_path / "run"
    interrupted_training(["-q", "train-tensors", str(acts), "--out", str(run), *TRAIN])  # after step 100
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step_000000100"]
    assert main(["-q", "train-tensors", "--out", str(run), "--resume", "--keep-checkpoints", "1"]) == 0
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step_000000234"]  # 60k // 256 steps
