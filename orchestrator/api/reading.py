"""Reading the store from Python: :func:`runs`, :func:`steps`, :func:`best`, :func:`show`.

What ``orch results``, ``orch best`` and ``orch show`` read, as values: the commands call
the same functions (through a :class:`~orchestrator.api.workspace.Workspace` they made from
their options) and only print. :func:`runs` is ``orch query``'s ``runs`` table as a pandas
DataFrame (the frame that builds it is :class:`~orchestrator.db.frame.RunFrame`, the
selection ``orch results``'s); :func:`steps` is the runs' ``metrics.jsonl`` as the report
reads its curves (:func:`~orchestrator.results.curves.parse_curve`), in long format.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import NotFound, UsageError, require
from .workspace import Workspace, read_run

if TYPE_CHECKING:
    import pandas as pd

    from ..db.catalog import Snapshot
    from ..db.frame import RunFrame
    from ..schema.record import RunRecord

#: Run states a selection can ask for (``--status``, ``status=``).
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "pruned")

#: What a selection or filter argument may be: one string, several, or None (none).
Strings = str | Iterable[str] | None

#: The columns of :func:`steps`.
STEP_COLUMNS = ["run_id", "step", "metric", "value"]


def workspace(store: str | None, project: str | Path | None) -> Workspace:
    """The workspace of a library call: ``store`` a URI (None: ``.orch/`` in the
    project), ``project`` a directory (None: the current directory's project)."""
    return Workspace(project, store, store_label="store")


def strings(value: Strings) -> tuple[str, ...]:
    """``"a"``, ``["a", "b"]`` (or a pandas Series of them) or None as a tuple."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(str(item) for item in value)


def _pandas(what: str) -> Any:
    return require("pandas", what, "'orch[pandas]'")


def parse_statuses(values: Sequence[str], what: str = "--status") -> tuple[str, ...]:
    """Run states from values that may each be comma-separated, checked."""
    found = tuple(s.strip() for value in values for s in value.split(",") if s.strip())
    for status in found:
        if status not in STATUSES:
            from ..store.labels import close_matches

            raise UsageError(f"{what}: {close_matches(status, STATUSES, 'status')}")
    return found


def snapshot(
    ws: Workspace, refs: Sequence[str], all_projects: bool = False, *, live: bool = True,
    frame: RunFrame | None = None,
) -> Snapshot:
    """The runs named by ``refs`` (sweep ids, names, tags); none: the project's, or with
    ``all_projects`` (or outside a project) every run in the store; with a ``frame``,
    indexed records stay in it (see :meth:`Catalog.read`)."""
    from ..db.catalog import Catalog, check_ref

    for ref in refs:
        check_ref(ref)
    project = None if refs or all_projects else ws.project_name()
    catalog = Catalog(ws.runs(), lease_s=ws.settings.lease_s)
    return catalog.read(refs, project=project, live=live, frame=frame)


# --------------------------------------------------------------------------- runs


def runs(
    selection: Strings = None,
    *,
    store: str | None = None,
    project: str | Path | None = None,
    where: Strings = None,
    status: Strings = None,
    limit: int | None = None,
    all_projects: bool = False,
) -> pd.DataFrame:
    """Every selected run as one row of a pandas DataFrame.

    ``selection``: sweep ids, names or tags, as ``orch results`` takes them (None: every
    sweep of the project; with ``all_projects``, of the store). ``where``: ``orch
    results --where`` filters (``"optimizer.name=adam"``, ``"loss<0.5"``, ``"tag=lstm"``),
    ``status``: run states, ``limit``: at most that many runs (oldest sweep first).

    The columns are ``orch query``'s: ``run_id``, ``sweep_id``, ``sweep_name``, ``tags``,
    ``note``, ``project``, ``status``, ..., ``started_at``, ``ended_at``, then one column
    per config key (``config.optimizer.lr``) and per metric (``metrics.loss``).
    """
    _pandas("orchestrator.runs()")
    with workspace(store, project) as ws:
        return run_frame(ws, strings(selection), all_projects=all_projects,
                         where=strings(where), statuses=parse_statuses(strings(status), "status"),
                         limit=limit)


def run_frame(
    ws: Workspace,
    refs: Sequence[str],
    *,
    all_projects: bool = False,
    where: Sequence[str] = (),
    statuses: Sequence[str] = (),
    limit: int | None = None,
) -> pd.DataFrame:
    """:func:`runs` in a workspace."""
    from ..db.frame import RunFrame
    from ..results.table import build_view, where_keys

    if limit is not None and limit < 0:
        raise UsageError(f"limit {limit}: expected 0 or more")
    with RunFrame() as frame:
        snap = snapshot(ws, refs, all_projects, frame=frame)
        keep: list[str] | None = None
        if not snap.entries:
            frame.build_runs([], snap.labels)
        else:
            frame.load_runs(snap.entries, snap.labels)
            if where or statuses or limit is not None:
                # orch results's selection, from records holding only what it reads.
                keys = where_keys(where)
                metrics = [m for m in dict.fromkeys(
                    [*keys, *(k.removeprefix("metrics.") for k in keys)]) if m]
                records = frame.thin_records(keys, metrics, overrides=bool(where))
                try:
                    view = build_view(records, None, where, status=statuses, limit=limit)
                except UsageError:
                    # Such an error may list every key or metric: say it from whole records.
                    whole = frame.expander(records)(records)
                    view = build_view(whole, None, where, status=statuses, limit=limit)
                keep = [str(record["run_id"]) for record in view.records]
            frame.runs_from_raw()
        columns = ", ".join(frame.flat_columns())
        if keep is None:
            result = frame.con.execute(f"SELECT {columns} FROM runs")
        elif keep:
            result = frame.con.execute(
                f"SELECT {columns} FROM runs WHERE list_contains(?, run_id) "
                "ORDER BY list_position(?, run_id)", [keep, keep])
        else:
            result = frame.con.execute(f"SELECT {columns} FROM runs WHERE false")
        return result.df()


# --------------------------------------------------------------------------- steps


def steps(
    run_id_or_selection: Strings = None,
    *,
    store: str | None = None,
    project: str | Path | None = None,
) -> pd.DataFrame:
    """Step metrics (each run's ``metrics.jsonl``) in long format: one row per number,
    columns ``run_id``, ``step``, ``metric``, ``value``.

    ``run_id_or_selection``: run ids (or unique prefixes), sweep ids, names or tags, one
    or several (``runs(...)["run_id"]`` works); None: every run of the project. A line
    without ``step`` counts as its line number; ``epoch`` and ``time`` are not metrics
    here, as in ``orch report``'s curves.
    """
    pandas = _pandas("orchestrator.steps()")
    with workspace(store, project) as ws:
        rows = step_rows(ws, strings(run_id_or_selection))
    return pandas.DataFrame(rows, columns=STEP_COLUMNS)


def run_ids_of(ws: Workspace, refs: Sequence[str]) -> list[str]:
    """The finished runs ``refs`` name: each a sweep id, name or tag, else a run id (or
    unique prefix); none: the project's runs."""
    from .._util.ids import RUN_ID
    from ..db.catalog import Catalog

    runs = ws.runs()
    found: list[str] = []
    sweeps: list[str] = []
    listing = Catalog(runs).listing() if refs else None
    for ref in refs:
        if listing is not None and ref not in listing.sweep_ids and RUN_ID.match(ref):
            try:
                found.append(runs.resolve_run_id(ref))
                continue
            except NotFound:
                pass  # a sweep id prefix, a name or a tag
        sweeps.append(ref)
    if sweeps or not refs:
        snap = snapshot(ws, sweeps, live=False)
        found += [str(r["run_id"]) for r in snap.records]
    return list(dict.fromkeys(found))


def step_rows(ws: Workspace, refs: Sequence[str]) -> list[tuple[str, float, str, float]]:
    from .._util.pool import parallel_map
    from ..results.curves import parse_curve

    runs = ws.runs()

    def read(run_id: str) -> list[tuple[str, float, str, float]]:
        try:
            data = runs.read_file(run_id, "metrics.jsonl")
        except NotFound:
            return []  # a run without step metrics
        return [
            (run_id, float(x), name, float(y))
            for name, (xs, ys) in parse_curve(data).items()
            for x, y in zip(xs, ys, strict=True)
        ]

    return [row for rows in parallel_map(read, run_ids_of(ws, refs)) for row in rows]


# --------------------------------------------------------------------------- best, show


def best(
    metric: str,
    selection: Strings = None,
    *,
    store: str | None = None,
    project: str | Path | None = None,
    where: Strings = None,
    all_projects: bool = False,
) -> dict[str, Any]:
    """The best succeeded run by ``metric`` (``"loss"``, ``"acc:max"``): what ``orch best
    --json`` prints (``run_id``, ``value``, ``config``, ``runner_up`` with the config keys
    that differ, ``rerun``, ...)."""
    with workspace(store, project) as ws:
        return best_run(ws, metric, strings(selection), all_projects=all_projects,
                        where=strings(where))


def best_run(
    ws: Workspace, metric: str, refs: Sequence[str], *, all_projects: bool = False,
    where: Sequence[str] = (),
) -> dict[str, Any]:
    """:func:`best` in a workspace."""
    from ..results.best import find_best

    snap = snapshot(ws, refs, all_projects, live=False)
    answer = find_best(snap.records, metric, where)
    answer["rerun"] = f"orch rerun {answer['run_id']}" + (
        f" --store {ws.store_uri}" if ws.store_uri else ""
    )
    return answer


def show(
    run_id: str, *, store: str | None = None, project: str | Path | None = None
) -> RunRecord:
    """The record of a run, named by its id or a unique prefix of it."""
    with workspace(store, project) as ws:
        return read_run(ws.runs(), run_id)


def described_run(ws: Workspace, run_id: str) -> dict[str, Any]:
    """What ``orch show`` prints: the record as JSON, and its earlier ``attempts``."""
    runs = ws.runs()
    current = read_run(runs, run_id)
    record = current.to_json()
    # Beside the record's own fields, not inside them: a record never has this key.
    record["attempts"] = [
        {
            "attempt": earlier.attempt,
            "status": earlier.status.value,
            "reason": earlier.reason,
            "exit_code": earlier.exit_code,
            "started_at": earlier.started_at,
            "ended_at": earlier.ended_at,
        }
        for earlier in runs.read_attempts(current.run_id)
    ]
    return record
