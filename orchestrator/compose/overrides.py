"""Hydra's override syntax: parsing, and a sweep's values expanded into a grid of points.

The parse is Hydra's own (``OverridesParser``), so ``a=1,2``, ``choice()``, ``range()``,
``glob()``, ``interval()``, ``+``/``++``/``~`` mean what they mean in ``hydra -m``. What
is needed of a config tree is two questions, asked through :class:`ConfigTree` (a
:class:`~orchestrator.compose.config.Composer` answers them): a group's options (``glob()``) and
whether the first compose of a multirun accepts the plain overrides together. Nothing
here reaches into the composer's Hydra session.

:func:`sweep_values` is the one place an axis's values are taken: the grid
(:func:`expand_sweep`) and the search spaces (:mod:`.space`) both read an axis through
it, so they accept and refuse the same overrides with the same message.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any, Protocol, cast

from hydra.core.object_type import ObjectType
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, Override, RangeSweep
from hydra.errors import HydraException, OverrideParseException

from ..errors import ConfigError
from .configio import MAX_NESTING, fold

__all__ = [
    "DEFAULT_MAX_POINTS",
    "ConfigTree",
    "bad_override",
    "check_nesting",
    "expand_sweep",
    "parse_overrides",
    "sweep_values",
]

#: The largest grid a sweep expands to unless the caller says otherwise (ORCH_MAX_POINTS).
DEFAULT_MAX_POINTS = 100_000

_CARET_LINE = re.compile(r"^(\s*)\^\s*$")
_DOC_LINK = re.compile(r"^See https://hydra\.cc/\S+ for details$")


class ConfigTree(Protocol):
    """What sweep expansion asks of a config tree (a Composer)."""

    def group_options(self, group: str) -> list[str]:
        """The options of a config group; ConfigError when there is no such group."""
        ...

    def check_first_compose(self, overrides: Sequence[str]) -> None:
        """ConfigError when Hydra's first compose of a multirun refuses these overrides."""
        ...


def check_nesting(lines: Iterable[str]) -> None:
    """An override whose value nests brackets deeper than MAX_NESTING is refused before
    Hydra's (recursive) parser sees it."""
    for line in lines:
        depth = deepest = 0
        for char in line:
            if char in "[{(":
                depth += 1
                deepest = max(deepest, depth)
            elif char in "]})":
                depth = max(0, depth - 1)
        if deepest > MAX_NESTING:
            shown = line if len(line) <= 60 else line[:40] + "..." + line[-12:]
            raise ConfigError(f"{shown}: nested deeper than {MAX_NESTING} levels")


def bad_override(exc: OverrideParseException) -> str:
    """``bad override '<text>': <hydra's message>`` on one line, caret turned into a column."""
    lines = [line for line in exc.message.splitlines() if not _DOC_LINK.match(line.strip())]
    lexer = "LexerNoViableAltException: "
    if len(lines) >= 2 and lines[0].startswith(lexer) and _CARET_LINE.match(lines[1]):
        # hydra prints the override after the exception name and a caret under it
        column = len(lines[1]) - len(lexer)
        message = f"unexpected input at column {column}: {_quote(exc.override[column - 1 :])}"
    else:
        message = fold("\n".join(lines))
        message = message.replace(f"Error parsing override '{exc.override}'; ", "")
    return f"bad override {_quote(exc.override)}: {message}"


def _quote(text: str) -> str:
    return f'"{text}"' if "'" in text else f"'{text}'"


class _GroupLister:
    """The one ConfigLoader method hydra's glob() sweep needs, backed by a config tree."""

    def __init__(self, tree: ConfigTree) -> None:
        self._tree = tree

    def get_group_options(
        self, group_name: str, results_filter: ObjectType | None = ObjectType.CONFIG
    ) -> list[str]:
        return self._tree.group_options(group_name)


def parse_overrides(overrides: Sequence[str], tree: ConfigTree) -> list[Override]:
    """Hydra's parse of the overrides (``glob()`` lists the tree's groups); a bad one is
    one ConfigError naming it."""
    check_nesting(overrides)
    parser = OverridesParser.create(config_loader=cast(Any, _GroupLister(tree)))
    try:
        return parser.parse_overrides(list(overrides))
    except OverrideParseException as exc:
        raise ConfigError(bad_override(exc)) from exc


