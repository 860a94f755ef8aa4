"""The dashboard's outer layer, in front of every route (plain ASGI, so it acts before a body is read):

- Host-header allowlist: a page on another site that points its own domain name at 127.0.0.1 (DNS
  rebinding) is refused, since its requests carry that other name;
- request-body limit: 413 from the Content-Length header alone, or as soon as a streamed body
  passes the limit (the body is never read further), so a huge upload costs neither memory nor time;
- security headers: scripts only from the dashboard itself (no inline script runs), no framing.
"""

from __future__ import annotations

import json

LOOPBACK = ("127.0.0.1", "localhost", "::1")
HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        b"img-src 'self' data:; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]


def host_name(header: str) -> str:
    """'127.0.0.1:8000' -> '127.0.0.1', '[::1]:8000' -> '::1'."""
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


async def _refuse(send, status: int, message: str) -> None:
    body = json.dumps({"detail": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *HEADERS,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware: host allowlist, body limit, security headers."""

    def __init__(self, app, *, allowed_hosts: tuple[str, ...], max_body: int):
        self.app, self.allowed, self.max_body = app, {h.lower() for h in allowed_hosts}, max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = host_name(headers.get("host", "")).lower()
        if host not in self.allowed:
            return await _refuse(
                send,
                400,
                f"host {host!r} is not allowed; the dashboard answers to "
                f"{', '.join(sorted(self.allowed))} (add names with --allow-host)",
            )
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            if not length.isdigit():
                return await _refuse(send, 400, f"Content-Length {length!r} is not a number of bytes")
            return await _refuse(
                send, 413, f"request body of {length} bytes; the dashboard takes at most {self.max_body} bytes"
            )
        body = bytearray()
        while True:  # the body is read here, whole (it is small), so that the app never sees a partial one
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_body:
                return await _refuse(
                    send,
                    413,
                    f"request body over {self.max_body} bytes; the dashboard takes at most {self.max_body} bytes",
                )
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        async def with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *HEADERS]}
            await send(message)

        await self.app(scope, replay, with_headers)
