"""The ``--where`` language: ``KEY=VALUE``, ``KEY!=VALUE``, ``KEY<NUMBER`` (also ``>``,
``<=``, ``>=``) over config keys, metrics, overrides and the labels ``tag``, ``name``,
``sweep`` and ``status``.

One meaning, two evaluators: :meth:`Condition.matches` over a record in Python, and
:meth:`Condition.sql` over a row of a run table in SQL (what ``orch results`` uses over
100,000 runs, so that filtering, sorting and ``--limit`` need no record in Python). The
SQL form answers true, false, or NULL where it cannot be sure to agree with Python (a
string Python's ``float`` may read differently, a list compared as text, an integer past
64 bits): the caller then decides in Python.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError
from .values import Flats, display_value, is_number, metric_names

#: Keys ``--where`` knows besides config keys, metrics and overrides.
LABEL_KEYS = ("tag", "name", "sweep", "status")

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
class Columns:
    """The SQL expressions of one run's fields that conditions read: ``config`` and
    ``metrics`` JSON, ``overrides`` a list of text, ``tags`` a list, the rest text."""

    config: str
    metrics: str
    overrides: str
    tags: str
    sweep_name: str
    sweep_id: str
    status: str


@dataclass(frozen=True)
class Condition:
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

    # -- SQL ----------------------------------------------------------------------------

    def sql(self, c: Columns) -> str:
        """:meth:`matches` as a SQL expression over one row: true, false, or NULL where
        the SQL answer might differ from Python's (then decide in Python)."""
        if self.key in LABEL_KEYS:
            found = self._label_sql(c)
            return found if self.op in ("=", "==") else f"NOT {found}"
        key, negate = self.key, self.op == "!="
        cfg = _config_value(c, key)
        branches: list[tuple[str, str]] = []
        if key.startswith("metrics."):
            prefixed = metric_sql(c, key[len("metrics.") :])
            branches.append((f"{prefixed} IS NOT NULL", self._double(prefixed)))
        branches.append((_config_present(cfg), self._json(cfg)))
        bare = metric_sql(c, key)
        branches.append((f"{bare} IS NOT NULL", self._double(bare)))
        override = _override_value(c, key)
        branches.append((f"{override} IS NOT NULL", self._text(override)))
        cases = " ".join(
            f"WHEN {when} THEN {f'NOT ({then})' if negate else then}" for when, then in branches
        )
        return f"(CASE {cases} ELSE {'TRUE' if negate else 'FALSE'} END)"

    def known_sql(self, c: Columns) -> str | None:
        """True for a row that makes this condition's key known (what :func:`parse`
        checks over every record); None when nothing is checked."""
        if self.key in ("tag", "name"):
            return self._label_sql(c)
        if self.key in LABEL_KEYS:
            return None
        bare = self.key.removeprefix("metrics.")
        return (f"({metric_sql(c, bare)} IS NOT NULL OR "
                f"{_config_present(_config_value(c, self.key))} OR "
                f"{_override_value(c, self.key)} IS NOT NULL)")

    def _label_sql(self, c: Columns) -> str:
        value = _literal(self.value)
        if self.key == "tag":
            return f"list_contains(coalesce({c.tags}, []), {value})"
        if self.key == "name":
            return f"coalesce({c.sweep_name} = {value}, FALSE)"
        if self.key == "sweep":
            return (f"(starts_with(coalesce({c.sweep_id}, ''), {value}) OR "
                    f"coalesce({c.sweep_name} = {value}, FALSE))")
        return f"coalesce({c.status} = {value}, FALSE)"

    def _equality(self) -> bool:
        return self.op in ("=", "==", "!=")

    def _double(self, x: str) -> str:
        """A DOUBLE (a metric, a JSON float): undecided unless finite."""
        number = _parse_number(self.value)
        if self._equality():
            # A finite float shows as text float() reads: only a number can equal it.
            test = f"{x} = {_double(number)}" if number is not None else "FALSE"
        else:
            test = f"{x} {self.op} {_double(number)}"
        return f"(CASE WHEN isfinite({x}) THEN {test} END)"

    def _integer(self, x: str) -> str:
        """A HUGEINT (a JSON integer), compared exactly, as Python compares int and float."""
        number = _parse_number(self.value)
        if self._equality():
            if number is None or not number.is_integer():
                return "FALSE"
            return f"({x} = {_huge(int(number))})"
        assert number is not None  # checked by parse()
        bound = math.ceil(number) if self.op in ("<", ">=") else math.floor(number)
        return f"({x} {self.op} {_huge(bound)})"

    def _text(self, x: str) -> str:
        """A string (a config string, an override's value)."""
        if self._equality():
            return f"({x} = {_literal(self.value)})"
        number = _parse_number(self.value)
        parsed = f"TRY_CAST({x} AS DOUBLE)"
        # A plain decimal reads alike in both; ASCII without a digit is no number to
        # float(); anything else (spaces, underscores, other scripts' digits) is undecided.
        return (
            f"(CASE WHEN regexp_full_match({x}, {_literal(_PLAIN)}) THEN "
            f"(CASE WHEN isfinite({parsed}) THEN {parsed} {self.op} {_double(number)} "
            f"WHEN {parsed} IS NOT NULL THEN FALSE END) "
            f"WHEN regexp_full_match({x}, '[\\x01-\\x7f]*') AND NOT "
            f"regexp_matches({x}, '[0-9]') THEN FALSE END)"
        )

    def _json(self, v: str) -> str:
        """A JSON config value, by its type."""
        equality = self._equality()
        lowered = self.value.lower()
        boolean = f"(CAST({v} AS VARCHAR) = {_literal(lowered)})" if equality else "FALSE"
        null = ("TRUE" if lowered == "null" else "FALSE") if equality else "FALSE"
        # A list or an object equals only text that starts like one: decided in Python.
        shaped = "NULL" if equality and self.value.replace(" ", "")[:1] in ("[", "{") else "FALSE"
        text = self._text(f"json_extract_string({v}, '$')")
        integer = self._integer(f"TRY_CAST({v} AS HUGEINT)")
        double = self._double(f"TRY_CAST({v} AS DOUBLE)")
        return (
            f"(CASE json_type({v}) "
            f"WHEN 'VARCHAR' THEN {text} "
            f"WHEN 'BIGINT' THEN {integer} WHEN 'UBIGINT' THEN {integer} "
            # an integer past 64 bits reads as DOUBLE: Python keeps it exact
            f"WHEN 'DOUBLE' THEN (CASE WHEN NOT regexp_full_match(CAST({v} AS VARCHAR), "
            f"'-?[0-9]+') THEN {double} END) "
            f"WHEN 'BOOLEAN' THEN {boolean} WHEN 'NULL' THEN {null} "
            f"WHEN 'ARRAY' THEN {shaped} WHEN 'OBJECT' THEN {shaped} END)"
        )


