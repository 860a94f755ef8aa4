"""The HTML pages: text view (home), search, playground, run overview, and the routes of the feature
and document pages (`feature_page.py`) and of the run's plots. Pages are rendered on the server; the
scripts in static/ make the text view, search, playground and "try your own text" live.
"""

from __future__ import annotations

import math

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse, HTMLResponse

from monosemantic.dashboard.feature_page import document_page, feature_page
from monosemantic.dashboard.html import esc, num, page, summaries_table, table
from monosemantic.dashboard.service import SUPPORT_FLOOR, Dashboard, RequestError
from monosemantic.dashboard.svg import bars, line_chart
from monosemantic.train.rundir import EVAL_FILE, METRICS_FILE

PLOTS = ("training.png", "feature_density.png", "label_precision.png")  # the only files served from the run
MAX_BINS = 1000  # of a density histogram read from eval.json
# which tokens each plot counts: the run page's numbers come from different windows
PLOT_WINDOWS = {
    "training.png": "the training log (each point over the tokens since the previous one)",
    "feature_density.png": "the feature analysis, on its {tokens:,} tokens",
    "label_precision.png": "the feature analysis's labels, scored on held-out tokens",
}
CURVES = (("loss", True), ("fvu", True), ("l0", False), ("dead_fraction", False))


def text_page(dash: Dashboard, text: str) -> str:
    options = "".join(f'<option value="{k}"{" selected" if k == 3 else ""}>{k}</option>' for k in (1, 2, 3, 5, 8, 10))
    body = (
        f'<h1>Text</h1><p class="muted">Type or paste text: each token with its most active features (colour: '
        f"activation relative to the highest in the text). Hover a token for its list; click a feature to "
        f"open it.</p>"
        f'<div class="controls"><textarea id="text" rows="3" autofocus placeholder="e.g. 12 + 7 = 19">{esc(text)}'
        f'</textarea><label>features per token <select id="k">{options}</select></label>'
        f'<span id="status" class="muted"></span></div><div class="text-view"><div id="tokens" class="token-grid">'
        f'</div><aside><h2>Features in this text</h2><label>sort by <select id="sort"><option value="total">total '
        f'activation</option><option value="max">max activation</option><option value="active">tokens active'
        f'</option></select></label><ol id="text-features"></ol></aside></div>'
        f'<div id="token-panel" class="panel" hidden></div>'
    )
    return page(
        "Text", body, name="text", run=dash.run_dir.name, scripts=("text.js",), data={"max-tokens": dash.max_tokens}
    )


def search_page(dash: Dashboard, q: str) -> tuple[str, int]:
    """The page and its status: 400 (the page still shows, with the message) for a refused query."""
    status = 200
    try:
        rows = dash.search(q)["results"] if q.strip() else dash.listing("f1", 50, labelled=True)
        results = summaries_table(rows) if rows else '<p class="muted">no features match</p>'
    except (RequestError, ValueError) as e:
        results, status = f'<p class="error">{esc(e)}</p>', getattr(e, "status", 400)
    title = f"Features matching {esc(q)}" if q.strip() else "Best-labelled features"
    body = (
        f'<h1>Search</h1><p class="muted">By label, by token (which features fire on <code>=</code>?), or by '
        f'number.</p><div class="controls"><input id="q" type="search" value="{esc(q)}" autofocus '
        f'placeholder="label, token or feature number"><label><input id="all" type="checkbox"> include features '
        f"that fire on fewer than {SUPPORT_FLOOR} analysed tokens</label>"
        f'<span id="status" class="muted"></span></div>'
        f'<h2 id="results-title">{title}</h2><div id="results">{results}</div><div id="pages" class="controls"></div>'
    )
    return page("Search", body, name="search", run=dash.run_dir.name, scripts=("search.js",)), status


