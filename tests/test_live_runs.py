"""Live runs on the real engine: step metrics, checkpoints across attempts, retries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.docker

Orch = Callable[..., subprocess.CompletedProcess[str]]
ORCH = str(Path(sys.executable).with_name("orch"))

STEPS_ONLY = """
import json, os
out = os.environ["ORCH_OUTPUT"]
with open(os.path.join(out, "metrics.jsonl"), "w") as f:
    for step in range(1, 6):
        f.write(json.dumps({"step": step * 10, "loss": 1.0 / step, "acc": step / 10}) + "\\n")
    f.write("not json\\n")
"""


def run_dir(root: Path, run_id: str) -> Path:
    return root / ".orch" / "runs" / run_id


def test_step_metrics_are_stored_and_give_the_final_metrics(make_project: Callable[..., Path],
                                                            orch: Orch) -> None:
    root = make_project("steps", files={"steps.py": STEPS_ONLY, "configs/config.yaml": "x: 1\n"},
                        command=["python3", "steps.py"])
    proc = orch("sweep", "-p", str(root), "--json")
    assert proc.returncode == 0, proc.stderr
    (run,) = json.loads(proc.stdout)["runs"]
    assert run["metrics"] == {"loss": 0.2, "acc": 0.5}
    lines = (run_dir(root, run["run_id"]) / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines[:5]] == [10, 20, 30, 40, 50]
    record = json.loads((run_dir(root, run["run_id"]) / "run.json").read_text())
    # metrics.jsonl is the run's step metrics, not one of its outputs (it wrote no other)
    assert record["attempt"] == 1 and record["outputs"]["files"] == 0


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_a_run_killed_mid_training_resumes_from_its_checkpoint(
    make_project: Callable[..., Path], orch: Orch
) -> None:
    """SIGKILL of the container mid-training: the run fails as attempt 1 with its
    checkpoint saved; the re-submission runs attempt 2 from that checkpoint and ends with
    exactly the metrics of an uninterrupted run."""
    root = make_project("resume")
    slow = ["+training_settings.epoch_sleep=0.4"]
    env = {**os.environ, "ORCH_CHECKPOINT_S": "0.5"}
    sweep = subprocess.Popen([ORCH, "sweep", "-p", str(root), *slow, "--json"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        runs = root / ".orch" / "runs"
        _wait_for(lambda: any(runs.glob("*/checkpoint.json")), 60, "a saved checkpoint")
        (saved,) = runs.glob("*/checkpoint.json")
        run_id = saved.parent.name
        time.sleep(1.0)  # a few more epochs
        subprocess.run(["docker", "kill", "--signal", "KILL",
                        *subprocess.run(["docker", "ps", "-q", "--filter",
                                         f"label=org.orch.run_id={run_id}"],
                                        capture_output=True, text=True).stdout.split()],
                       check=True, capture_output=True)
        out, err = sweep.communicate(timeout=120)
    finally:
        sweep.kill()
    assert sweep.returncode == 1, err
    first = json.loads((runs / run_id / "run.json").read_text())
    assert first["status"] == "failed" and first["attempt"] == 1

    again = orch("sweep", "-p", str(root), *slow, "--json")
    assert again.returncode == 0, again.stderr
    record = json.loads((runs / run_id / "run.json").read_text())
    assert record["status"] == "succeeded" and record["attempt"] == 2
    assert record["resumed_from_attempt"] == 1
    kept = json.loads((runs / run_id / "attempts" / "1" / "run.json").read_text())
    assert kept["status"] == "failed" and kept["exit_code"] == 137
    assert "resumed after epoch" in (runs / run_id / "stdout.log").read_text()

    # the same training, uninterrupted (a sleep that does not change the result)
    plain = orch("sweep", "-p", str(root), "+training_settings.epoch_sleep=0", "--json")
    assert plain.returncode == 0, plain.stderr
    assert json.loads(plain.stdout)["runs"][0]["metrics"] == record["metrics"]
    curve = (runs / run_id / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in curve] == list(range(1, 21))
