"""Ctrl-C, a second Ctrl-C, SIGTERM and SIGHUP sent to a real `orch sweep`, as a terminal
sends them: to the whole foreground process group, with SIGINT's default handler (a job
a script starts with ``&`` would ignore it, so the sweep is started under ``setsid`` with
the handler restored).

First Ctrl-C: nothing new starts, the running runs finish and are committed, exit 130.
Second Ctrl-C (or SIGTERM/SIGHUP): the running containers are stopped and recorded as
``cancelled`` with their logs; exit 130. Either way no container, claim or work
directory is left, and an immediate re-submission runs what is left at once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from faultkit import ORCH, StoreView, make_project, orch_env, run_containers, run_orch, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.docker]

JOB = """\
import json, os, time
cfg = json.load(open("/orch/config.json"))
out = os.environ["ORCH_OUTPUT"]
print("run", cfg["x"], "started", flush=True)
# the first two runs are the slow ones a signal meets; a retried attempt (after a
# cancel) and the runs never started are quick, so the re-submission test stays short
slow = os.environ.get("ORCH_ATTEMPT") == "1" and cfg["x"] <= 2
steps = cfg["steps"] if slow else 1
for step in range(steps):
    with open(os.path.join(out, "metrics.jsonl"), "a") as f:
        f.write(json.dumps({"step": step, "x": cfg["x"]}) + "\\n")
    time.sleep(0.5)