def playground_page(dash: Dashboard, feature: int | None) -> str:
    lim = dash.limits
    body = (
        f'<h1>Playground</h1><p class="muted">Pick features and ablate (zero or to their mean), clamp or steer '
        f"them at every position; see the next-token distribution and the greedy continuation before and after. "
        f"Up to {lim.features} features, values within ±{lim.strength:g}.</p>"
        f'<div class="controls"><textarea id="prompt" rows="2">3 + 4 = </textarea></div>'
        f'<table id="edits"><thead><tr><th>feature</th><th>action</th><th>value</th><th></th></tr></thead>'
        f'<tbody></tbody></table><div class="controls"><input id="add-feature" type="number" min="0" '
        f'max="{dash.n_latents - 1}" placeholder="feature #"><button id="add">add feature</button>'
        f'<label>new tokens <input id="new-tokens" type="number" value="16" min="0" max="{lim.new_tokens}"></label>'
        f'<button id="run" class="primary">Run</button><span id="status" class="muted"></span></div>'
        f'<div class="columns"><section id="before"><h2>Before</h2></section>'
        f'<section id="after"><h2>After</h2></section></div>'
        f'<section id="dose"><h2>Dose-response</h2><p class="muted">Steer the first feature above by a strength '
        f"α from 0 to the slider's value at the chosen position, and follow the probability of the token "
        f"that steering raises most (and KL from the clean next-token distribution). Releasing the slider "
        f'also sets the feature\'s steer value.</p><div class="controls"><label>strength α <input id="alpha" '
        f'type="range" min="0" max="1" step="any" value="0"></label><output id="alpha-value"></output>'
        f'<label>steer at <select id="position"><option value="all">every token</option>'
        f'<option value="last">the last token</option></select></label>'
        f'<span id="curve-status" class="muted"></span></div><div id="curve"></div></section>'
    )
    return page(
        "Playground",
        body,
        name="playground",
        run=dash.run_dir.name,
        scripts=("playground.js",),
        data={"features": [] if feature is None else [feature], "max-strength": lim.strength},
    )


def _config_table(cfg: object) -> str:
    if not isinstance(cfg, dict) or not cfg:
        return '<p class="muted">missing</p>'
    return table(["field", "value"], [[esc(k), esc(v)] for k, v in cfg.items() if not isinstance(v, dict)], "config")


