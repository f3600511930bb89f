"""What a search is asked to do, and the Optuna study that decides its trials.

:class:`SearchOptions` holds the choices of ``orch sweep --sampler ... --trials N --seed S
--objective M[:max|min] --pruner P``; the ones that change which trials are run (sampler,
seed, objectives, pruner) are part of the sweep's identity, ``--trials`` is not (raising
it continues the same search) and neither is ``--jobs``.

The study is in memory and is never the source of truth: it is rebuilt on every
submission from the sweep's document (the trials and their parameters) and the runs'
records in the store (:func:`frozen_trial`), so any machine that reaches the store
continues a search where it stopped. Optuna is imported lazily (``orch[search]``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ...errors import MissingDependency, UsageError, require
from ...schema.record import RunRecord, RunStatus

log = logging.getLogger("orchestrator.search")

#: Samplers Optuna drives (``random`` and ``grid`` are orch's own).
ADAPTIVE = ("tpe", "cmaes", "gp", "nsgaii", "qmc")
SAMPLERS = ("grid", "random", *ADAPTIVE)
PRUNERS = ("percentile", "median", "hyperband", "asha")
_MULTI_OK = ("tpe", "nsgaii", "gp", "qmc")


@dataclass(frozen=True)
class Objective:
    metric: str
    maximize: bool

    @property
    def text(self) -> str:
        return f"{self.metric}:{'max' if self.maximize else 'min'}"


def parse_objectives(text: str) -> tuple[Objective, ...]:
    """``loss`` / ``acc:max`` / ``a:max,b:min``; no direction: by the metric's name."""
    found = []
    for part in text.split(","):
        name, sep, direction = part.strip().partition(":")
        name, direction = name.strip(), direction.strip().lower()
        if name.startswith("metrics."):
            name = name[len("metrics.") :]
        if not name or (sep and direction not in ("max", "min")):
            raise UsageError(
                f"bad --objective {text!r}: expected METRIC[:max|min], comma-separated"
            )
        if not sep:
            # the results package is imported here only: a grid's sweep never needs it
            from ...results.table import _HIGHER_IS_BETTER, _LOWER_IS_BETTER

            direction = (
                "max" if _HIGHER_IS_BETTER.search(name) and not _LOWER_IS_BETTER.search(name)
                else "min"
            )
        found.append(Objective(name, direction == "max"))
    if len({o.metric for o in found}) != len(found):
        raise UsageError(f"bad --objective {text!r}: a metric is named twice")
    return tuple(found)


@dataclass(frozen=True)
class SearchOptions:
    sampler: str
    trials: int
    seed: int = 0
    objectives: tuple[Objective, ...] = ()
    pruner: str | None = None
    jobs: int = 1

    def check(self) -> None:
        """What cannot be searched, said before anything is built."""
        if self.sampler not in SAMPLERS:
            raise UsageError(f"unknown sampler {self.sampler!r} (one of {', '.join(SAMPLERS)})")
        if self.trials < 1:
            raise UsageError("--trials must be at least 1")
        if self.sampler in ADAPTIVE and not self.objectives:
            raise UsageError(f"--sampler {self.sampler} needs --objective METRIC[:max|min]: "
                             "what the search improves")
        if self.pruner is not None:
            if self.pruner not in PRUNERS:
                raise UsageError(f"unknown pruner {self.pruner!r} (one of {', '.join(PRUNERS)})")
            if self.sampler not in ADAPTIVE:
                raise UsageError(f"--pruner needs an adaptive sampler ({', '.join(ADAPTIVE)})")
            if len(self.objectives) > 1:
                raise UsageError("--pruner works on one objective: Optuna cannot prune a "
                                 "multi-objective study")
        if len(self.objectives) > 1 and self.sampler not in (*_MULTI_OK, "random"):
            raise UsageError(f"--sampler {self.sampler} optimizes one objective; for "
                             f"{len(self.objectives)} use nsgaii or tpe")
        if self.adaptive:
            _optuna(f"--sampler {self.sampler}")  # before a build, not after it

    @property
    def adaptive(self) -> bool:
        return self.sampler in ADAPTIVE

    def identity(self) -> dict[str, Any]:
        """What makes two submissions the same search (not ``trials``, not ``jobs``)."""
        return {
            "sampler": self.sampler,
            "seed": self.seed,
            "objective": [o.text for o in self.objectives],
            "pruner": self.pruner,
        }

    def to_json(self) -> dict[str, Any]:
        return {**self.identity(), "n_trials": self.trials}


