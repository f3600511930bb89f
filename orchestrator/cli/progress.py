"""A sweep's live progress on stderr: a bar on a terminal, plain lines otherwise.

Without a terminal (a CI log, a file, a pipe) every line is whole and flushed as it is
made: each environment build step (what is downloaded, built, loaded) and each run's
state change, ``[3/8] run <id> succeeded (12.3 s)``. Nothing per file or per percent;
a burst of runs that need not run (already succeeded) is one line, and a run waiting
for another submission is said once. stdout is never written here: ``--json`` keeps it
to its one object.

The environment's lines are held for the build's first :data:`HOLD_S` seconds: a bad
lock (incomplete, a wrong hash) is found within them, and its stderr stays the one
``error:`` line a program reading it expects. A build still going after that, or one
that ends well, shows every line; from then on they are printed as they come.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from ..schema.record import RunRecord


#: Seconds the environment's first lines are held (see the module's docstring).
HOLD_S = 10.0
#: Seconds a burst of skipped runs is gathered before its line (a long re-submission's).
SKIPPED_EVERY_S = 5.0


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
        self._said: dict[str, str] = {}  # the last plain line of each run
        self._skipped: list[str] = []  # skipped runs not said yet
        self._skipped_at: float | None = None
        self._skipped_upto = 0  # runs finished when the last of them was skipped
        self._lock = threading.Lock()  # the hold's timer prints from its own thread
        self._held: list[str] | None = []  # None: the hold is over, lines go out at once
        self._timer: threading.Timer | None = None
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
        elif not self.quiet:
            self._plain(event, run_id, record, finished)

    def _plain(self, event: str, run_id: str, record: RunRecord | None, finished: int) -> None:
        if event == "skipped":
            # A re-submission skips its runs in one burst: one line, not one per run.
            self._skipped.append(run_id)
            self._skipped_upto = finished
            self._skipped_at = self._skipped_at or time.monotonic()
            if time.monotonic() - self._skipped_at >= SKIPPED_EVERY_S:
                self._flush_skipped()
            return
        if event == "queued":
            return  # every run is queued at the start: the running line says more
        self._release()  # a run starts: the build went well
        self._flush_skipped()
        if event == "running":
            line = "running"
        elif event == "done" and record is not None:
            line = record.status.value
            if record.duration_s is not None:
                line += f" ({record.duration_s:.1f} s)"
            if record.reason:
                line += f": {' '.join(record.reason.split())}"
        elif event == "retrying" and record is not None:
            line = f"retrying its {record.status.value} attempt {record.attempt}"
        elif event == "waiting":
            line = "waiting: another submission runs it"
        else:
            return  # "not started": the sweep is stopping and says so itself
        if self._said.get(run_id) == line:
            return  # a run waiting on another submission is polled: say it once
        self._said[run_id] = line
        self._echo(f"[{finished}/{self.total}] run {run_id} {line}")

    def _flush_skipped(self) -> None:
        if not self._skipped:
            return
        count, first = len(self._skipped), self._skipped[0]
        self._skipped, self._skipped_at = [], None
        what = f"run {first}" if count == 1 else f"{count} runs"
        self._echo(f"[{self._skipped_upto}/{self.total}] {what} skipped: succeeded before")

    @staticmethod
    def _echo(line: str) -> None:
        click.echo(line, err=True)
        sys.stderr.flush()  # a CI log shows it now, not at exit

    def running(self) -> int:
        return self.counts["running"]

    def say(self, message: str) -> None:
        """A line for the user that the live bar does not swallow."""
        if self._live is not None:
            self._live.console.print(message, markup=False, highlight=False)
        else:
            click.echo(message, err=True)

    def note(self, message: str) -> None:
        """A line of what the sweep is doing (an environment build step); quiet: none."""
        if self._live is not None:
            self._live.console.print(message, markup=False, highlight=False)
        elif not self.quiet:
            with self._lock:
                if self._held is not None:
                    self._held.append(message)
                    if self._timer is None:
                        self._timer = threading.Timer(HOLD_S, self._release)
                        self._timer.daemon = True
                        self._timer.start()
                    return
            self._flush_skipped()
            self._echo(message)

    def _release(self) -> None:
        """End the hold: say the held lines, and every later one as it comes."""
        with self._lock:
            held, self._held = self._held, None
            for line in held or ():
                self._echo(line)

    def close(self) -> None:
        """End the display. Called in a ``finally`` as an error goes by, it drops the
        lines still held: the error says what went wrong, in its one line."""
        failed = sys.exc_info()[1] is not None
        if self._timer is not None:
            self._timer.cancel()
        if self._live is not None:
            self._live.stop()
        elif not self.quiet:
            if failed:
                with self._lock:
                    self._held = None
            self._release()
            self._flush_skipped()
