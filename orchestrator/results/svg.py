"""The SVG vocabulary of the report's charts: scales and axes, ticks, colours, escaping.

Every chart of ``orch report`` (metric against parameter, parallel coordinates, learning
curves, a search's best so far) is inline SVG built from these pieces, so the charts
share one look: the same tick spacing, grid, axis lines, notes and colour scales. Text
from records is escaped here (:func:`markupsafe.escape`) wherever it enters the SVG.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from markupsafe import escape

from .values import display_value, is_number

UNSET = "(unset)"
POINT = "#4f5bd5"
# viridis, cut before its pale yellow end so every line stays visible on white.
VIRIDIS = [
    (0x44, 0x01, 0x54),
    (0x48, 0x28, 0x78),
    (0x3E, 0x49, 0x89),
    (0x31, 0x68, 0x8E),
    (0x26, 0x82, 0x8E),
    (0x1F, 0x9E, 0x89),
    (0x35, 0xB7, 0x79),
    (0x6E, 0xCE, 0x58),
    (0xA8, 0xDB, 0x34),
]

#: Distinct colours for a categorical key (amber is left to the best run's halo).
PALETTE = [
    "#4f5bd5", "#dc2626", "#0d9488", "#9333ea", "#65a30d",
    "#db2777", "#0284c7", "#92400e", "#475569", "#a16207",
]


# --------------------------------------------------------------------------- scales


def nice_step(span: float, count: int) -> float:
    raw = span / max(count, 1)
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for multiple in (1, 2, 2.5, 5, 10):
        if multiple * magnitude >= raw:
            return multiple * magnitude
    return 10 * magnitude


@dataclass(frozen=True)
class Axis:
    """Maps a parameter or metric value to a fraction in [0, 1] of the axis length."""

    kind: str  # "linear" | "log" | "category"
    lo: float = 0.0
    hi: float = 1.0
    categories: tuple[str, ...] = ()
    step: float = 0.0  # linear axes: the tick spacing their ends were snapped to

    def position(self, value: Any) -> float:
        if self.kind == "category":
            label = category(value)
            index = self.categories.index(label) if label in self.categories else 0
            return (index + 0.5) / len(self.categories)
        number = math.log10(value) if self.kind == "log" else float(value)
        return (number - self.lo) / (self.hi - self.lo)

    def ticks(self) -> list[tuple[float, str]]:
        if self.kind == "category":
            return [(self.position_of_label(c), c) for c in self.categories]
        if self.kind == "log":
            first, last = math.ceil(self.lo - 1e-9), math.floor(self.hi + 1e-9)
            ticks = [(float(10**p), tick_label(10.0**p)) for p in range(first, last + 1)]
            return [((math.log10(v) - self.lo) / (self.hi - self.lo), t) for v, t in ticks]
        step = self.step or nice_step(self.hi - self.lo, 4)
        # Tick k is k * step; the tolerance keeps the ends that float rounding nudged out.
        first = math.ceil(self.lo / step - 1e-6)
        last = math.floor(self.hi / step + 1e-6)
        return [
            ((k * step - self.lo) / (self.hi - self.lo), tick_label(k * step))
            for k in range(first, last + 1)
        ]

    def position_of_label(self, label: str) -> float:
        return (self.categories.index(label) + 0.5) / len(self.categories)


def tick_label(value: float) -> str:
    text = f"{value:.4g}"
    return "0" if text in ("-0", "0") else text


def category(value: Any) -> str:
    return UNSET if value is None else display_value(value)


def axis_for(values: Sequence[Any], allow_log: bool = True) -> Axis:
    """Numeric values get a linear (or, over two decades, log) axis; others categories."""
    if values and all(is_number(v) and math.isfinite(v) for v in values):
        lo, hi = float(min(values)), float(max(values))
        if allow_log and geometric(values):
            lo, hi = math.log10(lo), math.log10(hi)
            pad = (hi - lo) * 0.08
            return Axis("log", lo - pad, hi + pad)
        pad = (hi - lo) * 0.03 if hi > lo else abs(lo) * 0.1 or 1.0
        low, high = lo - pad, hi + pad
        if lo >= 0 > low:
            low = 0.0  # no negative ticks for a non-negative quantity
        # Snap to whole steps so both ends of the axis carry a tick.
        step = nice_step(high - low, 4)
        return Axis(
            "linear", math.floor(low / step) * step, math.ceil(high / step) * step, step=step
        )

    def order(label: str) -> tuple[int, float, str]:
        number = as_float(label)
        if label == UNSET:
            return (2, 0.0, label)
        return (0, number, label) if number is not None else (1, 0.0, label)

    labels = sorted({category(v) for v in values}, key=order)
    return Axis("category", categories=tuple(labels) or (UNSET,))


def geometric(values: Sequence[float]) -> bool:
    """Values spread over a decade or more with even ratios (0.1, 0.01, 0.001) -> log axis."""
    distinct = sorted({float(v) for v in values})
    if len(distinct) < 2 or distinct[0] <= 0 or distinct[-1] / distinct[0] < 10:
        return False
    if len(distinct) == 2:
        return True

    def spread(gaps: list[float]) -> float:
        mean = sum(gaps) / len(gaps)
        return math.sqrt(sum((g - mean) ** 2 for g in gaps) / len(gaps)) / mean

    linear = [b - a for a, b in zip(distinct, distinct[1:], strict=False)]
    logs = [math.log(b / a) for a, b in zip(distinct, distinct[1:], strict=False)]
    return spread(logs) < spread(linear)


def as_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def jitter(run_id: str) -> float:
    # Stable across runs of the report, unlike random(): the same sweep draws the same page.
    return int(hashlib.sha256(run_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF - 0.5


def viridis(fraction: float) -> str:
    fraction = min(max(fraction, 0.0), 1.0) * (len(VIRIDIS) - 1)
    index = min(int(fraction), len(VIRIDIS) - 2)
    t = fraction - index
    a, b = VIRIDIS[index], VIRIDIS[index + 1]
    r, g, bl = (round(x + (y - x) * t) for x, y in zip(a, b, strict=True))
    return f"#{r:02x}{g:02x}{bl:02x}"


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def num(value: float) -> str:
    return f"{value:.1f}"


# --------------------------------------------------------------------------- drawing


def open_svg(cls: str, width: int, height: int, label: str, extra: str = "") -> str:
    """A chart's ``<svg>`` tag: its class, size and what it shows, for screen readers."""
    return (f'<svg class="{cls}" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="{escape(label)}"{extra}>')


