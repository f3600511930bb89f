"""A run that tries to take the node: too many processes, a full /tmp, a growing image.

Every container is held to documented defaults besides its resources
(``orchestrator.runner.container.ENFORCED``): at most PIDS_LIMIT processes and threads, /tmp and
/var/tmp as tmpfs of TMP_SIZE, the rest of the image read-only (the writable layer on
overlay2 without quota support cannot be limited in size, so it is not writable at all).
orch.yaml's ``resources: {pids, tmp}`` change the first two. The record's ``enforced``
says what the engine reported it held the container to.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from faultkit import StoreView, make_project, orch_env, remove_containers, run_orch

from orchestrator.runner.container import PIDS_LIMIT, TMP_SIZE

pytestmark = [pytest.mark.faults, pytest.mark.docker]

GREEDY = """\
import json, os, threading
out = os.environ["ORCH_OUTPUT"]
found = {}
stop, threads = threading.Event(), []
try:
    for _ in range(PIDS + 1500):
        thread = threading.Thread(target=stop.wait)
        thread.start()
        threads.append(thread)
except RuntimeError:
    pass  # can't start new thread: the limit
found["threads"] = len(threads)
stop.set()
for thread in threads:
    thread.join()
written, chunk = 0, b"x" * (1 << 20)
try:
    with open("/tmp/fill", "wb") as f:
        for _ in range(1200):
            f.write(chunk)
            f.flush()
            written += 1
except OSError:
    pass  # no space left on the tmpfs
if os.path.exists("/tmp/fill"):
    os.remove("/tmp/fill")
found["tmp_mb"] = written
try:
    open("/run/lock/grows-the-layer", "wb").write(b"x")
    found["layer_writable"] = 1
except OSError:
    found["layer_writable"] = 0
json.dump(found, open(os.path.join(out, "metrics.json"), "w"))
""".replace("PIDS", str(PIDS_LIMIT))


def test_processes_scratch_space_and_image_are_bounded(
        tmp_path: Path, base_image: str, record_property: Callable[[str, object], None]) -> None:
    root = make_project(tmp_path / "proj", "greedy", base_image, job=GREEDY, config="x: 0\n")
    proc = run_orch(["sweep", "-p", str(root), "x=1", "--json"], orch_env(), timeout=240)
    try:
        assert proc.returncode == 0, proc.stderr
        (record,) = StoreView.directory(root / ".orch").recorded().values()
        metrics = record["metrics"]
        assert 0 < metrics["threads"] < PIDS_LIMIT, metrics
        assert metrics["tmp_mb"] <= 1024, metrics
        assert metrics["layer_writable"] == 0, metrics
        enforced = record["enforced"]
        assert enforced["engine"].startswith("Docker ")
        assert enforced["pids"] == PIDS_LIMIT
        assert enforced["tmpfs"] == {path: f"size={TMP_SIZE},mode=1777"
                                     for path in ("/tmp", "/var/tmp")}
        assert enforced["read_only_root"] is True
        assert enforced["memory"] is None  # orch.yaml asked for none
        assert enforced["cpus"] == 1.0
        record_property("faults_survived", 1)
    finally:
        remove_containers(r["run_id"] for r in json.loads(proc.stdout or '{"runs": []}')["runs"])


FORKER = """\
import os, signal, sys, time
children = []
try:
    for _ in range(200):
        pid = os.fork()
        if pid == 0:
            signal.pause()
            os._exit(0)
        children.append(pid)
finally:
    print(f"forked {len(children)} children", flush=True)
"""


def test_a_run_forking_past_its_process_limit_fails_with_its_logs(
        tmp_path: Path, base_image: str, record_property: Callable[[str, object], None]) -> None:
    root = make_project(tmp_path / "proj", "forker", base_image, job=FORKER, config="x: 0\n",
                        resources={"cpus": 0.5, "memory": "256m", "pids": 64, "tmp": "16m"})
    proc = run_orch(["sweep", "-p", str(root), "x=1", "--json"], orch_env(), timeout=240)
    try:
        assert proc.returncode == 1, proc.stderr
        (record,) = StoreView.directory(root / ".orch").recorded().values()
        assert record["status"] == "failed"
        assert record["reason"] == "exit code 1"
        assert record["enforced"] == {
            "engine": record["enforced"]["engine"], "pids": 64, "memory": 256 << 20,
            "cpus": 0.5, "tmpfs": {"/tmp": "size=16m,mode=1777", "/var/tmp": "size=16m,mode=1777"},
            "read_only_root": True, "note": "",
        }
        run_dir = root / ".orch" / "runs" / record["run_id"]
        out = (run_dir / "stdout.log").read_text()
        forked = int(out.split()[1])
        assert 0 < forked < 64, out
        assert "BlockingIOError" in (run_dir / "stderr.log").read_text()
        shown = run_orch(["show", record["run_id"], "--store", str(root / ".orch")], orch_env(),
                         timeout=60)
        assert shown.returncode == 0, shown.stderr
        assert "enforced:" in shown.stdout and "pids: 64" in shown.stdout
        record_property("faults_survived", 1)
    finally:
        remove_containers(r["run_id"] for r in json.loads(proc.stdout or '{"runs": []}')["runs"])
