"""``orch query``: SQL over every run, through an embedded DuckDB (no server).

Two tables, made from what the catalog read:

``runs``
    one row per run: ``run_id, sweep_id, sweep_name, tags, note, project, status,
    reason, attempt, rerun_of, exit_code, started_at, ended_at (TIMESTAMP), duration_s,
    image_id, repo_digest, base_image, git_commit, dirty, host, node, overrides,
    input_digests, inputs (JSON text)``, plus ``config`` and ``metrics`` as structs, so
    ``config.optimizer.lr`` and ``metrics.loss`` are columns as written.
``steps``
    ``run_id, step, name, value``: the runs' step metrics (``metrics.jsonl``), one row per
    number; read only when the SQL names the table (it is one object per run).

The database (a :class:`~orchestrator.db.frame.RunFrame`) lives in memory for one command;
external file and network access is switched off before the user's SQL runs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..errors import NotFound, StoreError, UsageError
from ..store import RunStore
from .frame import RunFrame

_STEPS = re.compile(r"\bsteps\b", re.I)


def parse_steps(data: bytes) -> list[tuple[float, str, float]]:
    """``metrics.jsonl`` as (step, name, value); a line without ``step`` is its number."""
    rows: list[tuple[float, str, float]] = []
    for number, line in enumerate(data.splitlines()):
        try:
            values = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue  # a torn or foreign line: the live reader skips it too
        if not isinstance(values, dict):
            continue
        step = values.get("step", number)
        if isinstance(step, bool) or not isinstance(step, int | float):
            step = number
        for name, value in values.items():
            if name != "step" and isinstance(value, int | float) and not isinstance(value, bool):
                rows.append((float(step), name, float(value)))
    return rows


def read_steps(runs: RunStore, run_id: str) -> list[tuple[float, str, float]]:
    try:
        return parse_steps(runs.read_file(run_id, "metrics.jsonl"))
    except (NotFound, StoreError):
        return []


def _steps_rows(runs: RunStore, run_ids: Sequence[str]) -> list[tuple[Any, ...]]:
    def read(run_id: str) -> list[tuple[Any, ...]]:
        return [(run_id, *row) for row in read_steps(runs, run_id)]

    if not run_ids:
        return []
    with ThreadPoolExecutor(min(32, len(run_ids))) as pool:
        return [row for rows in pool.map(read, run_ids) for row in rows]


def run_query(runs: RunStore, frame: RunFrame, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Column names and rows of ``sql`` over the frame's ``runs`` table (see
    :meth:`RunFrame.build_runs`) and ``steps``, read here when the SQL names it."""
    if not sql.strip().strip(";").strip():
        raise UsageError("SQL: the query is empty: give one statement, e.g. "
                         "'SELECT run_id, status FROM runs'")
    con = frame.con
    con.execute("CREATE TABLE steps (run_id VARCHAR, step DOUBLE, name VARCHAR, value DOUBLE)")
    if _STEPS.search(sql):
        rows = _steps_rows(runs, frame.run_ids())
        if rows:
            con.executemany("INSERT INTO steps VALUES (?, ?, ?, ?)", rows)
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    try:
        result = con.execute(sql)
        if result is None:  # a statement without a result (DuckDB returns none for it)
            return [], []
        columns = [d[0] for d in result.description or []]
        found = result.fetchall() if result.description else []
    except frame.duckdb.Error as exc:
        raise UsageError(f"SQL: {' '.join(str(exc).split())}") from exc
    return columns, found
