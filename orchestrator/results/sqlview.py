"""``orch results`` over a run table, decided in SQL: ``--where``, ``--status``, ``--sort``
and ``--limit`` select and order the runs inside DuckDB, so that only the runs shown
become Python records (100,000 runs, 20 shown: 20 records, not 100,000).

The answer is the very view :func:`~.table.build_view` gives over the frame's thin
records (:meth:`~orchestrator.db.frame.RunFrame.thin_records`). Where SQL cannot be sure
of that (see :mod:`.where`), or the input is wrong and the error must list what the
runs have, :func:`frame_view` returns None and the caller decides in Python.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol

from ..errors import UsageError
from .table import View, shown_view
from .where import Columns, metric_sql, parse

#: One run of the frame's ``raw`` table with its labels (``pos`` its place in the order).
FROM = ("raw LEFT JOIN sweep_labels sl ON sl.id = r.sweep_id "
        "LEFT JOIN run_labels rl ON rl.id = r.run_id")
TAGS = "list_sort(list_distinct(list_concat(coalesce(sl.tags, []), coalesce(rl.tags, []))))"
NOTE = "coalesce(nullif(rl.note, ''), sl.note)"
COLUMNS = Columns(
    config="r.config", metrics="r.metrics", overrides="r.overrides", tags=TAGS,
    sweep_name="sl.name", sweep_id="r.sweep_id", status="r.status",
)


class Frame(Protocol):
    """What is read of a :class:`~orchestrator.db.frame.RunFrame` (``raw`` loaded)."""

    con: Any


def frame_view(
    frame: Frame,
    where: Sequence[str] = (),
    *,
    status: Sequence[str] = (),
    sort: str | None = None,
    limit: int | None = None,
) -> View | None:
    """The view of the frame's runs, or None where Python must decide it."""
    try:
        conditions = [parse(expression) for expression in where]
    except UsageError:
        return None  # said by the Python path, the way it always was
    metric = (sort or "").lstrip("+-").strip().removeprefix("metrics.")
    if sort is not None and not metric:
        return None
    tests = [condition.sql(COLUMNS) for condition in conditions]
    if status:
        statuses = ", ".join("'" + s.replace("'", "''") + "'" for s in status)
        tests.append(f"coalesce(r.status IN ({statuses}), FALSE)")
    known = [k for c in conditions if (k := c.known_sql(COLUMNS)) is not None]
    value = metric_sql(COLUMNS, metric) if sort else "NULL::DOUBLE"
    # One pass over the runs' JSON: what each run answers; the rest reads this table.
    frame.con.execute(
        f"CREATE TEMP TABLE chosen AS SELECT pos, {' AND '.join(tests) or 'TRUE'} AS ok, "
        f"{value} AS v, r.status = 'succeeded' AS won"
        + "".join(f", {k} AS k{i}" for i, k in enumerate(known))
        + f" FROM {FROM}"
    )
    try:
        return _view(frame, len(known), sort, limit)
    finally:
        frame.con.execute("DROP TABLE chosen")


def _view(frame: Frame, known: int, sort: str | None, limit: int | None) -> View | None:
    # Decidable: some run; every key and label value ``where`` names, and the --sort
    # metric, known to some run; no run whose selection SQL leaves open.
    checks = ["count(*) > 0", "NOT coalesce(bool_or(ok IS NULL), FALSE)"]
    checks += [f"bool_or(k{i})" for i in range(known)]
    if sort:
        checks.append("bool_or(v IS NOT NULL)")
    if not frame.con.execute(f"SELECT {' AND '.join(checks)} FROM chosen").fetchone()[0]:
        return None
    valid = "(v IS NOT NULL AND NOT isnan(v))"
    # Python's sort is stable (reverse too): ties keep the runs' order; -0.0 is 0.0.
    direction = "DESC" if (sort or "").startswith("-") else "ASC"
    order = (f"NOT {valid}, CASE WHEN {valid} THEN v + CAST(0 AS DOUBLE) END {direction}, pos"
             if sort else "pos")
    best = None
    if sort:
        found = frame.con.execute(
            f"SELECT pos FROM chosen WHERE ok AND won AND {valid} ORDER BY {order} LIMIT 1"
        ).fetchone()
        best = found[0] if found else None
    ranked = f"SELECT pos, row_number() OVER (ORDER BY {order}) AS rank FROM chosen WHERE ok"
    cut = f" WHERE rank <= {max(limit, 0)}" if limit is not None else ""
    rows = frame.con.execute(
        f"SELECT r.run_id, r.sweep_id, sl.name, {TAGS}, {NOTE}, r.status, r.reason, "
        "r.duration_s, r.image_id, r.project, r.overrides, CAST(r.metrics AS VARCHAR), "
        f"CAST(r.config AS VARCHAR), raw.pos FROM ({ranked}) c JOIN raw ON raw.pos = c.pos "
        f"LEFT JOIN sweep_labels sl ON sl.id = r.sweep_id "
        f"LEFT JOIN run_labels rl ON rl.id = r.run_id{cut} ORDER BY c.rank"
    ).fetchall()
    shown = [_record(row) for row in rows]
    winner = next((r["run_id"] for r, row in zip(shown, rows, strict=True) if row[13] == best),
                  None)
    if best is not None and winner is None:  # the best run is past --limit
        winner = frame.con.execute("SELECT r.run_id FROM raw WHERE pos = ?", [best]).fetchone()[0]
    return shown_view(shown, None if winner is None else str(winner))


def _record(row: Sequence[Any]) -> dict[str, Any]:
    """A shown run as :meth:`RunFrame.expander` makes it: the thin record's fields, then
    the whole overrides, metrics and config."""
    metrics = json.loads(row[11]) if row[11] else {}
    config = json.loads(row[12]) if row[12] else {}
    return {
        "run_id": row[0], "sweep_id": row[1], "sweep_name": row[2], "tags": row[3],
        "note": row[4], "status": row[5], "reason": row[6], "duration_s": row[7],
        "image_id": row[8], "project": row[9], "overrides": row[10] or [],
        "metrics": metrics if isinstance(metrics, dict) else {},
        "config": config if isinstance(config, dict) else {},
    }
