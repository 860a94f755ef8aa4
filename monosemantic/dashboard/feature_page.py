"""The feature page (everything the store holds on one feature) and the document page (an example
traced back to the full training document, the active token highlighted)."""

from __future__ import annotations

import math

from monosemantic.analysis.latent_stats import HIST_EDGES, N_HIST
from monosemantic.analysis.store import Example, Feature
from monosemantic.dashboard.html import esc, feature_link, num, page, pct, table, tokens_html, visible
from monosemantic.dashboard.logit_chart import logit_chart
from monosemantic.dashboard.service import Dashboard
from monosemantic.dashboard.svg import bars


def histogram_svg(f: Feature) -> str:
    """The activation histogram over the store's log bins (8 per decade), cut to the bins in use."""
    fine = f.histogram[1 : N_HIST - 1]
    used = [b for b, c in enumerate(fine) if c]
    if not used:
        return '<p class="muted">never fired on the analysed tokens</p>'
    lo, hi = max(used[0] - 1, 0), min(used[-1] + 2, len(fine))
    log_edges = HIST_EDGES.log10().tolist()[lo : hi + 1]
    under, over = f.histogram[0], f.histogram[-1]
    notes = [f"{under} below 1e-4"] * bool(under) + [f"{over} at 1e4 or above"] * bool(over)
    svg = bars(
        fine[lo:hi],
        log_edges,
        title=f"activation histogram of feature {f.index} ({f.fires} activations)",
        xlabel="activation",
    )
    return svg + (f'<p class="muted">{esc(", ".join(notes))}</p>' if notes else "")


def density_svg(f: Feature, hist: dict) -> str:
    """This feature's density marked on the histogram of all features' densities (log x)."""
    if not f.density:
        marker = None
        note = f"feature {f.index} never fired on the analysed tokens, like {hist['never'] - 1} others"
    else:
        marker = (math.log10(f.density), f"#{f.index}: {f.density:.3g}")
        note = f"{hist['never']} features never fired on the analysed tokens (not drawn)"
    svg = bars(
        hist["counts"],
        hist["log_edges"],
        title=f"densities of all {sum(hist['counts']) + hist['never']} features",
        cls="histogram density-compare",
        xlabel="share of analysed tokens a feature fires on",
        marker=marker,
    )
    return f'{svg}<p class="muted density-note">{esc(note)}</p>'


def distinct(examples: list[Example]) -> list[tuple[Example, int]]:
    """The examples with one text window each (the same tokens, the same active one): the first of
    each, in order, with how many of `examples` share its window. A template repeated across documents
    ("6 × 1 = 6") would otherwise fill the top list with one context."""
    groups: dict[tuple[tuple[str, ...], int], list] = {}
    for ex in examples:
        key = (tuple(ex.tokens), ex.active)
        if key in groups:
            groups[key][1] += 1
        else:
            groups[key] = [ex, 1]
    return [(ex, n) for ex, n in groups.values()]


def example_html(i: int, ex: Example, peak: float, repeats: int = 1) -> str:
    """One context: its value, its tokens shaded by the feature's activation (the token's role on
    hover, math corpus), how many stored examples share this window, a link to its document."""
    href = f"/document/{ex.doc}?feature={i}&position={ex.position}"
    count = (
        f'<span class="repeats" title="{repeats} stored examples have this same text window">×{repeats}</span>'
        if repeats > 1
        else '<span class="repeats"></span>'
    )
    return (
        f'<div class="example"><span class="value">{ex.value:.3f}</span>{count}'
        f"{tokens_html(ex.tokens, ex.acts, peak, ex.active, ex.role)}"
        f'<a class="source" href="{esc(href)}" title="the full document">doc {ex.doc} ↗</a></div>'
    )


def examples_html(i: int, examples: list[Example], peak: float) -> str:
    return "".join(example_html(i, ex, peak, n) for ex, n in distinct(examples))


def _logits(pairs: list[tuple[str, float]], fmt: str) -> str:
    return "".join(
        f'<span class="logit"><code>{esc(visible(t).replace(" ", "␣"))}</code> {fmt.format(v)}</span>' for t, v in pairs
    )


def _header(f: Feature) -> str:
    scores = (  # none for a "dense" label
        ""
        if f.label is None or f.label.precision is None
        else f"; precision {f.label.precision:.2f}, recall {f.label.recall:.2f}, on {f.label.support} held-out tokens"
    )
    label = (
        f'<span class="label big">{esc(f.label.text)}</span> <span class="muted">({esc(f.label.kind)}{scores})</span>'
        if f.label
        else '<span class="muted">no label</span>'
    )
    if f.multilingual is None:
        flag = ""
    else:
        langs = ", ".join(f"{esc(k)} {v}" for k, v in sorted(f.languages.items(), key=lambda kv: -kv[1]))
        word = "multilingual" if f.multilingual else "languages"
        flag = (
            f'<p class="flag {"multi" if f.multilingual else ""}">{word}'
            f" (held-out firings on its label): {langs or '–'}{'; concept: ' + esc(f.concept) if f.concept else ''}</p>"
        )
    return (
        f'<h1>Feature {f.index}</h1><p id="feature-label">{label}</p>{flag}'
        f'<p class="stats">density <b>{pct(f.density)}</b> ({f.fires} activations) · mean activation '
        f"<b>{num(f.mean_act)}</b> · max activation <b>{num(f.max_act)}</b> · "
        f'<a href="/playground?feature={f.index}">steer it in the playground</a></p>'
    )


