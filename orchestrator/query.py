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

The database lives in memory for one command; external file and network access is
switched off before the user's SQL runs.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .errors import NotFound, StoreError, UsageError
from .store import RunStore

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_STEPS = re.compile(r"\bsteps\b", re.I)

_RUN_COLUMNS = {
    "run_id": "VARCHAR",
    "sweep_id": "VARCHAR",
    "sweep_name": "VARCHAR",
    "tags": "VARCHAR[]",
    "note": "VARCHAR",
    "project": "VARCHAR",
    "status": "VARCHAR",
    "reason": "VARCHAR",
    "attempt": "BIGINT",
    "rerun_of": "VARCHAR",
    "exit_code": "BIGINT",
    "started_at": "VARCHAR",
    "ended_at": "VARCHAR",
    "duration_s": "DOUBLE",
    "image_id": "VARCHAR",
    "repo_digest": "VARCHAR",
    "base_image": "VARCHAR",
    "git_commit": "VARCHAR",
    "dirty": "BOOLEAN",
    "host": "VARCHAR",
    "node": "VARCHAR",
    "overrides": "VARCHAR[]",
    "input_digests": "VARCHAR[]",
    "inputs": "VARCHAR",
}


def _duckdb() -> Any:
    try:
        import duckdb
    except ImportError as exc:  # a dependency, but an environment may lack it
        raise UsageError("orch query needs DuckDB: pip install duckdb") from exc
    return duckdb


def _row(record: Mapping[str, Any]) -> dict[str, Any]:
    row = {name: record.get(name) for name in _RUN_COLUMNS}
    inputs = record.get("inputs")
    text = json.dumps(inputs, sort_keys=True) if inputs else None
    row["inputs"] = text
    row["input_digests"] = sorted(set(_DIGEST.findall(text))) if text else []
    row["tags"] = list(record.get("tags") or [])
    row["overrides"] = list(record.get("overrides") or [])
    # A struct with no fields is not a type: an empty config (a queued run) is null.
    row["config"] = record.get("config") or None
    metrics = record.get("metrics") or {}
    row["metrics"] = {k: float(v) for k, v in metrics.items()} or None
    return row


def _load_runs(con: Any, records: Sequence[Mapping[str, Any]], tmp: Path) -> None:
    columns = ", ".join(f'"{name}" {kind}' for name, kind in _RUN_COLUMNS.items())
    if not records:
        con.execute(f"CREATE TABLE runs ({columns}, config JSON, metrics JSON)")
        return
    path = tmp / "runs.jsonl"
    with path.open("w") as out:
        for record in records:
            out.write(json.dumps(_row(record), default=str))
            out.write("\n")
    # Every row is sampled, and nested objects always become structs (never maps), so
    # config.a.b is a column whatever the mix of projects and configs.
    con.execute(
        "CREATE TABLE runs AS SELECT * REPLACE ("
        "TRY_CAST(started_at AS TIMESTAMP) AS started_at, "
        "TRY_CAST(ended_at AS TIMESTAMP) AS ended_at) "
        "FROM read_json(?, format='newline_delimited', sample_size=-1, "
        "map_inference_threshold=-1, field_appearance_threshold=0)",
        [str(path)],
    )


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


def _steps_rows(runs: RunStore, records: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
    def read(run_id: str) -> list[tuple[Any, ...]]:
        return [(run_id, *row) for row in read_steps(runs, run_id)]

    ids = [str(r["run_id"]) for r in records if r.get("status") not in ("queued",)]
    if not ids:
        return []
    with ThreadPoolExecutor(min(32, len(ids))) as pool:
        return [row for rows in pool.map(read, ids) for row in rows]


def run_query(
    runs: RunStore, records: Sequence[Mapping[str, Any]], sql: str
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Column names and rows of ``sql`` over the ``runs`` (and ``steps``) tables."""
    duckdb = _duckdb()
    con = duckdb.connect(":memory:")
    try:
        with tempfile.TemporaryDirectory(prefix="orch-query-") as tmp:
            _load_runs(con, records, Path(tmp))
            con.execute(
                "CREATE TABLE steps (run_id VARCHAR, step DOUBLE, name VARCHAR, value DOUBLE)"
            )
            if _STEPS.search(sql):
                rows = _steps_rows(runs, records)
                if rows:
                    con.executemany("INSERT INTO steps VALUES (?, ?, ?, ?)", rows)
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        try:
            result = con.execute(sql)
            columns = [d[0] for d in result.description or []]
            rows = result.fetchall() if result.description else []
        except duckdb.Error as exc:
            raise UsageError(f"SQL: {' '.join(str(exc).split())}") from exc
        return columns, rows
    finally:
        con.close()
