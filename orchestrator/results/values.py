"""Values of run records as the results show them: flattened configs, numbers,
durations, labels on one line. Shared by the tables, ``--where``, the diff and the report.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, TypeGuard


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts to dotted keys; lists (and empty dicts) stay values."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, dotted))
        else:
            flat[dotted] = value
    return flat


def flatten_config(record: Mapping[str, Any]) -> dict[str, Any]:
    """A record's config, flattened."""
    return flatten(record.get("config") or {})


def identity(value: Any) -> str:
    # Canonical JSON tells 1 from 1.0 and True from 1, like the config hash does.
    return json.dumps(value, sort_keys=True, default=str)


def is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def display_value(value: Any) -> str:
    """A config value as a user would type it in an override."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format_number(value)
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    return str(value)


def format_number(value: Any) -> str:
    """Short but unambiguous enough to tell runs apart (6 significant digits)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return display_value(value)
    if isinstance(value, int):
        return str(value)
    if math.isnan(value) or math.isinf(value):
        return str(value)
    text = f"{value:.6g}"
    # Keep floats recognisable as floats: 1.0 is not the int 1 in a config.
    return text if any(c in text for c in ".en") else text + ".0"


def format_duration(seconds: Any) -> str:
    if not is_number(seconds) or not math.isfinite(seconds):
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def metric_names(records: Iterable[Mapping[str, Any]]) -> list[str]:
    names: set[str] = set()
    for record in records:
        names.update((record.get("metrics") or {}).keys())
    return sorted(names)


class Flats:
    """Each record's flattened config, computed once per view (100,000 runs are read
    by several passes: --where, the columns, the cells)."""

    def __init__(self) -> None:
        self._cache: dict[int, tuple[Mapping[str, Any], dict[str, Any]]] = {}

    def __call__(self, record: Mapping[str, Any]) -> dict[str, Any]:
        hit = self._cache.get(id(record))
        if hit is not None and hit[0] is record:
            return hit[1]
        flat = flatten(record.get("config") or {})
        self._cache[id(record)] = (record, flat)
        return flat


def status_text(record: Mapping[str, Any]) -> str:
    status = str(record.get("status") or "unknown")
    reason = record.get("reason")
    return f"{status}: {reason}" if status != "succeeded" and reason else status


def sweep_label(record: Mapping[str, Any]) -> str:
    return str(record.get("sweep_name") or record.get("sweep_id") or "")


def repr_number(value: Any) -> str:
    return repr(value) if is_number(value) else display_value(value)


def printable(text: str) -> str:
    """A label on one line: control characters (a newline in a metric's name) escaped."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


#: The widest a free-text cell of a listing is printed (an override may be 100 KB).
MAX_CELL = 160


def clipped(text: str, limit: int = MAX_CELL) -> str:
    """``printable(text)`` on one line, cut to ``limit`` characters and saying so."""
    shown = printable(text)
    if len(shown) <= limit:
        return shown
    return f"{shown[:limit]}... ({len(shown) - limit} more characters)"


def short_time(stamp: Any) -> str:
    text = str(stamp or "")
    match = re.match(r"^(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d)", text)
    return f"{match.group(1)} {match.group(2)}" if match else text
