"""The drivers in this process: skip, retry, attempts, the wait for another submitter,
cancel, batches and searches, over a real directory store, with the fake backend and
image builder of :mod:`orchestrator.testing` (no Docker; the end-to-end tests run the
same paths against a daemon)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from helpers import fake_project

from orchestrator._util.stopping import Stop
from orchestrator.compose.project import Project
from orchestrator.drivers.grid import SweepDriver, SweepResult, compose_points, plan
from orchestrator.drivers.launcher import DriverOptions, Launcher, Retry, batches
from orchestrator.drivers.search import (
    SearchDriver,
    SearchOptions,
    compose_space,
    parse_objectives,
    random_search_points,
)
from orchestrator.schema.record import RunRecord, RunStatus
from orchestrator.settings import Settings
from orchestrator.store import RunStore, open_store
from orchestrator.testing import FakeBackend, FakeImages, FakeRun, RunFailed

LRS = ["lr=0.1,0.2,0.3"]

Events = list[tuple[str, str]]


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return fake_project(tmp_path / "project", "unit", "lr: 0.1\nwidth: 8\n")


@pytest.fixture
def runs(tmp_path: Path) -> RunStore:
    return RunStore(open_store(str(tmp_path / "store"), project_dir=tmp_path))


class Submitter:
    """One submission's launcher over the fake backend, and what it saw."""

    def __init__(self, project: Project, runs: RunStore, fn: Callable[[FakeRun], Any], *,
                 jobs: int = 1, retry: Retry = "failed", batch: int = 8,
                 stop: Stop | None = None, lease_s: float = 60.0, registry: str | None = None,
                 on_event: Callable[[str, str], None] | None = None) -> None:
        self.events: Events = []
        self.stop = stop or Stop()
        self.backend = FakeBackend(runs, fn, jobs=jobs, stop=self.stop)
        self.images = FakeImages()
        settings = Settings(lease_s=lease_s, cache_root=project.root.parent / "cache")

        def progress(event: str, run_id: str, record: RunRecord | None) -> None:
            self.events.append((event, run_id))
            if on_event is not None:
                on_event(event, run_id)

        self.launcher = Launcher(
            project, runs, self.backend, self.images,
            DriverOptions(retry=retry, batch=batch, settings=settings, registry=registry),
            progress=progress, stop=self.stop,
        )

    def sweep(self, args: Sequence[str]) -> SweepResult:
        try:
            return SweepDriver(self.launcher).run(
                args, compose_points(self.launcher.project, args))
        finally:
            self.backend.close()

    def search(self, args: Sequence[str], options: SearchOptions) -> SweepResult:
        _, space = compose_space(self.launcher.project, args)
        try:
            return SearchDriver(self.launcher).search(args, space, options)
        finally:
            self.backend.close()

    @property
    def ran(self) -> list[str]:
        return [run.run_id for run in self.backend.ran]


def loss(run: FakeRun) -> Mapping[str, float]:
    return {"loss": float(run.config["lr"]) * 10}


def statuses(result: SweepResult) -> dict[str, str]:
    return {run.record.overrides[-1]: run.status for run in result.runs}


# --------------------------------------------------------------------------- grid


def test_a_grid_runs_every_point_once_and_a_resubmission_skips_them(
    project: Project, runs: RunStore
) -> None:
    first = Submitter(project, runs, loss)
    result = first.sweep(LRS)
    assert statuses(result) == {"lr=0.1": "succeeded", "lr=0.2": "succeeded",
                                "lr=0.3": "succeeded"}
    assert sorted(first.ran) == sorted(run.record.run_id for run in result.runs)
    for run in result.runs:
        stored = runs.read_run(run.record.run_id)
        assert stored.metrics == {"loss": pytest.approx(float(stored.config["lr"]) * 10)}
        assert stored.sweep_id == result.sweep_id and stored.attempt == 1
        assert runs.missing_blobs(stored) == []  # a record names only stored blobs
    assert [r.run_id for r in runs.read_sweep_runs(result.sweep_id)] == \
        [r.record.run_id for r in result.runs]

    again = Submitter(project, runs, loss)
    resubmitted = again.sweep(LRS)
    assert resubmitted.sweep_id == result.sweep_id
    assert set(statuses(resubmitted).values()) == {"skipped"}
    assert again.ran == []
    assert [event for event, _ in again.events] == ["skipped"] * 3


