"""Tiny inline-SVG charts for the evaluation report (no plotting library: cold start matters).

Every label goes through html.escape; numbers are formatted by us. Charts are fixed-size and readable
without scripts or external assets, so the report is one self-contained file.
"""
from __future__ import annotations

from collections.abc import Sequence
from html import escape

WIDTH = 640
COLORS = ("#2563eb", "#9ca3af", "#16a34a", "#d97706", "#9333ea", "#dc2626")
_FONT = 'font-family="system-ui, sans-serif" font-size="12"'


def _svg(height: int, body: list[str], title: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" '
            f'height="{height}" role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>'
            + "".join(body) + "</svg>")


def bar_chart(bars: Sequence[tuple[str, float]], *, title: str, lines: Sequence[tuple[str, float]] = (),
              max_value: float = 1.0, highlight: str | None = None,
              errors: Sequence[tuple[float, float] | None] = ()) -> str:
    """Horizontal bars (value 0..max_value) with vertical reference lines (gates) and, per bar, an optional
    interval drawn as a whisker (the bootstrap interval of the mean)."""
    left, right, row = 170, 60, 28
    height = 30 + row * len(bars) + 16 * len(lines)
    span = WIDTH - left - right

    def x(v: float) -> float:
        return left + span * max(0.0, min(v, max_value)) / max_value

    body = []
    for i, (label, value) in enumerate(bars):
        y = 20 + i * row
        color = COLORS[0] if label == highlight else COLORS[1]
        body.append(f'<text x="{left - 8}" y="{y + 16}" text-anchor="end" {_FONT}>{escape(label)}</text>'
                    f'<rect x="{left}" y="{y + 3}" width="{x(value) - left:.1f}" height="{row - 8}" fill="{color}"/>'
                    f'<text x="{x(value) + 4:.1f}" y="{y + 16}" {_FONT}>{value:.3f}</text>')
        bounds = errors[i] if i < len(errors) else None
        if bounds is not None:
            lo, hi, mid = x(bounds[0]), x(bounds[1]), y + row / 2 - 1
            body.append(f'<g stroke="#111827" stroke-width="1.5"><title>95 % interval {bounds[0]:.3f}–{bounds[1]:.3f}'
                        f'</title><line x1="{lo:.1f}" y1="{mid:.1f}" x2="{hi:.1f}" y2="{mid:.1f}"/>'
                        f'<line x1="{lo:.1f}" y1="{mid - 5:.1f}" x2="{lo:.1f}" y2="{mid + 5:.1f}"/>'
                        f'<line x1="{hi:.1f}" y1="{mid - 5:.1f}" x2="{hi:.1f}" y2="{mid + 5:.1f}"/></g>')
    bottom = 20 + row * len(bars)
    for j, (label, value) in enumerate(lines):
        color = COLORS[5 - j % 3]
        body.append(f'<line x1="{x(value):.1f}" y1="14" x2="{x(value):.1f}" y2="{bottom + 4}" stroke="{color}" '
                    f'stroke-dasharray="4 3"/><text x="{x(value):.1f}" y="{bottom + 18 + 15 * j}" '
                    f'text-anchor="middle" fill="{color}" {_FONT}>'
                    f'{escape(label)} {value:.2f}</text>')
    return _svg(height + 10, body, title)


