"""``orch gc`` beside sweeps, with default settings where it matters, real containers:

- a sweep on the default ``.orch/`` store whose base layer was cached long ago: the
  store's blob is a hard link of the cache file, as old as it, and referenced by no record
  yet; gc beside the running sweep keeps it (the sweep's open marker names it), every
  record's blobs are in the store, and ``orch image verify`` checks the store too;
- a submission killed after it committed a retried run but before it rewrote the sweep's
  index: gc removes its dead open marker only after rebuilding the index, so ``results``
  agrees with ``show``.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from faultkit import (
    SLEEPER,
    StoreView,
    make_project,
    orch_env,
    remove_containers,
    run_orch,
    start_orch,
    wait_for,
)

pytestmark = [pytest.mark.faults, pytest.mark.docker]


def _record_blobs(record: dict[str, object]) -> list[str]:
    layers = record.get("layers") or {}
    images = record.get("images") or {}
    assert isinstance(layers, dict) and isinstance(images, dict)
    names = [record["image_id"], *layers["base"], *layers["env"], layers["code"],
             layers["config"], images["env"], images["code"]]
    return [str(name) for name in names if name]


def test_gc_beside_a_sweep_keeps_old_cached_blobs_it_will_reference(
    tmp_path: Path, base_image: str, record_property: Callable[[str, object], None],
) -> None:
    root = make_project(tmp_path / "proj", "fault-gc-live", base_image, job=SLEEPER)
    cache = tmp_path / "cache"
    env = orch_env(ORCH_CACHE=str(cache), ORCH_LEASE_S="5")
    plan: list[str] = []
    try:
        # Fill this test's cache (base layer exported, layers compressed) through another
        # store, then make every cached file two hours old: the default grace is one hour.
        warm = run_orch(["sweep", "-p", str(root), "x=99", "sleep=0", "--store",
                         str(tmp_path / "warm")], env, 300)
        assert warm.returncode == 0, warm.stderr
        old = time.time() - 7200
        for path in cache.rglob("*"):
            if path.is_file():
                os.utime(path, (old, old))
        store = root / ".orch"
        view = StoreView.directory(store)
        sweep = start_orch(["sweep", "-p", str(root), "x=range(0,2)", "sleep=6", "--jobs",
                            "2", "--json"], env, tmp_path, "sweep")
        wait_for(lambda: sum("claim.json" in n for n in view.run_files().values()) >= 2
                 or sweep.poll() is not None, 240, "both runs claimed")
        gc = run_orch(["gc", "-v", "-p", str(root)], env, 120)
        assert gc.returncode == 0, gc.stderr
        sweep.wait(timeout=240)
        assert sweep.returncode == 0, (tmp_path / "sweep.err").read_text()
        plan = [run["run_id"] for run in json.loads((tmp_path / "sweep.out").read_text())["runs"]]
        records = view.recorded()
        missing = [(run_id, digest) for run_id, record in records.items()
                   for digest in _record_blobs(record)
                   if not (store / "blobs" / "sha256" / digest.split(":")[1]).is_file()]
        record_property("runs_lost", len(missing))
        assert missing == [], (missing, gc.stdout)
        assert sorted(records) == sorted(plan)

        verified = run_orch(["image", "verify", plan[0], "-p", str(root)], env, 300)
        assert verified.returncode == 0, verified.stderr
        assert verified.stdout.startswith("identical:")
        gone = records[plan[0]]["layers"]["base"][0].split(":")[1]
        (store / "blobs" / "sha256" / gone).unlink()
        broken = run_orch(["image", "verify", plan[0], "-p", str(root)], env, 300)
        assert broken.returncode != 0
        assert f"missing from the store: sha256:{gone}" in broken.stdout
        errors = [line for line in broken.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and plan[0] in errors[0], broken.stderr
        record_property("faults_survived", 1)
    finally:
        remove_containers(plan)


#: Fails its first attempt; on the second, run x sleeps x * 60 s.
RETRIED = """\
import json, os, sys, time
cfg = json.load(open("/orch/config.json"))
if os.environ["ORCH_ATTEMPT"] == "1":
    sys.exit(1)
time.sleep(cfg["x"] * 60)
json.dump({"x": cfg["x"]}, open(os.path.join(os.environ["ORCH_OUTPUT"], "metrics.json"), "w"))
"""


def test_gc_rebuilds_the_index_of_a_dead_submission(
    tmp_path: Path, base_image: str, record_property: Callable[[str, object], None],
) -> None:
    root = make_project(tmp_path / "proj", "fault-gc-index", base_image, job=RETRIED,
                        config="x: 0\n")
    env = orch_env(ORCH_LEASE_S="2")
    args = ["sweep", "-p", str(root), "x=0,1", "--jobs", "2", "--json"]
    store = root / ".orch"
    plan: list[str] = []
    try:
        first = run_orch(args, env, 300)
        result = json.loads(first.stdout)
        plan = [run["run_id"] for run in result["runs"]]
        assert {run["status"] for run in result["runs"]} == {"failed"}
        quick = plan[0]  # x=0: succeeds at once on its second attempt
        second = start_orch(args, env, tmp_path, "second")

        def retried() -> bool:
            path = store / "runs" / quick / "run.json"
            return path.exists() and json.loads(path.read_text())["attempt"] == 2

        wait_for(lambda: retried() or second.poll() is not None, 240, "the retried run")
        second.send_signal(signal.SIGKILL)  # x=1 still runs: the index is not rewritten
        second.wait(timeout=30)
        time.sleep(3)  # past the lease: the marker and the other run's claim are dead
        gc = run_orch(["gc", "-v", "-p", str(root)], env, 120)
        assert gc.returncode == 0, gc.stderr
        assert ".open-" in gc.stdout  # the dead submission's marker went
        assert not list((store / "sweeps").glob("*.open-*"))

        shown = run_orch(["show", quick, "-p", str(root), "--json"], env, 60)
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["status"] == "succeeded"
        listed = run_orch(["results", result["sweep_id"], "-p", str(root), "--format",
                           "json"], env, 60)
        assert listed.returncode == 0, listed.stderr
        rows = {row["run_id"]: row for row in json.loads(listed.stdout)}
        assert rows[quick]["status"] == "succeeded", rows[quick]
        record_property("faults_survived", 1)
        record_property("runs_lost", 0 if rows[quick]["status"] == "succeeded" else 1)
    finally:
        remove_containers(plan)
