"""Every run as one DuckDB table, loaded from the bytes of the sweeps' index objects.

A closed sweep's index (``sweeps/<id>.index.json``) holds every record of the sweep; a
store of 100,000 runs holds 100,000 of them. Parsing each into Python objects and
serializing it again for DuckDB cost several times the GETs themselves, so the fetched
bytes go to DuckDB as they are: one file per index, all read by one ``read_json`` (in
C, on every core). Python sees only what the catalog needs to decide which records to
trust (each sweep's document and the run ids its index answers for) and the records it
read by themselves (runs of open sweeps, reruns, runs not finished).

An index that is not JSON, or not an index, is skipped exactly as before: the catalog
then reads that sweep run by run.

Why one module of this size: every method works on the one database and its tables
(``index_runs`` -> ``raw`` -> ``runs``), whose columns they agree on.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

from .._util.ids import SHA256_HEX
from ..errors import require
from ..results.where import json_path
from ..schema.record import RunStatus
from ..store.labels import Labels

#: What ``runs`` keeps of a record, as DuckDB reads it: only these fields are ever
#: materialized (the rest of a record is skipped by the JSON reader); config, metrics
#: and inputs stay JSON until their shape across every run is known.
RECORD_TYPE = (
    "STRUCT(run_id VARCHAR, sweep_id VARCHAR, project VARCHAR, status VARCHAR, "
    "reason VARCHAR, attempt BIGINT, rerun_of VARCHAR, exit_code BIGINT, "
    "started_at VARCHAR, ended_at VARCHAR, duration_s DOUBLE, image_id VARCHAR, "
    "repo_digest VARCHAR, base_image VARCHAR, git_commit VARCHAR, dirty BOOLEAN, "
    "host VARCHAR, node VARCHAR, overrides VARCHAR[], inputs JSON, config JSON, "
    "metrics JSON)"
)
_SCALARS = (
    "project, status, reason, attempt, rerun_of, exit_code",
    "duration_s, image_id, repo_digest, base_image, git_commit, dirty, host, node",
)
_EMPTY_RUNS = (
    "CREATE TABLE runs (run_id VARCHAR, sweep_id VARCHAR, sweep_name VARCHAR, tags VARCHAR[], "
    "note VARCHAR, project VARCHAR, status VARCHAR, reason VARCHAR, attempt BIGINT, "
    "rerun_of VARCHAR, exit_code BIGINT, started_at TIMESTAMP, ended_at TIMESTAMP, "
    "duration_s DOUBLE, image_id VARCHAR, repo_digest VARCHAR, base_image VARCHAR, "
    "git_commit VARCHAR, dirty BOOLEAN, host VARCHAR, node VARCHAR, overrides VARCHAR[], "
    "input_digests VARCHAR[], inputs VARCHAR, config JSON, metrics JSON)"
)


def duckdb_module() -> Any:
    # A dependency of orch, but an environment may lack it.
    return require("duckdb", "reading runs into a table (orch results, query)", "duckdb")


@dataclass(frozen=True)
class IndexSummary:
    """What the catalog needs of one index: its sweep document (None when the index
    carries none) and the run ids of the records it can trust."""

    doc: dict[str, Any] | None
    run_ids: frozenset[str]


class IndexRef(NamedTuple):
    """A run whose record stays in the frame (read from its sweep's index); a tuple,
    as 100,000 of them are made per read."""

    sweep_id: str
    run_id: str


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _place(config: dict[str, Any], parts: list[str], value: Any) -> None:
    """Put ``value`` at the nested key ``parts`` of ``config``."""
    for part in parts[:-1]:
        inner = config.get(part)
        if not isinstance(inner, dict):
            inner = config[part] = {}
        config = inner
    config[parts[-1]] = value


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _leaves(
    shape: dict[str, Any], expr: str, path: tuple[str, ...]
) -> list[tuple[tuple[str, ...], str]]:
    """The leaf fields of a struct type of :func:`_typed`, as (key path, expression)."""
    found: list[tuple[tuple[str, ...], str]] = []
    for key, inner in shape.items():
        field = f"struct_extract({expr}, {_literal(key)})"
        if isinstance(inner, dict):
            found += _leaves(inner, field, (*path, key))
        else:
            found.append(((*path, key), field))
    return found


def _typed(structure: Any, leaf: str | None = None) -> Any:
    """A json_group_structure made a json_transform type: integers as BIGINT (what
    read_json infers), unknowable types (always null, empty objects) kept as JSON."""
    if isinstance(structure, dict):
        return {k: _typed(v, leaf) for k, v in structure.items()} if structure else "JSON"
    if isinstance(structure, list):
        return [_typed(structure[0], leaf)] if structure else ["JSON"]
    if leaf is not None:
        return leaf
    return {"UBIGINT": "BIGINT", "NULL": "JSON"}.get(str(structure), structure)


class RunFrame:
    """An in-memory DuckDB database for one command, and its scratch directory."""

    def __init__(self) -> None:
        self.duckdb = duckdb_module()
        self.con: Any = self.duckdb.connect(":memory:")
        self._scratch = tempfile.TemporaryDirectory(prefix="orch-frame-")
        self.tmp = Path(self._scratch.name)
        self.con.execute(
            f"CREATE TABLE index_runs (sweep_id VARCHAR, run_id VARCHAR, r {RECORD_TYPE})"
        )
        #: The struct types of ``runs.config`` and ``runs.metrics`` ("JSON": no keys).
        self.shapes: dict[str, Any] = {"config": "JSON", "metrics": "JSON"}

    def __enter__(self) -> RunFrame:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self.con.close()
        self._scratch.cleanup()

    # -- indexes ----------------------------------------------------------------------

    def load_indexes(self, blobs: Mapping[str, bytes]) -> dict[str, IndexSummary]:
        """Read the fetched index objects (by sweep id) in one columnar load."""
        if not blobs:
            return {}
        path = self.tmp / "indexes.jsonl"
        with path.open("wb") as out:
            for sweep_id, data in blobs.items():
                # One index per line, wrapped with the sweep it was fetched for (a raw
                # newline is only ever whitespace in valid JSON; an index that is not
                # valid JSON leaves its line invalid too, and the line is skipped).
                out.write(b'{"f":"' + sweep_id.encode() + b'","i":')
                out.write(data.replace(b"\n", b" ").replace(b"\r", b" "))
                out.write(b"}\n")
        biggest = max(len(data) for data in blobs.values())
        statuses = ", ".join(_literal(status.value) for status in RunStatus)
        # ignore_errors: an unreadable index is no index (the catalog falls back).
        self.con.execute(
            "CREATE TEMP TABLE idx AS SELECT f AS file_sweep, i.sweep_id, i.runs, i.sweep "
            "FROM read_json(?, format='newline_delimited', ignore_errors=true, "
            "maximum_object_size=?, columns={'f': 'VARCHAR', 'i': 'STRUCT(sweep_id VARCHAR, "
            f"runs MAP(VARCHAR, {RECORD_TYPE}), sweep JSON)'}})",
            [str(path), biggest + 1024],
        )
        # The same checks as a record read from an index in Python: its key is its id,
        # its status is known, its config and metrics are objects.
        self.con.execute(
            "INSERT INTO index_runs SELECT file_sweep, e.key, e.value FROM "
            "(SELECT file_sweep, unnest(map_entries(runs)) AS e FROM idx "
            " WHERE sweep_id = file_sweep) "
            f"WHERE e.value.run_id = e.key AND e.value.status IN ({statuses}) "
            "AND coalesce(json_type(e.value.config), 'OBJECT') = 'OBJECT' "
            "AND coalesce(json_type(e.value.metrics), 'OBJECT') = 'OBJECT'"
        )
        trusted: dict[str, list[str]] = {
            sweep_id: run_ids
            for sweep_id, run_ids in self.con.execute(
                "SELECT sweep_id, list(run_id) FROM index_runs "
                "WHERE sweep_id IN (SELECT file_sweep FROM idx) GROUP BY sweep_id"
            ).fetchall()
        }
        summaries: dict[str, IndexSummary] = {}
        for sweep_id, doc_text in self.con.execute(
            "SELECT file_sweep, CAST(sweep AS VARCHAR) FROM idx WHERE runs IS NOT NULL "
            "OR sweep IS NOT NULL"
        ).fetchall():
            doc = json.loads(doc_text) if doc_text else None
            summaries[sweep_id] = IndexSummary(
                doc if isinstance(doc, dict) else None,
                frozenset(trusted.get(sweep_id, ())),
            )
        self.con.execute("DROP TABLE idx")
        return summaries

    # -- the runs table ---------------------------------------------------------------

    def load_runs(
        self,
        entries: Sequence[dict[str, Any] | IndexRef],
        labels: Labels,
    ) -> None:
        """Table ``raw`` (``pos, r``): one row per entry, in order; records read by
        Python and records left in the indexes alike. Labels go to tables of their own."""
        self._load_labels(labels)
        refs = self.tmp / "refs.csv"
        extra = self.tmp / "extra.jsonl"
        with refs.open("w") as ref_out, extra.open("w") as extra_out:
            ref_out.write("pos,sweep_id,run_id\n")
            for pos, entry in enumerate(entries):
                if isinstance(entry, IndexRef):
                    ref_out.write(f"{pos},{entry.sweep_id},{entry.run_id}\n")
                else:
                    extra_out.write(json.dumps({"pos": pos, "r": entry}, default=str) + "\n")
        self.con.execute(
            "CREATE TEMP TABLE raw AS "
            "SELECT c.pos, i.r FROM read_csv(?, header=true, columns={'pos': 'BIGINT', "
            "'sweep_id': 'VARCHAR', 'run_id': 'VARCHAR'}) c "
            "JOIN index_runs i ON i.sweep_id = c.sweep_id AND i.run_id = c.run_id "
            "UNION ALL SELECT pos, r FROM read_json(?, format='newline_delimited', "
            f"columns={{'pos': 'BIGINT', 'r': '{RECORD_TYPE}'}})",
            [str(refs), str(extra)],
        )
        self.con.execute("DROP TABLE index_runs")

    def build_runs(
        self,
        entries: Sequence[dict[str, Any] | IndexRef],
        labels: Labels,
    ) -> None:
        """Table ``runs`` of ``orch query``: one row per entry, in order, labels folded
        in; config and metrics as structs of every key any run has."""
        if not entries:
            self.con.execute(_EMPTY_RUNS)
            return
        self.load_runs(entries, labels)
        self.runs_from_raw()

    def runs_from_raw(self) -> None:
        """Table ``runs`` of :meth:`build_runs` from table ``raw`` of :meth:`load_runs`
        (which is dropped): for a caller that read ``raw`` first (:meth:`thin_records`)."""
        config_shape, metrics_shape = self.con.execute(
            "SELECT json_group_structure(r.config), json_group_structure(r.metrics) FROM raw"
        ).fetchone()
        config = _typed(json.loads(config_shape)) if config_shape else "JSON"
        metrics = _typed(json.loads(metrics_shape), "DOUBLE") if metrics_shape else "JSON"
        self.shapes = {"config": config, "metrics": metrics}

        def shaped(column: str, shape: Any) -> str:
            # A struct with no fields is not a type: an empty config (a queued run) is null.
            if shape == "JSON":
                return f"CASE WHEN CAST(r.{column} AS VARCHAR) IN ('{{}}', 'null') THEN NULL "\
                       f"ELSE r.{column} END"
            return f"CASE WHEN coalesce(CAST(r.{column} AS VARCHAR), '{{}}') IN ('{{}}', 'null') "\
                   f"THEN NULL ELSE json_transform(r.{column}, {_literal(json.dumps(shape))}) END"

        first, second = (", ".join(f"r.{n.strip()}" for n in part.split(",")) for part in _SCALARS)
        self.con.execute(
            "CREATE TABLE runs AS SELECT r.run_id, r.sweep_id, sl.name AS sweep_name, "
            "list_sort(list_distinct(list_concat(coalesce(sl.tags, []), "
            "coalesce(rl.tags, [])))) AS tags, "
            "coalesce(nullif(rl.note, ''), sl.note) AS note, "
            f"{first}, "
            "TRY_CAST(r.started_at AS TIMESTAMP) AS started_at, "
            "TRY_CAST(r.ended_at AS TIMESTAMP) AS ended_at, "
            f"{second}, "
            "coalesce(r.overrides, []) AS overrides, "
            "coalesce(list_sort(list_distinct(regexp_extract_all(inputs, "
            f"'sha256:{SHA256_HEX}'))), []) AS input_digests, inputs, "
            f"{shaped('config', config)} AS config, {shaped('metrics', metrics)} AS metrics "
            "FROM (SELECT pos, r, CASE WHEN json_type(r.inputs) IN ('OBJECT', 'ARRAY') "
            "AND CAST(r.inputs AS VARCHAR) NOT IN ('{}', '[]') "
            "THEN CAST(r.inputs AS VARCHAR) END AS inputs FROM raw) "
            "LEFT JOIN sweep_labels sl ON sl.id = r.sweep_id "
            "LEFT JOIN run_labels rl ON rl.id = r.run_id ORDER BY pos"
        )
        self.con.execute("DROP TABLE raw")

    def _load_labels(self, labels: Labels) -> None:
        for table, by_id in (("sweep_labels", labels.sweeps), ("run_labels", labels.runs)):
            self.con.execute(
                f"CREATE TEMP TABLE {table} (id VARCHAR, name VARCHAR, tags VARCHAR[], "
                "note VARCHAR)"
            )
            rows = [
                (target, label.name, sorted(label.tags), label.note)
                for target, label in by_id.items()
            ]
            if rows:
                self.con.executemany(f"INSERT INTO {table} VALUES (?, ?, ?, ?)", rows)

    # -- records for orch results -----------------------------------------------------

    def thin_records(
        self, paths: Sequence[str], metrics: Sequence[str], *, overrides: bool
    ) -> list[dict[str, Any]]:
        """Every run of ``raw`` as a record with only what filtering and sorting read:
        ids, labels, status, the ``metrics`` named, the config values at the dotted
        ``paths``, and ``overrides`` when asked (the rest comes from :meth:`expander`).
        Parsing every whole record in Python is what this avoids."""
        # Metrics are numbers (a record's own check); metrics and config values come
        # out of DuckDB typed or as one JSON array per key: no parse per run in Python.
        numbers = "".join(
            f", TRY_CAST(json_extract(r.metrics, {_literal(json_path(m, dotted=False))})"
            " AS DOUBLE)"
            for m in metrics
        )
        rows = self.con.execute(
            "SELECT r.run_id, r.sweep_id, sl.name, "
            "list_sort(list_distinct(list_concat(coalesce(sl.tags, []), "
            "coalesce(rl.tags, [])))), coalesce(nullif(rl.note, ''), sl.note), "
            "r.status, r.reason, r.duration_s, r.image_id, r.project, "
            f"{'r.overrides' if overrides else 'NULL'}{numbers} FROM raw "
            "LEFT JOIN sweep_labels sl ON sl.id = r.sweep_id "
            "LEFT JOIN run_labels rl ON rl.id = r.run_id ORDER BY pos"
        ).fetchall()
        columns = [self._config_values(path) for path in paths]
        records: list[dict[str, Any]] = []
        for index, row in enumerate(rows):
            config: dict[str, Any] = {}
            for path, (present, values) in zip(paths, columns, strict=True):
                if present[index]:
                    _place(config, path.split("."), values[index])
            records.append({
                "run_id": row[0], "sweep_id": row[1], "sweep_name": row[2], "tags": row[3],
                "note": row[4], "status": row[5], "reason": row[6], "duration_s": row[7],
                "image_id": row[8], "project": row[9], "overrides": row[10] or [],
                "metrics": {
                    name: value for name, value in zip(metrics, row[11:], strict=True)
                    if value is not None
                },
                "config": config,
            })
        return records

    def _config_values(self, path: str) -> tuple[list[bool], list[Any]]:
        """Whether each run's config has ``path``, and the value there (in run order)."""
        value = f"json_extract(r.config, {_literal(json_path(path))})"
        present, text = self.con.execute(
            f"SELECT list({value} IS NOT NULL ORDER BY pos), "
            f"'[' || coalesce(string_agg(coalesce(CAST({value} AS VARCHAR), 'null'), ',' "
            "ORDER BY pos), '') || ']' FROM raw"
        ).fetchone()
        values = json.loads(text)
        return list(present or []), values if isinstance(values, list) else []

    def expander(
        self, records: Sequence[dict[str, Any]]
    ) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
        """For :func:`~orchestrator.results.table.build_view`: records of
        :meth:`thin_records` (the very objects) made whole: config, metrics, overrides."""
        position = {id(record): pos for pos, record in enumerate(records)}

        def expand(shown: list[dict[str, Any]]) -> list[dict[str, Any]]:
            whole = self._whole([position[id(record)] for record in shown])
            return [{**r, **whole.get(position[id(r)], {})} for r in shown]

        return expand

    def _whole(self, positions: Sequence[int]) -> dict[int, dict[str, Any]]:
        if not positions:
            return {}
        rows = self.con.execute(
            "SELECT pos, CAST(r.config AS VARCHAR), CAST(r.metrics AS VARCHAR), r.overrides "
            "FROM raw WHERE list_contains(?, pos)",
            [list(positions)],
        ).fetchall()
        found: dict[int, dict[str, Any]] = {}
        for pos, config_text, metrics_text, overrides in rows:
            config = json.loads(config_text) if config_text else {}
            metrics = json.loads(metrics_text) if metrics_text else {}
            found[int(pos)] = {
                "config": config if isinstance(config, dict) else {},
                "metrics": metrics if isinstance(metrics, dict) else {},
                "overrides": overrides or [],
            }
        return found

    def flat_columns(self) -> list[str]:
        """``runs`` as select expressions with one column per config and metrics leaf,
        named as ``orch query`` spells them: ``config.optimizer.lr``, ``metrics.loss``
        (a DataFrame's columns, the way ``mlflow.search_runs`` names them)."""
        names = [d[0] for d in self.con.execute("SELECT * FROM runs LIMIT 0").description]
        columns: list[str] = []
        for name in names:
            shape = self.shapes.get(name)
            if shape is None:
                columns.append(_identifier(name))
            elif isinstance(shape, dict):
                columns += [
                    f"{expr} AS {_identifier('.'.join([name, *path]))}"
                    for path, expr in _leaves(shape, _identifier(name), ())
                ]
            # else: no run has a key there, so there is no column to make
        return columns

    def run_ids(self, exclude: Iterable[str] = ("queued",)) -> list[str]:
        """Run ids of ``runs`` whose status is not in ``exclude``."""
        skipped = list(exclude)
        return [
            str(row[0])
            for row in self.con.execute(
                "SELECT run_id FROM runs WHERE NOT list_contains(?, status)", [skipped]
            ).fetchall()
        ]
