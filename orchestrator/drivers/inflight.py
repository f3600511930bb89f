"""The runs a driver has handed to the backend, and those another submitter holds.

A job whose run another submitter holds (a live claim) is not run twice: it is waited
for, polled in the store, and submitted again only once the holder's claim goes stale.
"""

from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Generic, TypeVar

from ..errors import NotFound
from ..schema.job import Job
from ..schema.record import RunRecord
from .launcher import Launcher, Unfinished

T = TypeVar("T")


class InFlight(Generic[T]):
    """The jobs a driver handed to the launcher's backend, each with the driver's own
    note (``T``), and the runs another submitter holds, waited for: polled every
    ``poll_s`` seconds, resubmitted once the holder's claim goes stale."""

    def __init__(self, launcher: Launcher, poll_s: float) -> None:
        self.launcher = launcher
        self.poll_s = poll_s
        self._pending: dict[Future[RunRecord], tuple[Job, T]] = {}
        self._held: dict[str, tuple[Job, T]] = {}

    def submit(self, job: Job, note: T) -> None:
        self._pending[self.launcher.submit(job)] = (job, note)

    def __len__(self) -> int:
        return len(self._pending) + len(self._held)

    def notes(self) -> list[T]:
        """Every run's note, running or held."""
        return [note for _, note in [*self._pending.values(), *self._held.values()]]

    def running(self) -> list[tuple[Job, T]]:
        """The jobs with the backend (not those another submitter holds)."""
        return list(self._pending.values())

    def collect(self, timeout: float | None) -> list[tuple[T, RunRecord | None]]:
        """Wait up to ``timeout`` seconds (None: until a job ends; with runs held, at most
        ``poll_s``) and return what ended: each note with its record (progress ``done``),
        or None for a run not started or, once the sweep is stopped, one left to its holder."""
        ended: list[tuple[T, RunRecord | None]] = []
        stop = self.launcher.stop
        if self._pending:
            limit = timeout
            if self._held and timeout != 0:
                limit = self.poll_s if timeout is None else min(timeout, self.poll_s)
            done, _ = wait(list(self._pending), timeout=limit, return_when=FIRST_COMPLETED)
            for future in done:
                job, note = self._pending.pop(future)
                outcome = self.launcher.outcome(future, job.run_id)
                if outcome is Unfinished.HELD:
                    self._held[job.run_id] = (job, note)
                elif outcome is Unfinished.NOT_STARTED:
                    ended.append((note, None))
                else:
                    ended.append((note, self._done(job.run_id, outcome)))
        elif self._held and timeout != 0 and not stop.draining:
            time.sleep(self.poll_s)
        ended += self._poll_held()
        return ended

    def _done(self, run_id: str, record: RunRecord) -> RunRecord:
        self.launcher.progress("done", run_id, record)
        return record

    def _poll_held(self) -> list[tuple[T, RunRecord | None]]:
        launcher = self.launcher
        runs = launcher.runs
        ended: list[tuple[T, RunRecord | None]] = []
        for run_id, (job, note) in list(self._held.items()):
            if launcher.stop.draining:
                # other submitters' runs: theirs to finish, not ours to wait for
                del self._held[run_id]
                ended.append((note, None))
            elif runs.is_complete(run_id):
                try:
                    record = runs.read_run(run_id)
                except NotFound:  # set aside again meanwhile, for another attempt: held
                    continue
                del self._held[run_id]
                ended.append((note, self._done(run_id, record)))
            elif runs.claims.is_stale(run_id, launcher.settings.lease_s):
                del self._held[run_id]
                self.submit(job, note)
        return ended
