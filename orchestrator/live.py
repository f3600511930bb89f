"""Step metrics: ``$ORCH_OUTPUT/metrics.jsonl``, read while the run writes it.

One JSON object of numbers per line, with an optional ``step`` (else the line number)
and optional ``epoch``/``time``. The reader keeps only the latest value of each key and a
count of lines, never the whole file, so memory does not grow with a long run; a line
that is not such an object is counted and skipped, never fatal (the run is still
writing; a torn last line is simply not complete yet).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

#: A line longer than this is not a metrics line; it is skipped, not buffered.
MAX_LINE = 1 << 20
#: More distinct keys than this across a run's step metrics are not followed.
MAX_KEYS = 10_000


def number(value: object) -> float | int | None:
    """A finite JSON number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        as_float = float(value)
    except OverflowError:
        return None
    return value if math.isfinite(as_float) else None


@dataclass
class StepMetrics:
    """Follows one ``metrics.jsonl`` incrementally: :meth:`poll` reads what is new."""

    path: Path
    latest: dict[str, float] = field(default_factory=dict)
    step: float | None = None
    lines: int = 0
    bad_lines: int = 0
    _offset: int = 0
    _partial: bytes = b""
    _skipping: bool = False

    def poll(self) -> bool:
        """Read complete new lines; True when anything changed."""
        changed = False
        while True:
            read, took = self._read_once()
            changed |= took
            if not read:
                return changed

    def _read_once(self) -> tuple[bool, bool]:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                data = handle.read(16 * MAX_LINE)
        except FileNotFoundError:
            return False, False
        if not data:
            return False, False
        self._offset += len(data)
        changed = False
        chunks = data.split(b"\n")
        for i, chunk in enumerate(chunks):
            last = i == len(chunks) - 1
            if last:  # no newline yet: keep for the next poll (bounded)
                self._partial += chunk
                if len(self._partial) > MAX_LINE:
                    self._partial, self._skipping = b"", True
                break
            line, self._partial = self._partial + chunk, b""
            if self._skipping:
                self._skipping = False
                self.bad_lines += 1
                continue
            changed |= self._take(line)
        return True, changed

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
            if key not in self.latest and len(self.latest) >= MAX_KEYS:
                continue
            self.latest[str(key)] = checked
        return True

    def final(self) -> dict[str, float]:
        """The last value of each key: a run's metrics when it wrote no metrics.json."""
        self.poll()
        if self._partial and not self._skipping:  # a last line without its newline
            self._take(self._partial)
            self._partial = b""
        return {k: v for k, v in sorted(self.latest.items()) if k not in ("epoch", "time")}
