"""A search's pruner as a user sees it, in this process (orchestrator.testing's fake
backend over a directory store, no Docker): the percentile policy stops a clearly bad
trial of a short search, the decision is recorded (status ``pruned``, the reason naming
pruner and step), and the same seed gives the same trials and the same decisions."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

import pytest
from helpers import fake_project

from orchestrator.compose.project import Project
from orchestrator.drivers.grid import SweepResult
from orchestrator.drivers.launcher import DriverOptions, Launcher
from orchestrator.drivers.search import (
    SearchDriver,
    SearchOptions,
    compose_space,
    parse_objectives,
)
from orchestrator.settings import Settings
from orchestrator.store import RunStore, open_store
from orchestrator.testing import FakeBackend, FakeImages, FakeRun

pytest.importorskip("optuna")

#: ``bad=1`` is a trial whose loss is 10 worse at every step: any pruner should stop it.
SPACE = ["bad=choice(0,1)", "lr=interval(0,1)"]
STEPS = 20


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return fake_project(tmp_path / "project", "prune", "bad: 0\nlr: 0.5\n")


def curve(run: FakeRun) -> Mapping[str, float] | None:
    """A learning curve; a bad trial paces its steps so the driver sees them, then waits
    at its last step for the stop request (bounded: a missed stop ends it succeeded)."""
    offset = 10.0 * run.config["bad"] + 0.1 * run.config["lr"]
    for step in range(1, STEPS + 1):
        run.step(step, loss=offset + 1.0 / step)
        if run.config["bad"]:
            run.sleep(0.01)
    deadline = time.monotonic() + 10
    while run.config["bad"] and time.monotonic() < deadline:
        run.sleep(0.05)
        run.step(STEPS, loss=offset + 1.0 / STEPS)
    return None


def search(project: Project, store: Path, options: SearchOptions) -> SweepResult:
    runs = RunStore(open_store(str(store), project_dir=project.root.parent))
    backend = FakeBackend(runs, curve)
    settings = Settings(cache_root=project.root.parent / "cache")
    launcher = Launcher(project, runs, backend, FakeImages(), DriverOptions(settings=settings))
    _, space = compose_space(project, SPACE)
    try:
        return SearchDriver(launcher).search(SPACE, space, options)
    finally:
        backend.close()


def outline(result: SweepResult) -> list[tuple[dict[str, object], str]]:
    return [({k: run.record.config[k] for k in ("bad", "lr")}, run.status)
            for run in result.runs]


def options(trials: int, pruner: str | None = "percentile") -> SearchOptions:
    return SearchOptions(sampler="tpe", trials=trials, seed=6,
                         objectives=parse_objectives("loss:min"), pruner=pruner)


def test_the_percentile_pruner_stops_a_clearly_bad_trial_and_records_why(
    project: Project, tmp_path: Path
) -> None:
    result = search(project, tmp_path / "store", options(6))
    seen = outline(result)
    first_good = next(i for i, (params, _) in enumerate(seen) if not params["bad"])
    bad_after = [status for params, status in seen[first_good + 1:] if params["bad"]]
    assert bad_after and set(bad_after) == {"pruned"}, seen
    assert {status for params, status in seen if not params["bad"]} == {"succeeded"}
    for run in result.runs:
        if run.status == "pruned":
            assert run.record.reason is not None
            assert run.record.reason.startswith("pruned by the percentile pruner at step ")


def test_the_same_seed_gives_the_same_trials_and_the_same_decisions(
    project: Project, tmp_path: Path
) -> None:
    # 11 trials: the last is TPE's first guided one, drawn from what the study was told
    # of the pruned trials (their curves up to the step the pruner condemns on replay,
    # not up to wherever the stop happened to reach them).
    first = outline(search(project, tmp_path / "one", options(11)))
    again = outline(search(project, tmp_path / "two", options(11)))
    assert first == again
    assert "pruned" in {status for _, status in first}


def test_a_pruned_trial_is_told_up_to_the_step_the_pruner_condemns() -> None:
    from orchestrator.drivers.search.study import make_study, pruned_curve, would_prune

    study = make_study(options(4))
    study.add_trial(_complete({1: 2.0, 2: 1.5, 3: 1.2}))
    assert not would_prune(study, {1: 1.9})
    assert would_prune(study, {2: 3.0})
    assert pruned_curve(study, {1: 1.9, 2: 1.6, 3: 1.5, 4: 1.4}) == {1: 1.9, 2: 1.6}
    assert pruned_curve(study, {1: 1.0, 2: 0.9}) == {1: 1.0, 2: 0.9}  # never condemned


def test_an_early_tpe_trial_is_the_same_point_asked_before_the_last_result() -> None:
    """Why the driver may build and load trial N+1's image while trial N runs: during
    TPE's start-up its points do not depend on any result."""
    from orchestrator.drivers.search.study import independent_trials, make_study

    opts = options(12, pruner=None)
    distributions = _distributions()
    told, untold = make_study(opts), make_study(opts)
    asked_told = []
    for number in range(independent_trials(opts)):
        trial = told.ask(distributions)
        asked_told.append(trial.params)
        told.tell(trial, float(number % 3))
    asked_early = [untold.ask(distributions).params for _ in range(independent_trials(opts))]
    assert asked_told == asked_early


def _distributions() -> dict[str, object]:
    import optuna

    return {"lr": optuna.distributions.FloatDistribution(0, 1),
            "bad": optuna.distributions.CategoricalDistribution([0, 1])}


def _complete(steps: Mapping[int, float]) -> object:
    import optuna

    return optuna.trial.create_trial(
        params={}, distributions={}, value=min(steps.values()),
        intermediate_values=dict(steps))
