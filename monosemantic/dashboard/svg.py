"""Charts as inline SVG (no plotting library in the browser): bar histograms over log-spaced bins
and line charts of training curves, each with both axes, ticks and a caption per axis, and the
numbers on hover. They draw the numbers they are given; none are computed here beyond the scaling
to pixels and the choice of ticks.
"""

from __future__ import annotations

import math

from monosemantic.dashboard.html import esc

W, H, PAD, LEFT = 560, 160, 34, 52  # LEFT: room for the y tick labels


def _frame(body: str, title: str, cls: str, width: int = W, height: int = H) -> str:
    return (
        f'<svg class="{cls}" viewBox="0 0 {width} {height + PAD}" width="{width}" height="{height + PAD}" '
        f'role="img" aria-label="{esc(title)}"><title>{esc(title)}</title>{body}</svg>'
    )


def short(x: float) -> str:
    """A tick label: 3 significant digits, whole numbers of 4+ digits as they are (1200, not 1.2e+03)."""
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"


def log_ticks(lo: float, hi: float) -> list[float]:
    """log10 positions of ticks in [lo, hi]: the whole decades, and 2x and 5x each decade as well when
    fewer than two decades fall in the range (one tick says nothing about the scale)."""
    decades = [float(e) for e in range(math.ceil(lo), math.floor(hi) + 1)]
    if len(decades) >= 2:
        return decades
    steps = [e + math.log10(m) for e in range(math.floor(lo), math.ceil(hi) + 1) for m in (1, 2, 5)]
    return [t for t in steps if lo - 1e-9 <= t <= hi + 1e-9]


def _y_axis(x: float, top: float, bottom: float, ticks: list[tuple[float, str]], caption: str) -> str:
    """A vertical axis at x from `top` to `bottom` pixels; `ticks`: (pixel y, label)."""
    parts = [f'<line x1="{x}" y1="{top}" x2="{x}" y2="{bottom}" class="axis y-axis"/>']
    for y, label in ticks:
        parts.append(
            f'<line x1="{x - 4}" y1="{y:.1f}" x2="{x}" y2="{y:.1f}" class="axis"/>'
            f'<text x="{x - 6}" y="{y + 4:.1f}" class="tick y end">{esc(label)}</text>'
        )
    parts.append(f'<text x="4" y="{top - 4}" class="tick caption">{esc(caption)}</text>')
    return "".join(parts)


def bars(
    counts: list[int],
    log_edges: list[float],
    *,
    title: str,
    cls: str = "histogram",
    xlabel: str = "",
    marker: tuple[float, str] | None = None,
) -> str:
    """Bars over bins whose edges are evenly spaced in `log_edges` (log10 of the real edges), each bar
    with its range and count on hover; a count axis, and a log x axis labelled at decades. `marker`:
    (log10 x, label) of a vertical line drawn over the bars (one value among the counted ones)."""
    top = max(counts, default=0) or 1
    lo, hi = log_edges[0], log_edges[-1]
    scale = (W - LEFT - PAD) / ((hi - lo) or 1)
    base, height = H, H - 16
    parts = [f'<line x1="{LEFT}" y1="{base}" x2="{W - PAD}" y2="{base}" class="axis x-axis"/>']
    for b, count in enumerate(counts):
        x0, x1 = LEFT + (log_edges[b] - lo) * scale, LEFT + (log_edges[b + 1] - lo) * scale
        h = height * count / top
        tip = f"[{10 ** log_edges[b]:.3g}, {10 ** log_edges[b + 1]:.3g}): {count}"
        parts.append(
            f'<rect class="bar" x="{x0:.1f}" y="{base - h:.1f}" width="{max(x1 - x0 - 1, 1):.1f}" '
            f'height="{h:.1f}"><title>{esc(tip)}</title></rect>'
        )
    for e in log_ticks(lo, hi):
        x = LEFT + (e - lo) * scale
        parts.append(
            f'<line x1="{x:.1f}" y1="{base}" x2="{x:.1f}" y2="{base + 4}" class="axis"/>'
            f'<text x="{x:.1f}" y="{base + 16}" class="tick x mid">{esc(f"{10**e:.3g}")}</text>'
        )
    y_ticks = sorted({0, top // 2, top})
    parts.append(_y_axis(LEFT, base - height, base, [(base - height * c / top, str(c)) for c in y_ticks], "count"))
    if marker is not None:
        x = LEFT + (marker[0] - lo) * scale
        parts.append(
            f'<line x1="{x:.1f}" y1="{base - height}" x2="{x:.1f}" y2="{base}" class="marker">'
            f"<title>{esc(marker[1])}</title></line>"
            f'<text x="{x + 3:.1f}" y="{base - height + 10}" class="tick marker-label">{esc(marker[1])}</text>'
        )
    if xlabel:
        parts.append(f'<text x="{W - PAD}" y="{base + 30}" class="tick end">{esc(xlabel)} (log scale)</text>')
    return _frame("".join(parts), title, cls, height=H + 14)


def line_chart(
    points: list[tuple[float, float]], *, title: str, logy: bool = False, width: int = 380, height: int = 140
) -> str:
    """One curve, y against x (tokens), with a y axis (log when `logy`) ticked at its range and middle,
    the x axis at its ends and middle, and each point's values on hover."""
    pts = [(x, y) for x, y in points if y is not None and math.isfinite(y) and (y > 0 or not logy)]
    if len(pts) < 2:
        return f'<p class="muted">{esc(title)}: too few logged points to draw</p>'
    ys = [math.log10(y) if logy else y for _, y in pts]
    x0, x1 = pts[0][0], pts[-1][0]
    y0, y1 = min(ys), max(ys)
    if y0 == y1:  # a flat curve (TopK's L0): a range around it, so the axis still has a scale
        y0, y1 = y0 - (abs(y0) / 10 or 1), y1 + (abs(y1) / 10 or 1)
    top, base = 22, height - 5
    sx, sy = (width - LEFT - PAD) / ((x1 - x0) or 1), (base - top) / ((y1 - y0) or 1)

    def at(x: float, y: float) -> tuple[float, float]:
        return LEFT + (x - x0) * sx, base - (y - y0) * sy

    path = " ".join("{:.1f},{:.1f}".format(*at(x, y)) for (x, _), y in zip(pts, ys))
    stride = max(1, len(pts) // 60)  # hover targets: at most ~60 points
    dots = "".join(
        '<circle class="point" cx="{:.1f}" cy="{:.1f}" r="3"><title>{}</title></circle>'.format(
            *at(x, y), esc(f"{x:,.0f} tokens: {v:.4g}")
        )
        for (x, v), y in list(zip(pts, ys))[::stride]
    )
    mid = (y0 + y1) / 2
    y_ticks = [(at(x0, y)[1], short(10**y if logy else y)) for y in sorted({y0, mid, y1})]
    x_ticks = "".join(
        f'<text x="{at(x, y0)[0]:.1f}" y="{height + 16}" class="tick x mid">{short(x)}</text>'
        for x in (x0, (x0 + x1) / 2, x1)
    )
    body = (
        f'<line x1="{LEFT}" y1="{base}" x2="{width - PAD}" y2="{base}" class="axis x-axis"/>'
        + _y_axis(LEFT, top, base, y_ticks, f"{title}{' (log scale)' if logy else ''}")
        + f'<polyline class="curve" fill="none" points="{path}"/>{dots}{x_ticks}'
        f'<text x="{width - PAD}" y="{height + 30}" class="tick end">tokens trained</text>'
    )
    return _frame(body, title, "curve-chart", width, height + 14)
