"""A sweep as one self-contained HTML page: summary, learning curves, results table, plots.

The page fetches nothing: CSS and a few lines of table-sorting JavaScript are inline
in the template ``orchestrator/templates/report.html.j2`` (package data, read with
:mod:`importlib.resources`) and every chart is inline SVG. Whatever comes from records
is escaped, by jinja2's autoescaping in the template and by :func:`markupsafe.escape` in
the SVG.

The charts are drawn beside this module from one SVG vocabulary (:mod:`.svg`): metric against
parameter and parallel coordinates (:mod:`.plots`), learning curves (:mod:`.curveplot`),
a search's best so far (:mod:`.searchplot`); ``curves`` and ``objective`` hold what other
commands reuse.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from ..errors import OrchestratorError, UsageError
from .curveplot import curves_section
from .curves import Curves
from .plots import chart, parallel
from .render import BEST_MARK
from .searchplot import search_section
from .svg import UNSET
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
        "curves": curves_section(view, curves, color_by, key, view.best),
        "best": _best_card(best, view.keys, view.metrics) if best else None,
        "table": _table(view),
        "plots": [
            {
                "metric": metric,
                "charts": [chart(view.records, key_, metric, view.best) for key_ in view.keys],
            }
            for metric in _objective_first(view.metrics, key)
        ]
        if view.keys
        else [],
        "parallel": parallel(view.records, view.keys, view.metrics, color_metric, key, view.best)
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
