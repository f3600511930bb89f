"""`orch gc --cache 0` over and over beside a sweep whose runs mount an input.

Each run's node fetches the input into its host cache and mounts it read-only; a prune of
that cache removes what no run mounted recently. Before the container mounts it, the input
is only "fetched": the sweep holds a lease on it (a shared flock) from the fetch on, so
the prune leaves it, and every run succeeds.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from faultkit import ORCH, StoreView, make_project, orch_env, remove_containers, run_orch

pytestmark = [pytest.mark.faults, pytest.mark.docker]

READER = """\
import json, os, time
cfg = json.load(open("/orch/config.json"))
root = os.environ["ORCH_INPUT_SHARDS"]
total = sum(len(open(os.path.join(root, name)).read()) for name in sorted(os.listdir(root)))
time.sleep(cfg["sleep"])
json.dump({"bytes": total}, open(os.path.join(os.environ["ORCH_OUTPUT"], "metrics.json"), "w"))
"""


def test_gc_cache_beside_a_sweep_never_removes_what_it_mounts(
        tmp_path: Path, base_image: str, record_property: Callable[[str, object], None]) -> None:
    shards = tmp_path / "proj" / "shards"
    shards.mkdir(parents=True)
    for i in range(20):
        (shards / f"part-{i:02d}.txt").write_text(f"shard {i}\n" * 50)
    root = make_project(tmp_path / "proj", "cache-gc", base_image, job=READER,
                        config="x: 0\nsleep: 0.2\n", inputs={"shards": "shards/"})
    env = orch_env(ORCH_CACHE=str(tmp_path / "cache"))
    stop = threading.Event()
    pruned: list[str] = []

    def gc_loop() -> None:
        while not stop.is_set():
            proc = subprocess.run([ORCH, "gc", "-p", str(root), "--cache", "0"], env=env,
                                  capture_output=True, text=True, timeout=120)
            assert "internal error" not in proc.stderr, proc.stderr
            pruned.append(proc.stdout)

    looping = threading.Thread(target=gc_loop, daemon=True)
    looping.start()
    try:
        proc = run_orch(["sweep", "-p", str(root), "x=1,2,3,4,5,6,7,8", "--jobs", "1",
                         "--json"], env, timeout=300)
    finally:
        stop.set()
        looping.join(timeout=150)
    try:
        assert proc.returncode == 0, proc.stderr
        records = StoreView.directory(root / ".orch").recorded()
        assert len(records) == 8
        assert {rec["status"] for rec in records.values()} == {"succeeded"}, [
            rec.get("reason") for rec in records.values()]
        size = sum(path.stat().st_size for path in shards.iterdir())
        assert {rec["metrics"]["bytes"] for rec in records.values()} == {size}
        assert len(pruned) >= 2, "gc did not run beside the sweep"
        record_property("faults_survived", 1)
    finally:
        remove_containers(r["run_id"] for r in json.loads(proc.stdout or '{"runs": []}')["runs"])
