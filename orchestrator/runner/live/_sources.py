"""A run's step metrics from whichever source it wrote; see the package docstring for the
order in which sources win."""

from __future__ import annotations

import os
import posixpath
import stat
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from . import _tfevents
from ._base import Sink, StepLog, StepMetrics, final_of, keep, over_limit
from ._csv import CsvSteps
from ._jsonl import JsonlSteps
from ._tfevents import EventSteps, is_event_file

#: Entries of the output directory looked at when searching it for framework logs.
MAX_WALK = 100_000
#: Files (metrics.csv) or directories (event files) of one kind followed at most.
MAX_SOURCES = 16
#: Seconds between two searches of the output directory while the run runs.
SCAN_S = 5.0


def _has_steps(reader: StepMetrics) -> bool:
    return reader.lines > reader.bad_lines


class _Group:
    """Readers of one kind (several ``metrics.csv``, several event directories) read as one."""

    def __init__(self, readers: Sequence[CsvSteps | EventSteps]) -> None:
        self.readers = list(readers)

    @property
    def latest(self) -> dict[str, float]:
        if len(self.readers) == 1:
            return self.readers[0].latest
        merged: dict[str, float] = {}
        for reader in self.readers:
            for key, value in reader.latest.items():
                keep(merged, key, value)
        return merged

    @property
    def step(self) -> float | None:
        steps = [r.step for r in self.readers if r.step is not None]
        return max(steps) if steps else None

    @property
    def lines(self) -> int:
        return sum(r.lines for r in self.readers)

    @property
    def bad_lines(self) -> int:
        return sum(r.bad_lines for r in self.readers)

    def poll(self) -> bool:
        changed = False
        for reader in self.readers:
            changed |= reader.poll()
        return changed

    def final(self) -> dict[str, float]:
        self.poll()
        return final_of(self.latest)

    def skipped(self) -> list[str]:
        notes: list[str] = []
        for reader in self.readers:
            if isinstance(reader, CsvSteps):
                notes += [f"skipped {reader.skipped}"] if reader.skipped else []
            else:
                notes += [f"skipped {rel}: {why}" for rel, why in reader.skipped.items()]
        return notes

    def close(self) -> None:
        for reader in self.readers:
            if isinstance(reader, EventSteps):
                reader.close()


def _prefixes(units: Sequence[str]) -> dict[str, str]:
    """Each unit's name prefix: none for a lone unit, else its directory (a unit is a
    metrics.csv file or a directory of event files) below the one holding them all, the
    way TensorBoard names runs: ``train/``, ``validation/``."""
    if len(units) <= 1:
        return dict.fromkeys(units, "")
    dirs = {unit: "/" + (posixpath.dirname(unit) if unit.endswith("metrics.csv") else unit)
            for unit in units}
    common = posixpath.commonpath(list(dirs.values()))
    prefixes = {}
    for unit, directory in dirs.items():
        rel = posixpath.relpath(directory, common)
        prefixes[unit] = "" if rel == "." else rel + "/"
    return prefixes


def _walk(root: Path) -> tuple[list[str], list[str], bool]:
    """(metrics.csv files, directories holding event files, whether the walk was cut
    short) under ``root``, relative to it, never through a link: directory descriptors
    (``os.fwalk``), so a directory swapped for a link mid-walk is not entered."""
    csvs: list[str] = []
    event_dirs: list[str] = []
    seen = 0
    try:
        for dirpath, dirnames, filenames, dirfd in os.fwalk(root, follow_symlinks=False):
            rel = os.path.relpath(dirpath, root)
            rel = "" if rel == "." else rel
            seen += len(dirnames) + len(filenames)
            if seen > MAX_WALK:
                # the walk is dropped here; its descriptors are closed with it
                return sorted(csvs), sorted(event_dirs), True
            has_events = False
            for name in filenames:
                try:
                    if not stat.S_ISREG(os.stat(name, dir_fd=dirfd,
                                                follow_symlinks=False).st_mode):
                        continue
                except OSError:
                    continue
                path = f"{rel}/{name}" if rel else name
                if name == "metrics.csv":
                    csvs.append(path)
                elif is_event_file(name):
                    has_events = True
            if has_events:
                event_dirs.append(rel)
    except OSError:
        pass  # the output directory went away: what was found is what there is
    return sorted(csvs), sorted(event_dirs), False


