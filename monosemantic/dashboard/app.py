"""The FastAPI application over one run directory, and the socket it listens on (`server.py` serves it).

    app = create_app("runs/demo")                 # loads the feature store, the model and the SAE
    serve(app, bind("127.0.0.1", 8000))           # what `monosemantic view runs/demo` runs

Errors become JSON {"detail": message} with a 4xx status: 400 for a refused value (the message names
it and what was expected), 404 for a feature that does not exist or a document no stored example
comes from, 413 for a body over the limit, 422 for a request of the wrong shape (and from `server.py`,
408 for a request that does not arrive in time, 503 for a connection over the cap).
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from monosemantic.analysis.store import StoreError
from monosemantic.dashboard.api import api_router
from monosemantic.dashboard.guard import LOOPBACK, Guard
from monosemantic.dashboard.html import esc, page
from monosemantic.dashboard.pages import page_router
from monosemantic.dashboard.service import Dashboard, Limits, RequestError
from monosemantic.experiments.interventions import InterventionError
from monosemantic.runmodel import RunModelError

STATIC = Path(__file__).parent / "static"
WILDCARD = ("0.0.0.0", "::", "")


def _error(request: Request, status: int, message: str) -> Response:
    """JSON for the API; a page for a browser that followed a link."""
    if request.url.path.startswith("/api/") or "text/html" not in request.headers.get("accept", ""):
        return JSONResponse({"detail": message}, status_code=status)
    body = (
        f'<h1>{status}</h1><p class="error" id="error">{esc(message)}</p><p><a href="/">back to the text view</a></p>'
    )
    return HTMLResponse(
        page(f"Error {status}", body, name="error", run=request.app.state.dashboard.run_dir.name), status_code=status
    )


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for e in exc.errors():
        where = ".".join(str(p) for p in e["loc"] if p not in ("body", "query", "path"))
        parts.append(f"{where or 'request'}: {e['msg']} (got {e.get('input')!r:.80})")
    return "; ".join(parts)


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestError)
    async def refused(request: Request, exc: RequestError):
        return _error(request, exc.status, str(exc))

    @app.exception_handler(StoreError)
    async def store_error(request: Request, exc: StoreError):
        missing = any(s in str(exc) for s in ("does not exist", "not analysed yet", "is not in the corpus"))
        return _error(request, 404 if missing else 400, str(exc))

    @app.exception_handler(RunModelError)
    async def run_model_error(request: Request, exc: RunModelError):
        return _error(request, 400, str(exc))

    @app.exception_handler(InterventionError)
    async def intervention_error(request: Request, exc: InterventionError):
        return _error(request, 400, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return _error(request, 422, _validation_message(exc))


def allowed_hosts(host: str, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The Host-header names the dashboard answers to: loopback names, the bound address (unless a
    wildcard), and `extra`."""
    return tuple(dict.fromkeys([*LOOPBACK, *([] if host in WILDCARD else [host]), *extra]))


def create_app(
    run_dir: str | Path | Dashboard,
    *,
    hosts: tuple[str, ...] = LOOPBACK,
    device: str = "cpu",
    limits: Limits = Limits(),  # noqa: B008 (frozen, never mutated)
) -> FastAPI:
    """The dashboard's FastAPI app, its routes behind the `Guard` (host allowlist, body limit);
    `app.state.dashboard` is the `Dashboard` it serves."""
    dash = run_dir if isinstance(run_dir, Dashboard) else Dashboard(run_dir, device=device, limits=limits)
    app = FastAPI(title=f"monosemantic: {dash.run_dir.name}", docs_url=None, redoc_url=None, openapi_url=None)
    add_error_handlers(app)
    app.include_router(api_router(dash))
    app.include_router(page_router(dash))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(Guard, allowed_hosts=hosts, max_body=dash.limits.body_bytes)
    app.state.dashboard = dash
    return app


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: any free one), made before the server starts so its URL is known."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto given explicitly: asyncio turns Nagle's algorithm off (TCP_NODELAY) only on sockets whose
    # proto is IPPROTO_TCP; with proto 0 every response waited ~40 ms for a delayed ACK
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port} ({e.strerror}); choose another --port or --host") from e
    sock.listen(128)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if host in WILDCARD:
        host = "127.0.0.1"
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"
