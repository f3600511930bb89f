"""Runs that fail (exit code, OOM killer, timeout) and a Docker daemon that is not there.

A failed run is a result: it is recorded as failed with its reason and its logs, the
sweep goes on with the other runs and exits 1. An unreachable daemon is an environment
error: one ``error:`` line, exit 2, nothing stored.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from faultkit import (
    RUN_FILES,
    StoreView,
    make_project,
    one_error_line,
    orch_env,
    remove_containers,
    run_orch,
)

pytestmark = pytest.mark.faults

MISBEHAVING = """\
import json, os, sys, time
cfg = json.load(open("/orch/config.json"))
mode = cfg["mode"]
print("mode", mode, "starting", flush=True)
print("a line on stderr", file=sys.stderr, flush=True)
if mode == "exit":
    print("failing on purpose", flush=True)
    sys.exit(7)
if mode == "oom":
    hog = bytearray(500 * 1024 * 1024)  # zero-filled: every page is touched
    print("allocated", len(hog), flush=True)
if mode == "timeout":
    time.sleep(30)
json.dump({"ok": 1}, open(os.path.join(os.environ["ORCH_OUTPUT"], "metrics.json"), "w"))
"""

REASONS = {
    "exit": "exit code 7",
    "oom": "killed: out of memory",
    "timeout": "timeout after 3s",
}


@pytest.mark.docker
def test_failed_runs_are_recorded_and_the_sweep_goes_on(
        tmp_path: Path, base_image: str, record_property: Callable[[str, object], None]) -> None:
    root = make_project(tmp_path / "proj", "fault-fail", base_image, job=MISBEHAVING,
                        config="mode: ok\n", resources={"memory": "64m"}, timeout=3)
    proc = run_orch(["sweep", "-p", str(root), "mode=exit,oom,timeout,ok", "--jobs", "2",
                     "--json"], orch_env(), timeout=300)
    view = StoreView.directory(root / ".orch")
    try:
        assert proc.returncode == 1, proc.stderr
        result = json.loads(proc.stdout)
        runs = {r["overrides"][0].split("=")[1]: r for r in result["runs"]}
        records = view.recorded()
        files = view.run_files()
        assert runs["ok"]["status"] == "succeeded" and runs["ok"]["metrics"] == {"ok": 1}
        for mode, reason in REASONS.items():
            run = runs[mode]
            record = records[run["run_id"]]
            assert run["status"] == "failed", (mode, run)
            assert record["status"] == "failed" and record["reason"] == reason, (mode, record)
            assert RUN_FILES <= files[run["run_id"]], (mode, files[run["run_id"]])
            stdout = (root / ".orch" / "runs" / run["run_id"] / "stdout.log").read_text()
            stderr = (root / ".orch" / "runs" / run["run_id"] / "stderr.log").read_text()
            assert f"mode {mode} starting" in stdout, (mode, stdout)
            assert "a line on stderr" in stderr, (mode, stderr)
        assert records[runs["exit"]["run_id"]]["exit_code"] == 7
        assert records[runs["oom"]["run_id"]]["exit_code"] == 137
        assert "allocated" not in (root / ".orch" / "runs" / runs["oom"]["run_id"]
                                   / "stdout.log").read_text()
        assert records[runs["timeout"]["run_id"]]["duration_s"] < 15
        assert view.half_written() == []
        record_property("runs_lost", sum(1 for r in result["runs"] if r["run_id"] not in records))
        record_property("faults_survived", len(REASONS))
    finally:
        remove_containers(r["run_id"] for r in json.loads(proc.stdout or '{"runs": []}')["runs"])


@pytest.mark.parametrize("host", ["unix:///nonexistent.sock", "tcp://127.0.0.1:9"])
def test_unreachable_docker_daemon(tmp_path: Path, host: str,
                                   record_property: Callable[[str, object], None]) -> None:
    root = make_project(tmp_path / "proj", "fault-nodocker", "sha256:" + "c" * 64)
    env = orch_env(DOCKER_HOST=host)
    for args in (["sweep", "-p", str(root), "x=1,2"],
                 ["sweep", "-p", str(root), "x=1", "--json"],
                 ["rerun", "-p", str(root), "abc123"],
                 ["image", "ls"]):
        proc = run_orch(args, env, timeout=60)
        assert proc.returncode == 2, (args, proc.stderr)
        line = one_error_line(proc.stderr)
        assert "cannot reach the Docker daemon" in line and host in line, line
        assert proc.stdout == ""
    assert not (root / ".orch").exists()
    record_property("faults_survived", 1)
