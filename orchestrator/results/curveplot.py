"""The report's learning curves: one chart per step metric, every run's curve in it,
coloured by a config key, the best run on top.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup, escape

from ..errors import UsageError
from .curves import Curves, downsample
from .svg import (
    PALETTE,
    POINT,
    Axis,
    axis_for,
    axis_note,
    category,
    chart_title,
    frame_lines,
    nice_step,
    num,
    open_svg,
    viridis,
    x_ticks,
    y_ticks,
)
from .table import SortKey, View
from .values import flatten, format_number, is_number, status_text

_LEGEND_MAX = 12


@dataclass(frozen=True)
class _Colours:
    """The colour of each run, by the value its config has for one key."""

    key: str | None
    by_run: dict[str, str]
    legend: list[tuple[str, str]]  # (value, colour), in axis order
    more: int  # legend entries left out

    @classmethod
    def build(cls, records: Sequence[Mapping[str, Any]], key: str | None) -> _Colours:
        if key is None:
            return cls(None, {str(r.get("run_id", "")): POINT for r in records}, [], 0)
        values = {
            str(r.get("run_id", "")): flatten(r.get("config") or {}).get(key) for r in records
        }
        axis = axis_for(list(values.values()))
        if axis.kind == "category":
            colour = {
                label: PALETTE[i % len(PALETTE)] for i, label in enumerate(axis.categories)
            }
            by_run = {run_id: colour[category(v)] for run_id, v in values.items()}
            legend = list(colour.items())
        else:

            def shade(value: Any) -> str:
                # The ends of viridis are dark and pale: keep to its middle 85%.
                return viridis(0.85 * axis.position(value) + 0.02)

            by_run = {run_id: shade(v) for run_id, v in values.items()}
            distinct = sorted({float(v) for v in values.values() if is_number(v)})
            legend = [(category(v), shade(v)) for v in distinct]
        if len(legend) > _LEGEND_MAX:  # evenly chosen, the ends kept
            step = (len(legend) - 1) / (_LEGEND_MAX - 1)
            chosen = [legend[round(i * step)] for i in range(_LEGEND_MAX)]
            return cls(key, by_run, chosen, len(legend) - len(chosen))
        return cls(key, by_run, legend, 0)


def _color_key(
    view: View, records: Sequence[Mapping[str, Any]], color_by: str | None
) -> str | None:
    if color_by is None:
        return view.keys[0] if view.keys else None
    name = color_by.removeprefix("config.")
    known = {key for r in records for key in flatten(r.get("config") or {})}
    if name not in known:
        swept = ", ".join(view.keys) or "none"
        raise UsageError(f"unknown config key {color_by!r} for --color-by (swept keys: {swept})")
    return name


def curves_section(
    view: View,
    curves: Mapping[str, Curves],
    color_by: str | None,
    key: SortKey | None,
    best: str | None,
) -> dict[str, Any] | None:
    """One chart per step metric, every run's curve in it; None without any curve."""
    colour_key = _color_key(view, view.records, color_by)
    drawn = [
        r for r in view.records
        if any(len(series[0]) for series in (curves.get(str(r.get("run_id", ""))) or {}).values())
    ]
    if not drawn:
        return None
    colours = _Colours.build(drawn, colour_key)
    names = sorted({name for r in drawn for name in curves[str(r.get("run_id", ""))]})
    if key is not None and key.metric in names:
        names = [key.metric] + [n for n in names if n != key.metric]
    charts = [
        {"metric": name, "svg": _curve_chart(drawn, curves, name, colours, best)}
        for name in names
    ]
    return {
        "charts": charts,
        "key": colours.key,
        "legend": colours.legend,
        "more": colours.more,
        "runs": len(drawn),
        "best": best if any(str(r.get("run_id")) == best for r in drawn) else None,
    }


def _curve_chart(
    records: Sequence[Mapping[str, Any]],
    curves: Mapping[str, Curves],
    metric: str,
    colours: _Colours,
    best: str | None,
) -> Markup:
    """One metric by step: a line per run, the best one on top with an amber halo."""
    width, height = 560, 300
    left, right, top, bottom = 60, 18, 30, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    lines: list[tuple[Mapping[str, Any], list[tuple[float, float]]]] = []
    for record in records:
        series = (curves.get(str(record.get("run_id", ""))) or {}).get(metric)
        if series is not None and len(series[0]):
            lines.append((record, downsample(series)))
    xs = [x for _, points in lines for x, _ in points]
    ys = [y for _, points in lines for _, y in points]
    # Steps span exactly their range (no padding past the last step, unlike values).
    lo, hi = min(xs), max(xs)
    lo, hi = (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)
    x_axis = Axis("linear", lo, hi, step=nice_step(hi - lo, 5))
    y_axis = axis_for([min(ys), max(ys)], allow_log=False)

    def sx(value: float) -> float:
        return left + x_axis.position(value) * plot_w

    def sy(value: float) -> float:
        return top + (1 - y_axis.position(value)) * plot_h

    parts = [
        open_svg("curves", width, height, f"{metric} by step",
                 f' data-metric="{escape(metric)}"'),
        chart_title(left, metric, 60),
        *y_ticks(y_axis, left, top, plot_w, plot_h),
        *x_ticks(x_axis, left, top, plot_w, plot_h),
        *frame_lines(left, top, plot_w, plot_h),
        axis_note(left + plot_w, height - 6, "step"),
    ]
    for record, points in sorted(lines, key=lambda line: str(line[0].get("run_id")) == best):
        run_id = str(record.get("run_id", ""))
        path = " ".join(
            f"{'M' if i == 0 else 'L'}{num(sx(x))},{num(sy(y))}" for i, (x, y) in enumerate(points)
        )
        if len(points) == 1:
            path += " l0.01,0"  # a lone point: a dot, by the round line cap
        is_best = run_id == best
        value = (
            category(flatten(record.get("config") or {}).get(colours.key))
            if colours.key
            else None
        )
        tip = f"{run_id}{' (best)' if is_best else ''} ({status_text(record)})"
        if colours.key:
            tip += f"\n{colours.key} = {value}"
        tip += f"\n{metric} = {format_number(points[-1][1])} at step {format_number(points[-1][0])}"
        if is_best:
            parts.append(f'<path d="{path}" class="curve-halo"/>')
        if is_best:
            cls = "curve best"
        else:
            cls = "curve" if record.get("status") == "succeeded" else "curve failed"
        parts.append(
            f'<path d="{path}" class="{cls}" stroke="{colours.by_run.get(run_id, POINT)}" '
            f'data-run="{escape(run_id)}"><title>{escape(tip)}</title></path>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))
