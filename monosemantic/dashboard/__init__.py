"""The dashboard: a local web app over one run directory (`monosemantic view RUN_DIR`).

service.py        what it can do, as plain Python over the library (limits, locks; no maths, no HTTP)
api.py            the JSON API under /api
pages.py          server-rendered pages: text view, search, playground, run overview
feature_page.py   the feature page and the document page an example traces back to
html.py, svg.py   HTML building blocks; histograms and curves as inline SVG
guard.py          Host-header allowlist, request-body limit, security headers
app.py            the FastAPI app and its listening socket
graphs.py         the graph view of a transcoder set: its attribution graphs, interventions, trace
graph_app.py      the graph view's app, pages and API (`view` serves it for a transcoder set)
server.py         serving it with uvicorn: a deadline per request, a cap on open connections
static/           the pages' scripts and stylesheet (vanilla JS, no build step, nothing fetched from elsewhere)
"""

from monosemantic.dashboard.app import allowed_hosts, bind, create_app, is_loopback, url_of
from monosemantic.dashboard.server import serve, server
from monosemantic.dashboard.service import Dashboard, Limits

__all__ = ["Dashboard", "Limits", "allowed_hosts", "bind", "create_app", "is_loopback", "serve", "server", "url_of"]
