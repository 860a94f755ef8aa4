"""The feature page's logit-effects bar chart: the tokens a feature's direction raises and lowers most
along the direct path to the logits, ranked within the tokens the model predicts on the analysed
corpus (the set and its definition come from `analysis/predicted.py`). Draws what it is given."""

from __future__ import annotations

from monosemantic.dashboard.html import esc, visible

ROW, LABEL, BAR, VALUE = 18, 90, 180, 56  # pixels: row height, token column, bar area, value column


def _row(y: int, token: str, value: float, count: int, scale: float) -> str:
    """One bar from the zero line (the middle of the bar area), right for raised, left for lowered."""
    zero = LABEL + BAR / 2
    width = abs(value) / scale * (BAR / 2) if scale else 0.0
    x = zero if value >= 0 else zero - width
    shown = visible(token).replace(" ", "␣")
    kind = "promote" if value >= 0 else "suppress"
    return (
        f'<g class="logit-row {kind}"><title>{esc(shown)}: {value:+.3g} (the model predicts it at {count} '
        f"positions)</title>"
        f'<text x="{LABEL - 6}" y="{y + 13}" class="token end" data-token="{esc(token)}">{esc(shown)}</text>'
        f'<rect class="bar {kind}" x="{x:.1f}" y="{y + 3}" width="{width:.1f}" height="{ROW - 6}"/>'
        f'<text x="{LABEL + BAR + 6}" y="{y + 13}" class="tick value">{value:+.3g}</text></g>'
    )


def logit_chart(effects: dict | None) -> str:
    """The bar chart of `effects` ({"within", "set_size", "promotes", "suppresses": [[token, value,
    count]]}), with a caption saying what the tokens are ranked within; a note where there is none."""
    if effects is None:
        return (
            '<p class="muted" id="logit-chart-missing">no predicted-token set in this store: '
            "run `monosemantic analyze` again to rank the logit effects among the tokens the model predicts</p>"
        )
    rows = effects["promotes"] + effects["suppresses"]
    scale = max((abs(v) for _, v, _ in rows), default=0.0)
    height = ROW * (len(rows) + 1)
    zero = LABEL + BAR / 2
    body = [
        _row(ROW * k + (ROW if k >= len(effects["promotes"]) else 0), t, v, c, scale)
        for k, (t, v, c) in enumerate(rows)
    ]
    axis = f'<line x1="{zero}" y1="0" x2="{zero}" y2="{height}" class="axis zero"/>'
    width = LABEL + BAR + VALUE
    caption = (
        f"ranked within the {effects['set_size']} tokens that are {esc(effects['within'])}; "
        "bars: direct logit effect of the feature's decoder direction"
    )
    return (
        f'<svg class="logit-bars" viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-label="logit effects"><title>logit effects</title>{axis}{"".join(body)}</svg>'
        f'<p class="muted logit-basis">{caption}</p>'
    )
