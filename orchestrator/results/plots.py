"""The report's plots of results: each metric against each swept parameter (a strip
plot or a scatter with the mean), and the parallel coordinates of every run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from markupsafe import Markup, escape

from .svg import (
    VIRIDIS,
    Axis,
    axis_for,
    axis_note,
    category,
    chart_title,
    frame_lines,
    jitter,
    num,
    open_svg,
    truncate,
    viridis,
    y_ticks,
)
from .table import SortKey
from .values import flatten, format_number, is_number, status_text


def plotted(record: Mapping[str, Any], name: str) -> float | None:
    """A plottable metric: a finite number of a succeeded run."""
    value = (record.get("metrics") or {}).get(name)
    if record.get("status") != "succeeded" or not is_number(value) or not math.isfinite(value):
        return None
    return float(value)


def chart(records: Sequence[Mapping[str, Any]], key: str, metric: str, best: str | None) -> Markup:
    """One metric against one swept parameter: strip plot or scatter with the mean."""
    width, height = 360, 240
    left, right, top, bottom = 56, 16, 30, 46
    plot_w, plot_h = width - left - right, height - top - bottom
    points = []
    for record in records:
        value = plotted(record, metric)
        if value is None:
            continue
        param = flatten(record.get("config") or {}).get(key)
        points.append((str(record.get("run_id", "")), param, value))

    parts = [open_svg("chart", width, height, f"{metric} against {key}"),
             chart_title(left, key, 44)]
    if not points:
        parts.append(
            f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" class="empty">'
            "no succeeded runs with this metric</text></svg>"
        )
        return Markup("".join(parts))

    x_axis = axis_for([p[1] for p in points])
    y_axis = axis_for([p[2] for p in points], allow_log=False)

    def sx(fraction: float) -> float:
        return left + fraction * plot_w

    def sy(fraction: float) -> float:
        return top + (1 - fraction) * plot_h

    parts += y_ticks(y_axis, left, top, plot_w, plot_h)
    x_ticks = x_axis.ticks()
    rotate = x_axis.kind == "category" and (
        len(x_ticks) > 5 or max(len(label) for _, label in x_ticks) > 9
    )
    for fraction, label in x_ticks:
        x = sx(fraction)
        if x_axis.kind == "category":
            parts.append(
                f'<line x1="{num(x)}" x2="{num(x)}" y1="{top}" y2="{top + plot_h}" class="band"/>'
            )
        short = escape(truncate(label, 14))
        if rotate:
            parts.append(
                f'<text transform="translate({num(x + 3)},{top + plot_h + 12}) rotate(30)" '
                f'class="tick">{short}<title>{escape(label)}</title></text>'
            )
        else:
            parts.append(
                f'<text x="{num(x)}" y="{top + plot_h + 16}" text-anchor="middle" class="tick">'
                f"{short}<title>{escape(label)}</title></text>"
            )
    parts += frame_lines(left, top, plot_w, plot_h)
    if x_axis.kind == "log":
        parts.append(axis_note(left + plot_w, height - 8, "log scale"))

    # The mean per parameter value: a line for numbers, a bar per category.
    groups: dict[str, list[tuple[Any, float]]] = {}
    for _, param, value in points:
        groups.setdefault(category(param), []).append((param, value))
    band = plot_w / max(len(x_axis.categories), 1)
    if x_axis.kind == "category":
        for label, members in groups.items():
            x = sx(x_axis.position_of_label(label))
            mean = sum(v for _, v in members) / len(members)
            y = sy(y_axis.position(mean))
            half = min(band * 0.32, 28)
            parts.append(
                f'<line x1="{num(x - half)}" x2="{num(x + half)}" y1="{num(y)}" '
                f'y2="{num(y)}" class="mean"><title>mean {escape(metric)} = '
                f"{escape(format_number(mean))}</title></line>"
            )
    else:
        means = sorted(
            (members[0][0], sum(v for _, v in members) / len(members))
            for members in groups.values()
        )
        if len(means) > 1:
            path = " ".join(
                f"{'M' if i == 0 else 'L'}{num(sx(x_axis.position(x)))},"
                f"{num(sy(y_axis.position(m)))}"
                for i, (x, m) in enumerate(means)
            )
            parts.append(f'<path d="{path}" class="mean-line"/>')

    ordered = sorted(points, key=lambda p: p[0] == best)  # the best run on top
    for run_id, param, value in ordered:
        position = x_axis.position(param)
        if x_axis.kind == "category":
            x = sx(position) + jitter(run_id) * min(band * 0.45, 40)
        else:
            x = sx(position)
        y = sy(y_axis.position(value))
        is_best = run_id == best
        tip = (
            f"{run_id}{' (best)' if is_best else ''}\n{key} = {category(param)}\n"
            f"{metric} = {format_number(value)}"
        )
        parts.append(
            f'<circle cx="{num(x)}" cy="{num(y)}" r="{6 if is_best else 4.5}" '
            f'class="{"pt best" if is_best else "pt"}"><title>{escape(tip)}</title></circle>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


# --------------------------------------------------------------------------- parallel coordinates


def parallel(
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

    axes: list[Axis] = []
    for kind, name in columns:
        if kind == "param":
            axes.append(axis_for([flat.get(name) for _, flat, _ in rows]))
        else:
            numbers = [v for r, _, _ in rows if (v := plotted(r, name)) is not None]
            axes.append(axis_for(numbers, allow_log=False) if numbers else Axis("linear"))

    def ax_x(index: int) -> float:
        return left + index * gap if len(columns) > 1 else width / 2

    def ax_y(fraction: float) -> float:
        return top + (1 - fraction) * plot_h

    parts = [
        open_svg("parallel", width, height, f"parallel coordinates coloured by {color_metric}"),
        '<defs><linearGradient id="scale" x1="0" x2="1" y1="0" y2="0">',
    ]
    for i in range(len(VIRIDIS)):
        fraction = i / (len(VIRIDIS) - 1)
        parts.append(f'<stop offset="{fraction:.3f}" stop-color="{viridis(fraction)}"/>')
    parts.append("</linearGradient></defs>")

    colour_values = [v for r, _, _ in rows if (v := plotted(r, color_metric)) is not None]
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
            elif (value := plotted(record, name)) is not None:
                points.append((ax_x(index), ax_y(axis.position(value))))
            else:
                break  # a failed run's line stops where its metrics are missing
        colour_value = plotted(record, color_metric)
        has_colour = colour_value is not None
        order = goodness(colour_value) if colour_value is not None else 0.0
        tip_lines = [f"{run_id} ({status_text(record)})"]
        tip_lines += [f"{name} = {category(flat.get(name))}" for name in keys]
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
            f'<line x1="{num(x)}" x2="{num(x)}" y1="{top}" y2="{top + plot_h}" class="pc-axis"/>'
        )
        parts.append(
            f'<text x="{num(x)}" y="{top - 24}" text-anchor="middle" '
            f'class="{label_class}">{escape(truncate(name, 18))}'
            f"<title>{escape(name)}</title></text>"
        )
        if axis.kind == "log":
            parts.append(
                f'<text x="{num(x)}" y="{top - 11}" text-anchor="middle" '
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
            f"{'M' if i == 0 else 'L'}{num(x)},{num(y)}" for i, (x, y) in enumerate(points)
        )
        tip = escape("\n".join(tip_lines))
        if not has_colour:
            parts.append(f'<path d="{path}" class="pc-line failed"><title>{tip}</title></path>')
            continue
        if run_id == best:
            parts.append(f'<path d="{path}" class="pc-halo"/>')
        colour = viridis(order)
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
                f'<line x1="{num(x - 3)}" x2="{num(x + 3)}" y1="{num(y)}" y2="{num(y)}" '
                f'class="pc-axis"/>'
            )
            parts.append(
                f'<text x="{num(x + 7)}" y="{num(y + 3.5)}" class="pc-tick">'
                f"{escape(truncate(label, 14))}<title>{escape(label)}</title></text>"
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
