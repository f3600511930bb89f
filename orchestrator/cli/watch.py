"""``orch watch SWEEP_ID``: a sweep's runs, live, from any machine that reads the store.

On a terminal it is a table redrawn in place (rich); elsewhere, or with ``--once``, plain
snapshots, one line per run with ``key=value`` fields, printed only when something other
than the clock changed. It ends by itself once no run is queued or running.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

import click

from .context import Context, complete_sweep_ids, with_context
from .database import one_sweep

if TYPE_CHECKING:
    from ..db.sweepstate import RunView, Snapshot

_STYLES = {
    "queued": "dim",
    "running": "bold cyan",
    "succeeded": "green",
    "failed": "bold red",
    "cancelled": "yellow",
    "pruned": "magenta",
}


def _number(value: float | None) -> str:
    from ..results.table import format_number

    if value is None:
        return "-"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))  # a step of 3.0 reads as 3
    return format_number(value)


def _duration(seconds: float | None) -> str:
    from ..results.table import format_duration

    return format_duration(seconds) or "-"


def headline(snapshot: Snapshot) -> str:
    done = sum(not run.active for run in snapshot.runs)
    counts = ", ".join(f"{n} {status}" for status, n in snapshot.counts.items())
    text = f"sweep {snapshot.sweep_id}: {done}/{len(snapshot.runs)} done ({counts or 'no runs'})"
    if snapshot.eta_s is not None:
        text += f"; eta {_duration(snapshot.eta_s)}"
    return text


def printable(text: str) -> str:
    """The results' printable text (imported when a command shows runs, not at start)."""
    from ..results.table import printable as results_printable

    return results_printable(text)


def plain_line(run: RunView, metrics: list[str]) -> str:
    fields = [run.run_id, run.status, f"attempt={run.attempt}", f"step={_number(run.step)}",
              f"elapsed={_duration(run.elapsed_s)}"]
    fields += [f"{name}={_number(run.metrics.get(name))}" for name in metrics]
    if run.overrides:
        fields.append("overrides=" + ",".join(run.overrides))
    if run.reason:
        fields.append(f"reason={' '.join(run.reason.split())}")
    return printable(" ".join(fields))


def plain(snapshot: Snapshot) -> str:
    lines = [plain_line(run, snapshot.metrics) for run in snapshot.runs]
    return "\n".join([headline(snapshot), *lines])


def _signature(snapshot: Snapshot) -> tuple[Any, ...]:
    """What changed, the clock aside: statuses, steps and metric values."""
    return tuple(
        (r.run_id, r.status, r.attempt, r.step, tuple(sorted(r.metrics.items())))
        for r in snapshot.runs
    )


def table(snapshot: Snapshot) -> Any:
    from rich.table import Table
    from rich.text import Text

    grid = Table(title=headline(snapshot), title_justify="left", expand=False)
    grid.add_column("run")
    grid.add_column("status")
    grid.add_column("attempt", justify="right")
    grid.add_column("step", justify="right")
    for name in snapshot.metrics:
        grid.add_column(Text(printable(name)), justify="right")
    grid.add_column("elapsed", justify="right")
    grid.add_column("overrides", overflow="fold")
    for run in snapshot.runs:
        status = Text(run.status, style=_STYLES.get(run.status, ""))
        grid.add_row(
            run.run_id,
            status,
            str(run.attempt),
            _number(run.step),
            *(_number(run.metrics.get(name)) for name in snapshot.metrics),
            _duration(run.elapsed_s),
            Text(printable(" ".join(run.overrides))),
        )
    return grid


@click.command()
@click.argument("sweep_id", shell_complete=complete_sweep_ids)
@with_context()
@click.option("--interval", type=click.FloatRange(min=0.1), default=2.0, show_default=True,
              help="Seconds between refreshes.")
@click.option("--once", is_flag=True, help="Print one snapshot and exit.")
@click.option("--metric", "metrics", multiple=True,
              help="A metric column to show (repeatable; default: the few most runs have).")
def watch(
    context: Context, sweep_id: str, interval: float, once: bool, metrics: tuple[str, ...]
) -> None:
    """Every run of a sweep (id, name or tag; of several sweeps, the newest), live:
    status, attempt, step, latest metrics, elapsed, ETA.

    Ends by itself once no run is queued or running: exit 0, or 1 if a run failed or was
    cancelled. Ctrl-C leaves it (exit 130); the sweep itself goes on.
    """
    from ..db.sweepstate import Watcher
    from ..errors import RunsFailed

    sweep_id = one_sweep(context, sweep_id, "watching")
    watcher = Watcher(context.runs(), sweep_id, context.settings.lease_s, metrics=metrics)
    snapshot = watcher.refresh()
    if once or not sys.stdout.isatty():
        last = None
        while True:
            if _signature(snapshot) != last or once or not snapshot.active:
                click.echo(plain(snapshot))
                sys.stdout.flush()
                last = _signature(snapshot)
            if once or not snapshot.active:
                break
            time.sleep(interval)
            snapshot = watcher.refresh()
    else:
        from rich.console import Console
        from rich.live import Live

        with Live(table(snapshot), console=Console(), auto_refresh=False) as live:
            while snapshot.active:
                time.sleep(interval)
                snapshot = watcher.refresh()
                live.update(table(snapshot), refresh=True)
    if snapshot.unsuccessful and not snapshot.active:
        raise RunsFailed(f"sweep {sweep_id}: {snapshot.unsuccessful} run(s) failed or cancelled")
