"""The bad-input test set's one way to run the CLI as a real process and judge its failure.

Every bad-input test calls `run_cli` (a real `monosemantic` process) and `assert_one_error`: exit status
2, stderr exactly one `error:` line naming what the test expects, no traceback (after the command's own
first line, which says what it loads: monosemantic/cli/progress.py, when it is not run with -q). When
`MONOSEMANTIC_BAD_INPUT_LOG` names a directory, each run's stderr is also written there, so that
`grep -rn Traceback DIR` over the whole set can be checked by hand or in CI.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

from monosemantic.cli.progress import STARTING

SCRIPT = Path(sys.executable).parent / "monosemantic"


def run_cli(
    *argv: str, timeout: float = 120, cwd: Path | None = None, prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    """Run `monosemantic ARGV` in a fresh process (one thread, offline) and keep its stderr in the log;
    `prefix`: a command that runs it under limits (`prlimit --fsize=N --`, `setpriv ... --`)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [*prefix, str(SCRIPT), *argv]
    run = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)
    log = os.environ.get("MONOSEMANTIC_BAD_INPUT_LOG")
    if log:
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", os.environ.get("PYTEST_CURRENT_TEST", "run").split(" ")[0])
        Path(log).mkdir(parents=True, exist_ok=True)
        with open(Path(log) / f"{name}.stderr", "a") as f:
            f.write(run.stderr)
    return run


def assert_one_error(run: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit status 2 and one `error:` line on stderr that contains every needle; returns that line."""
    assert "Traceback" not in run.stderr, run.stderr
    lines = without_first_line(run.stderr.strip().splitlines())
    assert run.returncode == 2, (run.returncode, run.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def without_first_line(lines: list[str]) -> list[str]:
    """`lines` without the command's own first line (one of `STARTING`'s, filled in), where it has one."""
    patterns = [".+".join(map(re.escape, re.split(r"\{[a-z_]+\}", line))) for line in STARTING.values()]
    if lines and any(re.fullmatch(p, lines[0]) for p in patterns):
        return lines[1:]
    return lines