class RunMetrics:
    """Every source of step metrics under a run's output directory, read as the one that
    wins: ``metrics.jsonl``, else Lightning's ``metrics.csv``, else TensorBoard event
    files. Offers what one reader offers (:class:`StepMetrics`), so the live publisher
    and a pruner need not know which source it is.

    At the end (:meth:`final`, :meth:`step_log`) the winning framework source is read
    once more from its start, writing ``step_log`` (one JSON object per step, ``step``
    set) so that the store's ``metrics.jsonl`` holds its curve."""

    def __init__(self, output: Path, step_log: Path | None = None,
                 scan_s: float = SCAN_S) -> None:
        self.output = output
        self._log_path = step_log
        self._scan_s = scan_s
        self._jsonl = JsonlSteps(output)
        self._units: dict[str, tuple[str, ...]] = {"csv": (), "events": ()}
        self._csv = _Group([])
        self._events = _Group([])
        self._scanned_at: float | None = None
        self._notes: dict[str, None] = {}  # an ordered set
        self._ended: StepMetrics | None = None
        self._logged = False

    # -- the interface of one reader ----------------------------------------------------

    @property
    def source(self) -> StepMetrics:
        """The reader whose values are shown: the first, in the order of precedence,
        that has read a step."""
        if self._ended is not None:
            return self._ended
        for reader in (self._jsonl, self._csv, self._events):
            if _has_steps(reader):
                return reader
        return self._jsonl

    @property
    def latest(self) -> dict[str, float]:
        return self.source.latest

    @property
    def step(self) -> float | None:
        return self.source.step

    @property
    def lines(self) -> int:
        return self.source.lines

    @property
    def bad_lines(self) -> int:
        return self.source.bad_lines

    def poll(self) -> bool:
        """Read what is new of the winning source; the framework sources are looked for
        only while the run has written no ``metrics.jsonl`` line."""
        if self._ended is not None:
            return False
        changed = self._jsonl.poll()
        if _has_steps(self._jsonl):
            return changed
        now = time.monotonic()
        if self._scanned_at is None or now - self._scanned_at >= self._scan_s:
            self._scanned_at = now
            self._scan()
        changed = self._csv.poll()
        if _has_steps(self._csv):
            return changed
        return self._events.poll()

    def final(self) -> dict[str, float]:
        """The last value of each metric of the winning source."""
        self._end()
        assert self._ended is not None
        return self._ended.final()

    def step_log(self) -> Path | None:
        """The framework source's steps as a ``metrics.jsonl``, when one won; None when
        ``metrics.jsonl`` won or there were no step metrics."""
        self._end()
        return self._log_path if self._logged else None

    def notes(self) -> list[str]:
        """What was skipped and why: for the run's log, never an error."""
        cut = [over_limit(self._jsonl.rel)] if self._jsonl.cut else []
        return [*self._notes, *cut, *self._csv.skipped(), *self._events.skipped()]

    # -- finding and ending -------------------------------------------------------------

    def _scan(self) -> None:
        csvs, event_dirs, cut = _walk(self.output)
        if cut:
            self._notes[f"searched only {MAX_WALK} entries of the output directory for "
                        "metrics.csv and event files"] = None
        self._csv = self._regroup("csv", csvs, self._csv, lambda rel, prefix: CsvSteps(
            self.output, rel, prefix))
        if event_dirs and not _tfevents.available():
            self._notes[f"{event_dirs[0] or '.'}: {_tfevents.INSTALL_HINT}"] = None
            event_dirs = []
        self._events = self._regroup("events", event_dirs, self._events,
                                     lambda rel, prefix: EventSteps(self.output, rel, prefix))

    def _regroup(self, kind: str, found: list[str], group: _Group,
                 make: Callable[[str, str], CsvSteps | EventSteps]) -> _Group:
        """The group for ``found``: the same one while the set is the same; a new one,
        read from the start, when a file or directory was added (the prefixes change)."""
        if len(found) > MAX_SOURCES:
            self._notes[f"followed only the first {MAX_SOURCES} of {len(found)} {kind} "
                        "sources"] = None
            found = found[:MAX_SOURCES]
        units = tuple(found)
        if units == self._units[kind]:
            return group
        group.close()
        self._units[kind] = units
        prefixes = _prefixes(units)
        return _Group([make(unit, prefixes[unit]) for unit in units])

    def _end(self) -> None:
        if self._ended is not None:
            return
        self._jsonl.final()
        self._csv.close()
        self._events.close()
        if _has_steps(self._jsonl):
            self._ended = self._jsonl
            return
        self._scan()
        for kind, make in (
            ("csv", lambda rel, prefix, sink: CsvSteps(self.output, rel, prefix, sink)),
            ("events", lambda rel, prefix, sink: EventSteps(self.output, rel, prefix, sink)),
        ):
            units = self._units[kind]
            if not units:
                continue
            ended = self._read_all(units, make)
            if kind == "csv":  # kept for its notes whether or not it won
                self._csv = ended
            else:
                self._events = ended
            if _has_steps(ended):
                self._ended = ended
                return
        self._ended = self._jsonl

    def _read_all(self, units: tuple[str, ...],
                  make: Callable[[str, str, Sink | None], CsvSteps | EventSteps]) -> _Group:
        """Read every unit from its start, writing the step log when there is one to
        write. Units are read one after another: each one's lines are in step order."""
        prefixes = _prefixes(units)
        log = StepLog(self._log_path) if self._log_path is not None else None
        group = _Group([])
        try:
            for unit in units:
                reader = make(unit, prefixes[unit], log)
                reader.final()
                reader.sink = None  # the log is closed: a later poll must not write to it
                if isinstance(reader, EventSteps):
                    reader.close()
                group.readers.append(reader)
        finally:
            if log is not None:
                log.close()
        self._logged = log is not None and log.written > 0
        return group
