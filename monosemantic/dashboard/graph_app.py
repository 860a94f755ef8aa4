"""The dashboard of a transcoder set (`monosemantic view RUN` where RUN is a `train --transcoder
--hookpoint 'layers.*.mlp'` directory): its attribution graphs, drawn and intervened on (static/graph.js).

    GET  /                          trace a prompt ("trace this"), and the graphs so far
    GET  /graphs                    the graphs of RUN/graphs
    GET  /graph/{name}              one graph: layers by positions, hover, pin, supernodes, intervene
    GET  /feature/{layer}/{latent}  a transcoder feature: its analysis (if any), its nodes in the graphs
    GET  /api/graphs, /api/graph/{name}, /api/feature/{layer}/{latent}
    POST /api/graph/{name}/intervene {"edits": [{"layer", "pos", "latent", "value"}]}: logits before and after
    POST /api/trace                  {"prompt", "target"}: traces into RUN/graphs (one at a time) -> {"name", "url"}

The same Guard (host allowlist, body limit, security headers) and error handlers as `app.py`.
"""

from __future__ import annotations

import json
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from monosemantic.circuits.graph import describe_node
from monosemantic.dashboard.app import STATIC, add_error_handlers
from monosemantic.dashboard.graphs import GRAPHS_DIR, GraphLimits, GraphSet
from monosemantic.dashboard.guard import LOOPBACK, Guard
from monosemantic.dashboard.html import esc, num, page, table, visible
from monosemantic.sae.config import TRANSCODER_ARCHS
from monosemantic.train.rundir import PARENT_FILE

NAV = (("/", "Trace"), ("/graphs", "Graphs"))


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Edit(_Request):
    layer: int
    pos: int
    latent: int
    value: float = Field(allow_inf_nan=False)


class InterveneRequest(_Request):
    edits: list[Edit]


class TraceRequest(_Request):
    prompt: str
    target: str | None = None


def is_transcoder_set(run_dir: str | Path) -> bool:
    """Whether `run_dir` holds one transcoder per MLP (`train --transcoder --hookpoint 'layers.*.mlp'`)."""
    try:
        saved = json.loads((Path(run_dir) / PARENT_FILE).read_text())
        return saved.get("sae_options", {}).get("arch") in TRANSCODER_ARCHS
    except (OSError, ValueError, AttributeError):
        return False


def _page(graphs: GraphSet, title: str, body: str, name: str, **kw) -> str:
    return page(title, body, name=name, run=graphs.run_dir.name, nav=NAV, **kw)


def graphs_table(rows: list[dict]) -> str:
    if not rows:
        return f'<p class="muted">no graphs in {GRAPHS_DIR}/ yet: trace a prompt above</p>'
    cells = [
        [
            f'<a href="/graph/{esc(r["name"])}">{esc(r["name"])}</a>',
            f"<code>{esc(visible(r.get('prompt', '')))}</code>",
            esc(r.get("target", "")),
            esc(r["counts"]["kept_nodes"]) if "counts" in r else esc(r.get("problem", "")),
            esc(r["counts"]["kept_edges"]) if "counts" in r else "",
            num(r["scores"]["replacement"]) if "scores" in r else "",
            num(r["scores"]["completeness"]) if "scores" in r else "",
        ]
        for r in rows
    ]
    head = ["graph", "prompt", "target", "nodes", "edges", "replacement", "completeness"]
    return table(head, cells, "graphs")


def trace_page(graphs: GraphSet) -> str:
    body = (
        f'<h1>Trace</h1><p class="muted">The attribution graph of a prompt for its next token: active transcoder '
        f"features, error nodes, tokens and logits, and their direct effects (pruned as circuit-tracer prunes). "
        f"Up to {graphs.max_tokens} tokens; one trace at a time.</p>"
        f'<div class="controls"><textarea id="text" rows="2" placeholder="e.g. 47 + 35 = ">47 + 35 = </textarea>'
        f'<label>target <input id="target" size="6" placeholder="top"></label>'
        f'<button id="trace" class="primary">trace this</button><span id="status" class="muted"></span></div>'
        f"<h2>Graphs</h2>{graphs_table(graphs.names())}"
    )
    return _page(graphs, "Trace", body, "trace", scripts=("graph_trace.js",))