def test_a_failed_run_resubmitted_runs_as_attempt_2_and_keeps_attempt_1(
    project: Project, runs: RunStore
) -> None:
    def flaky(run: FakeRun) -> Mapping[str, float]:
        if run.config["lr"] == 0.2 and run.attempt == 1:
            raise RunFailed("diverged", exit_code=3)
        return loss(run)

    first = Submitter(project, runs, flaky).sweep(LRS)
    assert statuses(first) == {"lr=0.1": "succeeded", "lr=0.2": "failed",
                               "lr=0.3": "succeeded"}
    assert first.failed
    failed = next(run.record for run in first.runs if run.status == "failed")
    assert (failed.reason, failed.exit_code, failed.attempt) == ("diverged", 3, 1)

    second = Submitter(project, runs, flaky)
    result = second.sweep(LRS)
    assert statuses(result) == {"lr=0.1": "skipped", "lr=0.2": "succeeded",
                                "lr=0.3": "skipped"}
    assert second.ran == [failed.run_id]
    assert ("retrying", failed.run_id) in second.events
    assert runs.read_run(failed.run_id).attempt == 2
    assert [(r.attempt, r.status) for r in runs.read_attempts(failed.run_id)] == \
        [(1, RunStatus.FAILED)]


def test_a_record_set_aside_by_another_resubmitter_meanwhile_is_retried_not_an_error(
    project: Project, runs: RunStore, tmp_path: Path
) -> None:
    """Two re-submissions of a sweep with a failed run: one keeps the failed attempt aside
    between the other's check that the run has a record and its read of the record."""
    def flaky(run: FakeRun) -> Mapping[str, float]:
        if run.config["lr"] == 0.2 and run.attempt == 1:
            raise RunFailed("diverged", exit_code=3)
        return loss(run)

    first = Submitter(project, runs, flaky).sweep(LRS)
    failed = next(run.record for run in first.runs if run.status == "failed")

    class Raced(RunStore):
        def read_run(self, run_id: str) -> RunRecord:
            if run_id == failed.run_id and not self.read_attempts(run_id):
                self.set_aside_attempt(super().read_run(run_id))  # the other re-submitter
            return super().read_run(run_id)

    raced = Raced(open_store(str(tmp_path / "store"), project_dir=tmp_path))
    result = Submitter(project, raced, flaky).sweep(LRS)
    assert statuses(result) == {"lr=0.1": "skipped", "lr=0.2": "succeeded",
                                "lr=0.3": "skipped"}
    assert runs.read_run(failed.run_id).attempt == 2
    assert [(r.attempt, r.status) for r in runs.read_attempts(failed.run_id)] == \
        [(1, RunStatus.FAILED)]


def test_retry_none_keeps_a_failed_run_failed(project: Project, runs: RunStore) -> None:
    def fail(run: FakeRun) -> None:
        raise RunFailed()

    Submitter(project, runs, fail).sweep(["lr=0.5"])
    kept = Submitter(project, runs, loss, retry="none")
    result = kept.sweep(["lr=0.5"])
    assert [run.status for run in result.runs] == ["failed"]
    assert result.failed and kept.ran == []


def test_a_backend_error_ends_the_sweep_and_frees_the_runs_claim(
    project: Project, runs: RunStore
) -> None:
    def broken(run: FakeRun) -> None:
        raise OSError("node lost")

    submitter = Submitter(project, runs, broken)
    with pytest.raises(OSError, match="node lost"):
        submitter.sweep(["lr=0.5"])
    (run_id,) = submitter.ran
    assert not runs.is_complete(run_id)
    assert runs.claims.holder(run_id) is None  # a re-submission may run it at once


# --------------------------------------------------------------------------- claims


def test_a_run_another_submitter_holds_is_waited_for_and_its_record_reported(
    project: Project, runs: RunStore
) -> None:
    started, release = threading.Event(), threading.Event()

    def slow(run: FakeRun) -> Mapping[str, float]:
        started.set()
        release.wait(30)
        return {"by": 1.0}

    first = Submitter(project, runs, slow)
    outcome: list[SweepResult] = []
    thread = threading.Thread(target=lambda: outcome.append(first.sweep(["lr=0.5"])))
    thread.start()
    assert started.wait(30)

    def on_event(event: str, run_id: str) -> None:
        if event == "waiting":
            release.set()  # the holder finishes once the second submitter waits for it

    second = Submitter(project, runs, lambda run: {"by": 2.0}, on_event=on_event)
    result = second.sweep(["lr=0.5"])
    thread.join(30)
    (run,) = result.runs
    assert run.status == "succeeded" and run.record.metrics == {"by": 1.0}
    assert second.ran == []
    assert [event for event, _ in second.events] == ["queued", "waiting", "done"]
    assert [r.record.run_id for r in outcome[0].runs] == [run.record.run_id]