_PLAIN = r"[+-]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][+-]?[0-9]+)?"
#: Integers compared in SQL are clamped to this (JSON integers are 64-bit at most).
_HUGE = 1 << 100


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _double(number: float | None) -> str:
    # The repr reads back as the same double in DuckDB (a bare 0.1 would be a DECIMAL).
    return f"CAST({_literal(repr(number))} AS DOUBLE)"


def _huge(number: int) -> str:
    return f"CAST({_literal(str(max(-_HUGE, min(_HUGE, number))))} AS HUGEINT)"


def json_path(key: str, *, dotted: bool = True) -> str:
    """``optimizer.lr`` as a JSON path that takes any key literally (``dotted``
    False: one key, dots and all)."""
    return "$" + "".join(
        '."' + part.replace("\\", "\\\\").replace('"', '\\"') + '"'
        for part in (key.split(".") if dotted else [key])
    )


def _config_value(c: Columns, key: str) -> str:
    return f"json_extract({c.config}, {_literal(json_path(key))})"


def _config_present(value: str) -> str:
    # A non-empty object is no leaf: flattening gives its keys instead.
    return (f"({value} IS NOT NULL AND NOT (json_type({value}) = 'OBJECT' AND "
            f"CAST({value} AS VARCHAR) <> '{{}}'))")


def metric_sql(c: Columns, name: str) -> str:
    """A run's metric ``name`` as a DOUBLE (NULL when it has none)."""
    path = _literal(json_path(name, dotted=False))
    return f"TRY_CAST(json_extract({c.metrics}, {path}) AS DOUBLE)"



def _override_value(c: Columns, key: str) -> str:
    """The value of a run's last override of ``key`` (``+key=``, ``~key=`` alike)."""
    last = (f"[o FOR o IN coalesce({c.overrides}, []) IF contains(o, '=') AND "
            f"ltrim(split_part(o, '=', 1), '+~') = {_literal(key)}][-1]")
    return f"substr({last}, strpos({last}, '=') + 1)"


def _label_values(records: Sequence[Mapping[str, Any]], key: str) -> set[str]:
    if key == "tag":
        return {str(t) for r in records for t in r.get("tags") or ()}
    if key == "name":
        return {str(r["sweep_name"]) for r in records if r.get("sweep_name")}
    if key == "status":
        return {str(r.get("status")) for r in records}
    return set()


def parse(
    expression: str,
    records: Sequence[Mapping[str, Any]] = (),
    flat_of: Callable[..., dict[str, Any]] | None = None,
) -> Condition:
    """One ``--where`` expression; its key (and a label's value) checked against
    ``records`` when there are any."""
    flat_of = flat_of or Flats()
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
            from ..store.labels import close_matches

            raise UsageError(f"bad --where expression {expression!r}: "
                             f"{close_matches(value, known, key)}")
        return Condition(key, op, value)
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
    return Condition(key, op, value)


def where_keys(where: Sequence[str]) -> list[str]:
    """The record keys ``--where`` expressions name, labels aside: what a loader that
    reads only some of each record's config must provide."""
    keys: list[str] = []
    for expression in where:
        match = _WHERE.match(expression)
        if match and match.group(1) not in LABEL_KEYS and match.group(1) not in keys:
            keys.append(match.group(1))
    return keys


def select(
    records: Sequence[Mapping[str, Any]],
    where: Sequence[str],
    flat_of: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Records matching every ``--where`` expression (config keys, metrics, overrides,
    and ``tag=``, ``name=``, ``sweep=``, ``status=``)."""
    flat_of = flat_of or Flats()
    conditions = [parse(expression, records, flat_of) for expression in where]
    return [
        record if isinstance(record, dict) else dict(record)
        for record in records
        if all(condition.matches(record, flat_of) for condition in conditions)
    ]