def sweep_values(override: Override, limit: int) -> list[str]:
    """The values of a discrete sweep override, as Hydra's sweeper renders them, at most
    ``limit + 1`` of them (so ``range(0,1e12)`` stays cheap and the caller can tell the
    limit was passed). Every error, Hydra's or orch's, is one ConfigError naming the
    override; an axis without values is one too."""
    line = override.input_line or override.get_key_element()
    try:
        values = list(itertools.islice(override.sweep_string_iterator(), limit + 1))
    except ConfigError as exc:
        raise ConfigError(f"{line}: {exc}") from exc
    except HydraException as exc:
        raise ConfigError(f"{line}: {fold(str(exc))}") from exc
    except (ValueError, ArithmeticError) as exc:
        raise ConfigError(f"{line}: invalid sweep: {fold(str(exc))}") from exc
    if not values:
        raise ConfigError(f"{line}: the sweep has no values")
    return values


def expand_sweep(
    overrides: Sequence[str], tree: ConfigTree, max_points: int = DEFAULT_MAX_POINTS
) -> list[tuple[str, ...]]:
    """Hydra's sweep syntax to the grid of plain overrides, in BasicSweeper's order.

    ``a=1,2``, ``choice(...)``, ``range(...)`` and ``glob(...)`` (config groups) expand;
    the last axis varies fastest; a key given twice keeps its first position and its last
    value (as in Hydra). ``~key`` stays ``~key`` (Hydra spells it ``~key=null``). A grid
    larger than ``max_points`` is refused before it is built.

    What ``hydra -m`` refuses before launching is refused too: a sweep over Hydra's own
    configuration (``hydra/launcher=a,b``: the points' configs would be identical), and
    non-sweep overrides its first compose cannot apply together (the same ``+key`` twice).
    """
    parsed = parse_overrides(overrides, tree)
    axes: dict[str, list[str]] = {}
    lines: dict[str, str] = {}
    repeated: list[str] = []
    for override in parsed:
        key = override.get_key_element()
        line = override.input_line
        if override.is_sweep_override():
            if override.is_hydra_override():
                raise ConfigError(
                    f"{line}: a sweep over Hydra's own configuration, which is not part of a "
                    f"run's config: every point would be the same run (hydra -m refuses it "
                    f"too); set it once, or sweep a key of your config"
                )
            if not override.is_discrete_sweep():
                kind = override.value_type.name.lower() if override.value_type else "unknown"
                raise ConfigError(
                    f"{line}: a grid takes only discrete sweeps (a,b,c / choice() / range() "
                    f"/ glob()), not {kind}: search it with --sampler random|tpe --trials N"
                )
            value = override.value()
            if isinstance(value, (ChoiceSweep, RangeSweep)) and value.shuffle:
                raise ConfigError(f"{line}: shuffle() is random; list the values in an order, "
                                  f"or sample them with --sampler random --trials N")
            values = [f"{key}={item}" for item in sweep_values(override, max_points)]
        else:
            if key in axes and (override.is_add() or override.is_delete()):
                repeated.append(line or key)
            if override.is_delete() and override.value() is None:
                values = [key]
            else:
                values = [f"{key}={override.get_value_element_as_str()}"]
        axes[key] = values
        lines[key] = line or key
    if repeated:
        _check_first_compose(tree, parsed, repeated[0])
    size = math.prod(len(values) for values in axes.values())
    if size > max_points:
        widest = max(axes, key=lambda k: len(axes[k]))
        raise ConfigError(
            f"{lines[widest]}: the sweep has more than {max_points} points (set "
            f"ORCH_MAX_POINTS to raise the limit): split it into smaller sweeps"
        )
    return [tuple(point) for point in itertools.product(*axes.values())]


def _check_first_compose(tree: ConfigTree, parsed: list[Override], repeated: str) -> None:
    """A ``+key`` or ``~key`` given twice: the grid keeps the last, Hydra's first compose
    applies both. Refuse what that compose refuses, naming the repeated override."""
    plain = [cast(str, o.input_line) for o in parsed if not o.is_sweep_override()]
    try:
        tree.check_first_compose(plain)
    except ConfigError as exc:
        raise ConfigError(
            f"{repeated}: given more than once; hydra -m composes every value before the "
            f"sweep starts and refuses it: {exc}"
        ) from exc
