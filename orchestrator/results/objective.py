"""``--objective METRIC[:min|max]``: what "best run" means, said rather than guessed.

It becomes the sort key the tables use (``loss`` ascending, ``-accuracy`` descending).
Without ``:min``/``:max`` the direction follows the metric's name (``acc``, ``f1``,
``reward`` ... are maximised, everything else minimised), and the report says which.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import UsageError
from .table import _HIGHER_IS_BETTER, _LOWER_IS_BETTER
from .values import metric_names


def parse_objective(text: str, records: Sequence[Mapping[str, Any]] = ()) -> str:
    """``METRIC[:min|max]`` as a sort key; the metric must exist in some run (if any has
    metrics at all)."""
    name, _, direction = text.strip().partition(":")
    name, direction = name.strip(), direction.strip().lower()
    if name.startswith("metrics."):
        name = name[len("metrics.") :]
    if not name or direction not in ("", "min", "max"):
        raise UsageError(f"bad --objective {text!r}: expected METRIC, METRIC:min or METRIC:max")
    known = metric_names(records)
    if known and name not in known:
        raise UsageError(f"unknown metric {name!r} for --objective (known: {', '.join(known)})")
    if not direction:
        higher = _HIGHER_IS_BETTER.search(name) and not _LOWER_IS_BETTER.search(name)
        direction = "max" if higher else "min"
    return f"-{name}" if direction == "max" else name