def _optuna(what: str = "an adaptive search") -> Any:
    optuna: Any = require("optuna", what, "'orch[search]'")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def sampler_seed(seed: int, resumed: int) -> int:
    """The sampler's seed for a study rebuilt from ``resumed`` earlier trials: ``seed``
    for a fresh search; else one derived from both, so a continued search draws new
    points instead of replaying the first ones of its seed."""
    if resumed == 0:
        return seed
    data = json.dumps({"seed": seed, "resumed": resumed}, sort_keys=True).encode()
    return int.from_bytes(hashlib.sha256(data).digest()[:4], "big")


#: TPE's random start-up (Optuna's default): its first trials ignore every result.
TPE_STARTUP_TRIALS = 10


def independent_trials(options: SearchOptions) -> int:
    """How many first trials of a search its sampler draws without looking at a result
    (TPE's random start-up). Such a trial can be asked, and its image built and loaded,
    while the trial before it still runs: asked early, it is the same point."""
    return TPE_STARTUP_TRIALS if options.sampler == "tpe" else 0


def make_sampler(options: SearchOptions, resumed: int = 0) -> Any:
    optuna = _optuna()
    samplers = optuna.samplers
    seed = sampler_seed(options.seed, resumed)
    if options.sampler == "tpe":
        # constant_liar: trials in flight count as bad guesses, so K parallel trials spread
        # out instead of all asking for the same point.
        return samplers.TPESampler(seed=seed, multivariate=True,
                                   n_startup_trials=TPE_STARTUP_TRIALS,
                                   constant_liar=options.jobs > 1)
    if options.sampler == "cmaes":
        _needs("cmaes", "cmaes", options.sampler)
        return samplers.CmaEsSampler(seed=seed)
    if options.sampler == "gp":
        _needs("torch", "torch scipy", options.sampler)
        return samplers.GPSampler(seed=seed)
    if options.sampler == "nsgaii":
        return samplers.NSGAIISampler(seed=seed)
    if options.sampler == "qmc":
        return samplers.QMCSampler(seed=seed, scramble=True)
    raise UsageError(f"--sampler {options.sampler} is not an Optuna sampler")


def _needs(module: str, packages: str, sampler: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise MissingDependency(f"--sampler {sampler} needs {packages}", packages)


#: ``--pruner percentile``, the policy for short searches (tens of trials): from the
#: second trial and the first step on, a trial whose best value so far is outside the
#: best quarter of the completed trials' values at the same step is stopped. A median
#: pruner waiting for 4 completed trials cannot prune a third of a 12-trial search and
#: keeps every trial better than the median; here a trial runs to its end only while it
#: stays among the best.
PERCENTILE = 25.0
PERCENTILE_STARTUP_TRIALS = 1


def make_pruner(name: str | None) -> Any:
    optuna = _optuna()
    if name is None:
        return optuna.pruners.NopPruner()
    if name == "percentile":
        return optuna.pruners.PercentilePruner(PERCENTILE,
                                               n_startup_trials=PERCENTILE_STARTUP_TRIALS)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=1)


def replayable(pruner: Any) -> bool:
    """Whether ``pruner`` decides from the study's completed trials and the trial's
    curve alone (the percentile and median pruners), so a decision can be asked of a
    probe and replayed; Hyperband and successive halving keep state on the asked trial."""
    return isinstance(pruner, _optuna().pruners.PercentilePruner)


