"""Results of a sweep as tables: filter, sort and render run records.

Everything here is a pure function over run records (the plain dicts of
``docs/records.md``); nothing reads a store. The renderers return text without a
final newline, ready for ``click.echo``; CSV is the exception: every record, the
last one included, ends with ``"\n"``.

Why one module of this size: selection (``--where``), sorting, the varying-column rule and
the five renderers all work on the same flattened view of a record, cached per view.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

from ..errors import UsageError

FORMATS = ("table", "json", "csv", "markdown")
BEST_MARK = "★"

# The run object of `orch sweep --json`, plus the composed config.
_RUN_OBJECT_KEYS = ("run_id", "status", "overrides", "image_id", "metrics", "config")
# Added when a record carries them (records read across sweeps, through the catalog).
_SWEEP_KEYS = ("sweep_id", "sweep_name", "tags")
# Added when a record carries them (a search's trials: ``search.view``).
_TRIAL_KEYS = ("trial", "best_so_far")
#: Keys ``--where`` knows besides config keys, metrics and overrides.
LABEL_KEYS = ("tag", "name", "sweep", "status")


# --------------------------------------------------------------------------- values


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


def _identity(value: Any) -> str:
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


class _Flats:
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


def varying_keys(
    records: Sequence[Mapping[str, Any]], flat_of: Callable[[Mapping[str, Any]], dict[str, Any]]
    | None = None,
) -> list[str]:
    """Dotted config keys whose value differs across ``records`` (absent counts as a value).

    Runs not started yet (no config known) take no part.
    """
    flat_of = flat_of or _Flats()
    flats = [flat_of(record) for record in records if record.get("config")]
    keys = sorted({key for flat in flats for key in flat})
    varying = []
    for key in keys:
        # "\0" is never the start of JSON text, so absent differs from every value.
        seen = {_identity(flat[key]) if key in flat else "\0absent" for flat in flats}
        if len(seen) > 1:
            varying.append(key)
    return varying


# --------------------------------------------------------------------------- --where

_WHERE = re.compile(r"^\s*([^\s=!<>]+)\s*(==|!=|<=|>=|=|<|>)\s*(.*?)\s*$")
_NUMERIC_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": lambda a, b: a < b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    ">=": lambda a, b: a >= b,
}
_ABSENT = object()


def _parse_number(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _override_values(record: Mapping[str, Any]) -> dict[str, str]:
    # Group choices such as `optimizer=adam` exist only as overrides, not as config leaves.
    values = {}
    for override in record.get("overrides") or []:
        key, sep, value = str(override).partition("=")
        if sep:
            values[key.lstrip("+~")] = value
    return values


def _lookup(record: Mapping[str, Any], key: str, flat_of: Callable[..., dict[str, Any]]) -> Any:
    metrics = record.get("metrics") or {}
    if key.startswith("metrics.") and key[len("metrics.") :] in metrics:
        return metrics[key[len("metrics.") :]]
    flat = flat_of(record)
    if key in flat:
        return flat[key]
    if key in metrics:
        return metrics[key]
    return _override_values(record).get(key, _ABSENT)


def _known_keys(
    records: Sequence[Mapping[str, Any]], flat_of: Callable[..., dict[str, Any]]
) -> tuple[set[str], set[str], set[str]]:
    config: set[str] = set()
    overrides: set[str] = set()
    for record in records:
        config.update(flat_of(record))
        overrides.update(_override_values(record))
    metrics = set(metric_names(records))
    return config, metrics, overrides


def _has_key(
    record: Mapping[str, Any], key: str, bare: str, flat_of: Callable[..., dict[str, Any]]
) -> bool:
    """``key`` is one of ``record``'s config keys, metrics (``bare``) or overrides."""
    return (
        bare in (record.get("metrics") or {})
        or key in flat_of(record)
        or key in _override_values(record)
    )


def _equals(actual: Any, wanted: str) -> bool:
    number = _parse_number(wanted)
    if is_number(actual) and number is not None:
        return bool(actual == number)
    if isinstance(actual, bool) or actual is None:
        return display_value(actual) == wanted.lower()
    if isinstance(actual, (list, tuple, dict)):
        return display_value(actual).replace(" ", "") == wanted.replace(" ", "")
    return display_value(actual) == wanted


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