def _effects(f: Feature, ranked: dict | None = None) -> str:
    rules = table(
        ["rule", "kind", "precision", "recall", "support"],
        [[esc(r.text), esc(r.kind), num(r.precision, 2), num(r.recall, 2), str(r.support)] for r in f.rules[:8]],
    )
    neighbours = "".join(
        f"<li>{feature_link(j, label)} <span class=muted>cos {cos:.2f}</span></li>" for j, cos, label in f.neighbours
    )
    return (
        f'<div class="columns"><section><h2>Label rules</h2>{rules if f.rules else "<p class=muted>none</p>"}'
        f"</section><section><h2>Logit effects</h2>{logit_chart(ranked)}"
        f"<details><summary>over the whole vocabulary</summary><p>promotes: {_logits(f.top_logits[:10], '{:+.3g}')}"
        f"</p><p>suppresses: {_logits(f.bottom_logits[:10], '{:+.3g}')}</p></details>"
        f"<p>next tokens where it fires: {_logits(f.next_tokens[:10], '{:.0%}')}</p></section>"
        f'<section><h2>Nearest features (decoder cosine)</h2><ul class="neighbours">{neighbours}</ul>'
        "</section></div>"
    )


def cooccurring_html(dash: Dashboard, i: int) -> str:
    """The features that fire on the same analysed tokens as feature i, most frequent first, linked."""
    found = dash.cooccurring(i)
    if found is None:
        return (
            '<p class="muted" id="cooccurring-missing">this store was analysed before co-occurring features '
            f"were counted: run <code>monosemantic analyze {esc(str(dash.run_dir))}</code> to add them</p>"
        )
    if not found["partners"]:
        return f'<p class="muted">no other feature fired with it on the {found["tokens"]} analysed tokens</p>'
    rows = [
        [feature_link(p["feature"], p["label"]), pct(p["p"]), str(p["count"]), f"{p['jaccard']:.3f}"]
        for p in found["partners"]
    ]
    head = ["feature", "P(it fires | this fires)", "tokens together", "Jaccard"]
    return table(head, rows, "cooccurring") + (
        f'<p class="muted">on the {found["tokens"]} analysed tokens; Jaccard: tokens where both fire / '
        "tokens where either fires</p>"
    )


def loss_effect_html(dash: Dashboard, i: int) -> str:
    """The next tokens whose loss rises most when feature i is removed where it fires (top examples)."""
    found = dash.loss_effect(i)
    if found is None:
        return (
            '<p class="muted" id="loss-effect-missing">loss effects were not recorded for this store: '
            f"run <code>monosemantic analyze {esc(str(dash.run_dir))} --loss-effects</code> to add them "
            "(about 50 ms per feature on 2 cores)</p>"
        )
    if not found["effects"]:
        return '<p class="muted">no top example with a next token</p>'
    rows = [
        [f"<code>{esc(visible(t).replace(' ', '␣'))}</code>", f"{rise:+.3g}", str(n)] for t, rise, n in found["effects"]
    ]
    return table(["next token", "loss rise (nats)", "examples"], rows, "loss-effect") + (
        f'<p class="muted loss-basis">{esc(found["definition"])}</p>'
    )


def feature_page(dash: Dashboard, i: int) -> str:
    f = dash.feature(i)
    peak = f.max_act or 1.0
    top = examples_html(i, f.top_examples, peak)
    samples = "".join(
        f"<h3>[{r.low:.3g}, {r.high:.3g}): {r.count} activations; {len(r.examples)} sampled, "
        f"{len(distinct(r.examples))} distinct contexts</h3>" + examples_html(i, r.examples, peak)
        for r in f.samples
    )
    body = (
        f"{_header(f)}<section><h2>Activation histogram</h2>{histogram_svg(f)}</section>"
        f"<section><h2>Density among all features</h2>{density_svg(f, dash.density_comparison(i))}</section>"
        f"{_effects(f, dash.logit_effects(i))}"
        f'<div class="columns"><section id="loss-effect"><h2>Loss effect (feature ablated)</h2>'
        f"{loss_effect_html(dash, i)}</section>"
        f'<section id="cooccurring"><h2>Co-occurring features</h2>{cooccurring_html(dash, i)}</section></div>'
        f'<section><h2>Try your own text</h2><textarea id="try-text" rows="2" placeholder="type text">'
        f'</textarea><div id="try-result" class="result"></div></section>'
        f'<section><h2>Top activating examples</h2><p class="muted">{len(f.top_examples)} stored, one row per '
        f'distinct text window (×n: how many share it)</p><div id="top-examples">{top}</div></section>'
        f'<section><h2>Samples by activation range</h2><div id="samples">{samples}</div></section>'
    )
    return page(
        f"Feature {i}",
        body,
        name="feature",
        run=dash.run_dir.name,
        scripts=("feature.js",),
        data={"feature": i, "peak": peak},
    )


def document_page(dash: Dashboard, doc: int, feature: int | None, position: int | None) -> str:
    """Document `doc` in full; with `feature`, each token shaded by its activation, `position` outlined."""
    d = dash.document(doc, feature)
    meta = " · ".join(f"{esc(k)}: {esc(v)}" for k, v in d["meta"].items())
    if feature is None:
        text = f'<pre class="document">{esc(d["text"])}</pre>'
    else:
        peak = max(d["acts"], default=0.0) or 1.0
        active = d["positions"].index(position) if position in d["positions"] else None
        text = (
            f"<p>Feature {feature_link(feature, dash.label(feature))}: activation on every "
            f"token{f', the example at position {position} outlined' if active is not None else ''}.</p>"
            f'<div class="document">{tokens_html(d["tokens"], d["acts"], peak, active)}</div>'
        )
    body = f'<h1>Document {doc}</h1><p class="muted">{meta}</p>{text}'
    return page(f"Document {doc}", body, name="document", run=dash.run_dir.name)
