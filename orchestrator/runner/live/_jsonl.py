"""Step metrics from ``$ORCH_OUTPUT/metrics.jsonl``, read while the run writes it.

One JSON object of numbers per line, with an optional ``step`` (else the line number)
and optional ``epoch``/``time``. The reader keeps only the latest value of each key and a
count of lines, never the whole file, so memory does not grow with a long run; a line
that is not such an object is counted and skipped, never fatal (the run is still
writing; a torn last line is simply not complete yet).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ._base import MAX_SOURCE_BYTES, Budget, Lines, final_of, keep, number, open_nofollow


@dataclass
class JsonlSteps:
    """Follows one ``metrics.jsonl`` (``root/rel``) incrementally: :meth:`poll` reads
    what is new."""

    root: Path
    rel: str = "metrics.jsonl"
    latest: dict[str, float] = field(default_factory=dict)
    step: float | None = None
    lines: int = 0
    bad_lines: int = 0
    _offset: int = 0
    _lines: Lines = field(default_factory=Lines)
    _more: bool = False
    #: True once MAX_SOURCE_BYTES were read: the rest of the file is not.
    cut: bool = False

    def poll(self) -> bool:
        """Read complete new lines (within one poll's budget); True when anything changed."""
        self._more = False
        if self._offset >= MAX_SOURCE_BYTES:
            self.cut = True
            return False
        fd = open_nofollow(self.root, self.rel)
        if fd is None:
            return False
        changed = False
        budget = Budget()
        with os.fdopen(fd, "rb") as handle:
            handle.seek(self._offset)
            while size := budget.next_read(self._offset):
                data = handle.read(size)
                if not data:
                    return changed
                budget.spent(len(data))
                changed |= self._feed(data)
        self._more = budget.more
        self.cut = self._offset >= MAX_SOURCE_BYTES
        return changed

    def _feed(self, data: bytes) -> bool:
        self._offset += len(data)
        changed = False
        for line in self._lines.feed(data):
            if line is None:
                self.bad_lines += 1
            else:
                changed |= self._take(line)
        return changed

    def _take(self, line: bytes) -> bool:
        if not line.strip():
            return False
        self.lines += 1
        try:
            values = json.loads(line)
        except ValueError:
            values = None
        if not isinstance(values, dict):
            self.bad_lines += 1
            return False
        step = number(values.get("step"))
        self.step = float(step) if step is not None else float(self.lines)
        for key, value in values.items():
            checked = number(value)
            if key == "step" or checked is None:
                continue
            keep(self.latest, str(key), checked)
        return True

    def final(self) -> dict[str, float]:
        """The last value of each key: a run's metrics when it wrote no metrics.json."""
        self.poll()
        while self._more:
            self.poll()
        if last := self._lines.rest():  # a last line without its newline
            self._take(last)
        return final_of(self.latest)
