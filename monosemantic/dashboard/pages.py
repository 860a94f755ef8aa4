"""The HTML pages: text view (home), search, playground, run overview, and the routes of the feature
and document pages (`feature_page.py`) and of the run's plots. Pages are rendered on the server; the
scripts in static/ make the text view, search, playground and "try your own text" live.
"""

from __future__ import annotations

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse, HTMLResponse

from monosemantic.dashboard.feature_page import document_page, feature_page
from monosemantic.dashboard.html import esc, num, page, summaries_table, table
from monosemantic.dashboard.service import Dashboard, RequestError
from monosemantic.dashboard.svg import bars, line_chart

PLOTS = ("training.png", "feature_density.png", "label_precision.png")  # the only files served from the run
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


def search_page(dash: Dashboard, q: str) -> str:
    try:
        rows = dash.search(q) if q.strip() else dash.listing("f1", 50, labelled=True)
        results = summaries_table(rows) if rows else '<p class="muted">no features match</p>'
    except (RequestError, ValueError) as e:
        results = f'<p class="error">{esc(e)}</p>'
    title = f"Features matching {esc(q)}" if q.strip() else "Best-labelled features"
    body = (
        f'<h1>Search</h1><p class="muted">By label, by token (which features fire on <code>=</code>?), or by '
        f'number.</p><div class="controls"><input id="q" type="search" value="{esc(q)}" autofocus '
        f'placeholder="label, token or feature number"><span id="status" class="muted"></span></div>'
        f'<h2 id="results-title">{title}</h2><div id="results">{results}</div>'
    )
    return page("Search", body, name="search", run=dash.run_dir.name, scripts=("search.js",))


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
    )
    return page(
        "Playground",
        body,
        name="playground",
        run=dash.run_dir.name,
        scripts=("playground.js",),
        data={"features": [] if feature is None else [feature], "max-strength": lim.strength},
    )


def _config_table(cfg: dict | None) -> str:
    if not cfg:
        return '<p class="muted">missing</p>'
    return table(["field", "value"], [[esc(k), esc(v)] for k, v in cfg.items() if not isinstance(v, dict)], "config")


def _eval_section(ev: dict | None) -> str:
    if not ev:
        return '<p class="muted">no eval.json yet: run <code>monosemantic eval RUN_DIR</code></p>'
    m = ev.get("metrics", {})
    rows = [[esc(k.replace("_", " ")), num(v, 4)] for k, v in m.items() if isinstance(v, (int, float))]
    out = table(["metric", "value"], rows, "config")
    hist = m.get("density_histogram")
    if hist:
        out += (
            f"<h3>Feature density (log10 of the fraction of tokens each feature fires on); "
            f"{hist.get('never_fired', 0)} never fired</h3>"
            + bars(hist["counts"], hist["edges"], title="feature density histogram", cls="histogram density")
        )
    return out


def run_page(dash: Dashboard) -> str:
    r = dash.run()
    curves = "".join(
        line_chart(
            [(row.get("tokens"), row.get(key)) for row in r["metrics"] if row.get("tokens")],
            title=key.replace("_", " "),
            logy=logy,
        )
        for key, logy in CURVES
    )
    pngs = "".join(
        f'<figure><img src="/files/plots/{p}" alt="{p}"><figcaption>{p}</figcaption></figure>'
        for p in PLOTS
        if (dash.run_dir / "plots" / p).is_file()
    )
    store = r["store"]
    body = (
        f'<h1>Run {esc(r["name"])}</h1><div class="columns"><section><h2>SAE</h2>{_config_table(r["sae"])}'
        f"</section>"
        f"<section><h2>Training</h2>{_config_table((r['train'] or {}).get('train'))}"
        f"<h3>Data</h3>{_config_table((r['train'] or {}).get('data'))}</section></div>"
        f'<section><h2>Training curves</h2><div class="curves">{curves}</div></section>'
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
    def search(q: str = Query("", max_length=200)) -> str:
        return search_page(dash, q)

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
        if name not in PLOTS or not (dash.run_dir / "plots" / name).is_file():
            raise RequestError(f"no plot {name!r}; the dashboard serves {', '.join(PLOTS)} when the run has them", 404)
        return FileResponse(dash.run_dir / "plots" / name)

    return pages
