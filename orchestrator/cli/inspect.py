"""Reading the store: ``orch results``, ``runs``, ``show``, ``logs``, ``compare``, ``report``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .context import (
    Context,
    check_id,
    complete_run_ids,
    complete_sweep_ids,
    read_run,
    with_context,
)
from .database import _statuses, selection_options, snapshot


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
    from ..results import render

    snap = snapshot(context, sweeps, all_projects)
    click.echo(
        render(
            snap.records,
            fmt,
            sort=sort,
            where=where,
            color=sys.stdout.isatty(),
            status=_statuses(status),
            limit=limit,
        ),
        nl=fmt != "csv",
    )


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
    """The whole record of a run."""
    record = read_run(context.runs(), run_id).to_json()
    if as_json:
        click.echo(json.dumps(record, indent=2, sort_keys=True))
        return
    import yaml

    click.echo(yaml.safe_dump(record, sort_keys=False, default_flow_style=False), nl=False)


@click.command()
@click.argument("run_id", shell_complete=complete_run_ids)
@with_context()
@click.option("-f", "--follow", is_flag=True, help="Wait for a running run and print its logs.")
@click.option("--stderr/--no-stderr", default=True, help="Include stderr.log.")
def logs(context: Context, run_id: str, follow: bool, stderr: bool) -> None:
    """A run's stdout and stderr."""
    check_id(run_id, "run id")
    runs = context.runs()
    if follow:
        from ..logs import follow as follow_run

        def write(chunk: bytes) -> None:
            click.echo(chunk.decode(errors="replace"), nl=False)

        follow_run(runs, context.docker, run_id, write)
    full = runs.resolve_run_id(run_id)
    click.echo(runs.read_file(full, "stdout.log").decode(errors="replace"), nl=False)
    if stderr:
        click.echo(runs.read_file(full, "stderr.log").decode(errors="replace"), nl=False, err=True)


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


@click.command()
@click.argument("sweep_id", shell_complete=complete_sweep_ids)
@with_context()
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False), help="HTML file to write."
)
def report(context: Context, sweep_id: str, output: str) -> None:
    """One self-contained HTML report of a sweep: table and plots, no network."""
    from ..results import write_report

    check_id(sweep_id, "sweep id")
    runs = context.runs()
    sweep_doc = runs.read_sweep(sweep_id)
    records = runs.read_sweep_runs(sweep_id)
    write_report(sweep_doc.to_json(), [r.to_json() for r in records], Path(output))
    click.echo(f"wrote {output} ({len(records)} runs)", err=True)
