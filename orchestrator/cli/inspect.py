"""Reading the store: ``orch results``, ``runs``, ``show``, ``logs``, ``compare``, ``report``."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .context import (
    Context,
    check_id,
    complete_run_ids,
    complete_sweep_ids,
    read_run,
    with_context,
)
from .database import _statuses, one_sweep, selection_options, snapshot

if TYPE_CHECKING:
    from ..store import RunStore


@click.command()
@selection_options
@with_context()
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json", "csv", "markdown"]), default="table"
)
@click.option("--sort", default=None, help="Metric to sort by; prefix with - for descending.")
@click.option(
    "--where", multiple=True, help="Filter, e.g. 'optimizer.name=adam', 'loss<0.5', 'tag=lstm'."
)
@click.option(
    "--status", multiple=True, help="Only runs in these states (repeat, or comma-separate)."
)
@click.option("--limit", type=click.IntRange(min=0), default=None, help="At most N runs.")
def results(
    context: Context,
    sweeps: tuple[str, ...],
    all_projects: bool,
    fmt: str,
    sort: str | None,
    where: tuple[str, ...],
    status: tuple[str, ...],
    limit: int | None,
) -> None:
    """Runs of sweeps (ids, names or tags; none: every sweep of the project), their
    swept parameters and metrics; queued and running runs too."""
    from ..db.frame import RunFrame
    from ..errors import UsageError
    from ..results import render
    from ..results.render import render_view
    from ..results.sqlview import frame_view
    from ..results.table import where_keys

    color, statuses = sys.stdout.isatty(), _statuses(status)
    keys = where_keys(where)
    sort_metric = (sort or "").lstrip("+-").strip().removeprefix("metrics.")
    metrics = [m for m in dict.fromkeys(
        [sort_metric, *keys, *(k.removeprefix("metrics.") for k in keys)]) if m]
    with RunFrame() as frame:
        snap = snapshot(context, sweeps, all_projects, frame=frame)
        frame.load_runs(snap.entries, snap.labels)
        search = _search(context, snap.sweeps)
        # Decided in SQL when it can be (no search: its trials are shown in trial order).
        decided = None if search else frame_view(frame, where, status=statuses, sort=sort,
                                                 limit=limit)
        if decided is not None:
            click.echo(render_view(decided, fmt, color, where=where, status=statuses),
                       nl=fmt != "csv")
            return
        records = frame.thin_records(keys, metrics, overrides=bool(where))
        expand = frame.expander(records)
        if search is not None:
            # A search is shown in trial order with the best so far: its trials are few,
            # so they are rendered from whole records.
            from ..drivers.search.view import SearchView

            whole = expand(records)
            view = SearchView.build(search, whole, importances=fmt == "table")
            click.echo(render(view.ordered(whole), fmt, sort=sort, where=where, color=color,
                              status=statuses, limit=limit), nl=fmt != "csv")
            if fmt == "table":
                click.echo("\n" + view.text())
            return
        try:
            if sort_metric and not any(sort_metric in r["metrics"] for r in records):
                raise UsageError("no run has the --sort metric")  # said below, as before
            text = render(records, fmt, sort=sort, where=where, color=color, status=statuses,
                          limit=limit, expand=expand)
        except UsageError:
            # Such an error may list every key or metric: say it from whole records.
            text = render(expand(records), fmt, sort=sort, where=where, color=color,
                          status=statuses, limit=limit)
    click.echo(text, nl=fmt != "csv")


def _search(context: Context, sweeps: Sequence[Any]) -> dict[str, Any] | None:
    """The search section of the selection's sweep document, when the selection is one
    search with trials."""
    if len(sweeps) != 1:
        return None
    search = context.runs().read_sweep(sweeps[0].sweep_id).search
    return search if search and search.get("trials") else None


@click.command("runs")
@with_context()
def list_runs(context: Context) -> None:
    """Sweeps in the store, newest first, with names, tags and their runs' status counts."""
    from collections import Counter

    from ..results import runs_table

    snap = snapshot(context, (), True)
    counts: dict[str, Counter[str]] = {}
    for record in snap.records:
        counts.setdefault(str(record.get("sweep_id")), Counter())[str(record.get("status"))] += 1
    sweeps = [info.to_json() for info in snap.sweeps]
    click.echo(runs_table(sweeps, {sid: dict(c) for sid, c in counts.items()}))


@click.command()
@click.argument("run_id", shell_complete=complete_run_ids)
@with_context()
@click.option("--json", "as_json", is_flag=True)
def show(context: Context, run_id: str, as_json: bool) -> None:
    """The whole record of a run, then its earlier attempts (oldest first)."""
    from ..api.reading import described_run

    record = described_run(context, run_id)
    if as_json:
        click.echo(json.dumps(record, indent=2, sort_keys=True))
        return
    import yaml

    click.echo(yaml.safe_dump(record, sort_keys=False, default_flow_style=False), nl=False)


