"""Feature store contents as terminal text: a feature page, a table of features, top features per token.

The token a context is shown for is marked in reverse video on a terminal, and between ⟦ ⟧ otherwise;
other tokens the feature fires on are bold (terminal) or left plain.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from monosemantic.analysis.latent_stats import HIST_EDGES, N_HIST
from monosemantic.analysis.store import Example, Feature, Rule, Summary

if TYPE_CHECKING:
    from monosemantic.runmodel import TokenFeatures

BARS = " ▁▂▃▄▅▆▇█"


def _visible(token: str) -> str:
    return token.replace("\n", "⏎")


def _role(ex: Example, color: bool) -> str:
    """The example token's role (math corpus), after its context."""
    if ex.role is None:
        return ""
    return f"  \x1b[2m{ex.role}\x1b[0m" if color else f"  ({ex.role})"


def context_line(ex: Example, color: bool) -> str:
    peak = max(ex.acts) or 1.0
    parts = []
    for j, (tok, act) in enumerate(zip(ex.tokens, ex.acts)):
        tok = _visible(tok)
        if j == ex.active:
            parts.append(f"\x1b[7m{tok}\x1b[0m" if color else f"⟦{tok}⟧")
        elif act > 0 and color:
            parts.append(f"\x1b[1m{tok}\x1b[0m" if act >= 0.5 * peak else tok)
        else:
            parts.append(tok)
    return "".join(parts)


def sparkline(counts: list[int]) -> str:
    top = max(counts) or 1
    return "".join(BARS[min(8, -(-8 * c // top))] for c in counts)


def _histogram_line(hist: list[int]) -> str:
    used = [i for i, c in enumerate(hist) if c]
    if not used:
        return "  (never fired)"
    lo, hi = used[0], used[-1]
    edges = [0.0, *HIST_EDGES.tolist(), float("inf")]
    return f"  {edges[lo]:.3g} {sparkline(hist[lo : hi + 1])} {edges[min(hi + 1, N_HIST)]:.3g}"


def _tokens(pairs: list[tuple[str, float]], fmt: str) -> str:
    return "  ".join(f"{_visible(t)!r} {fmt.format(v)}" for t, v in pairs)


def label_line(label: Rule | None) -> str:
    """A label with its held-out precision and recall (none for "dense"), or "no label"."""
    if label is None:
        return "no label"
    if label.precision is None:
        return f"{label.text}  ({label.kind})"
    return (
        f"{label.text}  (precision {label.precision:.2f}, recall {label.recall:.2f} on {label.support} held-out "
        f"tokens, {label.kind})"
    )


def format_feature(f: Feature, *, color: bool = False, examples: int = 8) -> str:
    lines = [f"feature {f.index}: {label_line(f.label)}"]
    lines.append(
        f"  fires on {f.density:.3%} of tokens ({f.fires} times); mean activation {f.mean_act:.3g}, max {f.max_act:.3g}"
    )
    if f.multilingual is not None:
        langs = ", ".join(f"{k} {v}" for k, v in sorted(f.languages.items(), key=lambda kv: -kv[1]))
        flag = "multilingual" if f.multilingual else "languages"
        lines.append(
            f"  {flag} (held-out firings on its label, by language): {langs or '-'}"
            + (f"; concept: {f.concept}" if f.concept else "")
        )
    lines.append("activation histogram (log scale):")
    lines.append(_histogram_line(f.histogram))
    if f.rules:
        lines.append("label rules (held-out precision / recall):")
        lines += [
            f"  {r.text:<36} {r.precision:.2f} / {r.recall:.2f}  ({r.kind}, holds on {r.support})" for r in f.rules[:5]
        ]
    if f.top_logits:
        lines.append("promotes:  " + _tokens(f.top_logits[:8], "{:+.2f}"))
        lines.append("suppresses: " + _tokens(f.bottom_logits[:8], "{:+.2f}"))
    if f.next_tokens:
        lines.append("next tokens (activation-weighted): " + _tokens(f.next_tokens[:8], "{:.0%}"))
    if f.neighbours:
        lines.append(
            "nearest features (decoder cosine): "
            + ", ".join(f"{j} ({s:.2f}{', ' + label if label else ''})" for j, s, label in f.neighbours[:5])
        )
    lines.append("top contexts:")
    lines += [f"  {ex.value:7.3f}  {context_line(ex, color)}{_role(ex, color)}" for ex in f.top_examples[:examples]]
    if f.samples:
        lines.append("samples by activation range:")
        for r in f.samples:
            lines.append(f"  [{r.low:.3g}, {r.high:.3g}): {r.count} activations")
            lines += [f"    {ex.value:7.3f}  {context_line(ex, color)}{_role(ex, color)}" for ex in r.examples[:2]]
    return "\n".join(lines)


def format_summaries(rows: list[Summary]) -> str:
    if not rows:
        return "no features match"
    lines = [f"{'feature':>8}  {'precision':>9}  {'recall':>6}  {'density':>8}  {'kind':<13}  label"]
    for s in rows:
        p = "" if s.precision is None else f"{s.precision:.2f}"
        r = "" if s.recall is None else f"{s.recall:.2f}"
        lines.append(f"{s.index:>8}  {p:>9}  {r:>6}  {s.density:>8.2%}  {s.kind or '':<13}  {s.label or 'no label'}")
    return "\n".join(lines)


def format_token_features(rows: list[TokenFeatures]) -> str:
    lines = []
    for t in rows:
        feats = "  ".join(f"{j}:{v:.2f}" + (f" {label}" if label else "") for j, v, label in t.features)
        lines.append(f"{_visible(t.token)!r:>8}  {feats or '(none)'}")
    return "\n".join(lines)
