"""Long commands say what they do before they do it (issue 21: `mathlm eval` and `ablate` printed
nothing for minutes): the real CLI, in a subprocess, on the tiny analysed run. stdout and stderr share
one pipe, so the order of what arrives is the order it was written: the command's first line and its
progress bar must come before its result. No timing: only the order."""

import os
import re
import shutil
import subprocess
import sys

import pytest

from monosemantic.analysis.store import FeatureStore

pytestmark = pytest.mark.process


def merged_output(*argv: str) -> str:
    """Everything the command writes to stdout and stderr, in the order written (read as it comes)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "monosemantic", "--threads", "1", *argv]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    chunks = []
    while chunk := proc.stdout.read1(4096):  # incrementally, as the process writes
        chunks.append(chunk)
    assert proc.wait(timeout=300) == 0, b"".join(chunks).decode()
    return b"".join(chunks).decode()


def assert_in_order(out: str, *patterns: str) -> None:
    """Each regex first matches after the previous one's first match; the first matches at the start."""
    at = 0
    for k, pattern in enumerate(patterns):
        m = re.compile(pattern).search(out, at)
        assert m is not None, f"{pattern!r} not found after position {at} in:\n{out}"
        assert k > 0 or m.start() == 0, f"the output starts with {out[: m.start()]!r}, not {pattern!r}"
        at = m.end()


@pytest.fixture
def run_copy(analysed_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(analysed_run, out)
    return out


def live_latent(run) -> int:
    store = FeatureStore.open(run)
    try:
        return store.list(order="density", limit=1)[0].index
    finally:
        store.close()


@pytest.mark.slow  # it reads the whole held-out stream (400k documents) for its rare categories: about a minute
def test_mathlm_eval_says_what_it_loads_then_shows_a_bar_before_the_table(tiny_model_dirs, tmp_path):
    scores = tmp_path / "scores.json"
    argv = ["mathlm", "eval", "--model", str(tiny_model_dirs["gpt2"]), "--per-category", "2", "--json", str(scores)]
    out = merged_output(*argv)
    loading, choosing = r"mathlm eval: loading the model ", r"choosing 2 distinct"
    assert_in_order(out, loading, choosing, r"choosing problems:\s+\d+%", r"decoding:\s+\d+%", r"category")
    assert scores.exists()


def test_ablate_shows_its_bar_before_the_clean_run_and_the_table(run_copy):
    latent = live_latent(run_copy)
    out = merged_output("ablate", str(run_copy), "--features", str(latent), "--n", "4", "--controls", "1")
    # 1 clean run + 2 sites x (features + 1 control)
    assert_in_order(out, r"ablate: loading the feature store", r"ablate:\s+0%.*\| 0/5", r"5/5", r"wrote ")


def test_steer_shows_a_bar_and_prints_the_unsteered_continuation_once(run_copy):
    latent = live_latent(run_copy)
    argv = ["steer", str(run_copy), "--feature", str(latent), "--alpha=-2..4", "--steps", "2", "--n", "4"]
    out = merged_output(*argv, "--generate", "1 + 2 = ", "--max-new", "3")
    assert_in_order(out, r"steer: loading the feature store", r"steer:\s+\d+%", r"wrote ", r"generating from ")
    assert out.count("without steering") == 1 and "alpha = -2:" in out and "alpha = 4:" in out
