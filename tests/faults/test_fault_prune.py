"""`orch image prune` while a sweep runs: it spares what the sweep needs (the running
run's image, the queued runs' images already loaded) and says so; the sweep completes."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from faultkit import ORCH, SLEEPER, make_project, orch_env, run_orch, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.docker]


def test_prune_beside_a_running_sweep_spares_its_images(
    tmp_path: Path, base_image: str, record_property: Callable[[str, object], None],
) -> None:
    root = make_project(tmp_path / "proj", "prune", base_image, job=SLEEPER,
                        config="x: 0\nsleep: 3\n")
    env = orch_env()
    sweep = subprocess.Popen([ORCH, "sweep", "-p", str(root), "x=1,2,3,4", "--json"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        runs = root / ".orch" / "runs"
        wait_for(lambda: any(runs.glob("*/live.json")), 60, "the first run to start")
        prune = run_orch(["image", "prune", "-p", str(root)], env, timeout=60)
        out, err = sweep.communicate(timeout=120)
    finally:
        sweep.kill()
    assert prune.returncode == 0, prune.stderr
    assert "internal error" not in prune.stderr
    assert prune.stdout.strip() == ""  # nothing of this sweep removed
    spared = [line for line in prune.stderr.splitlines() if line.startswith("sparing ")]
    assert len(spared) >= 3, prune.stderr  # the queued runs (and the running one)
    assert sweep.returncode == 0, err
    assert {r["status"] for r in json.loads(out)["runs"]} == {"succeeded"}
    record_property("faults_survived", 1)
