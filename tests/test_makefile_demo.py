"""`make demo` and `make view` as GNU make runs them, with `monosemantic` replaced by a script that logs
its arguments (the recipes are under test here, not the commands they run): the demo trains once and
then only serves; RETRAIN=1 trains anew; `make view` serves the demo run once it is finished."""

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.process


@pytest.fixture
def make(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    fake = bin_dir / "monosemantic"
    demo = tmp_path / "demo"
    fake.write_text(f'#!/bin/sh\necho "$1 $2" >> {log}\nif [ "$1" = train ]; then mkdir -p {demo}; fi\n')
    fake.chmod(0o755)
    stamp = tmp_path / "installed"
    stamp.touch()

    def run(*targets: str) -> list[str]:
        log.write_text("")
        args = ["make", "-s", "-C", str(ROOT), f"BIN={bin_dir}", f"STAMP={stamp}", f"DEMO_RUN={demo}"]
        done = subprocess.run([*args, *targets], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return log.read_text().splitlines()

    return run, demo


def test_demo_trains_once_then_serves_and_view_serves_the_finished_run(make):
    run, demo = make
    assert run("view") == ["view builtin"]  # no demo run yet: the shipped SAE
    assert run("demo") == ["train --model", f"eval {demo}", f"analyze {demo}", f"view {demo}"]
    assert run("demo") == [f"view {demo}"]  # the second time: no training
    assert run("view") == [f"view {demo}"]
    assert run("demo", "RETRAIN=1") == ["train --model", f"eval {demo}", f"analyze {demo}", f"view {demo}"]