def _real(value: object) -> float | None:
    """`value` (read from a file) as a float, or None unless it is a number a float can hold."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:  # an int beyond 1.8e308
        return None


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


def _density_histogram(hist: object, window: str) -> str:
    """eval.json's density histogram, drawn only if it is what `eval` writes: counts, one more edge
    (log10 of densities, increasing, in [-100, 0]) and never_fired."""
    counts, edges, never = (hist.get(k) if isinstance(hist, dict) else None for k in ("counts", "edges", "never_fired"))
    logs = [_real(e) for e in edges] if isinstance(edges, list) else []
    valid = (
        isinstance(counts, list)
        and 1 <= len(counts) <= MAX_BINS
        and all(_count(c) for c in counts)
        and len(logs) == len(counts) + 1
        and all(x is not None and -100 <= x <= 0 for x in logs)
        and all(a < b for a, b in zip(logs, logs[1:]))
        and (never is None or _count(never))
    )
    if not valid:
        return (
            f'<p class="muted">the density histogram in {EVAL_FILE} is not drawn: expected counts (1 to {MAX_BINS} '
            "non-negative integers), edges (one more: increasing log10 densities in [-100, 0]) and never_fired "
            "(a non-negative integer)</p>"
        )
    return f"<h3>Feature density over {window}: {never or 0} features never fired on these tokens</h3>" + bars(
        counts, logs, title="feature density histogram", cls="histogram density", xlabel="fraction of tokens"
    )


def _eval_section(ev: dict | None) -> str:
    if not ev:
        return f'<p class="muted">no {EVAL_FILE} yet: run <code>monosemantic eval RUN_DIR</code></p>'
    m = ev.get("metrics") if isinstance(ev.get("metrics"), dict) else {}
    n = _real(m.get("n_tokens"))
    window = f"the evaluation's {n:,.0f} tokens" if n is not None else "the evaluation's tokens"
    rows = [[esc(k.replace("_", " ")), num(x, 4)] for k, v in m.items() if (x := _real(v)) is not None]
    out = f'<p class="muted">measured on {window}</p>' + table(["metric", "value"], rows, "config")
    if "density_histogram" in m:
        out += _density_histogram(m["density_histogram"], window)
    return out


def _curve(metrics: list[dict], key: str) -> list[tuple[float, float]]:
    """(tokens, value) of the metrics rows that have both as numbers."""
    points = [(_real(row.get("tokens")), _real(row.get(key))) for row in metrics]
    return [(x, y) for x, y in points if x is not None and y is not None and math.isfinite(x)]


def run_page(dash: Dashboard) -> str:
    r = dash.run()
    curves = "".join(
        line_chart(_curve(r["metrics"], key), title=key.replace("_", " "), logy=logy) for key, logy in CURVES
    )
    store = r["store"]
    pngs = "".join(
        f'<figure><img src="/files/plots/{p}" alt="{p}"><figcaption>{p}: {PLOT_WINDOWS[p].format(**store)}'
        f"</figcaption></figure>"
        for p in PLOTS
        if dash.run_file(f"plots/{p}")
    )
    problems = "".join(f"<li><code>{esc(name)}</code>: {esc(why)}</li>" for name, why in r["problems"].items())
    problems = f'<ul class="error">{problems}</ul>' if problems else ""
    body = (
        f'<h1>Run {esc(r["name"])}</h1>{problems}<div class="columns"><section><h2>SAE</h2>{_config_table(r["sae"])}'
        f"</section>"
        f"<section><h2>Training</h2>{_config_table((r['train'] or {}).get('train'))}"
        f"<h3>Data</h3>{_config_table((r['train'] or {}).get('data'))}</section></div>"
        f'<section><h2>Training curves</h2><p class="muted">from {METRICS_FILE}; dead fraction: the share of '
        f"features that fired on none of the last dead-window tokens (training config)</p>"
        f'<div class="curves">{curves}</div></section>'
        f"<section><h2>Evaluation</h2>{_eval_section(r['eval'])}</section>"
        f"<section><h2>Feature store</h2><p>{store['features']} features analysed on {store['tokens']:,} tokens of "
        f"{esc(store['settings']['corpus'])}; {store['labelled_090']} labelled with precision ≥ 0.9.</p>"
        f"</section>"
        f'<section><h2>Plots</h2><div class="plots">{pngs or "<p class=muted>none</p>"}</div></section>'
    )
    return page("Run", body, name="run", run=dash.run_dir.name)


def page_router(dash: Dashboard) -> APIRouter:
    pages = APIRouter(default_response_class=HTMLResponse)

    @pages.get("/")
    def home(text: str = Query("", max_length=dash.limits.text_chars)) -> str:
        return text_page(dash, text)

    @pages.get("/search")
    def search(q: str = Query("", max_length=200)) -> HTMLResponse:
        return HTMLResponse(*search_page(dash, q))

    @pages.get("/playground")
    def playground(feature: int | None = None) -> str:
        if feature is not None:
            dash.check_feature(feature)
        return playground_page(dash, feature)

    @pages.get("/run")
    def run() -> str:
        return run_page(dash)

    @pages.get("/feature/{i}")
    def feature(i: int) -> str:
        return feature_page(dash, i)

    @pages.get("/document/{doc}")
    def document(doc: int, feature: int | None = None, position: int | None = None) -> str:
        return document_page(dash, doc, feature, position)

    @pages.get("/files/plots/{name}", response_class=FileResponse)
    def plot(name: str):
        path = dash.run_file(f"plots/{name}") if name in PLOTS else None
        if path is None:
            raise RequestError(
                f"no plot {name!r}; the dashboard serves {', '.join(PLOTS)} when the run has them "
                "(regular files inside the run directory)",
                404,
            )
        return FileResponse(path)

    return pages
