"""SVG bar and line charts for report templates (`{{ chart('bar', rows, x='tier', y='amount') }}`).

Plain SVG with the sizes in the markup, so the same chart shows in the Markdown preview, the HTML
and the PDF (WeasyPrint draws SVG natively). Values are escaped; nothing is fetched.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from markupsafe import Markup

PALETTE = ("#2f6feb", "#e36209", "#1a7f37", "#8250df", "#cf222e", "#9a6700")
WIDTH, HEIGHT = 640, 280
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 36, 56


class ChartError(ValueError):
    """A chart asked for with rows or columns it cannot draw."""


def chart(
    kind: str,
    rows: Sequence[Mapping[str, Any]],
    x: str,
    y: str | Sequence[str],
    title: str | None = None,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> Markup:
    """A bar or line chart of ``rows``: ``x`` labels the categories, ``y`` names one or more
    numeric columns (one series each)."""
    if kind not in ("bar", "line"):
        raise ChartError(f"chart kind `{kind}` is not `bar` or `line`")
    series = [y] if isinstance(y, str) else list(y)
    rows = list(rows)
    for name in [x, *series]:
        if rows and name not in rows[0]:
            raise ChartError(
                f"chart column `{name}` is not in the rows (columns: {', '.join(rows[0])})"
            )
    labels = [str(r[x]) for r in rows]
    values = [[_number(r[s]) for r in rows] for s in series]
    top = _nice_max(max([v for vs in values for v in vs] + [0.0]))
    plot_w, plot_h = width - LEFT - RIGHT, height - TOP - BOTTOM
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans, sans-serif" font-size="10">',
        f'<text x="{width / 2:.0f}" y="18" text-anchor="middle" font-size="13" '
        f'font-weight="bold">{escape(title or "")}</text>',
    ]
    parts += _axes(top, plot_w, plot_h)
    if kind == "bar":
        parts += _bars(values, plot_w, plot_h, top)
    else:
        parts += _lines(values, plot_w, plot_h, top)
    parts += _labels(labels, plot_w, plot_h)
    if len(series) > 1:
        parts += _legend(series, height)
    parts.append("</svg>")
    return Markup(f'<div class="chart">{"".join(parts)}</div>')  # nosec B704 # SVG built here from numbers and escaped labels


def _number(value: Any) -> float:
    if value is None:
        return 0.0
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ChartError(f"chart value {value!r} is not a number") from None
    return 0.0 if math.isnan(number) else number


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def _fmt(value: float) -> str:
    if abs(value) >= 1_000_000:
        return f"{value / 1_000_000:.3g}M"
    if abs(value) >= 1_000:
        return f"{value / 1_000:.3g}k"
    return f"{value:.3g}"


def _axes(top: float, plot_w: int, plot_h: int) -> list[str]:
    parts = []
    for n in range(5):
        value = top * n / 4
        y = TOP + plot_h - plot_h * n / 4
        parts.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_w}" y2="{y:.1f}" stroke="#d0d7de"/>'
        )
        parts.append(f'<text x="{LEFT - 6}" y="{y + 3:.1f}" text-anchor="end">{_fmt(value)}</text>')
    return parts


def _slot(n: int, count: int, plot_w: int) -> tuple[float, float]:
    width = plot_w / max(count, 1)
    return LEFT + width * n, width


def _bars(values: list[list[float]], plot_w: int, plot_h: int, top: float) -> list[str]:
    parts = []
    count = len(values[0]) if values else 0
    for n in range(count):
        x0, slot = _slot(n, count, plot_w)
        bar_w = slot * 0.7 / len(values)
        for s, series in enumerate(values):
            h = plot_h * series[n] / top
            x = x0 + slot * 0.15 + bar_w * s
            parts.append(
                f'<rect x="{x:.1f}" y="{TOP + plot_h - h:.1f}" width="{bar_w:.1f}" '
                f'height="{h:.1f}" fill="{PALETTE[s % len(PALETTE)]}"/>'
            )
            parts.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{TOP + plot_h - h - 3:.1f}" '
                f'text-anchor="middle" font-size="9">{_fmt(series[n])}</text>'
            )
    return parts


def _lines(values: list[list[float]], plot_w: int, plot_h: int, top: float) -> list[str]:
    parts = []
    for s, series in enumerate(values):
        points = []
        for n, value in enumerate(series):
            x0, slot = _slot(n, len(series), plot_w)
            points.append((x0 + slot / 2, TOP + plot_h - plot_h * value / top))
        color = PALETTE[s % len(PALETTE)]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>' for x, y in points]
    return parts


def _labels(labels: list[str], plot_w: int, plot_h: int) -> list[str]:
    parts = []
    for n, label in enumerate(labels):
        x0, slot = _slot(n, len(labels), plot_w)
        text = label if len(label) <= 14 else label[:13] + "…"
        parts.append(
            f'<text x="{x0 + slot / 2:.1f}" y="{TOP + plot_h + 14}" text-anchor="middle">'
            f"{escape(text)}</text>"
        )
    return parts


def _legend(series: list[str], height: int) -> list[str]:
    parts = []
    for s, name in enumerate(series):
        x = LEFT + s * 120
        y = height - 12
        parts.append(
            f'<rect x="{x}" y="{y - 8}" width="10" height="10" fill="{PALETTE[s % len(PALETTE)]}"/>'
        )
        parts.append(f'<text x="{x + 14}" y="{y + 1}">{escape(name)}</text>')
    return parts