@click.command()
@click.argument("run_id", shell_complete=complete_run_ids)
@with_context()
@click.option("-f", "--follow", is_flag=True,
              help="Print a running run's logs as they come; a queued run is waited for.")
@click.option("--stderr/--no-stderr", default=True, help="Include stderr.log.")
def logs(context: Context, run_id: str, follow: bool, stderr: bool) -> None:
    """A run's stdout and stderr."""
    check_id(run_id, "run id")
    runs = context.runs()
    done = (0, 0)  # bytes of stdout and stderr already printed
    if follow:
        from ..runner.logs import follow as follow_run

        def write_out(chunk: bytes) -> None:
            click.echo(chunk, nl=False)

        def write_err(chunk: bytes) -> None:
            click.echo(chunk, nl=False, err=True)

        printed = follow_run(runs, context.docker, run_id, write_out,
                             write_err if stderr else None, lease_s=context.settings.lease_s)
        done = (printed.stdout, printed.stderr)
    full = runs.resolve_run_id(run_id)
    _stream(runs, full, "stdout.log", err=False, skip=done[0])
    if stderr:
        _stream(runs, full, "stderr.log", err=True, skip=done[1])


def _stream(runs: RunStore, run_id: str, name: str, *, err: bool, skip: int = 0) -> None:
    """A stored log to the terminal through a file, in chunks: memory stays flat. The
    stored log is the container's stream byte for byte: ``skip`` what was followed."""
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory(prefix="orch-logs-") as tmp:
        path = Path(tmp) / name
        runs.fetch_file(run_id, name, path)
        stream = sys.stderr.buffer if err else sys.stdout.buffer
        with path.open("rb") as handle:
            handle.seek(skip)
            shutil.copyfileobj(handle, stream, 1 << 20)
        stream.flush()


@click.command()
@click.argument("run_a", shell_complete=complete_run_ids)
@click.argument("run_b", shell_complete=complete_run_ids)
@with_context()
@click.option("--json", "as_json", is_flag=True)
def compare(context: Context, run_a: str, run_b: str, as_json: bool) -> None:
    """Only what differs between two runs: config, metrics, image layers, commit."""
    from ..results import compare as do_compare
    from ..results import diff_to_json, render_diff

    runs = context.runs()
    a, b = read_run(runs, run_a), read_run(runs, run_b)
    diff = do_compare(a.to_json(), b.to_json())
    if as_json:
        click.echo(json.dumps(diff_to_json(diff), indent=2, sort_keys=True))
    else:
        click.echo(render_diff(diff, a.run_id, b.run_id))


#: Curves are read (one GET each, in parallel) and drawn for at most this many runs,
#: the best first: past that a chart is a solid block of lines and the page a slow one.
MAX_CURVE_RUNS = 200


@click.command()
@click.argument("sweep_id", shell_complete=complete_sweep_ids)
@with_context()
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False), help="HTML file to write."
)
@click.option(
    "--objective",
    default=None,
    metavar="METRIC[:min|max]",
    help="What makes a run best (default: guessed from metric names, and the page says so).",
)
@click.option(
    "--color-by",
    default=None,
    metavar="KEY",
    help="Config key (dotted) that colours the learning curves (default: the first swept one).",
)
def report(
    context: Context, sweep_id: str, output: str, objective: str | None, color_by: str | None
) -> None:
    """One self-contained HTML report of a sweep (id, name or tag; of several sweeps,
    the newest): curves, table and plots, no network."""
    from concurrent.futures import ThreadPoolExecutor

    from ..errors import NotFound
    from ..results import default_sort, sort_records, write_report
    from ..results.curves import parse_curve
    from ..results.objective import parse_objective

    sweep_id = one_sweep(context, sweep_id, "reporting")
    runs = context.runs()
    sweep_doc = runs.read_sweep(sweep_id)
    records = [r.to_json() for r in runs.read_sweep_runs(sweep_id)]
    search = None
    if sweep_doc.search and sweep_doc.search.get("trials"):
        from ..drivers.search.view import SearchView

        view = SearchView.build(sweep_doc.search, records)
        records, search = view.ordered(records), view.to_json()
        if objective is None and view.objective is not None:
            objective = view.objective.text  # the search's own objective picks the best
    sort = parse_objective(objective, records) if objective else None
    ordered = sort_records(records, sort or default_sort(records))
    wanted = [str(r["run_id"]) for r in ordered[:MAX_CURVE_RUNS]]

    def curve(run_id: str) -> Any:
        try:
            return parse_curve(runs.read_file(run_id, "metrics.jsonl"))
        except NotFound:
            return None  # a run without step metrics, or from before they existed

    curves = {}
    if wanted:
        with ThreadPoolExecutor(max_workers=min(16, len(wanted))) as pool:
            for run_id, found in zip(wanted, pool.map(curve, wanted), strict=True):
                if found:
                    curves[run_id] = found
    write_report(sweep_doc.to_json(), records, Path(output), sort, curves=curves,
                 color_by=color_by, search=search)
    click.echo(f"wrote {output} ({len(records)} runs)", err=True)
