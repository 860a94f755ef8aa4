"""Real dashboard servers for the tests, on 127.0.0.1 and a free port: uvicorn in a thread of the test
process (`running`), or `monosemantic view` as its own process (`view_process`)."""

import contextlib
import signal
import subprocess
import sys
import threading
import time

from monosemantic.dashboard import bind, server, url_of


@contextlib.contextmanager
def running(app, **settings):
    """Yields the server's URL ("http://127.0.0.1:PORT/"); stops it on exit. The server is the one
    `monosemantic view` runs (`settings`: its request deadline and connection cap, if not the defaults)."""
    sock = bind("127.0.0.1", 0)
    uv = server(app, **settings)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not uv.started:
        assert thread.is_alive() and time.time() < deadline, "the dashboard server did not start"
        time.sleep(0.01)
    try:
        yield url_of(sock)
    finally:
        uv.should_exit = True
        thread.join(timeout=10)
        sock.close()


@contextlib.contextmanager
def view_process(run, *args):
    """`monosemantic view RUN --port 0` as its own process; yields the URL it prints."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "monosemantic", "--threads", "1", "view", str(run), "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # it prints "loading ...", then "dashboard of RUN: http://127.0.0.1:PORT/  (Ctrl-C to stop)"
        url = next((line.split()[-4] for line in proc.stdout if "http://" in line), None)
        assert url and url.startswith("http://127.0.0.1:"), proc.stderr.read() if proc.poll() is not None else url
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode in (0, -signal.SIGTERM)