def chart_title(x: int, text: str, limit: int) -> str:
    """A chart's title, cut to ``limit`` characters (whole in its tooltip)."""
    return (f'<text x="{x}" y="18" class="chart-title">{escape(truncate(text, limit))}'
            f"<title>{escape(text)}</title></text>")


def y_ticks(axis: Axis, left: int, top: int, plot_w: int, plot_h: int) -> list[str]:
    """A grid line and a label at each tick of the vertical ``axis``."""
    parts = []
    for fraction, label in axis.ticks():
        y = top + (1 - fraction) * plot_h
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{num(y)}" y2="{num(y)}" class="grid"/>'
        )
        parts.append(
            f'<text x="{left - 6}" y="{num(y + 3.5)}" text-anchor="end" class="tick">'
            f"{escape(label)}</text>"
        )
    return parts


def x_ticks(axis: Axis, left: int, top: int, plot_w: int, plot_h: int) -> list[str]:
    """A label under the plot at each tick of the horizontal ``axis``."""
    return [
        f'<text x="{num(left + fraction * plot_w)}" y="{top + plot_h + 15}" '
        f'text-anchor="middle" class="tick">{escape(label)}</text>'
        for fraction, label in axis.ticks()
    ]


def frame_lines(left: int, top: int, plot_w: int, plot_h: int) -> list[str]:
    """The two axis lines: along the bottom of the plot, then up its left side."""
    return [
        f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" '
        f'y2="{top + plot_h}" class="axis"/>',
        f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}" class="axis"/>',
    ]


def axis_note(x: int, y: int, text: str) -> str:
    """A note at the end of an axis (``step``, ``log scale``)."""
    return f'<text x="{x}" y="{y}" text-anchor="end" class="axis-note">{escape(text)}</text>'
