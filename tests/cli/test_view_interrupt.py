"""Ctrl-C on `monosemantic view` is how a user stops the dashboard: a clean stop, exit 0 (it was 130,
which `make view` reported as "Error 130")."""

import signal
import subprocess
import sys

import httpx
import pytest

pytestmark = pytest.mark.process


def test_ctrl_c_stops_the_dashboard_with_exit_0(analysed_run):
    proc = subprocess.Popen(
        [sys.executable, "-m", "monosemantic", "--threads", "1", "view", str(analysed_run), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = next(line.split()[-4] for line in proc.stdout if "http://" in line)
        assert httpx.get(url + "api/health", timeout=60).json()["ok"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()
