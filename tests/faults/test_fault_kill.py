"""The CLI killed with SIGKILL mid-sweep, then the same sweep submitted again.

The killed CLI commits nothing more; its containers go on without anybody to collect them
and its claims stay until their lease runs out. The second submission must wait for those
claims (not run a claimed run beside its holder), then redo exactly the runs without a
run.json: every run recorded once, finished runs not run again, no half-written run.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from faultkit import (
    ContainerStarts,
    StoreView,
    lease_is_configurable,
    make_project,
    orch_env,
    remove_containers,
    run_containers,
    run_orch,
    start_orch,
    wait_for,
)

pytestmark = [pytest.mark.faults, pytest.mark.docker]

RUNS = 6
#: Short enough for a test, long enough that a live holder (heartbeat lease/6) keeps it.
TEST_LEASE_S = 6


@dataclass
class Killed:
    plan: list[str]
    sweep_id: str
    before: dict[str, dict[str, Any]]  # run.json of the runs finished before the kill
    half_written_at_kill: list[str]
    containers_at_kill: list[str]
    resubmit: Any
    resubmit_s: float
    lease_s: float
    view: StoreView
    starts: dict[str, int] = field(default_factory=dict)
    containers_after: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory, base_image: str) -> Iterator[Killed]:
    tmp = tmp_path_factory.mktemp("kill")
    root = make_project(tmp / "proj", "fault-kill", base_image)
    lease = TEST_LEASE_S if lease_is_configurable() else 60.0
    env = orch_env(ORCH_LEASE_S=str(lease))
    args = ["sweep", "-p", str(root), f"x=range(0,{RUNS})", "sleep=2", "--jobs", "2", "--json"]
    view = StoreView.directory(root / ".orch")
    plan: list[str] = []
    starts = ContainerStarts().start()
    proc = start_orch(args, env, tmp, "killed")
    try:
        wait_for(lambda: bool(view.count_run_json()) or proc.poll() is not None, 300,
                 "the first run.json")
        assert proc.poll() is None, (tmp / "killed.err").read_text()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        sweeps = [p.stem for p in (root / ".orch" / "sweeps").glob("*.json")
                  if not p.name.endswith(".index.json")]
        assert len(sweeps) == 1, sweeps
        plan = view.sweep_plan(sweeps[0])
        before = view.recorded()
        half = view.half_written()
        at_kill = run_containers(plan)
        start = time.monotonic()
        again = run_orch(args, env, timeout=2 * lease + 300)
        resubmit_s = time.monotonic() - start
        result = Killed(plan, sweeps[0], before, half, at_kill, again, resubmit_s, lease, view)
        result.containers_after = run_containers(plan)
        result.starts = dict(starts.stop())
        yield result
    finally:
        starts.stop()
        if proc.poll() is None:
            proc.kill()
        remove_containers(plan)


def test_resubmitted_sweep_records_every_run_once(
        killed: Killed, record_property: Callable[[str, object], None]) -> None:
    again = killed.resubmit
    record_property("resubmit_s", round(killed.resubmit_s, 1))
    record_property("lease_s", killed.lease_s)
    assert again.returncode == 0, again.stderr
    result = json.loads(again.stdout)
    assert result["sweep_id"] == killed.sweep_id
    assert len(killed.plan) == RUNS

    view = killed.view
    counts = view.count_run_json()
    lost = [run_id for run_id in killed.plan if counts[run_id] == 0]
    after = view.recorded()
    rerun_after_recorded = [run_id for run_id, record in killed.before.items()
                            if after[run_id]["started_at"] != record["started_at"]
                            or killed.starts.get(run_id, 0) != 1]
    record_property("runs_lost", len(lost))
    record_property("runs_duplicated", len(rerun_after_recorded)
                    + sum(max(0, counts[r] - 1) for r in killed.plan))

    assert killed.half_written_at_kill == []
    assert view.half_written() == []
    assert lost == []
    assert sorted(counts) == sorted(killed.plan) and set(counts.values()) == {1}
    assert [r["run_id"] for r in result["runs"]] == killed.plan
    statuses = {r["run_id"]: r["status"] for r in result["runs"]}
    assert all(statuses[run_id] == "skipped" for run_id in killed.before), statuses
    assert all(statuses[run_id] == "succeeded" for run_id in killed.plan
               if run_id not in killed.before), statuses
    assert rerun_after_recorded == [], (killed.starts, {
        r: (killed.before[r]["started_at"], after[r]["started_at"]) for r in killed.before})
    assert {r["run_id"]: r["metrics"] for r in result["runs"]} == {
        run_id: {"x": after[run_id]["config"]["x"]} for run_id in killed.plan}
    # a run claimed by the killed CLI is redone only once its lease ran out
    if killed.containers_at_kill:
        assert killed.resubmit_s >= killed.lease_s / 2, killed.resubmit_s
    record_property("faults_survived", 1)


def test_killed_sweep_leaves_no_containers(killed: Killed) -> None:
    assert killed.containers_after == []
