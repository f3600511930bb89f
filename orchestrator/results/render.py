"""The results as text: a view of runs as ``table`` (rich), ``json``, ``csv`` or
``markdown``; the sweeps of ``orch runs``; any rows of ``orch query``.

Renderers return text without a final newline, ready for ``click.echo``; CSV is the
exception: every record, the last one included, ends with ``"\n"``.
"""

from __future__ import annotations

import csv
import html
import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import UsageError
from .table import Expand, View, build_view
from .values import (
    clipped,
    display_value,
    format_duration,
    format_number,
    is_number,
    printable,
    repr_number,
    short_time,
    status_text,
    sweep_label,
)

FORMATS = ("table", "json", "csv", "markdown")
BEST_MARK = "★"

# The run object of `orch sweep --json`, plus the composed config.
_RUN_OBJECT_KEYS = ("run_id", "status", "overrides", "image_id", "metrics", "config")
# Added when a record carries them (records read across sweeps, through the catalog).
_SWEEP_KEYS = ("sweep_id", "sweep_name", "tags")
# Added when a record carries them (a search's trials: ``search.view``).
_TRIAL_KEYS = ("trial", "best_so_far")


def _run_object(record: Mapping[str, Any], sweeps: bool = False) -> dict[str, Any]:
    """The contract's run object; across sweeps also which sweep each run is of."""
    defaults: dict[str, Any] = {"overrides": [], "metrics": {}, "config": {}}
    run = {key: record.get(key, defaults.get(key)) for key in _RUN_OBJECT_KEYS}
    if sweeps:
        run.update({key: record.get(key) for key in _SWEEP_KEYS})
    run.update({key: record[key] for key in _TRIAL_KEYS if key in record})
    return run


def _render_json(view: View) -> str:
    runs = [_run_object(record, view.sweeps) for record in view.records]
    return json.dumps(runs, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def _render_csv(view: View) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    sweep = ["sweep"] if view.sweeps else []
    writer.writerow(["run_id", *sweep, "status", *view.keys, *_metric_labels(view)])
    for record in view.records:
        metrics = record.get("metrics") or {}
        writer.writerow(
            [
                record.get("run_id", ""),
                *([sweep_label(record)] if view.sweeps else []),
                record.get("status", ""),
                *(view.config_cell(record, key) or "" for key in view.keys),
                # Full precision: CSV is for machines.
                *(repr_number(metrics[name]) if name in metrics else "" for name in view.metrics),
            ]
        )
    return buffer.getvalue()  # every record ends with "\n", as CSV files do


def _metric_labels(view: View) -> list[str]:
    """Metric column names; ``metrics.NAME`` where a config key has the same name, so no
    two columns read alike."""
    keys = set(view.keys)
    return [f"metrics.{name}" if name in keys else name for name in view.metrics]


def _human_header(view: View) -> list[str]:
    marker = [""] if view.best else []
    sweep = ["sweep"] if view.sweeps else []
    names = [printable(name) for name in [*view.keys, *_metric_labels(view)]]
    return [*marker, "run_id", *sweep, "status", *names, "duration"]


def _human_row(view: View, record: Mapping[str, Any]) -> list[str]:
    marker = [BEST_MARK if record.get("run_id") == view.best else ""] if view.best else []
    return [
        *marker,
        str(record.get("run_id", "")),
        *([sweep_label(record)] if view.sweeps else []),
        status_text(record),
        *(view.config_cell(record, key) or "-" for key in view.keys),
        *(view.metric_cell(record, name) or "-" for name in view.metrics),
        format_duration(record.get("duration_s")) or "-",
    ]


def _render_markdown(view: View) -> str:
    def line(cells: Sequence[str]) -> str:
        # Markdown renderers pass inline HTML through: a value is text, never markup.
        escaped = [
            html.escape(cell.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " "),
                        quote=False)
            for cell in cells
        ]
        return "| " + " | ".join(escaped) + " |"

    header = _human_header(view)
    numeric = len(header) - len(view.metrics) - 1
    align = ["---:" if index >= numeric else "---" for index in range(len(header))]
    lines = [line(header), "| " + " | ".join(align) + " |"]
    lines += [line(_human_row(view, record)) for record in view.records]
    return "\n".join(lines)


def _render_table(view: View, color: bool, empty_note: str) -> str:
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    if not view.records:
        return empty_note
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    header = _human_header(view)
    first_metric = len(header) - len(view.metrics) - 1
    for index, name in enumerate(header):
        right = index >= first_metric
        table.add_column(name, justify="right" if right else "left", no_wrap=True)
    for record in view.records:
        cells = _human_row(view, record)
        status = str(record.get("status"))
        style = "green" if status == "succeeded" else "red" if status == "failed" else "yellow"
        status_index = (2 if view.best else 1) + (1 if view.sweeps else 0)
        row = [Text(cell) for cell in cells]
        row[status_index].stylize(style)
        is_best = record.get("run_id") == view.best
        table.add_row(*row, style="bold" if is_best else None)

    def console(width: int) -> Console:
        return Console(
            file=io.StringIO(),
            width=width,
            color_system="standard" if color else None,
            force_terminal=color,
            no_color=not color,
            highlight=False,
            emoji=False,
            soft_wrap=False,
        )

    # As wide as the table needs: cells are never wrapped or cut, whatever the terminal.
    width = console(10_000).measure(table).maximum
    out = console(width)
    out.print(table)
    assert isinstance(out.file, io.StringIO)
    return "\n".join(line.rstrip() for line in out.file.getvalue().splitlines()).strip("\n")


