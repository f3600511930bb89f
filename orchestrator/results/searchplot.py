"""The report's search section: the objective of each trial in trial order with the
best-so-far line, and Optuna's parameter importances as bars.

Takes the plain JSON of ``search.view.SearchView.to_json()`` (results know nothing of
Optuna), returns inline SVG and the values the template lays out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from markupsafe import Markup, escape

from .svg import (
    Axis,
    axis_for,
    axis_note,
    chart_title,
    frame_lines,
    nice_step,
    num,
    open_svg,
    x_ticks,
    y_ticks,
)


def search_section(search: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """What the template shows for a search; None for a grid."""
    if not search or not search.get("trials"):
        return None
    trials = list(search["trials"])
    counts: dict[str, int] = {}
    for trial in trials:
        counts[str(trial.get("status"))] = counts.get(str(trial.get("status")), 0) + 1
    importances = sorted(((str(k), float(v)) for k, v in
                          (search.get("importances") or {}).items()), key=lambda kv: -kv[1])
    return {
        "sampler": str(search.get("sampler") or ""),
        "objective": search.get("objective"),
        "trials": len(trials),
        "counts": sorted(counts.items()),
        "chart": _best_so_far(trials, str(search.get("objective") or "objective")),
        "importances": [{"key": k, "weight": v, "percent": round(100 * v, 1)}
                        for k, v in importances],
    }


def _best_so_far(trials: list[Mapping[str, Any]], objective: str) -> Markup | None:
    """Dots: each succeeded trial's objective; a step line: the best so far; ticks on the
    axis: trials that ended without a value (pruned, failed, not yet run). Axes, ticks
    and grid as the report's other charts draw them (:mod:`.svg`)."""
    values = [(int(t["trial"]), float(t["value"])) for t in trials if t.get("value") is not None]
    best = [(int(t["trial"]), float(t["best_so_far"])) for t in trials
            if t.get("best_so_far") is not None]
    if not values:
        return None
    width, height, left, right, top, bottom = 560, 280, 60, 18, 30, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    last = max(int(t["trial"]) for t in trials)
    # Trials span exactly their range, from 0 (no padding past the last one).
    x_axis = Axis("linear", 0, last, step=nice_step(last, 5)) if last else Axis("linear", -0.5, 0.5)
    y_axis = axis_for([min(v for _, v in values), max(v for _, v in values)], allow_log=False)

    def sx(number: float) -> float:
        return left + x_axis.position(number) * plot_w

    def sy(value: float) -> float:
        return top + (1 - y_axis.position(value)) * plot_h

    parts = [
        open_svg("best-so-far", width, height, f"{objective} by trial"),
        chart_title(left, f"{objective} by trial · best so far", 60),
        *y_ticks(y_axis, left, top, plot_w, plot_h),
        *x_ticks(x_axis, left, top, plot_w, plot_h),
        *frame_lines(left, top, plot_w, plot_h),
        axis_note(left + plot_w, height - 6, "trial"),
    ]
    if best:
        path = [f"M{num(sx(best[0][0]))},{num(sy(best[0][1]))}"]
        for (_, previous), (number, value) in zip(best, best[1:], strict=False):
            path.append(f"L{num(sx(number))},{num(sy(previous))} L{num(sx(number))},"
                        f"{num(sy(value))}")
        path.append(f"L{num(sx(last))},{num(sy(best[-1][1]))}")
        parts.append(f'<path d="{" ".join(path)}" class="curve best" fill="none"/>')
    for number, value in values:
        parts.append(f'<circle cx="{num(sx(number))}" cy="{num(sy(value))}" r="3.5" class="dot">'
                     f"<title>trial {number}: {escape(objective)} = {value:.6g}</title></circle>")
    for trial in trials:
        if trial.get("value") is None:
            x = sx(int(trial["trial"]))
            parts.append(f'<line x1="{num(x)}" x2="{num(x)}" y1="{top + plot_h - 6}" '
                         f'y2="{top + plot_h}" class="pruned-tick"><title>trial '
                         f'{int(trial["trial"])}: {escape(str(trial.get("status")))}</title>'
                         "</line>")
    parts.append("</svg>")
    return Markup("".join(parts))
