"""Step metrics from a Lightning ``CSVLogger`` file (``metrics.csv``), read while it grows.

The format, as ``lightning.fabric.loggers.csv_logs`` writes it: a header row of metric
names in sorted order (``epoch``, ``step``, ``train/loss``, ``val/acc``, ...), then one
row per logging call, each filling only the columns logged in that call (the rest empty),
lines ending in ``\\r\\n``. When a call logs a key not seen before, Lightning rewrites the
whole file in place under the grown header; the rows keep their values. So the reader
checks the header before every read: a different header (or a file shorter than what was
read) means a rewrite, and the rows already taken are skipped by count in the new file.
A row is taken only once its newline is there: a row being written, or a file being
rewritten, is simply not complete yet.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from ._base import (
    MAX_KEYS,
    MAX_LINE,
    MAX_SOURCE_BYTES,
    Budget,
    Lines,
    Sink,
    final_of,
    keep,
    number,
    open_nofollow,
    over_limit,
)


def _cell(text: str) -> float | None:
    """An empty cell is a metric not logged in this row; a cell that is not a finite
    number is left out too."""
    text = text.strip()
    if not text:
        return None
    try:
        value: float = int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            return None
    return number(value)


def _row(line: bytes) -> list[str] | None:
    try:
        text = line.decode("utf-8").rstrip("\r")
    except UnicodeDecodeError:
        return None
    try:
        rows = list(csv.reader([text]))
    except csv.Error:
        return None
    return rows[0] if len(rows) == 1 else None


@dataclass
class CsvSteps:
    """Follows one ``metrics.csv`` (``root/rel``); names get ``prefix`` in front, and each
    row taken also goes to ``sink``."""

    root: Path
    rel: str
    prefix: str = ""
    sink: Sink | None = None
    latest: dict[str, float] = field(default_factory=dict)
    step: float | None = None
    lines: int = 0
    bad_lines: int = 0
    #: Why the file is no longer read, if it is not.
    skipped: str | None = None
    _header: bytes | None = None  # the header line as in the file, with its newline
    _names: list[str] = field(default_factory=list)
    _offset: int = 0
    _rows: int = 0  # data lines of the current file content read so far
    _skip: int = 0  # data lines of a rewritten file already taken before the rewrite
    _lines: Lines = field(default_factory=Lines)
    _more: bool = False

    def poll(self) -> bool:
        """Read complete new rows (within one poll's budget); True when anything changed."""
        self._more = False
        if self.skipped is not None:
            return False
        fd = open_nofollow(self.root, self.rel)
        if fd is None:
            return False
        changed = False
        budget = Budget()
        with os.fdopen(fd, "rb") as handle:
            while self._same_header(handle):
                size = budget.next_read(self._offset)
                if not size:
                    if self._offset >= MAX_SOURCE_BYTES:
                        self.skipped = over_limit(self.rel)
                    break
                handle.seek(self._offset)
                data = handle.read(size)
                if not data:
                    break
                budget.spent(len(data))
                handle.seek(0)
                if handle.read(len(self._header or b"")) != self._header:
                    continue  # rewritten while we read: what we read may be of either file
                changed |= self._feed(data)
        self._more = budget.more
        return changed

    def _same_header(self, handle: IO[bytes]) -> bool:
        """Check the header, re-reading it after a rewrite; False while there is none yet."""
        size = os.fstat(handle.fileno()).st_size
        handle.seek(0)
        if self._header is not None and size >= self._offset:
            if handle.read(len(self._header)) == self._header:
                return True
        handle.seek(0)
        first = handle.readline(MAX_LINE + 1)
        if not first.endswith(b"\n"):
            if len(first) > MAX_LINE:
                self.skipped = f"{self.rel}: its header is over {MAX_LINE} bytes"
            return False  # empty, or being (re)written
        names = _row(first.rstrip(b"\n"))
        if not names or len(set(names)) != len(names):
            self.skipped = f"{self.rel}: its first line is not a header of distinct names"
            return False
        if self._header is not None:  # rewritten under a grown header: skip what we took
            self._skip = self._rows
        self._header, self._names = first, names
        self._offset, self._rows, self._lines = len(first), 0, Lines()
        return True

    def _feed(self, data: bytes) -> bool:
        self._offset += len(data)
        changed = False
        for line in self._lines.feed(data):
            self._rows += 1
            if self._rows <= self._skip:
                continue  # taken before the file was rewritten
            if line is None:
                self.bad_lines += 1
            else:
                changed |= self._take(line)
        return changed

    def _take(self, line: bytes) -> bool:
        if not line.strip(b"\r\n\t "):
            return False
        self.lines += 1
        cells = _row(line)
        if cells is None or len(cells) != len(self._names):
            self.bad_lines += 1
            return False
        values: dict[str, float] = {}
        step: float | None = None
        for name, text in zip(self._names[: MAX_KEYS + 1], cells, strict=False):
            value = _cell(text)
            if value is None:
                continue
            if name == "step":
                step = value
            elif name in ("epoch", "time"):
                values[name] = value
            else:
                values[self.prefix + name] = value
        self.step = float(step) if step is not None else float(self.lines)
        for key, value in values.items():
            keep(self.latest, key, value)
        if self.sink is not None:
            self.sink(step if step is not None else self.lines, values)
        return True

    def final(self) -> dict[str, float]:
        """The last value of each metric, the last row taken even without its newline."""
        self.poll()
        while self._more:
            self.poll()
        last = self._lines.rest()
        if last and self._header is not None:
            self._rows += 1
            if self._rows > self._skip:
                self._take(last)
        return final_of(self.latest)
