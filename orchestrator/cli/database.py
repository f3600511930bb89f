"""The store as a database of every experiment: ``orch best``, ``tag``, ``note``,
``query``, ``export mlflow`` and ``gc`` (``results`` and ``runs`` live in ``inspect``).

Each command reads through :mod:`orchestrator.db.catalog` (a bounded number of objects
whatever the number of runs) and does its work in a module below the CLI.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from ..errors import UsageError
from .context import Context, complete_sweep_ids, with_context

if TYPE_CHECKING:
    from ..db.catalog import Snapshot
    from ..db.frame import RunFrame

def project_name(context: Context) -> str | None:
    """The name in the project's ``orch.yaml``, or None outside a project."""
    return context.project_name()


def snapshot(
    context: Context, refs: Sequence[str], all_projects: bool, *, live: bool = True,
    frame: RunFrame | None = None,
) -> Snapshot:
    """The runs named by ``refs``: :func:`orchestrator.api.reading.snapshot`."""
    from ..api.reading import snapshot as read_snapshot

    return read_snapshot(context, refs, all_projects, live=live, frame=frame)


def one_sweep(context: Context, ref: str, verb: str) -> str:
    """The one sweep a command that shows a single sweep (``report``, ``watch``) works
    on, named as ``results`` names them (:meth:`Catalog.resolve`: an id, a unique id
    prefix, a name or a tag). A name or tag of several sweeps means the newest of them:
    the one just submitted under a reused name; stderr says which and lists the others."""
    from .._util.pool import parallel_map
    from ..db.catalog import Catalog, check_ref
    from ..errors import NotFound
    from ..store.labels import Labels, read_labels

    check_ref(ref)
    runs = context.runs()
    catalog = Catalog(runs, lease_s=context.settings.lease_s)
    listing = catalog.listing()
    # An exact id needs no labels (one listing fewer).
    labels = Labels() if ref in listing.sweep_ids else read_labels(runs.store, notes=False)
    found = catalog.resolve([ref], listing, labels)
    if len(found) == 1:
        return found[0]

    def created(sweep_id: str) -> str:
        try:
            return runs.read_sweep(sweep_id).created_at
        except NotFound:
            return ""  # an index without its document: oldest

    dates = parallel_map(created, found)
    ordered = [sid for _, sid in sorted(zip(dates, found, strict=True), reverse=True)]
    others = ", ".join(ordered[1:6]) + (" ..." if len(ordered) > 6 else "")
    click.echo(
        f"note: {ref!r} names {len(ordered)} sweeps; {verb} the newest, {ordered[0]} "
        f"(others: {others}; give a sweep id for another)",
        err=True,
    )
    return ordered[0]


def selection_options(func: Any) -> Any:
    """``SWEEP...`` plus ``--all-projects``, shared by the commands that read many runs."""
    func = click.option(
        "--all-projects", is_flag=True, help="Every project in the store, not only this one."
    )(func)
    return click.argument("sweeps", nargs=-1, shell_complete=complete_sweep_ids)(func)


def _statuses(values: Sequence[str]) -> tuple[str, ...]:
    from ..api.reading import parse_statuses

    return parse_statuses(values, "--status")


# --------------------------------------------------------------------------- best


@click.command()
@click.argument("metric")
@selection_options
@with_context()
@click.option("--where", multiple=True, help="Filter first, e.g. 'tag=lstm' or 'optimizer.lr<0.1'.")
@click.option("--json", "as_json", is_flag=True)
def best(
    context: Context,
    metric: str,
    sweeps: tuple[str, ...],
    all_projects: bool,
    where: tuple[str, ...],
    as_json: bool,
) -> None:
    """The best run of all experiments by METRIC[:max|min]: its config, what differs
    from the runner-up, its image, and how to rerun it."""
    from ..api.reading import best_run
    from ..results.best import render_best

    answer = best_run(context, metric, sweeps, all_projects=all_projects, where=where)
    if as_json:
        click.echo(json.dumps(answer, indent=2, sort_keys=True, default=str))
    else:
        click.echo(render_best(answer))


# --------------------------------------------------------------------------- labels


def _target(context: Context, ref: str) -> tuple[str, str]:
    """``("sweep", id)`` or ``("run", id)`` for a sweep id/name or a run id (prefix)."""
    from ..db.catalog import Catalog, check_ref
    from ..errors import NotFound
    from ..store.labels import read_labels

    check_ref(ref)
    runs = context.runs()
    catalog = Catalog(runs, lease_s=context.settings.lease_s)
    listing = catalog.listing()
    if ref in listing.sweep_ids:
        return "sweep", ref
    labels = read_labels(runs.store, notes=False)
    named = labels.sweeps_named(ref)
    if len(named) == 1:
        return "sweep", named[0]
    if len(named) > 1:
        raise UsageError(f"name {ref!r} labels {len(named)} sweeps ({', '.join(named)}): "
                         "give a sweep id")
    try:
        return "run", runs.resolve_run_id(ref)
    except NotFound:
        pass
    return "sweep", catalog.resolve([ref], listing, labels)[0]


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("target")
@click.argument("changes", nargs=-1, required=True, type=click.UNPROCESSED)
@with_context()
def tag(context: Context, target: str, changes: tuple[str, ...]) -> None:
    """Add (+TAG) or remove (-TAG) tags of a sweep or run: orch tag SWEEP +lstm -old."""
    from ..store.labels import change, check_label

    add: list[str] = []
    remove: list[str] = []
    for item in changes:
        if item[:1] not in "+-" or len(item) < 2:
            raise UsageError(f"tag change {item!r}: write +TAG to add or -TAG to remove")
        (add if item[0] == "+" else remove).append(check_label(item[1:], "tag"))
    kind, target_id = _target(context, target)
    change(context.runs().store, kind, target_id, add=add, remove=remove)
    click.echo(f"{kind} {target_id}: " + " ".join(changes))


