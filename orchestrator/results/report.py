"""A sweep as one self-contained HTML page: summary, learning curves, results table, plots.

The page fetches nothing: CSS and a few lines of table-sorting JavaScript are inline
in the template ``orchestrator/templates/report.html.j2`` (package data, read with
:mod:`importlib.resources`) and every chart is inline SVG drawn here. Whatever comes
from records is escaped, by jinja2's autoescaping in the template and by
:func:`markupsafe.escape` in the SVG built below.

Why one module of this size: the charts (axes, scatter, parallel coordinates, curves)
share one small SVG vocabulary (scales, ticks, colours, escaping) and are drawn for one
page; ``curves`` and ``objective`` beside it hold what other commands reuse.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from markupsafe import Markup, escape

from ..errors import OrchestratorError, UsageError
from .curves import Curves, downsample
from .render import BEST_MARK
from .searchplot import search_section
from .table import SortKey, View, build_view, default_sort, parse_sort
from .values import (
    display_value,
    flatten,
    format_duration,
    format_number,
    is_number,
    short_time,
    status_text,
)

TEMPLATE_NAME = "report.html.j2"
# Package data, so the report works from a wheel as well as from the source tree.
TEMPLATE_DIR: Traversable = resources.files("orchestrator") / "templates"

UNSET = "(unset)"
POINT = "#4f5bd5"
FAILED = "#9ca3af"
# viridis, cut before its pale yellow end so every line stays visible on white.
_VIRIDIS = [
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


def write_report(
    sweep: Mapping[str, Any],
    records: Sequence[Mapping[str, Any]],
    path: Path,
    sort: str | None = None,
    *,
    curves: Mapping[str, Curves] | None = None,
    color_by: str | None = None,
    search: Mapping[str, Any] | None = None,
) -> None:
    """Write the HTML report of ``sweep`` to ``path``.

    ``sort`` names the objective (``loss`` or ``-accuracy``; see
    :func:`~.objective.parse_objective` for ``--objective``) that picks the best run and
    colours the parallel coordinates; without it, one is guessed from metric names and
    the page says so. ``curves`` (run id -> :func:`~.curves.parse_curve` of its
    ``metrics.jsonl``) adds one chart per step metric with every run's curve, coloured
    by the config key ``color_by`` (default: the first swept one). ``search`` (a
    search's view, ``SearchView.to_json()``) adds its best-so-far chart and importances.
    """
    html = render_report(sweep, records, sort, curves=curves, color_by=color_by,
                         search=search)
    try:
        Path(path).write_text(html, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write report to {path}: {exc.strerror or exc}") from exc


def render_report(
    sweep: Mapping[str, Any],
    records: Sequence[Mapping[str, Any]],
    sort: str | None = None,
    *,
    curves: Mapping[str, Curves] | None = None,
    color_by: str | None = None,
    search: Mapping[str, Any] | None = None,
) -> str:
    import jinja2

    template = TEMPLATE_DIR / TEMPLATE_NAME
    try:
        source = template.read_text(encoding="utf-8")
    except OSError as exc:
        raise OrchestratorError(
            f"report template {template} is missing: the orch installation is incomplete; "
            "reinstall orch"
        ) from exc
    env = jinja2.Environment(
        loader=jinja2.DictLoader({TEMPLATE_NAME: source}),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    context = _context(sweep, records, sort, curves or {}, color_by)
    context["search"] = search_section(search)
    return env.get_template(TEMPLATE_NAME).render(**context)


# --------------------------------------------------------------------------- context


def _context(
    sweep: Mapping[str, Any],
    records: Sequence[Mapping[str, Any]],
    sort: str | None,
    curves: Mapping[str, Curves],
    color_by: str | None,
) -> dict[str, Any]:
    guessed = not sort
    sort = sort or default_sort(records)
    key = parse_sort(records, sort) if sort else None
    view = build_view(records, sort)
    succeeded = [r for r in view.records if r.get("status") == "succeeded"]
    # a search's pruned trials ended as asked: counted apart, not as failures
    pruned = [r for r in view.records if r.get("status") == "pruned"]
    failed = [r for r in view.records if r.get("status") not in ("succeeded", "pruned")]
    planned = len(sweep.get("runs") or []) or len(records)
    best = next((r for r in view.records if r.get("run_id") == view.best), None)
    color_metric = key.metric if key else (view.metrics[0] if view.metrics else None)
    return {
        "sweep_id": str(sweep.get("sweep_id", "")),
        "project": str(sweep.get("project", "")),
        "created_at": short_time(sweep.get("created_at")),
        "args": [str(arg) for arg in sweep.get("args") or []],
        "counts": {
            "planned": planned,
            "succeeded": len(succeeded),
            "failed": len(failed),
            "pruned": len(pruned),
            "pending": max(planned - len(records), 0),
        },
        "objective": _objective_text(key),
        "objective_guessed": guessed and key is not None,
        "curves": _curves_section(view, curves, color_by, key, view.best),
        "best": _best_card(best, view.keys, view.metrics) if best else None,
        "table": _table(view),
        "plots": [
            {
                "metric": metric,
                "charts": [_chart(view.records, key_, metric, view.best) for key_ in view.keys],
            }
            for metric in _objective_first(view.metrics, key)
        ]
        if view.keys
        else [],
        "parallel": _parallel(view.records, view.keys, view.metrics, color_metric, key, view.best)
        if view.keys and color_metric
        else None,
        "single_config": bool(view.records) and not view.keys,
    }


def _objective_first(metrics: list[str], key: SortKey | None) -> list[str]:
    if key is None or key.metric not in metrics:
        return metrics
    return [key.metric] + [name for name in metrics if name != key.metric]


def _objective_text(key: SortKey | None) -> str | None:
    if key is None:
        return None
    return f"{key.metric} ({'higher' if key.descending else 'lower'} is better)"


def _best_card(best: Mapping[str, Any], keys: list[str], metrics: list[str]) -> dict[str, Any]:
    flat = flatten(best.get("config") or {})
    values = best.get("metrics") or {}
    return {
        "run_id": str(best.get("run_id", "")),
        "config": [(key, display_value(flat[key]) if key in flat else UNSET) for key in keys],
        "metrics": [(name, format_number(values[name])) for name in metrics if name in values],
    }


def _cell(text: str, sort: Any = None, cls: str = "", title: bool = False) -> dict[str, Any]:
    # data-sort carries the raw number so the inline script sorts 1e-05 below 0.001;
    # title shows the whole of a value the column width cut short.
    return {
        "text": text,
        "sort": sort if is_number(sort) else None,
        "cls": cls,
        "title": text if title and len(text) > 24 else None,
    }


def _table(view: View) -> dict[str, Any]:
    header = [{"name": "", "numeric": False}] if view.best else []
    header += [{"name": "run_id", "numeric": False}, {"name": "status", "numeric": False}]
    header += [{"name": key, "numeric": False} for key in view.keys]
    header += [{"name": name, "numeric": True} for name in view.metrics]
    header.append({"name": "duration", "numeric": True})
    rows = []
    for record in view.records:
        flat = flatten(record.get("config") or {})
        metrics = record.get("metrics") or {}
        is_best = record.get("run_id") == view.best
        cells = []
        if view.best:
            cells.append(_cell(BEST_MARK if is_best else "", 0 if is_best else 1, "mark"))
        cells.append(_cell(str(record.get("run_id", "")), cls="mono"))
        status = str(record.get("status", ""))
        cells.append(_cell(status_text(record), cls=f"status status-{status}", title=True))
        for key in view.keys:
            value = flat.get(key)
            cells.append(_cell(display_value(value) if key in flat else "–", value, title=True))
        for name in view.metrics:
            value = metrics.get(name)
            cells.append(_cell(format_number(value) if name in metrics else "–", value, "num"))
        duration = record.get("duration_s")
        cells.append(_cell(format_duration(duration) or "–", duration, "num"))
        rows.append({"cells": cells, "best": is_best, "status": status})
    return {"header": header, "rows": rows}


# --------------------------------------------------------------------------- scales


def _nice_step(span: float, count: int) -> float:
    raw = span / max(count, 1)
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for multiple in (1, 2, 2.5, 5, 10):
        if multiple * magnitude >= raw:
            return multiple * magnitude
    return 10 * magnitude


@dataclass(frozen=True)
class _Axis:
    """Maps a parameter or metric value to a fraction in [0, 1] of the axis length."""

    kind: str  # "linear" | "log" | "category"
    lo: float = 0.0
    hi: float = 1.0
    categories: tuple[str, ...] = ()
    step: float = 0.0  # linear axes: the tick spacing their ends were snapped to

    def position(self, value: Any) -> float:
        if self.kind == "category":
            label = _category(value)
            index = self.categories.index(label) if label in self.categories else 0
            return (index + 0.5) / len(self.categories)
        number = math.log10(value) if self.kind == "log" else float(value)
        return (number - self.lo) / (self.hi - self.lo)

    def ticks(self) -> list[tuple[float, str]]:
        if self.kind == "category":
            return [(self.position_of_label(c), c) for c in self.categories]
        if self.kind == "log":
            first, last = math.ceil(self.lo - 1e-9), math.floor(self.hi + 1e-9)
            ticks = [(float(10**p), _tick_label(10.0**p)) for p in range(first, last + 1)]
            return [((math.log10(v) - self.lo) / (self.hi - self.lo), t) for v, t in ticks]
        step = self.step or _nice_step(self.hi - self.lo, 4)
        # Tick k is k * step; the tolerance keeps the ends that float rounding nudged out.
        first = math.ceil(self.lo / step - 1e-6)
        last = math.floor(self.hi / step + 1e-6)
        return [
            ((k * step - self.lo) / (self.hi - self.lo), _tick_label(k * step))
            for k in range(first, last + 1)
        ]

    def position_of_label(self, label: str) -> float:
        return (self.categories.index(label) + 0.5) / len(self.categories)


def _tick_label(value: float) -> str:
    text = f"{value:.4g}"
    return "0" if text in ("-0", "0") else text


def _category(value: Any) -> str:
    return UNSET if value is None else display_value(value)


def _axis(values: Sequence[Any], allow_log: bool = True) -> _Axis:
    """Numeric values get a linear (or, over two decades, log) axis; others categories."""
    if values and all(is_number(v) and math.isfinite(v) for v in values):
        lo, hi = float(min(values)), float(max(values))
        if allow_log and _geometric(values):
            lo, hi = math.log10(lo), math.log10(hi)
            pad = (hi - lo) * 0.08
            return _Axis("log", lo - pad, hi + pad)
        pad = (hi - lo) * 0.03 if hi > lo else abs(lo) * 0.1 or 1.0
        low, high = lo - pad, hi + pad
        if lo >= 0 > low:
            low = 0.0  # no negative ticks for a non-negative quantity
        # Snap to whole steps so both ends of the axis carry a tick.
        step = _nice_step(high - low, 4)
        return _Axis(
            "linear", math.floor(low / step) * step, math.ceil(high / step) * step, step=step
        )

    def order(label: str) -> tuple[int, float, str]:
        number = _as_float(label)
        if label == UNSET:
            return (2, 0.0, label)
        return (0, number, label) if number is not None else (1, 0.0, label)

    labels = sorted({_category(v) for v in values}, key=order)
    return _Axis("category", categories=tuple(labels) or (UNSET,))


def _geometric(values: Sequence[float]) -> bool:
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


def _as_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _metric(record: Mapping[str, Any], name: str) -> float | None:
    """A plottable metric: a finite number of a succeeded run."""
    value = (record.get("metrics") or {}).get(name)
    if record.get("status") != "succeeded" or not is_number(value) or not math.isfinite(value):
        return None
    return float(value)


def _jitter(run_id: str) -> float:
    # Stable across runs of the report, unlike random(): the same sweep draws the same page.
    return int(hashlib.sha256(run_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF - 0.5


def _viridis(fraction: float) -> str:
    fraction = min(max(fraction, 0.0), 1.0) * (len(_VIRIDIS) - 1)
    index = min(int(fraction), len(_VIRIDIS) - 2)
    t = fraction - index
    a, b = _VIRIDIS[index], _VIRIDIS[index + 1]
    r, g, bl = (round(x + (y - x) * t) for x, y in zip(a, b, strict=True))
    return f"#{r:02x}{g:02x}{bl:02x}"


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _f(value: float) -> str:
    return f"{value:.1f}"


# --------------------------------------------------------------------------- metric vs parameter


def _chart(records: Sequence[Mapping[str, Any]], key: str, metric: str, best: str | None) -> Markup:
    """One metric against one swept parameter: strip plot or scatter with the mean."""
    width, height = 360, 240
    left, right, top, bottom = 56, 16, 30, 46
    plot_w, plot_h = width - left - right, height - top - bottom
    points = []
    for record in records:
        value = _metric(record, metric)
        if value is None:
            continue
        param = flatten(record.get("config") or {}).get(key)
        points.append((str(record.get("run_id", "")), param, value))

    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(metric)} against {escape(key)}">',
        f'<text x="{left}" y="18" class="chart-title">{escape(_truncate(key, 44))}'
        f"<title>{escape(key)}</title></text>",
    ]
    if not points:
        parts.append(
            f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" class="empty">'
            "no succeeded runs with this metric</text></svg>"
        )
        return Markup("".join(parts))

    x_axis = _axis([p[1] for p in points])
    y_axis = _axis([p[2] for p in points], allow_log=False)

    def sx(fraction: float) -> float:
        return left + fraction * plot_w

    def sy(fraction: float) -> float:
        return top + (1 - fraction) * plot_h

    for fraction, label in y_axis.ticks():
        y = sy(fraction)
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{_f(y)}" y2="{_f(y)}" class="grid"/>'
        )
        parts.append(
            f'<text x="{left - 6}" y="{_f(y + 3.5)}" text-anchor="end" class="tick">'
            f"{escape(label)}</text>"
        )
    x_ticks = x_axis.ticks()
    rotate = x_axis.kind == "category" and (
        len(x_ticks) > 5 or max(len(label) for _, label in x_ticks) > 9
    )
    for fraction, label in x_ticks:
        x = sx(fraction)
        if x_axis.kind == "category":
            parts.append(
                f'<line x1="{_f(x)}" x2="{_f(x)}" y1="{top}" y2="{top + plot_h}" class="band"/>'
            )
        short = escape(_truncate(label, 14))
        if rotate:
            parts.append(
                f'<text transform="translate({_f(x + 3)},{top + plot_h + 12}) rotate(30)" '
                f'class="tick">{short}<title>{escape(label)}</title></text>'
            )
        else:
            parts.append(
                f'<text x="{_f(x)}" y="{top + plot_h + 16}" text-anchor="middle" class="tick">'
                f"{short}<title>{escape(label)}</title></text>"
            )
    parts.append(
        f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" '
        f'y2="{top + plot_h}" class="axis"/>'
    )
    parts.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}" class="axis"/>')
    if x_axis.kind == "log":
        parts.append(
            f'<text x="{left + plot_w}" y="{height - 8}" text-anchor="end" '
            f'class="axis-note">log scale</text>'
        )

    # The mean per parameter value: a line for numbers, a bar per category.
    groups: dict[str, list[tuple[Any, float]]] = {}
    for _, param, value in points:
        groups.setdefault(_category(param), []).append((param, value))
    band = plot_w / max(len(x_axis.categories), 1)
    if x_axis.kind == "category":
        for label, members in groups.items():
            x = sx(x_axis.position_of_label(label))
            mean = sum(v for _, v in members) / len(members)
            y = sy(y_axis.position(mean))
            half = min(band * 0.32, 28)
            parts.append(
                f'<line x1="{_f(x - half)}" x2="{_f(x + half)}" y1="{_f(y)}" '
                f'y2="{_f(y)}" class="mean"><title>mean {escape(metric)} = '
                f"{escape(format_number(mean))}</title></line>"
            )
    else:
        means = sorted(
            (members[0][0], sum(v for _, v in members) / len(members))
            for members in groups.values()
        )
        if len(means) > 1:
            path = " ".join(
                f"{'M' if i == 0 else 'L'}{_f(sx(x_axis.position(x)))},{_f(sy(y_axis.position(m)))}"
                for i, (x, m) in enumerate(means)
            )
            parts.append(f'<path d="{path}" class="mean-line"/>')

    ordered = sorted(points, key=lambda p: p[0] == best)  # the best run on top
    for run_id, param, value in ordered:
        position = x_axis.position(param)
        if x_axis.kind == "category":
            x = sx(position) + _jitter(run_id) * min(band * 0.45, 40)
        else:
            x = sx(position)
        y = sy(y_axis.position(value))
        is_best = run_id == best
        tip = (
            f"{run_id}{' (best)' if is_best else ''}\n{key} = {_category(param)}\n"
            f"{metric} = {format_number(value)}"
        )
        parts.append(
            f'<circle cx="{_f(x)}" cy="{_f(y)}" r="{6 if is_best else 4.5}" '
            f'class="{"pt best" if is_best else "pt"}"><title>{escape(tip)}</title></circle>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


# --------------------------------------------------------------------------- parallel coordinates


def _parallel(
    records: Sequence[Mapping[str, Any]],
    keys: list[str],
    metrics: list[str],
    color_metric: str,
    key: SortKey | None,
    best: str | None,
) -> Markup:
    """One axis per swept parameter, then the metrics; lines coloured by ``color_metric``."""
    metric_axes = [m for m in metrics if m != color_metric] + [color_metric]
    columns = [("param", k) for k in keys] + [("metric", m) for m in metric_axes]
    width = 1120
    height = 400
    left, right, top, bottom = 80, 80, 58, 64
    plot_h = height - top - bottom
    gap = (width - left - right) / max(len(columns) - 1, 1)

    rows = []
    for record in records:
        flat = flatten(record.get("config") or {})
        values = record.get("metrics") or {}
        rows.append((record, flat, values))

    axes: list[_Axis] = []
    for kind, name in columns:
        if kind == "param":
            axes.append(_axis([flat.get(name) for _, flat, _ in rows]))
        else:
            numbers = [v for r, _, _ in rows if (v := _metric(r, name)) is not None]
            axes.append(_axis(numbers, allow_log=False) if numbers else _Axis("linear"))

    def ax_x(index: int) -> float:
        return left + index * gap if len(columns) > 1 else width / 2

    def ax_y(fraction: float) -> float:
        return top + (1 - fraction) * plot_h

    parts = [
        f'<svg class="parallel" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="parallel coordinates coloured by {escape(color_metric)}">',
        '<defs><linearGradient id="scale" x1="0" x2="1" y1="0" y2="0">',
    ]
    for i in range(len(_VIRIDIS)):
        fraction = i / (len(_VIRIDIS) - 1)
        parts.append(f'<stop offset="{fraction:.3f}" stop-color="{_viridis(fraction)}"/>')
    parts.append("</linearGradient></defs>")

    colour_values = [v for r, _, _ in rows if (v := _metric(r, color_metric)) is not None]
    lo, hi = (min(colour_values), max(colour_values)) if colour_values else (0.0, 1.0)

    def goodness(value: float) -> float:
        # 1 is the good end of the scale; without an objective, 1 is simply the highest.
        fraction = 0.5 if hi == lo else (value - lo) / (hi - lo)
        return 1 - fraction if key is not None and not key.descending else fraction

    lines = []
    for record, flat, values in rows:
        run_id = str(record.get("run_id", ""))
        points = []
        for index, ((kind, name), axis) in enumerate(zip(columns, axes, strict=True)):
            if kind == "param":
                points.append((ax_x(index), ax_y(axis.position(flat.get(name)))))
            elif (value := _metric(record, name)) is not None:
                points.append((ax_x(index), ax_y(axis.position(value))))
            else:
                break  # a failed run's line stops where its metrics are missing
        colour_value = _metric(record, color_metric)
        has_colour = colour_value is not None
        order = goodness(colour_value) if colour_value is not None else 0.0
        tip_lines = [f"{run_id} ({status_text(record)})"]
        tip_lines += [f"{name} = {_category(flat.get(name))}" for name in keys]
        tip_lines += [
            f"{name} = {format_number(values[name])}" for name in metrics if name in values
        ]
        lines.append((order, run_id, points, has_colour, tip_lines))

    for index, ((kind, name), axis) in enumerate(zip(columns, axes, strict=True)):
        x = ax_x(index)
        label_class = "pc-label metric" if kind == "metric" else "pc-label"
        if name == color_metric and kind == "metric":
            label_class += " primary"
        parts.append(
            f'<line x1="{_f(x)}" x2="{_f(x)}" y1="{top}" y2="{top + plot_h}" class="pc-axis"/>'
        )
        parts.append(
            f'<text x="{_f(x)}" y="{top - 24}" text-anchor="middle" '
            f'class="{label_class}">{escape(_truncate(name, 18))}'
            f"<title>{escape(name)}</title></text>"
        )
        if axis.kind == "log":
            parts.append(
                f'<text x="{_f(x)}" y="{top - 11}" text-anchor="middle" '
                f'class="axis-note">log</text>'
            )

    def layer(line: tuple[float, str, Any, bool, Any]) -> tuple[int, float]:
        # Worse lines first, then the (dashed) failed ones, the best run on top of all.
        order, run_id, _, has_colour, _ = line
        return (2 if run_id == best else 0 if has_colour else 1, order)

    for order, run_id, points, has_colour, tip_lines in sorted(lines, key=layer):
        if len(points) < 2:
            continue
        path = " ".join(
            f"{'M' if i == 0 else 'L'}{_f(x)},{_f(y)}" for i, (x, y) in enumerate(points)
        )
        tip = escape("\n".join(tip_lines))
        if not has_colour:
            parts.append(f'<path d="{path}" class="pc-line failed"><title>{tip}</title></path>')
            continue
        if run_id == best:
            parts.append(f'<path d="{path}" class="pc-halo"/>')
        colour = _viridis(order)
        width_px = 3.2 if run_id == best else 1.8
        parts.append(
            f'<path d="{path}" class="pc-line" stroke="{colour}" '
            f'stroke-width="{width_px}"><title>{tip}</title></path>'
        )

    # Tick labels last so they sit above the lines, on a white halo.
    for index, axis in enumerate(axes):
        x = ax_x(index)
        ticks = axis.ticks()
        if axis.kind == "category" and len(ticks) > 12:
            ticks = ticks[:: math.ceil(len(ticks) / 12)]
        for fraction, label in ticks:
            y = ax_y(fraction)
            parts.append(
                f'<line x1="{_f(x - 3)}" x2="{_f(x + 3)}" y1="{_f(y)}" y2="{_f(y)}" '
                f'class="pc-axis"/>'
            )
            parts.append(
                f'<text x="{_f(x + 7)}" y="{_f(y + 3.5)}" class="pc-tick">'
                f"{escape(_truncate(label, 14))}<title>{escape(label)}</title></text>"
            )

    # Colour legend.
    legend_w = 220
    lx, ly = width - right - legend_w, height - 30
    low_text, high_text = format_number(lo), format_number(hi)
    if key is not None and not key.descending:
        low_text, high_text = high_text, low_text  # the scale runs worse -> better
    caption = f"{color_metric}: " + ("worse → better" if key is not None else "low → high")
    parts.append(
        f'<rect x="{lx}" y="{ly}" width="{legend_w}" height="9" rx="2" fill="url(#scale)"/>'
    )
    parts.append(f'<text x="{lx}" y="{ly + 22}" class="pc-tick">{escape(low_text)}</text>')
    parts.append(
        f'<text x="{lx + legend_w}" y="{ly + 22}" text-anchor="end" class="pc-tick">'
        f"{escape(high_text)}</text>"
    )
    parts.append(
        f'<text x="{lx - 10}" y="{ly + 8}" text-anchor="end" class="pc-tick">'
        f"{escape(caption)}</text>"
    )
    if any(not has for _, _, _, has, _ in lines):
        parts.append(
            f'<line x1="{left}" x2="{left + 28}" y1="{ly + 4}" y2="{ly + 4}" '
            f'class="pc-line failed"/>'
        )
        parts.append(f'<text x="{left + 36}" y="{ly + 8}" class="pc-tick">failed run</text>')
    if best:
        parts.append(
            f'<line x1="{left + 130}" x2="{left + 158}" y1="{ly + 4}" y2="{ly + 4}" '
            f'class="pc-halo"/>'
        )
        parts.append(f'<text x="{left + 166}" y="{ly + 8}" class="pc-tick">best run</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


# --------------------------------------------------------------------------- learning curves

#: Distinct colours for a categorical key (amber is left to the best run's halo).
_PALETTE = [
    "#4f5bd5", "#dc2626", "#0d9488", "#9333ea", "#65a30d",
    "#db2777", "#0284c7", "#92400e", "#475569", "#a16207",
]
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
        axis = _axis(list(values.values()))
        if axis.kind == "category":
            colour = {
                label: _PALETTE[i % len(_PALETTE)] for i, label in enumerate(axis.categories)
            }
            by_run = {run_id: colour[_category(v)] for run_id, v in values.items()}
            legend = list(colour.items())
        else:

            def shade(value: Any) -> str:
                # The ends of viridis are dark and pale: keep to its middle 85%.
                return _viridis(0.85 * axis.position(value) + 0.02)

            by_run = {run_id: shade(v) for run_id, v in values.items()}
            distinct = sorted({float(v) for v in values.values() if is_number(v)})
            legend = [(_category(v), shade(v)) for v in distinct]
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


def _curves_section(
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
    x_axis = _Axis("linear", lo, hi, step=_nice_step(hi - lo, 5))
    y_axis = _axis([min(ys), max(ys)], allow_log=False)

    def sx(value: float) -> float:
        return left + x_axis.position(value) * plot_w

    def sy(value: float) -> float:
        return top + (1 - y_axis.position(value)) * plot_h

    parts = [
        f'<svg class="curves" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(metric)} by step" data-metric="{escape(metric)}">',
        f'<text x="{left}" y="18" class="chart-title">{escape(_truncate(metric, 60))}'
        f"<title>{escape(metric)}</title></text>",
    ]
    for fraction, label in y_axis.ticks():
        y = top + (1 - fraction) * plot_h
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{_f(y)}" y2="{_f(y)}" class="grid"/>'
        )
        parts.append(
            f'<text x="{left - 6}" y="{_f(y + 3.5)}" text-anchor="end" class="tick">'
            f"{escape(label)}</text>"
        )
    for fraction, label in x_axis.ticks():
        x = left + fraction * plot_w
        parts.append(
            f'<text x="{_f(x)}" y="{top + plot_h + 15}" text-anchor="middle" class="tick">'
            f"{escape(label)}</text>"
        )
    parts.append(
        f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" '
        f'y2="{top + plot_h}" class="axis"/>'
    )
    parts.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}" class="axis"/>')
    parts.append(
        f'<text x="{left + plot_w}" y="{height - 6}" text-anchor="end" class="axis-note">'
        "step</text>"
    )
    for record, points in sorted(lines, key=lambda line: str(line[0].get("run_id")) == best):
        run_id = str(record.get("run_id", ""))
        path = " ".join(
            f"{'M' if i == 0 else 'L'}{_f(sx(x))},{_f(sy(y))}" for i, (x, y) in enumerate(points)
        )
        if len(points) == 1:
            path += " l0.01,0"  # a lone point: a dot, by the round line cap
        is_best = run_id == best
        value = (
            _category(flatten(record.get("config") or {}).get(colours.key))
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
