"""HTML building blocks for the server-rendered pages: the page frame, escaping, tokens highlighted
by activation, tables. Everything user- or corpus-supplied goes through `esc`; pages run no inline
script (the Content-Security-Policy forbids it), so data for the scripts goes in data- attributes.
"""

from __future__ import annotations

import html
import json

NAV = (("/", "Text"), ("/search", "Search"), ("/playground", "Playground"), ("/run", "Run"))


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def visible(token: str) -> str:
    """A token as shown: newlines and tabs as symbols (spaces stay, the token spans keep them)."""
    return token.replace("\n", "⏎").replace("\t", "⇥")


def num(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}g}"


def pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.2%}"


def page(
    title: str,
    body: str,
    *,
    name: str,
    run: str,
    scripts: tuple[str, ...] = (),
    data: dict | None = None,
    nav: tuple[tuple[str, str], ...] = NAV,
) -> str:
    """A whole page: nav bar (`nav`: (href, label) pairs), `body`, and the scripts it needs (from /static)."""
    links = "".join(
        f'<a href="{href}"{" class=active" if label.lower() == name else ""}>{label}</a>' for href, label in nav
    )
    attrs = "".join(
        f' data-{esc(k)}="{esc(v if isinstance(v, str) else json.dumps(v))}"' for k, v in (data or {}).items()
    )
    tags = "".join(f'<script src="/static/{s}" defer></script>' for s in ("common.js", *scripts))
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)} · monosemantic</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<link rel="icon" href="data:,"><link rel="stylesheet" href="/static/dashboard.css">{tags}</head>'
        f'<body data-page="{esc(name)}"{attrs}><nav><span class="brand">monosemantic</span>{links}'
        f'<span class="run" title="run directory">{esc(run)}</span></nav><main>{body}</main></body></html>'
    )


def heat(act: float, peak: float) -> str:
    """Background of a token by activation, as a fraction of `peak` (the colour intensity)."""
    share = 0.0 if peak <= 0 or act <= 0 else min(1.0, act / peak)
    return f"background: rgba(255, 122, 0, {share:.3f})"


def tokens_html(
    tokens: list[str], acts: list[float], peak: float, active: int | None = None, role: str | None = None
) -> str:
    """A run of tokens, each shaded by its activation (hover: the value); `active` is outlined, and
    its hover text adds `role` (its token role in the math corpus) when given."""
    spans = []
    for j, (tok, act) in enumerate(zip(tokens, acts)):
        cls = "t active" if j == active else "t"
        title = f"{act:.4g} · {role}" if j == active and role else f"{act:.4g}"
        spans.append(f'<span class="{cls}" style="{heat(act, peak)}" title="{esc(title)}">{esc(visible(tok))}</span>')
    return f'<span class="tokens">{"".join(spans)}</span>'


def table(head: list[str], rows: list[list[str]], cls: str = "") -> str:
    """A table of already-escaped cells."""
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def feature_link(i: int, label: str | None) -> str:
    return f'<a href="/feature/{i}" class="feature-link">#{i}</a> <span class="label">{esc(label or "–")}</span>'


def summaries_table(rows: list[dict]) -> str:
    """Feature summaries (`store.Summary` as dicts): id and label, precision, recall, density, max."""
    return table(
        ["feature", "precision", "recall", "density", "max act"],
        [
            [
                feature_link(s["index"], s["label"]),
                num(s["precision"], 2),
                num(s["recall"], 2),
                pct(s["density"]),
                num(s["max_act"]),
            ]
            for s in rows
        ],
        "features",
    )
