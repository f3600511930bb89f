"""Results of a sweep as a view: select (``--where``, ``--status``), sort, cut, and the
columns worth showing.

Everything here is a pure function over run records (the plain dicts of
``docs/records.md``); nothing reads a store. The ``--where`` language is
:mod:`.where`, the values' formatting :mod:`.values`, the renderers :mod:`.render`;
:mod:`.sqlview` decides the same view in SQL over a run table.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError
from .values import Flats, flatten_config, identity, is_number, sweep_label
from .values import display_value as display_value
from .values import flatten as flatten
from .values import format_duration as format_duration
from .values import format_number as format_number
from .values import metric_names as metric_names
from .values import printable as printable
from .where import select as select
from .where import where_keys as where_keys

#: Turns the records a view shows into whole records (see :func:`build_view`).
Expand = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]


def varying_keys(
    records: Sequence[Mapping[str, Any]], flat_of: Callable[[Mapping[str, Any]], dict[str, Any]]
    | None = None,
) -> list[str]:
    """Dotted config keys whose value differs across ``records`` (absent counts as a value).

    Runs not started yet (no config known) take no part.
    """
    flat_of = flat_of or Flats()
    flats = [flat_of(record) for record in records if record.get("config")]
    keys = sorted({key for flat in flats for key in flat})
    varying = []
    for key in keys:
        # "\0" is never the start of JSON text, so absent differs from every value.
        seen = {identity(flat[key]) if key in flat else "\0absent" for flat in flats}
        if len(seen) > 1:
            varying.append(key)
    return varying


# --------------------------------------------------------------------------- --sort


@dataclass(frozen=True)
class SortKey:
    metric: str
    descending: bool

    def value(self, record: Mapping[str, Any]) -> float | None:
        value = (record.get("metrics") or {}).get(self.metric)
        if not is_number(value) or math.isnan(value):
            return None
        return float(value)


def parse_sort(records: Sequence[Mapping[str, Any]], sort: str) -> SortKey:
    """``loss`` (ascending), ``-accuracy`` (descending); the metric must exist in some run."""
    descending = sort.startswith("-")
    name = sort.lstrip("+-").strip()
    if name.startswith("metrics."):
        name = name[len("metrics.") :]
    known = metric_names(records)
    if not name:
        raise UsageError(f"bad --sort {sort!r}: expected METRIC or -METRIC")
    # Without any metric (an empty or all-failed sweep) there is nothing to check against.
    if known and name not in known:
        raise UsageError(f"unknown metric {name!r} for --sort (known: {', '.join(known)})")
    return SortKey(name, descending)


def _sorted(records: Sequence[Mapping[str, Any]], key: SortKey) -> list[Mapping[str, Any]]:
    """The same record objects, reordered (callers that hand them out copy them)."""
    valued = [(key.value(r), r) for r in records]  # once per record: 100,000 runs
    present = [(value, r) for value, r in valued if value is not None]
    present.sort(key=lambda pair: pair[0], reverse=key.descending)
    return [r for _, r in present] + [r for value, r in valued if value is None]


def sort_records(records: Sequence[Mapping[str, Any]], sort: str | None) -> list[dict[str, Any]]:
    """Records ordered by a metric; runs without it keep their order, last."""
    if not sort:
        return [dict(record) for record in records]
    return [dict(record) for record in _sorted(records, parse_sort(records, sort))]


def _best(records: Sequence[Mapping[str, Any]], key: SortKey) -> str | None:
    candidates = [r for r in records if r.get("status") == "succeeded" and key.value(r) is not None]
    if not candidates:
        return None
    return str(_sorted(candidates, key)[0].get("run_id"))


def best_run(records: Sequence[Mapping[str, Any]], sort: str | None) -> str | None:
    """run_id of the best succeeded run by the ``sort`` metric (first one on ties)."""
    if not sort:
        return None
    return _best(records, parse_sort(records, sort))


_LOWER_IS_BETTER = re.compile(
    r"loss|err|mse|mae|rmse|nll|perplexity|ppl|latency|time|cost|regret|wer|cer", re.I
)
_HIGHER_IS_BETTER = re.compile(
    r"acc|f1|auc|precision|recall|score|reward|return|r2|bleu|rouge|map|iou|dice", re.I
)


def default_sort(records: Sequence[Mapping[str, Any]]) -> str | None:
    """A guess at the objective from metric names (``loss`` -> ascending), or None."""
    names = metric_names(records)

    def rank(name: str) -> tuple[int, int, str]:
        held_out = 0 if re.search(r"val|test|eval", name, re.I) else 1
        lossy = 0 if "loss" in name.lower() else 1
        return (held_out, lossy, name)

    for name in sorted(names, key=rank):
        if _LOWER_IS_BETTER.search(name):
            return name
        if _HIGHER_IS_BETTER.search(name):
            return "-" + name
    return None


# --------------------------------------------------------------------------- view


@dataclass(frozen=True)
class View:
    """What every renderer shows: the selected runs in order, and the columns.

    ``sweeps``: the records span several sweeps, so a ``sweep`` column (its name, else
    its id) says which each run belongs to.
    """

    records: list[dict[str, Any]]
    keys: list[str]
    metrics: list[str]
    best: str | None
    sweeps: bool = False
    flat_of: Callable[[Mapping[str, Any]], dict[str, Any]] = flatten_config

    def config_cell(self, record: Mapping[str, Any], key: str) -> str | None:
        flat = self.flat_of(record)
        return display_value(flat[key]) if key in flat else None

    def metric_cell(self, record: Mapping[str, Any], name: str) -> str | None:
        metrics = record.get("metrics") or {}
        return format_number(metrics[name]) if name in metrics else None


def build_view(
    records: Sequence[Mapping[str, Any]],
    sort: str | None = None,
    where: Sequence[str] = (),
    *,
    status: Sequence[str] = (),
    limit: int | None = None,
    expand: Expand | None = None,
) -> View:
    """``records`` filtered (``where``, then ``status``), sorted, cut to ``limit``.

    ``expand``: ``records`` carry only what filtering and sorting read (ids, status,
    labels, metrics, overrides, the config keys ``where`` names); it gives the shown
    ones their whole config before the columns are chosen. 100,000 runs are then
    never all parsed for the 20 a ``--limit`` shows."""
    # Validate --sort against every run, so a narrow --where cannot turn a typo into success.
    key = parse_sort(records, sort) if sort else None
    flat_of = Flats()
    selected = select(records, where, flat_of)
    if status:
        selected = [r for r in selected if r.get("status") in status]
    ordered: list[Mapping[str, Any]] = list(_sorted(selected, key) if key else selected)
    # Already in order: the best is the first succeeded run with the metric (_best's
    # answer, without sorting again).
    best = next(
        (str(r.get("run_id")) for r in ordered
         if r.get("status") == "succeeded" and key.value(r) is not None),
        None,
    ) if key else None
    if limit is not None:
        ordered = ordered[: max(limit, 0)]
    shown = [r if isinstance(r, dict) else dict(r) for r in ordered]
    if expand is not None:
        shown = expand(shown)
        flat_of = Flats()  # the cache was of the records before
    return shown_view(shown, best, flat_of)


def shown_view(
    shown: list[dict[str, Any]], best: str | None, flat_of: Flats | None = None
) -> View:
    """The view of runs already selected, ordered and cut (whole records), ``best``
    the best run's id among every selected one."""
    flat_of = flat_of or Flats()
    return View(
        records=shown,
        keys=varying_keys(shown, flat_of),
        metrics=metric_names(shown),
        best=best,
        sweeps=len({sweep_label(r) for r in shown}) > 1,
        flat_of=flat_of,
    )
