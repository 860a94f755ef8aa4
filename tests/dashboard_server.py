"""A real uvicorn server for the dashboard tests, in a thread of the test process, on 127.0.0.1 and a
free port."""

import contextlib
import threading
import time

import uvicorn

from monosemantic.dashboard import bind, url_of


@contextlib.contextmanager
def running(app):
    """Yields the server's URL ("http://127.0.0.1:PORT/"); stops it on exit."""
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert thread.is_alive() and time.time() < deadline, "the dashboard server did not start"
        time.sleep(0.01)
    try:
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
