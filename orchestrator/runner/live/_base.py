"""What every reader of step metrics shares: the interface, the caps, safe opening, the step log."""

from __future__ import annotations

import json
import math
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Protocol

#: A line longer than this is not a metrics line; it is skipped, not buffered.
MAX_LINE = 1 << 20
#: More distinct keys than this across a run's step metrics are not followed.
MAX_KEYS = 10_000
#: A step-metrics file is read this far at most: past it, the rest is not followed (a run
#: may write an endless file, or a sparse one of a terabyte, to hold orch in its read).
MAX_SOURCE_BYTES = 256 << 20
#: One poll reads at most this much, and for at most POLL_S seconds, so the live
#: publisher gets back to its stop and cancel checks whatever the run writes.
POLL_BYTES = 32 << 20
POLL_S = 2.0
#: Keys that are bookkeeping, not metrics: left out of a run's final metrics.
BOOKKEEPING = frozenset({"epoch", "time"})


def number(value: object) -> float | int | None:
    """A finite JSON number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        as_float = float(value)
    except OverflowError:
        return None
    return value if math.isfinite(as_float) else None


class StepMetrics(Protocol):
    """One reader of a run's step metrics, whatever file it follows.

    ``poll`` reads what is new since the last poll (True when anything changed);
    ``latest`` holds the last value of each key, ``step`` the last step, ``lines`` the
    records read (lines, rows, events) and ``bad_lines`` those skipped; ``final`` is the
    last value of each metric once the run has ended.
    """

    @property
    def latest(self) -> dict[str, float]: ...

    @property
    def step(self) -> float | None: ...

    @property
    def lines(self) -> int: ...

    @property
    def bad_lines(self) -> int: ...

    def poll(self) -> bool: ...

    def final(self) -> dict[str, float]: ...


class Sink(Protocol):
    """Receives each step record a reader takes, in file order."""

    def __call__(self, step: float, values: dict[str, float]) -> None: ...


def final_of(latest: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in sorted(latest.items()) if k not in BOOKKEEPING}


def keep(latest: dict[str, float], key: str, value: float) -> None:
    """Set ``latest[key]`` unless that would follow more than MAX_KEYS keys."""
    if key in latest or len(latest) < MAX_KEYS:
        latest[key] = value


_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_nofollow(root: Path, rel: str, *, directory: bool = False) -> int | None:
    """A descriptor of ``root/rel`` opened without following a link at any component
    below ``root``, or None when it is missing, a link, or not a regular file (or not a
    directory). The run owns its output directory and may swap a file for a link to
    anything on the host at any moment, so a name checked is not a name opened."""
    parts = [part for part in rel.split("/") if part]
    if any(part in (".", "..") for part in parts) or not (parts or directory):
        return None
    try:
        fd = os.open(root, _FLAGS | os.O_DIRECTORY)
    except OSError:
        return None
    if not parts:
        return fd
    try:
        for part in parts[:-1]:
            inner = os.open(part, _FLAGS | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
        # O_NONBLOCK: opening a FIFO named like a metrics file must not hang the reader.
        last = os.open(parts[-1], _FLAGS | os.O_NONBLOCK
                       | (os.O_DIRECTORY if directory else 0), dir_fd=fd)
    except OSError:
        return None
    finally:
        os.close(fd)
    mode = os.fstat(last).st_mode
    if (stat.S_ISDIR(mode) if directory else stat.S_ISREG(mode)):
        return last
    os.close(last)
    return None


class Budget:
    """What one poll may still read: POLL_BYTES, POLL_S, and the file's MAX_SOURCE_BYTES.
    ``more`` says the poll stopped for the budget, not at the end of the file."""

    def __init__(self) -> None:
        self._bytes = POLL_BYTES
        self._deadline = time.monotonic() + POLL_S
        self.more = False

    def next_read(self, offset: int) -> int:
        """How many bytes to read next from ``offset``; 0 when the budget is spent."""
        size = min(16 * MAX_LINE, self._bytes, MAX_SOURCE_BYTES - offset)
        if size <= 0 or time.monotonic() > self._deadline:
            self.more = self._bytes <= 0 or time.monotonic() > self._deadline
            return 0
        return size

    def spent(self, count: int) -> None:
        self._bytes -= count


class Lines:
    """Splits what a poll read into complete lines. The bytes after the last newline wait
    for the next poll, up to MAX_LINE: a longer line is dropped as it comes, and given
    as None (a bad line) once its newline arrives, so memory stays bounded."""

    def __init__(self) -> None:
        self._partial = b""
        self._overlong = False

    def feed(self, data: bytes) -> Iterator[bytes | None]:
        *complete, rest = data.split(b"\n")
        for chunk in complete:
            line, self._partial = self._partial + chunk, b""
            if self._overlong:
                self._overlong = False
                yield None
            else:
                yield line
        self._partial += rest
        if len(self._partial) > MAX_LINE:
            self._partial, self._overlong = b"", True

    def rest(self) -> bytes:
        """The last line without its newline (once the run ended), if it is whole."""
        rest, self._partial = (b"" if self._overlong else self._partial), b""
        return rest


def over_limit(rel: str) -> str:
    return f"{rel}: read only its first {MAX_SOURCE_BYTES >> 20} MiB (the limit of a metrics file)"


class StepLog:
    """Writes step records as ``metrics.jsonl`` lines, one JSON object per step with
    ``step`` set: consecutive records of one step (Lightning writes a row per logging
    call) are merged into one line. Memory is one step's values."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.written = 0
        self._handle: IO[str] = path.open("w", encoding="utf-8")
        self._step: float | None = None
        self._values: dict[str, float] = {}

    def __call__(self, step: float, values: dict[str, float]) -> None:
        if step != self._step:
            self._flush()
            self._step = step
        for key, value in values.items():
            keep(self._values, key, value)

    def _flush(self) -> None:
        if self._step is None or not self._values:
            return
        step = self._step
        as_json = int(step) if float(step).is_integer() else step
        self._handle.write(json.dumps({"step": as_json, **self._values}) + "\n")
        self.written += 1
        self._values = {}

    def close(self) -> None:
        self._flush()
        self._handle.close()
