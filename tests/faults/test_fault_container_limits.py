"""A run that tries to take the node: too many processes, a full /tmp, a growing image.

Every container is held to documented defaults besides its resources
(``orchestrator.container.ENFORCED``): at most PIDS_LIMIT processes and threads, /tmp and
/var/tmp as tmpfs of TMP_SIZE, the rest of the image read-only (the writable layer on
overlay2 without quota support cannot be limited in size, so it is not writable at all).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from faultkit import StoreView, make_project, orch_env, remove_containers, run_orch

from orchestrator.container import PIDS_LIMIT

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
        record_property("faults_survived", 1)
    finally:
        remove_containers(r["run_id"] for r in json.loads(proc.stdout or '{"runs": []}')["runs"])
