"""Search spaces: Hydra's distribution syntax, as the Optuna sweeper reads it, and a
seeded random sampler over it that gives the same points on every machine.

An override is one of:

* a fixed value (``model=lstm``, ``+x=1``, ``~key``): the same in every trial;
* a discrete axis (``a=1,2``, ``choice(...)``, ``glob(...)``, ``range(...)``,
  ``shuffle(...)`` of any of them): a *categorical* parameter over the values the grid
  would take (a ``range`` of integers is an integer parameter over the same values);
* ``interval(a,b)``: a float in ``[a, b)``; ``int(interval(a,b))``: an integer in
  ``[a, b]`` (both as the Optuna sweeper maps them); ``tag(log, ...)`` samples either on a
  log scale (bounds must be positive).

Random sampling is a pure function of (seed, trial number, key): each value comes from
SHA-256 over canonical bytes, not from a process's PRNG or hash randomization, so a
re-submission composes the same configs - the same run ids - anywhere, and adding a
parameter changes no other parameter's values. Floats are rounded to 10 significant
digits, so a platform's last-ulp difference in ``exp``/``log`` cannot change a run id.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from hydra.core.override_parser.types import IntervalSweep, Override, RangeSweep

from .._util.canonical import canonical_bytes
from ..errors import ConfigError
from .overrides import ConfigTree, parse_overrides, sweep_values

Kind = Literal["float", "int", "categorical"]

#: The most values a discrete axis of a search may have (a categorical parameter).
MAX_CHOICES = 100_000


@dataclass(frozen=True)
class Param:
    """One searched key. ``choices`` are override spellings (``key=<choice>``)."""

    key: str
    kind: Kind
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: int | None = None
    choices: tuple[str, ...] = ()
    source: str = ""

    def describe(self) -> str:
        if self.kind == "categorical":
            shown = ", ".join(self.choices[:8]) + (", ..." if len(self.choices) > 8 else "")
            return f"{self.key}: categorical [{shown}] ({len(self.choices)} values)"
        scale = " log" if self.log else ""
        step = f" step {self.step}" if self.step not in (None, 1) else ""
        bounds = f"[{self.low}, {self.high}]"
        return f"{self.key}: {self.kind}{scale} {bounds}{step}"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"key": self.key, "kind": self.kind}
        if self.kind == "categorical":
            data["choices"] = list(self.choices)
        else:
            data.update(low=self.low, high=self.high, log=self.log)
            if self.step is not None:
                data["step"] = self.step
        return data

    def line(self, value: Any) -> str:
        """The override that sets this parameter to ``value``."""
        if self.kind == "categorical":
            return f"{self.key}={value}"
        if self.kind == "int":
            return f"{self.key}={int(value)}"
        return f"{self.key}={_float_text(float(value))}"

    def contains(self, value: Any) -> bool:
        if self.kind == "categorical":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        assert self.low is not None and self.high is not None
        if self.kind == "int":
            step = self.step or 1
            return (isinstance(value, int) and self.low <= value <= self.high
                    and (value - int(self.low)) % step == 0)
        return self.low <= value <= self.high


@dataclass(frozen=True)
class Space:
    """The overrides of a search, in the order they were given (a repeated key keeps its
    first position and its last value, as in Hydra)."""

    #: key -> the fixed override line, or the Param searched there.
    items: tuple[tuple[str, str | Param], ...]

    @property
    def params(self) -> list[Param]:
        return [item for _, item in self.items if isinstance(item, Param)]

    def point(self, values: dict[str, Any]) -> tuple[str, ...]:
        """The overrides of one trial, from its parameter values (by key)."""
        lines = []
        for key, item in self.items:
            lines.append(item.line(values[key]) if isinstance(item, Param) else item)
        return tuple(lines)

    def describe(self) -> list[str]:
        lines = [param.describe() for param in self.params]
        lines += [f"{item} (fixed)" for _, item in self.items if isinstance(item, str)]
        return lines

    def to_json(self) -> list[dict[str, Any]]:
        return [
            item.to_json() if isinstance(item, Param) else {"key": key, "fixed": item}
            for key, item in self.items
        ]

    @classmethod
    def from_json(cls, data: Any) -> Space:
        """The space a search's document stored (:meth:`to_json`); what is not a well-formed
        parameter is left out, since readers of old or edited documents only display it."""
        items: list[tuple[str, str | Param]] = []
        for entry in data if isinstance(data, list) else []:
            key = entry.get("key") if isinstance(entry, dict) else None
            if not isinstance(key, str):
                continue
            if isinstance(entry.get("fixed"), str):
                items.append((key, entry["fixed"]))
            elif entry.get("kind") == "categorical" and isinstance(entry.get("choices"), list):
                items.append((key, Param(key, "categorical",
                                         choices=tuple(str(c) for c in entry["choices"]))))
            elif entry.get("kind") in ("int", "float") and all(
                _number(entry.get(bound)) for bound in ("low", "high")
            ):
                step = entry.get("step")
                items.append((key, Param(key, entry["kind"], entry["low"], entry["high"],
                                         log=bool(entry.get("log")),
                                         step=step if isinstance(step, int) else None)))
        return cls(tuple(items))


def _float_text(value: float) -> str:
    text = repr(value)
    return text if "e" in text or "." in text else text + ".0"


def _round(value: float) -> float:
    return float(f"{value:.10g}")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_space(overrides: Sequence[str], composer: ConfigTree) -> Space:
    """The search space of ``overrides``; errors name the override."""
    items: dict[str, str | Param] = {}
    for override in parse_overrides(overrides, composer):
        key = override.get_key_element()
        line = override.input_line or key
        if not override.is_sweep_override():
            if override.is_delete() and override.value() is None:
                items[key] = key
            else:
                items[key] = f"{key}={override.get_value_element_as_str()}"
            continue
        if override.is_hydra_override():
            raise ConfigError(f"{line}: a search over Hydra's own configuration, which is "
                              f"not part of a run's config: set it once")
        items[key] = _param(override, key, line)
    return Space(tuple(items.items()))


def _param(override: Override, key: str, line: str) -> Param:
    value = override.value()
    if isinstance(value, IntervalSweep):
        low, high = value.start, value.end
        if not (_number(low) and _number(high)):
            raise ConfigError(f"{line}: an interval needs two numbers, interval(LOW, HIGH)")
        assert low is not None and high is not None
        if not low < high:
            raise ConfigError(f"{line}: the interval is empty: LOW must be below HIGH")
        log = "log" in value.tags
        unknown = set(value.tags) - {"log"}
        if unknown:
            raise ConfigError(f"{line}: unknown tag {sorted(unknown)[0]!r} (only 'log' is read)")
        if log and low <= 0:
            raise ConfigError(f"{line}: a log scale needs positive bounds, got LOW={low}")
        if isinstance(low, int) and isinstance(high, int):
            return Param(key, "int", low, high, log=log, source=line)
        return Param(key, "float", float(low), float(high), log=log, source=line)
    if (isinstance(value, RangeSweep) and not value.shuffle and value.step != 0
            and all(isinstance(v, int) for v in (value.start, value.stop, value.step))):
        assert value.start is not None and value.stop is not None
        step = int(value.step)
        values = range(int(value.start), int(value.stop), step)
        if not values:
            raise ConfigError(f"{line}: the sweep has no values")  # as the grid says
        if step < 0:
            values = values[::-1]
        log = "log" in value.tags
        return Param(key, "int", values[0], values[-1], step=abs(step), log=log, source=line)
    choices = tuple(dict.fromkeys(sweep_values(override, MAX_CHOICES)))
    if len(choices) > MAX_CHOICES:
        raise ConfigError(f"{line}: more than {MAX_CHOICES} values: use interval() instead")
    return Param(key, "categorical", choices=choices, source=line)


# --------------------------------------------------------------------------- sampling


def uniform(seed: int, trial: int, key: str) -> float:
    """A number in [0, 1) determined by (seed, trial, key) alone."""
    data = canonical_bytes({"seed": seed, "trial": trial, "key": key})
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big") / 2.0**64


def sample_value(param: Param, u: float) -> Any:
    """The value of ``param`` at quantile ``u`` in [0, 1)."""
    if param.kind == "categorical":
        return param.choices[min(int(u * len(param.choices)), len(param.choices) - 1)]
    assert param.low is not None and param.high is not None
    if param.kind == "int":
        step = param.step or 1
        low, high = int(param.low), int(param.high)
        if param.log and step == 1:
            # Optuna's reading of a log-scaled integer: uniform in log over [low-0.5, high+0.5]
            lo, hi = math.log(low - 0.5), math.log(high + 0.5)  # low >= 1 here
            picked = round(_round(math.exp(lo + u * (hi - lo))))
            return min(max(picked, low), high)
        count = (high - low) // step + 1
        return low + step * min(int(u * count), count - 1)
    low_f, high_f = float(param.low), float(param.high)
    if param.log:
        lo, hi = math.log(low_f), math.log(high_f)
        value = math.exp(lo + u * (hi - lo))
    else:
        value = low_f + u * (high_f - low_f)
    return min(max(_round(value), low_f), high_f)


def random_values(space: Space, seed: int, trial: int) -> dict[str, Any]:
    """Trial ``trial``'s parameter values under ``seed`` (see the module docstring)."""
    return {p.key: sample_value(p, uniform(seed, trial, p.key)) for p in space.params}


def random_points(space: Space, seed: int, trials: int) -> list[tuple[str, ...]]:
    """The first ``trials`` points of seeded random search; trial i is the same point
    whatever ``trials`` is, so raising it keeps every earlier run."""
    return [space.point(random_values(space, seed, i)) for i in range(trials)]


# --------------------------------------------------------------------------- optuna


def optuna_distributions(space: Space) -> dict[str, Any]:
    """The space as Optuna distributions, keyed like :attr:`Space.params`."""
    from optuna.distributions import (
        BaseDistribution,
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    found: dict[str, BaseDistribution] = {}
    for p in space.params:
        if p.kind == "categorical":
            found[p.key] = CategoricalDistribution(list(p.choices))
        elif p.kind == "int":
            assert p.low is not None and p.high is not None
            step = p.step or 1
            log = p.log and step == 1
            found[p.key] = IntDistribution(int(p.low), int(p.high), log=log, step=step)
        else:
            assert p.low is not None and p.high is not None
            found[p.key] = FloatDistribution(float(p.low), float(p.high), log=p.log)
    return found
