"""What ``orch results`` and ``orch report`` add for a search: its trials in trial order,
the best-so-far curve of the objective, and Optuna's parameter importances.

Pure functions over the search's document (``search`` in ``sweeps/<id>.json``: the
options, the space and the trials) and the runs' records in their JSON form; each trial
stays an ordinary run, so everything else about it is shown as for any sweep.

Importances come from ``optuna.importance.get_param_importances`` (its default
evaluator) over the finished trials, and are left out when Optuna cannot tell: fewer
than :data:`MIN_IMPORTANCE_TRIALS` succeeded trials, or Optuna warning that its answer
would give every parameter the same weight.
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ...compose.space import Space, optuna_distributions
from ...schema.record import RunStatus
from .study import Objective, _optuna

#: Succeeded trials below which importances are not worth showing: Optuna's default
#: evaluator (PED-ANOVA) compares the top 10% with the rest and asks for a handful in it.
MIN_IMPORTANCE_TRIALS = 5


@dataclass(frozen=True)
class TrialRow:
    number: int
    run_id: str
    status: str
    value: float | None  #: the objective, for a succeeded trial
    best: float | None  #: the best value of the trials up to this one

    def to_json(self) -> dict[str, Any]:
        return {"trial": self.number, "run_id": self.run_id, "status": self.status,
                "value": self.value, "best_so_far": self.best}


@dataclass(frozen=True)
class SearchView:
    sampler: str
    objective: Objective | None
    trials: tuple[TrialRow, ...]
    importances: tuple[tuple[str, float], ...]  #: most important first; empty: not known

    @classmethod
    def build(cls, search: Mapping[str, Any], records: Sequence[Mapping[str, Any]],
              *, importances: bool = True) -> SearchView:
        """The view of a search document's ``search`` section over ``records``."""
        by_id = {str(r.get("run_id")): r for r in records}
        objectives = [_objective(text) for text in search.get("objective") or []]
        objective = objectives[0] if objectives else None
        rows, best = [], None
        for item in _trial_items(search):
            record = by_id.get(item["run_id"], {})
            status = str(record.get("status") or "queued")
            value = _value(record, objective) if status == RunStatus.SUCCEEDED.value else None
            if value is not None and objective is not None and (
                best is None or (value > best if objective.maximize else value < best)
            ):
                best = value
            rows.append(TrialRow(item["number"], item["run_id"], status, value, best))
        found: tuple[tuple[str, float], ...] = ()
        if importances and objective is not None and len(objectives) == 1:
            found = _importances(search, rows, objective)
        return cls(str(search.get("sampler") or ""), objective, tuple(rows), found)

    def ordered(self, records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """``records`` in trial order, each trial's with ``trial`` and ``best_so_far``;
        runs that are no trial (reruns of one) after them, as they came."""
        rows = {row.run_id: row for row in self.trials}
        trials = sorted((r for r in records if r.get("run_id") in rows),
                        key=lambda r: rows[str(r["run_id"])].number)
        others = [r for r in records if r.get("run_id") not in rows]
        annotated = [{**r, "trial": rows[str(r["run_id"])].number,
                      "best_so_far": rows[str(r["run_id"])].best} for r in trials]
        return annotated + others

    def to_json(self) -> dict[str, Any]:
        return {
            "sampler": self.sampler,
            "objective": self.objective.text if self.objective else None,
            "trials": [row.to_json() for row in self.trials],
            "importances": dict(self.importances),
        }

    def text(self) -> str:
        """The block printed under the results table of a search."""
        counts: dict[str, int] = {}
        for row in self.trials:
            counts[row.status] = counts.get(row.status, 0) + 1
        lines = [f"search: {self.sampler}, {len(self.trials)} trials ("
                 + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) + ")"]
        if self.objective is None:
            return lines[0]
        lines[0] += f", objective {self.objective.text}"
        lines.append(f"{'trial':>5}  {'run_id':12}  {'status':9}  "
                     f"{self.objective.metric:>14}  best so far")
        for row in self.trials:
            lines.append(f"{row.number:>5}  {row.run_id:12}  {row.status:9}  "
                         f"{_cell(row.value):>14}  {_cell(row.best)}")
        if self.importances:
            lines.append("parameter importances (Optuna): " + ", ".join(
                f"{key} {weight:.2f}" for key, weight in self.importances))
        return "\n".join(lines)


def _objective(text: str) -> Objective:
    metric, _, direction = str(text).rpartition(":")
    return Objective(metric or str(text), direction == "max")


def _trial_items(search: Mapping[str, Any]) -> list[dict[str, Any]]:
    items = []
    for item in search.get("trials") or []:
        if isinstance(item, dict) and isinstance(item.get("run_id"), str) and isinstance(
            item.get("number"), int
        ):
            items.append({"number": item["number"], "run_id": item["run_id"],
                          "params": item.get("params") or {}})
    return sorted(items, key=lambda item: item["number"])


def _value(record: Mapping[str, Any], objective: Objective | None) -> float | None:
    if objective is None:
        return None
    value = (record.get("metrics") or {}).get(objective.metric)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def _importances(search: Mapping[str, Any], rows: Sequence[TrialRow],
                 objective: Objective) -> tuple[tuple[str, float], ...]:
    done = [row for row in rows if row.value is not None]
    if len({row.run_id for row in done}) < MIN_IMPORTANCE_TRIALS:
        return ()
    if importlib.util.find_spec("optuna") is None:
        return ()  # Optuna is optional (orch[search]); the table is whole without it
    optuna = _optuna()  # quiet logging, as for the search itself
    # importance pulls in sklearn (seconds to import): only when there is something to show
    from optuna.importance import get_param_importances

    space = Space.from_json(search.get("space"))
    distributions = optuna_distributions(space)
    params = {item["number"]: item["params"] for item in _trial_items(search)}
    study = optuna.create_study(direction="maximize" if objective.maximize else "minimize")
    for row in done:
        try:
            trial = optuna.trial.create_trial(params=dict(params.get(row.number, {})),
                                              distributions=distributions, value=row.value)
        except ValueError:
            continue  # parameters outside the stored space (an edited document): left out
        study.add_trial(trial)
    if len(study.trials) < MIN_IMPORTANCE_TRIALS:
        return ()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = get_param_importances(study)
    if any("importances will be equal" in str(w.message) for w in caught):
        return ()
    return tuple((str(key), float(weight)) for key, weight in found.items())