@click.command()
@click.argument("target")
@click.argument("text")
@with_context()
def note(context: Context, target: str, text: str) -> None:
    """Set the note of a sweep or run ("" clears it)."""
    from ..store.labels import change

    kind, target_id = _target(context, target)
    change(context.runs().store, kind, target_id, note=text)
    click.echo(f"{kind} {target_id}: note {'cleared' if not text else 'set'}")


@click.command()
@click.argument("target")
@click.argument("name", required=False)
@with_context()
@click.option("--clear", is_flag=True, help="Remove the sweep's name.")
def name(context: Context, target: str, name: str | None, clear: bool) -> None:
    """Name a sweep (names work wherever a sweep id does)."""
    from ..store.labels import change

    if not name and not clear:
        raise UsageError("give a NAME, or --clear")
    kind, target_id = _target(context, target)
    if kind != "sweep":
        raise UsageError(f"{target!r} is a run: names are for sweeps (tag runs instead)")
    change(context.runs().store, kind, target_id, name=name, clear_name=clear)
    click.echo(f"sweep {target_id}: " + (f"named {name}" if name else "name cleared"))


# --------------------------------------------------------------------------- query


@click.command()
@click.argument("sql")
@selection_options
@with_context()
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json", "csv", "markdown"]), default="table"
)
def query(
    context: Context, sql: str, sweeps: tuple[str, ...], all_projects: bool, fmt: str
) -> None:
    """SQL over every run: table ``runs`` (one row per run; config.* and metrics.* are
    struct fields) and ``steps`` (run_id, step, name, value from metrics.jsonl)."""
    from ..db.frame import RunFrame
    from ..db.query import run_query
    from ..results import render_rows

    with RunFrame() as frame:
        snap = snapshot(context, sweeps, all_projects, frame=frame)
        frame.build_runs(snap.entries, snap.labels)
        columns, rows = run_query(context.runs(), frame, sql)
    click.echo(render_rows(columns, rows, fmt), nl=fmt != "csv")


# --------------------------------------------------------------------------- export


@click.group()
def export() -> None:
    """Copy runs into other tools."""


@export.command("mlflow")
@selection_options
@with_context()
@click.option("--tracking-uri", required=True, help="MLflow tracking server, e.g. http://host:5000.")
@click.option("--experiment", default=None, help="MLflow experiment (default: the project name).")
def export_mlflow(
    context: Context,
    sweeps: tuple[str, ...],
    all_projects: bool,
    tracking_uri: str,
    experiment: str | None,
) -> None:
    """Log each finished run as an MLflow run (params, metrics, steps, tags); runs
    exported before (found by their orch.run_id tag) are left alone."""
    from ..db.export_mlflow import export as do_export
    from ..schema.record import RunRecord

    snap = snapshot(context, sweeps, all_projects, live=False)
    runs = context.runs()
    parsed = (RunRecord.from_json(r, runs.where(f"runs/{r.get('run_id')}/run.json"))
              for r in snap.records)
    records = [record for record in parsed if record.status.finished]
    name = experiment or project_name(context) or "orch"
    result = do_export(runs, records, snap.labels, tracking_uri, name)
    click.echo(
        f"exported {result.created} runs to experiment {name!r} at {tracking_uri} "
        f"({result.existing} already there)"
    )


# --------------------------------------------------------------------------- gc


@click.command()
@with_context()
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=3600.0,
    show_default=True,
    help="Seconds: blobs younger than this are kept even when unreferenced.",
)
@click.option("-v", "--verbose", is_flag=True, help="List every key removed.")
@click.option(
    "--cache",
    "cache_days",
    type=click.FloatRange(min=0),
    default=None,
    metavar="DAYS",
    help="Also prune this machine's input cache: inputs no run mounted for DAYS days and "
    "no running container mounts (the store keeps them; a run fetches them again).",
)
def gc(
    context: Context, dry_run: bool, grace: float, verbose: bool, cache_days: float | None
) -> None:
    """Remove blobs no record references, stale claims and abandoned partial runs;
    safe beside running sweeps."""
    from ..db.gc import collect

    report = collect(
        context.runs(), lease_s=context.settings.lease_s, grace_s=grace, dry_run=dry_run
    )
    if verbose:
        for key in report.removed:
            click.echo(("would remove " if dry_run else "removed ") + key)
    click.echo(report.summary(dry_run))
    if cache_days is not None:
        from ..inputs import prune
        from ..runner.container import mounted_by_runs

        pruned = prune(
            context.settings.cache_root,
            cache_days * 86400,
            mounted_by_runs(context.docker()),
            dry_run=dry_run,
        )
        if verbose:
            for digest in pruned.inputs:
                click.echo(("would remove input " if dry_run else "removed input ") + digest)
        click.echo(pruned.summary(dry_run))
