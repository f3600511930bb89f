"""A sweep's live state, gathered from the store alone: what ``orch watch`` shows.

Any machine that can read the store can watch, whichever backend runs the sweep. The
reads are bounded: the sweep document once, the sweep's index and completed records once
(a complete run's ``run.json`` never changes while it is watched), then per refresh only
the runs not complete yet, each with one existence check of ``run.json``, one read of
``live.json`` and one look at the age of its claim, in parallel; a failed or cancelled run
costs one existence check (a re-submission retrying it removes its ``run.json``).

A run without ``run.json`` is ``running`` when someone holds a live claim on it or its
``live.json`` was rewritten within the lease (the publisher rewrites it only when a new
metrics line arrives, so its age alone is no proof of death); else it is ``queued``.
"""

from __future__ import annotations

import datetime as dt
import heapq
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..runner.live import number
from ..schema.record import RunRecord, RunStatus, SweepDoc
from ..store import RunStore

#: Step-metric keys that are bookkeeping, not something to show in a column.
_NOT_COLUMNS = frozenset({"step", "epoch", "time"})


def parse_time(stamp: object) -> float | None:
    """A record's ISO 8601 time (``...Z``) as a UNIX time; None when absent or bad."""
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        parsed = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


@dataclass(frozen=True)
class RunView:
    """One run as the watcher sees it now."""

    run_id: str
    overrides: tuple[str, ...]
    status: str  # a RunStatus value
    attempt: int = 1
    step: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    elapsed_s: float | None = None
    reason: str | None = None

    @property
    def active(self) -> bool:
        return self.status in (RunStatus.QUEUED.value, RunStatus.RUNNING.value)


@dataclass(frozen=True)
class Snapshot:
    """Every run of a sweep at one moment, with the columns to show and an ETA."""

    sweep_id: str
    runs: list[RunView]
    metrics: list[str]
    eta_s: float | None

    @property
    def counts(self) -> dict[str, int]:
        counts = Counter(run.status for run in self.runs)
        order = [status.value for status in RunStatus]
        return {status: counts[status] for status in order if counts[status]}

    @property
    def active(self) -> bool:
        """Some run is still queued or running."""
        return any(run.active for run in self.runs)

    @property
    def unsuccessful(self) -> int:
        """Runs that ended failed or cancelled."""
        bad = (RunStatus.FAILED.value, RunStatus.CANCELLED.value)
        return sum(run.status in bad for run in self.runs)


def estimate_eta(
    finished: Sequence[float], running: Sequence[float], queued: int
) -> float | None:
    """Seconds until the last run ends, from the durations of ``finished`` runs.

    Each running run (given by its elapsed time) is expected to take the mean duration;
    queued runs start on the first slot to free up, as many slots as runs run now (at
    least one). None without a finished run to learn from.
    """
    if not finished:
        return None
    mean = sum(finished) / len(finished)
    slots = [max(mean - elapsed, 0.0) for elapsed in running] or [0.0]
    heapq.heapify(slots)
    for _ in range(queued):
        heapq.heappush(slots, heapq.heappop(slots) + mean)
    return max(slots)


def _columns(views: Sequence[RunView], limit: int) -> list[str]:
    """The metrics most runs have, then by name: a few columns, never all of them."""
    seen: Counter[str] = Counter()
    for view in views:
        seen.update(name for name in view.metrics if name not in _NOT_COLUMNS)
    ranked = sorted(seen, key=lambda name: (-seen[name], name))
    return sorted(ranked[:limit])