def render(
    records: Sequence[Mapping[str, Any]],
    fmt: str = "table",
    sort: str | None = None,
    where: Sequence[str] = (),
    color: bool = False,
    *,
    status: Sequence[str] = (),
    limit: int | None = None,
    expand: Expand | None = None,
) -> str:
    """The results of a sweep as ``table`` (rich), ``json``, ``csv`` or ``markdown``
    (``expand``: see :func:`~.table.build_view`)."""
    check_format(fmt)
    view = build_view(records, sort, where, status=status, limit=limit, expand=expand)
    return render_view(view, fmt, color, where=where, status=status)


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r} (valid: {', '.join(FORMATS)})")


def render_view(
    view: View,
    fmt: str = "table",
    color: bool = False,
    *,
    where: Sequence[str] = (),
    status: Sequence[str] = (),
) -> str:
    """A view (:func:`~.table.build_view`, :func:`~.sqlview.frame_view`) in ``fmt``;
    ``where`` and ``status``, what selected it, only say why a table is empty."""
    check_format(fmt)
    if fmt == "json":
        return _render_json(view)
    if fmt == "csv":
        return _render_csv(view)
    if fmt == "markdown":
        return _render_markdown(view)
    return _render_table(
        view, color, "no runs match --where" if where else
        "no runs match --status" if status else "no runs"
    )


# --------------------------------------------------------------------------- orch runs


def runs_table(sweeps: Sequence[Mapping[str, Any]], counts: Mapping[str, Mapping[str, int]]) -> str:
    """One line per sweep, newest first: id, time, project, run counts, sweep arguments
    (and the sweep's name and tags, when any sweep has them)."""
    if not sweeps:
        return "no sweeps"
    ordered = sorted(sweeps, key=lambda s: str(s.get("created_at") or ""), reverse=True)
    labelled = any(s.get("name") or s.get("tags") for s in ordered)
    queued = any(counts.get(str(s.get("sweep_id")), {}).get("queued") for s in ordered)
    label_head = ["NAME", "TAGS"] if labelled else []
    count_names = ["succeeded", "failed", "running", *(["queued"] if queued else [])]
    count_head = ["OK", "FAILED", "RUNNING", *(["QUEUED"] if queued else [])]
    header = ["SWEEP", *label_head, "CREATED", "PROJECT", *count_head, "ARGS"]
    first_count = 4 + len(label_head) - 1
    rows = [header]
    for sweep in ordered:
        sweep_id = str(sweep.get("sweep_id", ""))
        count = counts.get(sweep_id, {})
        labels = [clipped(str(sweep.get("name") or "-"), 40),
                  clipped(",".join(map(str, sweep.get("tags") or [])) or "-", 40)]
        rows.append(
            [
                sweep_id,
                *(labels if labelled else []),
                short_time(sweep.get("created_at")),
                clipped(str(sweep.get("project", "")), 40),
                *(str(count.get(name, 0)) for name in count_names),
                clipped(" ".join(str(arg) for arg in sweep.get("args") or [])),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if first_count <= i < first_count + len(count_names)
            else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=False))
        ]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


# --------------------------------------------------------------------------- orch query


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return format_number(value)
    return display_value(value)


def render_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str = "table") -> str:
    """Any rows (a SQL answer) in the formats of :func:`render`; JSON is a list of objects."""
    check_format(fmt)
    if fmt == "json":
        objects = [dict(zip(columns, row, strict=True)) for row in rows]
        return json.dumps(objects, indent=2, ensure_ascii=False, default=str)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([repr_number(v) if is_number(v) else _cell(v) for v in row])
        return buffer.getvalue()
    cells = [[_cell(v) for v in row] for row in rows]
    if fmt == "markdown":
        def line(items: Sequence[str]) -> str:
            return "| " + " | ".join(i.replace("|", "\\|").replace("\n", " ") for i in items) + " |"

        return "\n".join([line(columns), line(["---"] * len(columns)), *map(line, cells)])
    if not rows:
        return "(no rows)"
    numeric = [all(is_number(r[i]) or r[i] is None for r in rows) for i in range(len(columns))]
    widths = [max(len(str(c)), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]

    def fmt_line(items: Sequence[str]) -> str:
        return "  ".join(
            item.rjust(w) if num else item.ljust(w)
            for item, w, num in zip(items, widths, numeric, strict=True)
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt_line([str(c) for c in columns]), rule, *map(fmt_line, cells)])