def graph_page(graphs: GraphSet, name: str) -> str:
    g = graphs.graph(name)  # 404 before the page is drawn
    s, c = g["scores"], g["counts"]
    body = (
        f"<h1>Graph {esc(name)}</h1><p><code>{esc(visible(g['prompt']))}</code> → <b>{esc(g['target']['token'])}</b> "
        f"(p = {num(g['target']['probability'])}); {c['kept_nodes']} of {c['nodes']} nodes, {c['kept_edges']} "
        f"edges; replacement {num(s['replacement'])}, completeness {num(s['completeness'])}.</p>"
        f'<p class="muted">Layers bottom to top, token positions left to right. Edges: width by |weight|, '
        f"blue positive, red negative. Hover a node for its label, activation and influence; click a feature "
        f"to open it; shift-click to pin (and select for interventions).</p>"
        f'<link rel="stylesheet" href="/static/graph.css">'
        f'<div class="graph-view"><div id="graph" class="graph"></div><aside>'
        f'<div id="node-info" class="info">hover a node</div>'
        f'<h2>Pinned</h2><ul id="pinned"></ul>'
        f'<div class="controls"><input id="group-name" placeholder="supernode name">'
        f'<button id="group">group as supernode</button></div><ul id="supernodes"></ul>'
        f'<h2>Intervene</h2><p class="muted">on the pinned features (supernodes: all their features), in the real '
        f"model with the transcoders spliced in and their errors kept.</p>"
        f'<div class="controls"><button id="ablate">ablate</button><input id="value" type="number" value="0" '
        f'step="any" size="6"><button id="steer">set value</button><span id="status" class="muted"></span></div>'
        f'<table id="logits" class="logits"></table></aside></div>'
    )
    return _page(graphs, f"Graph {name}", body, "graph", scripts=("graph.js",), data={"graph": name})


def feature_page(graphs: GraphSet, layer: int, latent: int) -> str:
    f = graphs.feature(layer, latent)
    a = f["analysed"]
    if a is None:
        about = (
            f'<p id="not-analysed" class="muted">Layer {layer}\'s transcoder is not analysed: run '
            f"<code>{esc(f['analyse'])}</code> for labels and top-activating examples.</p>"
        )
    else:
        examples = "".join(
            f"<li>{num(x['value'])}: <code>{esc(visible(''.join(x['tokens'])))}</code> "
            f"(on <b>{esc(visible(x['tokens'][x['active']]))}</b>)</li>"
            for x in a["top_examples"]
        )
        about = (
            f'<p id="feature-label">label: {esc(a["label"] or "–")} (precision {num(a["precision"])}); density '
            f"{num(a['density'])}, max activation {num(a['max_act'])}</p><h2>Top examples</h2><ol>{examples}</ol>"
        )
    rows = [
        [
            f'<a href="/graph/{esc(n["graph"])}">{esc(n["graph"])}</a>',
            esc(n["pos"]),
            f"<code>{esc(visible(str(n['token'])))}</code>",
            num(n["activation"]),
            num(n["influence"]),
        ]
        for n in f["nodes"]
    ]
    body = f"<h1>Layer {layer} feature {latent}</h1>{about}<h2>In the graphs</h2>" + (
        table(["graph", "position", "token", "activation", "influence"], rows, "nodes") if rows else "<p>none</p>"
    )
    return _page(graphs, f"L{layer} f{latent}", body, "feature")


def graph_router(graphs: GraphSet) -> APIRouter:
    r = APIRouter()

    @r.get("/", response_class=HTMLResponse)
    def home() -> str:
        return trace_page(graphs)

    @r.get("/graphs", response_class=HTMLResponse)
    def listing() -> str:
        return _page(graphs, "Graphs", f"<h1>Graphs</h1>{graphs_table(graphs.names())}", "graphs")

    @r.get("/graph/{name}", response_class=HTMLResponse)
    def graph(name: str) -> str:
        return graph_page(graphs, name)

    @r.get("/feature/{layer}/{latent}", response_class=HTMLResponse)
    def feature(layer: int, latent: int) -> str:
        return feature_page(graphs, layer, latent)

    @r.get("/api/health")
    def health() -> dict:
        return {"ok": True, "run": graphs.run_dir.name, "layers": graphs.n_layers}

    @r.get("/api/graphs")
    def names() -> list[dict]:
        return graphs.names()

    @r.get("/api/graph/{name}")
    def graph_json(name: str) -> dict:
        g = graphs.graph(name)
        for n in g["nodes"]:
            n["describe"] = describe_node(n)
        return g

    @r.get("/api/feature/{layer}/{latent}")
    def feature_json(layer: int, latent: int) -> dict:
        return graphs.feature(layer, latent)

    @r.post("/api/graph/{name}/intervene")
    def intervene(name: str, req: InterveneRequest) -> dict:
        return graphs.intervene(name, [e.model_dump() for e in req.edits])

    @r.post("/api/trace")
    def trace(req: TraceRequest) -> dict:
        return graphs.trace(req.prompt, req.target)

    return r


def create_graph_app(
    run_dir: str | Path | GraphSet,
    *,
    hosts: tuple[str, ...] = LOOPBACK,
    device: str = "cpu",
    limits: GraphLimits = GraphLimits(),  # noqa: B008 (frozen)
) -> FastAPI:
    """The graph view's app over a transcoder set; `app.state.dashboard` is its `GraphSet`."""
    graphs = run_dir if isinstance(run_dir, GraphSet) else GraphSet(run_dir, device=device, limits=limits)
    app = FastAPI(title=f"monosemantic: {graphs.run_dir.name}", docs_url=None, redoc_url=None, openapi_url=None)
    add_error_handlers(app)
    app.include_router(graph_router(graphs))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(Guard, allowed_hosts=hosts, max_body=graphs.limits.body_bytes)
    app.state.dashboard = graphs
    return app
