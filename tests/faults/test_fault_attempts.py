"""Retrying failed runs when a set-aside is raced or cut short, with real containers.

A re-submission keeps a failed attempt under ``attempts/<n>/`` and runs the next one. Here:

- one run's set-aside was cut short by a SIGKILL (its record kept, ``run.json`` not yet
  removed), another's was finished by a submitter that then died (no ``run.json``, the
  failure kept), and the rest are retried by two re-submitters at once: every run ends
  with one succeeded attempt 2, started once, and the failure kept as attempt 1;
- the earlier attempt's outputs move with it (``attempts/1/output/``): ``output/`` holds
  only what the current record lists;
- ``orch gc`` rolls back a set-aside whose submitter died, and the run keeps its record.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from faultkit import (
    ContainerStarts,
    StoreView,
    make_project,
    orch_env,
    remove_containers,
    run_orch,
    start_orch,
)

pytestmark = [pytest.mark.faults, pytest.mark.docker]

#: Fails on its first attempt; each attempt leaves an output named after it.
FLAKY = """\
import json, os, sys
cfg = json.load(open("/orch/config.json"))
attempt = os.environ["ORCH_ATTEMPT"]
out = os.environ["ORCH_OUTPUT"]
open(os.path.join(out, "a" + attempt + ".txt"), "w").write(attempt)
json.dump({"x": cfg["x"]}, open(os.path.join(out, "metrics.json"), "w"))
sys.exit(1 if attempt == "1" else 0)
"""
RUNS = 4


def test_set_asides_raced_or_cut_short_retry_every_run_once(
    tmp_path: Path, base_image: str, record_property: Callable[[str, object], None],
) -> None:
    root = make_project(tmp_path / "proj", "fault-attempts", base_image, job=FLAKY,
                        config="x: 0\n")
    store = root / ".orch"
    env = orch_env(ORCH_LEASE_S="10")
    args = ["sweep", "-p", str(root), f"x=range(0,{RUNS})", "--jobs", "2", "--json"]
    plan: list[str] = []
    try:
        first = run_orch(args, env, 300)
        assert first.returncode != 0  # every run failed its first attempt
        result = json.loads(first.stdout)
        plan = [run["run_id"] for run in result["runs"]]
        assert {run["status"] for run in result["runs"]} == {"failed"}
        killed, finished = (store / "runs" / run_id for run_id in plan[:2])
        # A re-submitter SIGKILLed right after keeping the failed record: what it leaves.
        (killed / "attempts" / "1").mkdir(parents=True)
        shutil.copyfile(killed / "run.json", killed / "attempts" / "1" / "run.json")
        # One that finished its set-aside (as orch did before outputs moved with the
        # attempt), then died before it ran the next attempt.
        (finished / "attempts" / "1").mkdir(parents=True)
        for name in ("run.json", "stdout.log", "stderr.log"):
            shutil.copyfile(finished / name, finished / "attempts" / "1" / name)
        (finished / "run.json").unlink()

        with ContainerStarts() as starts:
            procs = [start_orch(args, env, tmp_path, f"resubmit{i}") for i in (1, 2)]
            for proc in procs:
                proc.wait(timeout=300)
        for i, proc in enumerate(procs, 1):
            assert proc.returncode == 0, (tmp_path / f"resubmit{i}.err").read_text()
        started = {run_id: starts.counts[run_id] for run_id in plan}
        view = StoreView.directory(store)
        records = view.recorded()
        record_property("runs_duplicated", sum(max(0, n - 1) for n in started.values()))
        record_property("runs_lost", sum(1 for run_id in plan if run_id not in records))
        assert started == dict.fromkeys(plan, 1), started
        assert {run_id: (r["status"], r["attempt"]) for run_id, r in records.items()} == \
            dict.fromkeys(plan, ("succeeded", 2))
        files = view.run_files()
        for run_id in plan:
            kept = json.loads((store / "runs" / run_id / "attempts/1/run.json").read_text())
            assert (kept["status"], kept["attempt"]) == ("failed", 1)
            assert not any(name.startswith("attempts/2/") for name in files[run_id])
            outputs = sorted(n for n in files[run_id] if n.startswith("output/"))
            assert outputs == ["output/a2.txt"], (run_id, outputs)
        for run_id in [plan[0], *plan[2:]]:  # set aside by this orch: outputs moved along
            assert "attempts/1/output/a1.txt" in files[run_id], files[run_id]
        assert view.half_written() == []

        # gc rolls back a set-aside whose submitter died (older than the lease, no claim):
        # the run keeps its record and is not retried.
        rolled = store / "runs" / plan[2]
        (rolled / "attempts" / "2").mkdir()
        shutil.copyfile(rolled / "run.json", rolled / "attempts" / "2" / "run.json")
        time.sleep(1.5)
        gc = run_orch(["gc", "-v", "-p", str(root)], orch_env(ORCH_LEASE_S="1"), 120)
        assert gc.returncode == 0, gc.stderr
        assert f"runs/{plan[2]}/attempts/2/run.json" in gc.stdout
        assert not (rolled / "attempts" / "2" / "run.json").exists()
        assert (rolled / "run.json").exists() and (rolled / "attempts/1/run.json").exists()
        again = run_orch(args, env, 300)
        assert again.returncode == 0, again.stderr
        assert {run["status"] for run in json.loads(again.stdout)["runs"]} == {"skipped"}
        record_property("faults_survived", 3)
    finally:
        remove_containers(plan)