def strip_chart(series: Sequence[tuple[str, Sequence[float]]], *, title: str, limit: float | None = None,
                unit: str = "ms") -> str:
    """One lane per series: every value as a dot, p50 and p95 as ticks, an optional limit line."""
    from shared.evaluation.metrics import percentile
    left, right, row = 170, 30, 34
    values = [v for _, vs in series for v in vs]
    top = max(values + ([limit] if limit else []) + [1.0]) * 1.05
    height = 20 + row * len(series) + 30
    span = WIDTH - left - right

    def x(v: float) -> float:
        return left + span * v / top

    body = []
    for i, (label, vs) in enumerate(series):
        y = 20 + i * row + row / 2
        body.append(f'<text x="{left - 8}" y="{y + 4}" text-anchor="end" {_FONT}>{escape(label)}</text>'
                    f'<line x1="{left}" y1="{y}" x2="{WIDTH - right}" y2="{y}" stroke="#e5e7eb"/>')
        for k, v in enumerate(vs):
            jitter = ((k * 7919) % 11 - 5) * 1.2   # deterministic spread so equal values stay visible
            body.append(f'<circle cx="{x(v):.1f}" cy="{y + jitter:.1f}" r="2" fill="{COLORS[0]}" '
                        f'fill-opacity="0.45"/>')
        for q, color in ((50, "#111827"), (95, "#dc2626")):
            p = percentile(list(vs), q)
            if p is not None:
                body.append(f'<line x1="{x(p):.1f}" y1="{y - 10}" x2="{x(p):.1f}" y2="{y + 10}" stroke="{color}" '
                            f'stroke-width="2"><title>p{q} {p:.0f} {escape(unit)}</title></line>')
    bottom = 20 + row * len(series)
    if limit:
        body.append(f'<line x1="{x(limit):.1f}" y1="14" x2="{x(limit):.1f}" y2="{bottom}" stroke="#dc2626" '
                    f'stroke-dasharray="4 3"/><text x="{x(limit):.1f}" y="{bottom + 14}" text-anchor="end" '
                    f'fill="#dc2626" {_FONT}>limit {limit:.0f} {escape(unit)}</text>')
    body.append(f'<text x="{left}" y="{bottom + 28}" {_FONT}>0</text><text x="{WIDTH - right}" y="{bottom + 28}" '
                f'text-anchor="end" {_FONT}>{top:.0f} {escape(unit)} (black: p50, red: p95)</text>')
    return _svg(height, body, title)


def line_chart(series: Sequence[tuple[str, Sequence[tuple[float, float]]]], *, title: str,
               x_label: str = "step") -> str:
    """Polylines on shared axes (e.g. training and validation loss by step)."""
    left, right, top_pad, bottom_pad, height = 50, 20, 20, 40, 260
    points = [p for _, ps in series for p in ps]
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(0.0, min(ys)), max(ys) * 1.05 if max(ys) > 0 else 1.0
    plot_w, plot_h = WIDTH - left - right, height - top_pad - bottom_pad

    def px(v: float) -> float:
        return left + plot_w * (v - x0) / (x1 - x0)

    def py(v: float) -> float:
        return top_pad + plot_h * (1 - (v - y0) / (y1 - y0))

    body = [(f'<line x1="{left}" y1="{top_pad + plot_h}" x2="{WIDTH - right}" y2="{top_pad + plot_h}" stroke="#6b7280"/>'
             f'<line x1="{left}" y1="{top_pad}" x2="{left}" y2="{top_pad + plot_h}" stroke="#6b7280"/>'
            f'<text x="{left - 4}" y="{top_pad + 4}" text-anchor="end" {_FONT}>{y1:.2f}</text>'
            f'<text x="{left - 4}" y="{top_pad + plot_h}" text-anchor="end" {_FONT}>{y0:.2f}</text>'
            f'<text x="{left}" y="{height - 22}" {_FONT}>{x0:g}</text>'
            f'<text x="{WIDTH - right}" y="{height - 22}" text-anchor="end" {_FONT}>{x1:g} {escape(x_label)}</text>')]
    for i, (label, ps) in enumerate(series):
        color = COLORS[(0, 3, 2, 4)[i % 4]]
        coords = " ".join(f"{px(a):.1f},{py(b):.1f}" for a, b in sorted(ps))
        body.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="2"/>'
                    f'<text x="{left + 10 + 150 * i}" y="{height - 6}" fill="{color}" {_FONT}>■ {escape(label)}</text>')
    return _svg(height, body, title)