@dataclass(frozen=True)
class _Condition:
    key: str
    op: str
    value: str

    def matches(self, record: Mapping[str, Any], flat_of: Callable[..., dict[str, Any]]) -> bool:
        if self.key in LABEL_KEYS:
            return self._label_matches(record)
        actual = _lookup(record, self.key, flat_of)
        if actual is _ABSENT:
            return self.op == "!="
        if self.op in ("=", "=="):
            return _equals(actual, self.value)
        if self.op == "!=":
            return not _equals(actual, self.value)
        number = _parse_number(self.value)
        if isinstance(actual, str):
            actual = _parse_number(actual)  # override values are text
        if number is None or not is_number(actual):
            return False
        return _NUMERIC_OPS[self.op](actual, number)

    def _label_matches(self, record: Mapping[str, Any]) -> bool:
        if self.key == "tag":
            found = self.value in (record.get("tags") or ())
        elif self.key == "name":
            found = record.get("sweep_name") == self.value
        elif self.key == "sweep":
            found = str(record.get("sweep_id") or "").startswith(self.value) or (
                record.get("sweep_name") == self.value
            )
        else:
            found = record.get("status") == self.value
        return found if self.op in ("=", "==") else not found


def _label_values(records: Sequence[Mapping[str, Any]], key: str) -> set[str]:
    if key == "tag":
        return {str(t) for r in records for t in r.get("tags") or ()}
    if key == "name":
        return {str(r["sweep_name"]) for r in records if r.get("sweep_name")}
    if key == "status":
        return {str(r.get("status")) for r in records}
    return set()


def _parse_where(
    expression: str,
    records: Sequence[Mapping[str, Any]],
    flat_of: Callable[..., dict[str, Any]],
) -> _Condition:
    match = _WHERE.match(expression)
    if not match:
        raise UsageError(
            f"bad --where expression {expression!r}: expected KEY=VALUE, KEY!=VALUE "
            "or KEY<NUMBER (also >, <=, >=)"
        )
    key, op, value = match.group(1), match.group(2), _unquote(match.group(3))
    if op in _NUMERIC_OPS and _parse_number(value) is None:
        raise UsageError(f"bad --where expression {expression!r}: {op!r} needs a number")
    if key in LABEL_KEYS:
        if op not in ("=", "==", "!="):
            raise UsageError(f"bad --where expression {expression!r}: {key} takes = or !=")
        known = _label_values(records, key)
        if records and key in ("tag", "name") and value not in known:
            from ..labels import close_matches

            raise UsageError(f"bad --where expression {expression!r}: "
                             f"{close_matches(value, known, key)}")
        return _Condition(key, op, value)
    bare = key[len("metrics.") :] if key.startswith("metrics.") else key
    # Most keys are in the first record: every key of every record only for the error.
    if records and not any(_has_key(r, key, bare, flat_of) for r in records):
        config, metrics, overrides = _known_keys(records, flat_of)
        if key not in config and bare not in metrics and key not in overrides:
            raise UsageError(
                f"bad --where expression {expression!r}: unknown key {key!r} "
                f"(config keys: {', '.join(sorted(config)) or 'none'}; "
                f"metrics: {', '.join(sorted(metrics)) or 'none'}; "
                f"labels: {', '.join(LABEL_KEYS)})"
            )
    return _Condition(key, op, value)


def where_keys(where: Sequence[str]) -> list[str]:
    """The record keys ``--where`` expressions name, labels aside: what a loader that
    reads only some of each record's config must provide."""
    keys: list[str] = []
    for expression in where:
        match = _WHERE.match(expression)
        if match and match.group(1) not in LABEL_KEYS and match.group(1) not in keys:
            keys.append(match.group(1))
    return keys


#: Turns the records a view shows into whole records (see :func:`build_view`).
Expand = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]


