"""The report's search section: the objective of each trial in trial order with the
best-so-far line, and Optuna's parameter importances as bars.

Takes the plain JSON of ``search.view.SearchView.to_json()`` (results know nothing of
Optuna), returns inline SVG and the values the template lays out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from markupsafe import Markup, escape


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


def _f(value: float) -> str:
    return f"{value:.1f}"


def _best_so_far(trials: list[Mapping[str, Any]], objective: str) -> Markup | None:
    """Dots: each succeeded trial's objective; a step line: the best so far; ticks on the
    axis: trials that ended without a value (pruned, failed, not yet run)."""
    values = [(int(t["trial"]), float(t["value"])) for t in trials if t.get("value") is not None]
    best = [(int(t["trial"]), float(t["best_so_far"])) for t in trials
            if t.get("best_so_far") is not None]
    if not values:
        return None
    width, height, left, right, top, bottom = 560, 280, 60, 18, 30, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    last = max(int(t["trial"]) for t in trials)
    low = min(v for _, v in values)
    high = max(v for _, v in values)
    if high <= low:
        low, high = low - 0.5, high + 0.5

    def sx(number: float) -> float:
        return left + (number / last if last else 0.5) * plot_w

    def sy(value: float) -> float:
        return top + (1 - (value - low) / (high - low)) * plot_h

    parts = [
        f'<svg class="best-so-far" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(objective)} by trial">',
        f'<text x="{left}" y="18" class="chart-title">{escape(objective)} by trial · best so '
        "far</text>",
        f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}" '
        'class="axis"/>',
        f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}" class="axis"/>',
        f'<text x="{left - 6}" y="{_f(sy(high) + 3.5)}" text-anchor="end" class="tick">'
        f"{high:.4g}</text>",
        f'<text x="{left - 6}" y="{_f(sy(low) + 3.5)}" text-anchor="end" class="tick">'
        f"{low:.4g}</text>",
        f'<text x="{left}" y="{top + plot_h + 15}" class="tick">0</text>',
        f'<text x="{left + plot_w}" y="{top + plot_h + 15}" text-anchor="end" class="tick">'
        f"{last}</text>",
        f'<text x="{left + plot_w}" y="{height - 6}" text-anchor="end" class="axis-note">'
        "trial</text>",
    ]
    if best:
        path = [f"M{_f(sx(best[0][0]))},{_f(sy(best[0][1]))}"]
        for (_, previous), (number, value) in zip(best, best[1:], strict=False):
            path.append(f"L{_f(sx(number))},{_f(sy(previous))} L{_f(sx(number))},{_f(sy(value))}")
        path.append(f"L{_f(sx(last))},{_f(sy(best[-1][1]))}")
        parts.append(f'<path d="{" ".join(path)}" class="curve best" fill="none"/>')
    for number, value in values:
        parts.append(f'<circle cx="{_f(sx(number))}" cy="{_f(sy(value))}" r="3.5" class="dot">'
                     f"<title>trial {number}: {escape(objective)} = {value:.6g}</title></circle>")
    for trial in trials:
        if trial.get("value") is None:
            x = sx(int(trial["trial"]))
            parts.append(f'<line x1="{_f(x)}" x2="{_f(x)}" y1="{top + plot_h - 6}" '
                         f'y2="{top + plot_h}" class="pruned-tick"><title>trial '
                         f'{int(trial["trial"])}: {escape(str(trial.get("status")))}</title>'
                         "</line>")
    parts.append("</svg>")
    return Markup("".join(parts))
