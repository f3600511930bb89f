"""A submitter paused past its lease (Ctrl-Z) while its run ran: a second submitter takes
the run over and finishes it; the first, resumed, says it lost the claim in one line,
commits nothing over the new owner's record and exits without an internal error.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from faultkit import ORCH, SLEEPER, StoreView, make_project, orch_env, run_orch, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.docker]


def test_a_paused_submitter_leaves_the_run_to_its_new_owner(
    tmp_path: Path, base_image: str, record_property: Callable[[str, object], None],
) -> None:
    root = make_project(tmp_path / "proj", "paused", base_image, job=SLEEPER,
                        config="x: 1\nsleep: 8\n")
    env = orch_env(ORCH_LEASE_S="3")
    err_path = tmp_path / "first.err"
    with err_path.open("wb") as err:
        first = subprocess.Popen([ORCH, "sweep", "-p", str(root), "--json"], env=env,
                                 stdout=subprocess.PIPE, stderr=err)
    try:
        runs = root / ".orch" / "runs"
        wait_for(lambda: any(runs.glob("*/live.json")), 60, "the run to start")
        os.kill(first.pid, signal.SIGSTOP)
        time.sleep(4.5)  # past the lease
        second = run_orch(["sweep", "-p", str(root), "sleep=8", "x=1", "--json"], env,
                          timeout=120)
        assert second.returncode == 0, second.stderr
        (run,) = json.loads(second.stdout)["runs"]
        assert run["status"] == "succeeded"
        os.kill(first.pid, signal.SIGCONT)
        first.communicate(timeout=120)
    finally:
        first.kill()
    err = err_path.read_text()
    assert "internal error" not in err and "Traceback" not in err, err
    assert "took its claim over" in err
    records = StoreView.directory(root / ".orch").recorded()
    assert [r["status"] for r in records.values()] == ["succeeded"]
    assert not list(runs.glob("*/attempts"))
    record_property("faults_survived", 1)
