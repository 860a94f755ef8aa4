"""Charts as inline SVG (no plotting library in the browser): bar histograms over log-spaced bins
and line charts of training curves. They draw the numbers they are given; none are computed here
beyond the scaling to pixels.
"""

from __future__ import annotations

import math

from monosemantic.dashboard.html import esc

W, H, PAD = 560, 160, 28


def _frame(body: str, title: str, cls: str, width: int = W, height: int = H) -> str:
    return (
        f'<svg class="{cls}" viewBox="0 0 {width} {height + PAD}" width="{width}" height="{height + PAD}" '
        f'role="img" aria-label="{esc(title)}"><title>{esc(title)}</title>{body}</svg>'
    )


def bars(
    counts: list[int], log_edges: list[float], *, title: str, cls: str = "histogram", tick_label=lambda e: f"1e{e:g}"
) -> str:
    """Bars over bins whose edges are evenly spaced in `log_edges` (log10 of the real edges), each bar
    with its range and count on hover; ticks at whole decades."""
    n = len(counts)
    top = max(counts, default=0) or 1
    lo, hi = log_edges[0], log_edges[-1]
    scale = (W - 2 * PAD) / ((hi - lo) or 1)
    parts = [f'<line x1="{PAD}" y1="{H}" x2="{W - PAD}" y2="{H}" class="axis"/>']
    for b in range(n):
        x0, x1 = PAD + (log_edges[b] - lo) * scale, PAD + (log_edges[b + 1] - lo) * scale
        h = (H - 10) * counts[b] / top
        tip = f"[{10 ** log_edges[b]:.3g}, {10 ** log_edges[b + 1]:.3g}): {counts[b]}"
        parts.append(
            f'<rect class="bar" x="{x0:.1f}" y="{H - h:.1f}" width="{max(x1 - x0 - 1, 1):.1f}" '
            f'height="{h:.1f}"><title>{esc(tip)}</title></rect>'
        )
    for e in range(math.ceil(lo), math.floor(hi) + 1):
        x = PAD + (e - lo) * scale
        parts.append(f'<text x="{x:.1f}" y="{H + 16}" class="tick">{esc(tick_label(e))}</text>')
    return _frame("".join(parts), title, cls)


def line_chart(
    points: list[tuple[float, float]], *, title: str, logy: bool = False, width: int = 360, height: int = 140
) -> str:
    """One curve, y against x, with its first and last values and the y range marked."""
    pts = [(x, y) for x, y in points if y is not None and math.isfinite(y) and (y > 0 or not logy)]
    if len(pts) < 2:
        return f'<p class="muted">{esc(title)}: too few logged points to draw</p>'
    ys = [math.log10(y) if logy else y for _, y in pts]
    x0, x1 = pts[0][0], pts[-1][0]
    y0, y1 = min(ys), max(ys)
    sx, sy = (width - 2 * PAD) / ((x1 - x0) or 1), (height - 20) / ((y1 - y0) or 1)
    path = " ".join(f"{PAD + (x - x0) * sx:.1f},{height - 5 - (y - y0) * sy:.1f}" for (x, _), y in zip(pts, ys))
    low, high = (10**y0, 10**y1) if logy else (y0, y1)
    body = (
        f'<polyline class="curve" fill="none" points="{path}"/>'
        f'<text x="4" y="14" class="tick">{esc(title)}{" (log)" if logy else ""}: {high:.3g} … {low:.3g}</text>'
        f'<text x="{PAD}" y="{height + 16}" class="tick">{x0:,.0f}</text>'
        f'<text x="{width - PAD}" y="{height + 16}" class="tick end">{x1:,.0f} tokens</text>'
    )
    return _frame(body, title, "curve-chart", width, height)
