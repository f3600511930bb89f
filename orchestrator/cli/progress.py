"""A sweep's live progress on stderr: a bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from ..record import RunRecord


class Progress:
    """The sweep driver's ``progress(event, run_id, record)`` callback."""

    def __init__(self, total: int, quiet: bool = False) -> None:
        self.total = total
        self.counts = {
            "queued": 0, "running": 0, "succeeded": 0, "failed": 0, "cancelled": 0, "pruned": 0,
            "skipped": 0,
        }
        self.retried = 0
        self.quiet = quiet
        self.tty = sys.stderr.isatty() and not quiet
        self._live: Any = None
        if self.tty:
            from rich.console import Console
            from rich.progress import BarColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as Bar

            self._live = Bar(
                TextColumn("[bold]sweep"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TextColumn("{task.fields[counts]}"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._task = self._live.add_task("sweep", total=total, counts="")
            self._live.start()

    def __call__(self, event: str, run_id: str, record: RunRecord | None) -> None:
        if event == "queued":
            self.counts["queued"] += 1
        elif event == "running":
            self.counts["queued"] -= 1
            self.counts["running"] += 1
        elif event == "skipped":
            self.counts["skipped"] += 1
        elif event == "retrying":
            self.retried += 1
        elif event == "done" and record is not None:
            self.counts["running"] = max(0, self.counts["running"] - 1)
            self.counts[record.status.value] = self.counts.get(record.status.value, 0) + 1
        ended = ("succeeded", "failed", "cancelled", "pruned", "skipped")
        finished = sum(self.counts[k] for k in ended)
        text = " ".join(f"{k} {v}" for k, v in self.counts.items() if v)
        if self._live is not None:
            self._live.update(self._task, completed=finished, counts=text)
        elif not self.quiet and event in ("done", "skipped", "waiting", "retrying"):
            status = record.status.value if record and event == "done" else event
            if event == "retrying" and record is not None:
                status = f"retrying its {record.status.value} attempt {record.attempt}"
            reason = f" ({record.reason})" if record and record.reason else ""
            click.echo(f"[{finished}/{self.total}] {run_id} {status}{reason}", err=True)

    def running(self) -> int:
        return self.counts["running"]

    def say(self, message: str) -> None:
        """A line for the user that the live bar does not swallow."""
        if self._live is not None:
            self._live.console.print(message, markup=False, highlight=False)
        else:
            click.echo(message, err=True)

    def note(self, message: str) -> None:
        """A line of what the sweep is doing (an environment build), on a terminal only:
        where stderr is read by a program, an error stays its one line."""
        if self._live is not None:
            self._live.console.print(message, markup=False, highlight=False)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
