"""What long commands say before their progress bars, and `inspect` on a text longer than the model's
context (it was cut silently, after a transformers warning about "indexing errors")."""

import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.process


def test_eval_says_what_it_loads_before_anything_else(analysed_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(analysed_run, run)
    done = subprocess.run(
        [sys.executable, "-m", "monosemantic", "--threads", "1", "eval", str(run), "--max-tokens", "500"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[0] == f"loading the model, the SAE and the corpus of {run} ..."


def test_inspect_refuses_a_text_longer_than_the_context_without_the_transformers_warning(analysed_run):
    text = "12 + 7 = 19. " * 300
    done = subprocess.run(
        [sys.executable, "-m", "monosemantic", "--threads", "1", "inspect", str(analysed_run), text],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "tokens; the model reads at most" in done.stderr and "inspect a shorter text" in done.stderr
    assert "indexing errors" not in done.stderr
