"""Serving the dashboard with uvicorn, with two limits uvicorn lacks (it has no timeout on a request
that is still arriving, and no cap on open connections, only a 503 for requests over its concurrency
limit, which a connection that never finishes its headers does not reach):

- a deadline per request: its headers and body must arrive within REQUEST_SECONDS of the connection
  opening or of the previous response, or it gets 408 and the connection is closed (a client that
  sends a byte a second, or half a body, holds nothing for long);
- at most MAX_CONNECTIONS open connections: one more gets 503 and is closed at once, so stalled
  clients cannot use up the process's file descriptors.

Idle keep-alive connections close after KEEP_ALIVE_SECONDS, as uvicorn does by default.
"""

from __future__ import annotations

import json
import socket

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

REQUEST_SECONDS = 10.0
MAX_CONNECTIONS = 64
KEEP_ALIVE_SECONDS = 5


def _response(status: int, reason: str, message: str) -> bytes:
    body = json.dumps({"detail": message}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + body


class DeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol with the request deadline and the connection cap; `server` makes a
    subclass with its own numbers."""

    request_seconds = REQUEST_SECONDS
    max_connections = MAX_CONNECTIONS

    def connection_made(self, transport) -> None:
        super().connection_made(transport)  # counts this connection in self.connections
        self.deadline = None
        if len(self.connections) > self.max_connections:
            self._refuse(503, "Service Unavailable", f"over {self.max_connections} open connections; try again")
        else:
            self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request on this connection gets the same time

    def connection_lost(self, exc: Exception | None) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
        self.deadline = self.loop.call_later(self.request_seconds, self._expire)

    def _expire(self) -> None:
        # IDLE: no complete request line and headers yet; SEND_BODY: the body is still arriving. Once
        # the request is complete (DONE) the app has it, and the time it takes is not the client's.
        if self.conn.their_state in (h11.IDLE, h11.SEND_BODY) and not self.transport.is_closing():
            self._refuse(408, "Request Timeout", f"the request did not arrive within {self.request_seconds:g} s")

    def _refuse(self, status: int, reason: str, message: str) -> None:
        if self.cycle is None or not self.cycle.response_started:
            self.transport.write(_response(status, reason, message))
        self.transport.close()


def server(
    app, *, log_level: str = "warning", request_seconds: float = REQUEST_SECONDS, max_connections: int = MAX_CONNECTIONS
) -> uvicorn.Server:
    """A uvicorn server of `app` with the request deadline and the connection cap (`serve` runs it)."""
    protocol = type(
        "DashboardProtocol",
        (DeadlineProtocol,),
        {"request_seconds": request_seconds, "max_connections": max_connections},
    )
    config = uvicorn.Config(
        app,
        http=protocol,
        log_level=log_level,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=2,
    )
    return uvicorn.Server(config)


def serve(app, sock: socket.socket, *, log_level: str = "warning") -> None:
    """Serve `app` on `sock` until Ctrl-C, which is a clean stop: it returns (SIGTERM ends the process)."""
    try:
        server(app, log_level=log_level).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shuts down gracefully, then raises again the SIGINT it caught
        pass