json.dump({"x": cfg["x"]}, open(os.path.join(out, "metrics.json"), "w"))
print("run", cfg["x"], "done", flush=True)
"""

RESTORE_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execvp(sys.argv[1], sys.argv[1:])"
)


def start_sweep(root: Path, env: dict[str, str], log: Path, steps: int) -> subprocess.Popen[bytes]:
    args = [ORCH, "sweep", "-p", str(root), "x=1,2,3,4", f"steps={steps}", "--jobs", "2",
            "--json"]
    with (log / "out").open("wb") as out, (log / "err").open("wb") as err:
        return subprocess.Popen(["setsid", "python3", "-c", RESTORE_SIGINT, *args],
                                stdout=out, stderr=err, env=env, stdin=subprocess.DEVNULL)


def claims(root: Path) -> list[Path]:
    return list((root / ".orch" / "runs").glob("*/claim.json"))


def statuses(root: Path) -> dict[str, str]:
    return {run_id: rec["status"] for run_id, rec in StoreView.directory(root / ".orch")
            .recorded().items()}


def nothing_left(root: Path, work: Path) -> None:
    assert claims(root) == []
    run_ids = [p.name for p in (root / ".orch" / "runs").iterdir()]
    assert run_containers(run_ids) == []
    assert not work.exists() or list(work.iterdir()) == []


@pytest.fixture
def project(tmp_path: Path, base_image: str) -> tuple[Path, dict[str, str], Path]:
    root = make_project(tmp_path / "proj", "signals", base_image, job=JOB,
                        config="x: 0\nsteps: 4\n")
    work = tmp_path / "work"
    env = orch_env(ORCH_WORK_DIR=str(work), ORCH_LEASE_S="30")
    return root, env, work


def _signal(proc: subprocess.Popen[bytes], signum: int) -> None:
    os.killpg(proc.pid, signum)  # setsid: the sweep leads its own process group


def test_first_ctrl_c_lets_running_runs_finish_and_starts_nothing(
    project: tuple[Path, dict[str, str], Path], tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    root, env, work = project
    proc = start_sweep(root, env, tmp_path, steps=6)
    wait_for(lambda: len(list((root / ".orch" / "runs").glob("*/live.json"))) == 2, 60,
             "two runs in flight")
    # two more runs wait for a slot (--jobs 2): they hold no claim while they wait
    assert len(claims(root)) == 2
    _signal(proc, signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    err = (tmp_path / "err").read_text()
    assert "stopping: waiting for 2 running runs (Ctrl-C again to cancel them)" in err
    assert sorted(statuses(root).values()) == ["succeeded", "succeeded"]
    nothing_left(root, work)
    again = run_orch(["sweep", "-p", str(root), "x=1,2,3,4", "steps=6", "--jobs", "2",
                      "--json"], env, timeout=120)
    assert again.returncode == 0, again.stderr
    assert sorted(r["status"] for r in json.loads(again.stdout)["runs"]) == [
        "skipped", "skipped", "succeeded", "succeeded"]
    record_property("faults_survived", 1)


@pytest.mark.parametrize("how", ["twice", "SIGTERM", "SIGHUP"])
def test_cancel_stops_the_containers_and_records_them_cancelled(
    project: tuple[Path, dict[str, str], Path], tmp_path: Path, how: str,
    record_property: Callable[[str, object], None],
) -> None:
    root, env, work = project
    proc = start_sweep(root, env, tmp_path, steps=60)
    wait_for(lambda: len(claims(root)) == 2, 60, "two runs in flight")
    wait_for(lambda: len(list((root / ".orch" / "runs").glob("*/live.json"))) == 2, 30,
             "their live state")
    time.sleep(1.0)
    if how == "twice":
        _signal(proc, signal.SIGINT)
        time.sleep(0.5)
        _signal(proc, signal.SIGINT)
    else:
        _signal(proc, getattr(signal, how))
    start = time.monotonic()
    assert proc.wait(timeout=60) == 130
    took = time.monotonic() - start
    recorded = StoreView.directory(root / ".orch").recorded()
    assert sorted(rec["status"] for rec in recorded.values()) == ["cancelled", "cancelled"]
    for run_id, rec in recorded.items():
        assert rec["reason"] == "cancelled"
        assert "started" in (root / ".orch" / "runs" / run_id / "stdout.log").read_text()
        assert rec["metrics"]["x"] in (1, 2)  # the last step metrics of the cancelled run
    nothing_left(root, work)
    assert took < 30, took

    began = time.monotonic()
    again = run_orch(["sweep", "-p", str(root), "x=1,2,3,4", "steps=60", "--jobs", "2",
                      "--json"], env, timeout=120)
    assert again.returncode == 0, again.stderr
    assert time.monotonic() - began < 30  # no lease to wait out
    assert {r["status"] for r in json.loads(again.stdout)["runs"]} == {"succeeded"}
    for run_id in recorded:  # the cancelled runs, retried as attempt 2; attempt 1 kept
        rec = json.loads((root / ".orch" / "runs" / run_id / "run.json").read_text())
        assert rec["attempt"] == 2
        kept = root / ".orch" / "runs" / run_id / "attempts" / "1" / "run.json"
        assert json.loads(kept.read_text())["status"] == "cancelled"
    record_property("faults_survived", 1)


LOCK = Path(__file__).parents[1] / "data" / "lock" / "uv.txt"


def bytecode_containers() -> list[dict[str, Any]]:
    import docker

    client = docker.from_env()
    try:
        # the low-level listing: containers.list() inspects each one, and one removed in
        # between (the build ending) would raise NotFound
        return client.api.containers(all=True, filters={"label": "org.orch.role=bytecode"})
    finally:
        client.close()


@pytest.mark.parametrize("how", ["once", "twice"])
def test_ctrl_c_during_the_environment_build(
    base_image: str, tmp_path: Path, how: str, record_property: Callable[[str, object], None],
) -> None:
    """A cold build of the environment (its bytecode compiling) meets Ctrl-C. Once: the
    build finishes into the cache, no run starts. Twice: the build stops there, its
    compile container killed. Either way: exit 130, no container, stage folder or run is
    left, and a re-submission runs the whole sweep."""
    from orchestrator.image.wheels import ensure_wheels, read_lock

    root = make_project(tmp_path / "proj", "buildsignals", base_image, job=JOB,
                        config="x: 0\nsteps: 1\n", requirements="requirements.txt")
    (root / "requirements.txt").write_text(LOCK.read_text())
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(root), "commit", "-q", "-m", "lock"], check=True)
    cache = tmp_path / "cache"
    # The wheels are there already: what the signal meets is the build, not pip.
    ensure_wheels(read_lock(LOCK, "3.11.2").requirements, cache / "wheels", "3.11.2")
    work = tmp_path / "work"
    env = orch_env(ORCH_WORK_DIR=str(work), ORCH_CACHE=str(cache), ORCH_LEASE_S="30")
    assert bytecode_containers() == []
    proc = start_sweep(root, env, tmp_path, steps=1)
    wait_for(lambda: bool(bytecode_containers()), 120, "the bytecode compiling")
    _signal(proc, signal.SIGINT)
    if how == "twice":
        time.sleep(0.3)
        _signal(proc, signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    err = (tmp_path / "err").read_text()
    assert ("stopping: the environment build finishes (what it makes is cached), then "
            "nothing starts (Ctrl-C again to cancel it)") in err
    layers = cache / "layers"
    built = sorted(p.name for p in layers.glob("pkg-*.json"))
    if how == "once":
        assert len(built) == 6, built  # the five packages and the standard library
        assert "not started" in err.splitlines()[-1]
    else:
        assert "cancelling: stopping the environment build" in err
        assert err.splitlines()[-1] == ("error: environment build cancelled: the layers it "
                                        "finished are cached, a re-submission builds the rest")
    assert bytecode_containers() == []
    assert list(layers.glob(".stage-*")) == []
    assert statuses(root) == {}
    if (root / ".orch" / "runs").is_dir():  # the sweep was planned (once) or not (twice)
        nothing_left(root, work)
    again = run_orch(["sweep", "-p", str(root), "x=1,2,3,4", "steps=1", "--jobs", "2",
                      "--json"], env, timeout=300)
    assert again.returncode == 0, again.stderr
    assert [r["status"] for r in json.loads(again.stdout)["runs"]] == ["succeeded"] * 4
    record_property("faults_survived", 1)
