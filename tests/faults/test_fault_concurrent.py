"""Two submitters of the same sweep at once, against the same store.

Both start together; claims decide who runs what. Nothing may run twice: the daemon sees
exactly one container start per run, the store holds one run.json per run, and both
submitters report every run as done with the same metrics.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from faultkit import (
    ContainerStarts,
    StoreView,
    make_project,
    orch_env,
    remove_containers,
    start_orch,
)

pytestmark = [pytest.mark.faults, pytest.mark.docker]

RUNS = 6


def test_two_submitters_run_each_run_once(tmp_path: Path, base_image: str,
                                          record_property: Callable[[str, object], None]) -> None:
    root = make_project(tmp_path / "proj", "fault-twice", base_image)
    args = ["sweep", "-p", str(root), f"x=range(0,{RUNS})", "sleep=1", "--jobs", "2", "--json"]
    env = orch_env()
    plan: list[str] = []
    try:
        with ContainerStarts() as starts:
            procs = [start_orch(args, env, tmp_path, f"submitter{i}") for i in (1, 2)]
            try:
                for proc in procs:
                    proc.wait(timeout=300)
            finally:
                for proc in procs:
                    if proc.poll() is None:
                        proc.kill()
        for i, proc in enumerate(procs, 1):
            assert proc.returncode == 0, (tmp_path / f"submitter{i}.err").read_text()
        outputs = [json.loads((tmp_path / f"submitter{i}.out").read_text()) for i in (1, 2)]
        view = StoreView.directory(root / ".orch")
        plan = view.sweep_plan(outputs[0]["sweep_id"])
        counts = view.count_run_json()
        started = {run_id: starts.counts[run_id] for run_id in plan}
        record_property("runs_lost", sum(1 for run_id in plan if counts[run_id] == 0))
        record_property("runs_duplicated", sum(max(0, n - 1) for n in started.values()))

        assert len(plan) == RUNS
        assert started == dict.fromkeys(plan, 1), started
        assert sorted(counts) == sorted(plan) and set(counts.values()) == {1}
        assert view.half_written() == []
        records = view.recorded()
        for output in outputs:
            assert output["sweep_id"] == outputs[0]["sweep_id"]
            assert [r["run_id"] for r in output["runs"]] == plan
            assert {r["status"] for r in output["runs"]} <= {"succeeded", "skipped"}, output
            assert {r["run_id"]: r["metrics"] for r in output["runs"]} == {
                run_id: records[run_id]["metrics"] for run_id in plan}
        record_property("faults_survived", 1)
    finally:
        remove_containers(plan)