def test_a_run_whose_holder_died_is_taken_over_once_its_claim_goes_stale(
    project: Project, runs: RunStore
) -> None:
    probe = Submitter(project, runs, loss)
    env = probe.images.environment(project, allow_dirty=False, stop=Stop(), say=print,
                                   config_files=())
    (spec,) = plan(project, env, compose_points(project, ["lr=0.5"]), ["lr=0.5"]).runs
    assert runs.claims.claim(spec.run_id, "a-submitter-killed-meanwhile", 1.0)

    submitter = Submitter(project, runs, loss, lease_s=1.0)
    result = submitter.sweep(["lr=0.5"])
    assert [(run.record.run_id, run.status) for run in result.runs] == \
        [(spec.run_id, "succeeded")]
    assert submitter.ran == [spec.run_id]
    assert ("waiting", spec.run_id) in submitter.events


# --------------------------------------------------------------------------- cancel


def test_a_cancel_records_the_running_run_cancelled_and_the_rest_stay_queued(
    project: Project, runs: RunStore
) -> None:
    stop = Stop()

    def interrupted(run: FakeRun) -> Mapping[str, float]:
        stop.cancel()  # Ctrl-C twice while the first run runs
        run.sleep(30)
        return {"loss": 1.0}

    submitter = Submitter(project, runs, interrupted, stop=stop)
    result = submitter.sweep(LRS)
    assert result.stopped
    assert statuses(result) == {"lr=0.1": "cancelled", "lr=0.2": "queued",
                                "lr=0.3": "queued"}
    cancelled = result.runs[0].record
    assert runs.read_run(cancelled.run_id).status is RunStatus.CANCELLED
    assert not any(runs.is_complete(run.record.run_id) for run in result.runs[1:])

    again = Submitter(project, runs, loss)
    resumed = again.sweep(LRS)
    assert set(statuses(resumed).values()) == {"succeeded"}
    assert runs.read_run(cancelled.run_id).attempt == 2
    assert len(again.ran) == 3


# --------------------------------------------------------------------------- batches


def test_batches_start_at_a_quarter_and_double_up_to_the_batch_size() -> None:
    assert [len(b) for b in batches(range(30), 8)] == [2, 4, 8, 8, 8]
    assert [len(b) for b in batches(range(3), 1)] == [1, 1, 1]
    assert list(batches([], 8)) == []


def test_images_are_loaded_in_those_batches(project: Project, runs: RunStore) -> None:
    args = ["lr=" + ",".join(str(i / 100) for i in range(1, 14))]
    submitter = Submitter(project, runs, loss, jobs=4, batch=8)
    result = submitter.sweep(args)
    assert len(result.runs) == 13 and set(statuses(result).values()) == {"succeeded"}
    assert [len(load) for load in submitter.images.loads] == [2, 4, 7]
    assert [run_id for load in submitter.images.loads for run_id in load] == \
        [run.record.run_id for run in result.runs]


def test_with_a_registry_each_run_image_is_pushed_and_its_digest_recorded(
    project: Project, runs: RunStore
) -> None:
    submitter = Submitter(project, runs, loss, registry="127.0.0.1:5000/orch")
    result = submitter.sweep(LRS)
    assert sorted(submitter.images.pushed) == sorted(r.record.run_id for r in result.runs)
    for run in result.runs:
        digest = runs.read_run(run.record.run_id).repo_digest
        assert digest is not None and digest.startswith("127.0.0.1:5000/orch@sha256:")


# --------------------------------------------------------------------------- searches


SPACE = ["lr=tag(log, interval(1e-4,1e-1))", "width=int(interval(8,64))"]