def select(
    records: Sequence[Mapping[str, Any]],
    where: Sequence[str],
    flat_of: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Records matching every ``--where`` expression (config keys, metrics, overrides,
    and ``tag=``, ``name=``, ``sweep=``, ``status=``)."""
    flat_of = flat_of or _Flats()
    conditions = [_parse_where(expression, records, flat_of) for expression in where]
    return [
        record if isinstance(record, dict) else dict(record)
        for record in records
        if all(condition.matches(record, flat_of) for condition in conditions)
    ]


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


def status_text(record: Mapping[str, Any]) -> str:
    status = str(record.get("status") or "unknown")
    reason = record.get("reason")
    return f"{status}: {reason}" if status != "succeeded" and reason else status


def sweep_label(record: Mapping[str, Any]) -> str:
    return str(record.get("sweep_name") or record.get("sweep_id") or "")


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
    flat_of = _Flats()
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
        flat_of = _Flats()  # the cache was of the records before
    return View(
        records=shown,
        keys=varying_keys(shown, flat_of),
        metrics=metric_names(shown),
        best=best,
        sweeps=len({sweep_label(r) for r in shown}) > 1,
        flat_of=flat_of,
    )


# --------------------------------------------------------------------------- renderers


def _run_object(record: Mapping[str, Any], sweeps: bool = False) -> dict[str, Any]:
    """The contract's run object; across sweeps also which sweep each run is of."""
    defaults: dict[str, Any] = {"overrides": [], "metrics": {}, "config": {}}
    run = {key: record.get(key, defaults.get(key)) for key in _RUN_OBJECT_KEYS}
    if sweeps:
        run.update({key: record.get(key) for key in _SWEEP_KEYS})
    run.update({key: record[key] for key in _TRIAL_KEYS if key in record})
    return run


def _render_json(view: View) -> str:
    runs = [_run_object(record, view.sweeps) for record in view.records]
    return json.dumps(runs, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def _render_csv(view: View) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    sweep = ["sweep"] if view.sweeps else []
    writer.writerow(["run_id", *sweep, "status", *view.keys, *_metric_labels(view)])
    for record in view.records:
        metrics = record.get("metrics") or {}
        writer.writerow(
            [
                record.get("run_id", ""),
                *([sweep_label(record)] if view.sweeps else []),
                record.get("status", ""),
                *(view.config_cell(record, key) or "" for key in view.keys),
                # Full precision: CSV is for machines.
                *(repr_number(metrics[name]) if name in metrics else "" for name in view.metrics),
            ]
        )
    return buffer.getvalue()  # every record ends with "\n", as CSV files do


def repr_number(value: Any) -> str:
    return repr(value) if is_number(value) else display_value(value)


def _metric_labels(view: View) -> list[str]:
    """Metric column names; ``metrics.NAME`` where a config key has the same name, so no
    two columns read alike."""
    keys = set(view.keys)
    return [f"metrics.{name}" if name in keys else name for name in view.metrics]


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


def _human_header(view: View) -> list[str]:
    marker = [""] if view.best else []
    sweep = ["sweep"] if view.sweeps else []
    names = [printable(name) for name in [*view.keys, *_metric_labels(view)]]
    return [*marker, "run_id", *sweep, "status", *names, "duration"]


def _human_row(view: View, record: Mapping[str, Any]) -> list[str]:
    marker = [BEST_MARK if record.get("run_id") == view.best else ""] if view.best else []
    return [
        *marker,
        str(record.get("run_id", "")),
        *([sweep_label(record)] if view.sweeps else []),
        status_text(record),
        *(view.config_cell(record, key) or "-" for key in view.keys),
        *(view.metric_cell(record, name) or "-" for name in view.metrics),
        format_duration(record.get("duration_s")) or "-",
    ]


def _render_markdown(view: View) -> str:
    def line(cells: Sequence[str]) -> str:
        # Markdown renderers pass inline HTML through: a value is text, never markup.
        escaped = [
            html.escape(cell.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " "),
                        quote=False)
            for cell in cells
        ]
        return "| " + " | ".join(escaped) + " |"

    header = _human_header(view)
    numeric = len(header) - len(view.metrics) - 1
    align = ["---:" if index >= numeric else "---" for index in range(len(header))]
    lines = [line(header), "| " + " | ".join(align) + " |"]
    lines += [line(_human_row(view, record)) for record in view.records]
    return "\n".join(lines)


def _render_table(view: View, color: bool, empty_note: str) -> str:
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    if not view.records:
        return empty_note
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    header = _human_header(view)
    first_metric = len(header) - len(view.metrics) - 1
    for index, name in enumerate(header):
        right = index >= first_metric
        table.add_column(name, justify="right" if right else "left", no_wrap=True)
    for record in view.records:
        cells = _human_row(view, record)
        status = str(record.get("status"))
        style = "green" if status == "succeeded" else "red" if status == "failed" else "yellow"
        status_index = (2 if view.best else 1) + (1 if view.sweeps else 0)
        row = [Text(cell) for cell in cells]
        row[status_index].stylize(style)
        is_best = record.get("run_id") == view.best
        table.add_row(*row, style="bold" if is_best else None)

    def console(width: int) -> Console:
        return Console(
            file=io.StringIO(),
            width=width,
            color_system="standard" if color else None,
            force_terminal=color,
            no_color=not color,
            highlight=False,
            emoji=False,
            soft_wrap=False,
        )

    # As wide as the table needs: cells are never wrapped or cut, whatever the terminal.
    width = console(10_000).measure(table).maximum
    out = console(width)
    out.print(table)
    assert isinstance(out.file, io.StringIO)
    return "\n".join(line.rstrip() for line in out.file.getvalue().splitlines()).strip("\n")


def render(
    records: Sequence[Mapping[str, Any]],
    fmt: str = "table",
    sort: str | None = None,
    where: Sequence[str] = (),
    color: bool = False,
    *,
    status: Sequence[str] = (),
    limit: int | None = None,
    expand: Expand | None = None,
) -> str:
    """The results of a sweep as ``table`` (rich), ``json``, ``csv`` or ``markdown``
    (``expand``: see :func:`build_view`)."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r} (valid: {', '.join(FORMATS)})")
    view = build_view(records, sort, where, status=status, limit=limit, expand=expand)
    if fmt == "json":
        return _render_json(view)
    if fmt == "csv":
        return _render_csv(view)
    if fmt == "markdown":
        return _render_markdown(view)
    return _render_table(
        view, color, "no runs match --where" if where else
        "no runs match --status" if status else "no runs"
    )


# --------------------------------------------------------------------------- orch runs


def short_time(stamp: Any) -> str:
    text = str(stamp or "")
    match = re.match(r"^(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d)", text)
    return f"{match.group(1)} {match.group(2)}" if match else text


def runs_table(sweeps: Sequence[Mapping[str, Any]], counts: Mapping[str, Mapping[str, int]]) -> str:
    """One line per sweep, newest first: id, time, project, run counts, sweep arguments
    (and the sweep's name and tags, when any sweep has them)."""
    if not sweeps:
        return "no sweeps"
    ordered = sorted(sweeps, key=lambda s: str(s.get("created_at") or ""), reverse=True)
    labelled = any(s.get("name") or s.get("tags") for s in ordered)
    queued = any(counts.get(str(s.get("sweep_id")), {}).get("queued") for s in ordered)
    label_head = ["NAME", "TAGS"] if labelled else []
    count_names = ["succeeded", "failed", "running", *(["queued"] if queued else [])]
    count_head = ["OK", "FAILED", "RUNNING", *(["QUEUED"] if queued else [])]
    header = ["SWEEP", *label_head, "CREATED", "PROJECT", *count_head, "ARGS"]
    first_count = 4 + len(label_head) - 1
    rows = [header]
    for sweep in ordered:
        sweep_id = str(sweep.get("sweep_id", ""))
        count = counts.get(sweep_id, {})
        labels = [clipped(str(sweep.get("name") or "-"), 40),
                  clipped(",".join(map(str, sweep.get("tags") or [])) or "-", 40)]
        rows.append(
            [
                sweep_id,
                *(labels if labelled else []),
                short_time(sweep.get("created_at")),
                clipped(str(sweep.get("project", "")), 40),
                *(str(count.get(name, 0)) for name in count_names),
                clipped(" ".join(str(arg) for arg in sweep.get("args") or [])),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if first_count <= i < first_count + len(count_names)
            else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=False))
        ]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


# --------------------------------------------------------------------------- orch query


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return format_number(value)
    return display_value(value)


def render_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str = "table") -> str:
    """Any rows (a SQL answer) in the formats of :func:`render`; JSON is a list of objects."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r} (valid: {', '.join(FORMATS)})")
    if fmt == "json":
        objects = [dict(zip(columns, row, strict=True)) for row in rows]
        return json.dumps(objects, indent=2, ensure_ascii=False, default=str)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([repr_number(v) if is_number(v) else _cell(v) for v in row])
        return buffer.getvalue()
    cells = [[_cell(v) for v in row] for row in rows]
    if fmt == "markdown":
        def line(items: Sequence[str]) -> str:
            return "| " + " | ".join(i.replace("|", "\\|").replace("\n", " ") for i in items) + " |"

        return "\n".join([line(columns), line(["---"] * len(columns)), *map(line, cells)])
    if not rows:
        return "(no rows)"
    numeric = [all(is_number(r[i]) or r[i] is None for r in rows) for i in range(len(columns))]
    widths = [max(len(str(c)), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]

    def fmt_line(items: Sequence[str]) -> str:
        return "  ".join(
            item.rjust(w) if num else item.ljust(w)
            for item, w, num in zip(items, widths, numeric, strict=True)
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt_line([str(c) for c in columns]), rule, *map(fmt_line, cells)])