class Watcher:
    """Refreshes a sweep's :class:`Snapshot` from the store with bounded reads."""

    def __init__(
        self,
        runs: RunStore,
        sweep_id: str,
        lease_s: float,
        *,
        metrics: Sequence[str] = (),
        max_columns: int = 4,
        workers: int = 16,
        clock: Any = time.time,
    ) -> None:
        self.runs = runs
        self.sweep: SweepDoc = runs.read_sweep(sweep_id)
        self.lease_s = lease_s
        self.wanted = list(metrics)
        self.max_columns = max_columns
        self.workers = workers
        self.clock = clock
        self._complete: dict[str, RunRecord] = {}
        self._first = True

    def _forget_retried(self) -> None:
        """A failed or cancelled run whose ``run.json`` went away is being retried by a
        re-submission (its attempt set aside): watch it again. One existence check each."""
        ended = [
            run_id for run_id, record in self._complete.items()
            if record.status in (RunStatus.FAILED, RunStatus.CANCELLED)
        ]
        if not ended:
            return
        with ThreadPoolExecutor(max_workers=min(self.workers, len(ended))) as pool:
            present = list(pool.map(self.runs.is_complete, ended))
        for run_id, still in zip(ended, present, strict=True):
            if not still:
                del self._complete[run_id]

    def _probe(self, run_id: str) -> tuple[RunRecord | None, dict[str, Any] | None, bool]:
        """(record if complete now, live state, live claim) of one incomplete run."""
        if self.runs.is_complete(run_id):
            try:
                return self.runs.read_run(run_id), None, False
            except Exception:  # noqa: BLE001 - set aside or mid-retry: look again next time
                return None, None, False
        return None, self.runs.read_live(run_id), self.runs.claims.is_live(run_id, self.lease_s)

    def refresh(self) -> Snapshot:
        if self.sweep.search is not None and not self._first:
            # A search lists its runs as its trials are created: one GET for the new ones.
            try:
                self.sweep = self.runs.read_sweep(self.sweep.sweep_id)
            except Exception:  # noqa: BLE001 - caught mid-rewrite: the last document stands
                pass
        entries = self.sweep.runs
        pending = [e.run_id for e in entries if e.run_id not in self._complete]
        if pending and self._first:
            # The index answers for every run committed before the sweep's end was written;
            # after this, a complete run is read once, when it is first seen complete.
            found = self.runs.read_runs(pending, self.workers, sweep_id=self.sweep.sweep_id)
            self._complete.update({r.run_id: r for r in found if r is not None})
            pending = [e.run_id for e in entries if e.run_id not in self._complete]
        elif not self._first:
            self._forget_retried()
            pending = [e.run_id for e in entries if e.run_id not in self._complete]
        self._first = False
        probes: dict[str, tuple[RunRecord | None, dict[str, Any] | None, bool]] = {}
        if pending:
            with ThreadPoolExecutor(max_workers=min(self.workers, len(pending))) as pool:
                probes = dict(zip(pending, pool.map(self._probe, pending), strict=True))
        now = self.clock()
        views = []
        for entry in entries:
            record = self._complete.get(entry.run_id)
            live, claimed = None, False
            if record is None:
                record, live, claimed = probes.get(entry.run_id, (None, None, False))
                if record is not None:
                    self._complete[entry.run_id] = record
            if record is not None:
                views.append(self._record_view(record, entry.overrides))
            else:
                views.append(self._live_view(entry.run_id, entry.overrides, live, claimed, now))
        finished = [
            v.elapsed_s for v in views if not v.active and v.elapsed_s is not None
        ]
        running = [
            v.elapsed_s or 0.0 for v in views if v.status == RunStatus.RUNNING.value
        ]
        queued = sum(v.status == RunStatus.QUEUED.value for v in views)
        eta = estimate_eta(finished, running, queued) if running or queued else None
        columns = self.wanted or _columns(views, self.max_columns)
        return Snapshot(self.sweep.sweep_id, views, columns, eta)

    @staticmethod
    def _record_view(record: RunRecord, overrides: tuple[str, ...]) -> RunView:
        duration = record.duration_s
        if duration is None:
            start, end = parse_time(record.started_at), parse_time(record.ended_at)
            duration = end - start if start is not None and end is not None else None
        return RunView(
            run_id=record.run_id,
            overrides=overrides or record.overrides,
            status=record.status.value,
            attempt=record.attempt,
            metrics=dict(record.metrics),
            elapsed_s=duration,
            reason=record.reason,
        )

    def _live_view(
        self,
        run_id: str,
        overrides: tuple[str, ...],
        live: dict[str, Any] | None,
        claimed: bool,
        now: float,
    ) -> RunView:
        updated = parse_time(live.get("updated_at")) if live else None
        fresh = updated is not None and now - updated <= self.lease_s
        if live is None or not (claimed or fresh):
            status = RunStatus.RUNNING if claimed else RunStatus.QUEUED
            return RunView(run_id, overrides, status.value)
        raw = live.get("metrics")
        metrics = {
            str(k): v
            for k, value in (raw.items() if isinstance(raw, dict) else ())
            if (v := number(value)) is not None
        }
        started = parse_time(live.get("started_at"))
        attempt = live.get("attempt")
        return RunView(
            run_id=run_id,
            overrides=overrides,
            status=RunStatus.RUNNING.value,
            attempt=attempt if isinstance(attempt, int) and not isinstance(attempt, bool) else 1,
            step=number(live.get("step")),
            metrics=metrics,
            elapsed_s=max(now - started, 0.0) if started is not None else None,
        )
