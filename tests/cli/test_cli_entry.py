"""On a terminal a command names itself before the heavy imports (cli/entry.py: torch and the package
take seconds) and erases that line when its own output begins; off a terminal nothing changes (the
one-error-line tests run without one)."""

import os
import pty
import re
import subprocess
import sys

import pytest

from monosemantic.cli.entry import ERASE, command_of

EARLY = "convert: starting (loading torch and the package) ..."


@pytest.mark.parametrize(
    "argv, command",
    [
        (["ablate", "runs/demo", "--features", "35"], "ablate"),
        (["--threads", "1", "analyze", "runs/demo"], "analyze"),
        (["-v", "mathlm", "eval", "--model", "m"], "mathlm eval"),
        (["--threads", "2", "bench", "toy"], "bench toy"),
        (["-q", "ablate", "runs/demo"], None),
        (["ablate", "--help"], None),
        (["--version"], None),
        ([], None),
    ],
)
def test_the_command_a_command_line_runs(argv, command):
    assert command_of(argv) == command


def on_a_terminal(*argv: str) -> str:
    """stderr of `python ARGV` written to a pseudo-terminal, as it arrived."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, *argv], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    proc.wait(timeout=120)
    return b"".join(chunks).decode()


@pytest.mark.process
def test_on_a_terminal_the_command_names_itself_before_torch_is_imported(tmp_path):
    # -X importtime writes a line to stderr as each module finishes importing: the order on the
    # terminal is the order things happened
    argv = [
        "-X",
        "importtime",
        "-m",
        "monosemantic",
        "convert",
        str(tmp_path / "missing"),
        "--out",
        str(tmp_path / "o"),
    ]
    err = on_a_terminal(*argv)
    assert EARLY in err
    first_torch = re.search(r"import time:[^\n]*\|\s+torch\b", err)  # the first torch module imported
    assert first_torch is not None and err.index(EARLY) < first_torch.start()
    before, erased, after = err.partition(ERASE)
    assert erased and EARLY in before and EARLY not in after
    assert "error: " in after and "missing" in after  # the command's own output, after the erase


@pytest.mark.process
def test_quiet_and_version_write_no_early_line(tmp_path):
    assert on_a_terminal("-m", "monosemantic", "--version").strip() == ""  # the version goes to stdout
    quiet = on_a_terminal(
        "-m", "monosemantic", "-q", "convert", str(tmp_path / "missing"), "--out", str(tmp_path / "o")
    )
    assert "starting" not in quiet and ERASE not in quiet and quiet.strip().startswith("error: ")