def test_a_random_search_draws_its_points_up_front_and_records_how(
    project: Project, runs: RunStore
) -> None:
    options = SearchOptions(sampler="random", trials=5, seed=3)
    space, points = random_search_points(project, SPACE, options)
    submitter = Submitter(project, runs, loss)
    described = {**options.to_json(), "space": space.to_json()}
    result = SweepDriver(submitter.launcher).run(SPACE, points, search=described)
    submitter.backend.close()
    assert len(result.runs) == 5 and set(statuses(result).values()) == {"succeeded"}
    lrs = [run.record.config["lr"] for run in result.runs]
    assert len(set(lrs)) == 5 and all(1e-4 <= lr <= 1e-1 for lr in lrs)
    doc = runs.read_sweep(result.sweep_id)
    assert doc.search is not None and doc.search["sampler"] == "random"
    assert random_search_points(project, SPACE, options)[1] == points  # seeded


def test_a_tpe_search_records_its_trials_and_continues_where_it_stopped(
    project: Project, runs: RunStore
) -> None:
    pytest.importorskip("optuna")

    def bowl(run: FakeRun) -> Mapping[str, float]:
        return {"loss": (run.config["lr"] - 0.01) ** 2 + (run.config["width"] - 40) ** 2}

    objective = parse_objectives("loss:min")
    first = Submitter(project, runs, bowl)
    options = SearchOptions(sampler="tpe", trials=6, seed=0, objectives=objective)
    result = first.search(SPACE, options)
    assert len(result.runs) == 6 and set(statuses(result).values()) == {"succeeded"}
    assert len(first.ran) == 6
    trials = runs.read_trials(result.sweep_id)
    assert sorted(t["number"] for t in trials) == list(range(6))
    assert {t["run_id"] for t in trials} == {run.record.run_id for run in result.runs}
    doc = runs.read_sweep(result.sweep_id)
    assert doc.search is not None and len(doc.search["trials"]) == 6

    more = Submitter(project, runs, bowl)
    continued = more.search(SPACE, SearchOptions(sampler="tpe", trials=8, seed=0,
                                                 objectives=objective))
    assert continued.sweep_id == result.sweep_id  # --trials is not in the search's id
    assert len(continued.runs) == 8 and len(more.ran) == 2
    assert sorted(statuses(continued).values()).count("skipped") == 6


def test_a_failed_trial_is_asked_again_with_its_parameters(
    project: Project, runs: RunStore
) -> None:
    pytest.importorskip("optuna")

    failures: list[str] = []

    def first_fails(run: FakeRun) -> Mapping[str, float]:
        if not failures:
            failures.append(run.run_id)
            raise RunFailed()
        return {"loss": run.config["lr"]}

    options = SearchOptions(sampler="tpe", trials=3, seed=1,
                            objectives=parse_objectives("loss"))
    result = Submitter(project, runs, first_fails).search(SPACE, options)
    failed = [run.record.run_id for run in result.runs if run.status == "failed"]
    assert failed == failures

    again = Submitter(project, runs, first_fails)
    retried = again.search(SPACE, options)
    assert again.ran == failed  # the same trial, the same run id: nothing new drawn
    assert runs.read_run(failed[0]).attempt == 2
    assert set(statuses(retried).values()) == {"succeeded", "skipped"}


def test_a_trial_left_without_a_record_is_asked_again_by_the_next_submission(
    project: Project, runs: RunStore
) -> None:
    pytest.importorskip("optuna")
    options = SearchOptions(sampler="tpe", trials=4, seed=2,
                            objectives=parse_objectives("loss"))
    started: list[str] = []

    def dies_on_the_third(run: FakeRun) -> Mapping[str, float]:
        started.append(run.run_id)
        if len(started) == 3:
            raise OSError("the submitter's machine went away")
        return loss(run)

    with pytest.raises(OSError):
        Submitter(project, runs, dies_on_the_third).search(SPACE, options)
    orphan = started[2]
    assert not runs.is_complete(orphan)

    again = Submitter(project, runs, loss)
    result = again.search(SPACE, options)
    assert again.ran[0] == orphan  # its parameters, its run id: asked again first
    assert len(again.ran) == 2 and len(result.runs) == 4
    assert set(statuses(result).values()) == {"succeeded", "skipped"}
    assert sorted(t["number"] for t in runs.read_trials(result.sweep_id)) == [0, 1, 2, 3]


def test_the_readme_testing_example_runs_as_written(
    tmp_path: Path, project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = text.split("### Fast tests without Docker", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    project.root.rename(tmp_path / "my-project")
    monkeypatch.chdir(tmp_path)
    scope: dict[str, Any] = {"tmp_path": tmp_path}
    exec(compile(code, "README.md", "exec"), scope)
    assert [run.status for run in scope["result"].runs] == ["succeeded", "failed"]