def would_prune(study: Any, curve: Mapping[int, float]) -> bool:
    """The study's pruner's verdict on a running trial whose steps so far are ``curve``,
    asked of a probe: the trial the study will be told holds no step the driver merely
    happened to see while polling."""
    if not curve:
        return False
    optuna = _optuna()
    probe = optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING, params={},
                                      distributions={}, intermediate_values=dict(curve))
    return bool(study.pruner.prune(study, probe))


def pruned_curve(study: Any, curve: Mapping[int, float]) -> dict[int, float]:
    """The steps of a pruned trial that the study is told: its curve up to the first step
    at which the pruner, replayed step by step over it, prunes. What the sampler learns
    from a pruned trial then depends on its curve and the trials before it, not on how
    soon the stop reached the container or which steps the driver saw while polling, so
    a sequential search with the same seed draws the same trials. The whole curve when
    the pruner keeps state of its own or never prunes on replay."""
    if not replayable(study.pruner):
        return dict(curve)
    seen: dict[int, float] = {}
    for step, value in sorted(curve.items()):
        seen[step] = value
        if would_prune(study, seen):
            return seen
    return dict(curve)


def make_study(options: SearchOptions, resumed: int = 0) -> Any:
    """A fresh in-memory study, to be filled with ``resumed`` trials from the store."""
    optuna = _optuna()
    directions = ["maximize" if o.maximize else "minimize" for o in options.objectives]
    return optuna.create_study(
        directions=directions or ["minimize"],
        sampler=make_sampler(options, resumed),
        pruner=make_pruner(options.pruner),
    )


class MissingObjective(UsageError):
    """A finished trial does not report the objective: the search cannot go on."""


def values_of(record: RunRecord, objectives: Sequence[Objective]) -> list[float]:
    """The objective values of a succeeded run; MissingObjective when one is absent."""
    found = []
    for objective in objectives:
        value = record.metrics.get(objective.metric)
        if value is None or not math.isfinite(float(value)):
            known = ", ".join(sorted(record.metrics)) or "none"
            raise MissingObjective(
                f"run {record.run_id} finished without the objective metric "
                f"{objective.metric!r} (its metrics: {known}): fix --objective or the "
                "training script; the search stopped"
            )
        found.append(float(value))
    return found


def step_values(jsonl: bytes, metric: str) -> dict[int, float]:
    """The objective's value at each step of a run's ``metrics.jsonl``."""
    curve: dict[int, float] = {}
    for number, line in enumerate(jsonl.splitlines(), 1):
        try:
            values = json.loads(line)
        except ValueError:
            continue
        if not isinstance(values, dict):
            continue
        value, step = values.get(metric), values.get("step", number)
        if isinstance(value, int | float) and _finite(value) and _finite(step):
            curve[int(step)] = float(value)
    return curve


def _finite(value: object) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(float(value)))


def frozen_trial(
    params: Mapping[str, Any],
    distributions: Mapping[str, Any],
    record: RunRecord,
    objectives: Sequence[Objective],
    curve: Mapping[int, float] | None = None,
) -> Any:
    """A finished run as the study's trial (for ``study.add_trial`` on a rebuild)."""
    optuna = _optuna()
    state = optuna.trial.TrialState
    values: list[float] | None = None
    if record.status is RunStatus.SUCCEEDED:
        kind = state.COMPLETE
        values = values_of(record, objectives)
    elif record.status is RunStatus.PRUNED:
        kind = state.PRUNED
    else:
        kind = state.FAIL
    return optuna.trial.create_trial(
        params=dict(params),
        distributions=dict(distributions),
        values=values,
        state=kind,
        intermediate_values=dict(curve or {}),
        user_attrs={"run_id": record.run_id},
    )


def importances(study: Any) -> dict[str, float]:
    """Optuna's parameter importances, empty when it cannot tell (too few trials)."""
    optuna = _optuna()
    try:
        return dict(optuna.importance.get_param_importances(study))
    except Exception:  # noqa: BLE001 - importances are an extra; any failure means none
        return {}
