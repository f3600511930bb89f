"""``orch watch`` from the store alone, and ``orch show`` with earlier attempts.

The unit tests use the in-memory store (counting its requests, to keep refreshes
bounded); the end-to-end ones drive a real ``orch sweep`` on the Docker engine with a
SeaweedFS store and watch it from a second process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from orchestrator.cli import cli
from orchestrator.db.sweepstate import Watcher, estimate_eta
from orchestrator.schema.record import RunRecord, RunStatus, SweepDoc, SweepEntry, iso, now_iso
from orchestrator.store import RunStore, open_store
from orchestrator.store.memory import MemoryStore

ORCH = str(Path(sys.executable).with_name("orch"))
RUN_IDS = ["a1" * 6, "b2" * 6, "c3" * 6, "d4" * 6]


class CountingStore(MemoryStore):
    """A memory store that counts requests by kind."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    def get(self, key: str) -> bytes:
        self.calls["get"] += 1
        return super().get(key)

    def exists(self, key: str) -> bool:
        self.calls["exists"] += 1
        return super().exists(key)

    def age(self, key: str) -> float | None:
        self.calls["age"] += 1
        return super().age(key)

    def list(self, prefix: str) -> Any:
        self.calls["list"] += 1
        return super().list(prefix)


def record(run_id: str, status: RunStatus, duration: float = 10.0, **more: Any) -> RunRecord:
    return RunRecord(run_id=run_id, sweep_id="5e" * 6, status=status, duration_s=duration,
                     overrides=(f"x={run_id[:2]}",), metrics={"loss": 0.5}, **more)


@pytest.fixture
def store() -> tuple[CountingStore, RunStore]:
    """A sweep of four runs: one succeeded, one running (claim + live.json), two queued."""
    memory = CountingStore()
    runs = RunStore(memory)
    runs.write_sweep(SweepDoc(sweep_id="5e" * 6, runs=tuple(
        SweepEntry(run_id, (f"x={run_id[:2]}",)) for run_id in RUN_IDS)))
    runs.commit_run(record(RUN_IDS[0], RunStatus.SUCCEEDED), {})
    assert runs.claims.claim(RUN_IDS[1], "someone", 60)
    runs.write_live(RUN_IDS[1], {
        "run_id": RUN_IDS[1], "status": "running", "attempt": 2,
        "started_at": iso(time.time() - 4), "updated_at": now_iso(),
        "step": 7, "lines": 7, "metrics": {"loss": 0.25, "epoch": 7, "acc": 0.9},
    })
    memory.calls.clear()
    return memory, runs


def test_a_snapshot_shows_every_run_with_its_state(store: tuple[CountingStore, RunStore]) -> None:
    _, runs = store
    snapshot = Watcher(runs, "5e" * 6, lease_s=60).refresh()
    by_id = {run.run_id: run for run in snapshot.runs}
    assert [run.run_id for run in snapshot.runs] == RUN_IDS
    assert by_id[RUN_IDS[0]].status == "succeeded" and by_id[RUN_IDS[0]].elapsed_s == 10.0
    running = by_id[RUN_IDS[1]]
    assert running.status == "running" and running.attempt == 2 and running.step == 7
    assert running.metrics["loss"] == 0.25 and 3 < (running.elapsed_s or 0) < 30
    assert {by_id[r].status for r in RUN_IDS[2:]} == {"queued"}
    assert snapshot.counts == {"queued": 2, "running": 1, "succeeded": 1}
    assert snapshot.active and snapshot.unsuccessful == 0
    assert "epoch" not in snapshot.metrics and {"loss", "acc"} <= set(snapshot.metrics)
    # 10 s mean: the running run has ~6 s left, the queued ones follow on its slot.
    assert snapshot.eta_s is not None and 20 < snapshot.eta_s < 30


def test_refreshes_read_only_what_can_change(store: tuple[CountingStore, RunStore]) -> None:
    memory, runs = store
    watcher = Watcher(runs, "5e" * 6, lease_s=60)
    watcher.refresh()
    memory.calls.clear()
    watcher.refresh()
    # Three incomplete runs: run.json exists?, live.json, claim age. Nothing else, no list.
    assert memory.calls == Counter({"exists": 3, "get": 3, "age": 3})
    runs.commit_run(record(RUN_IDS[1], RunStatus.FAILED, reason="exit code 1"), {})
    runs.delete_live(RUN_IDS[1])
    memory.calls.clear()
    snapshot = watcher.refresh()
    assert snapshot.runs[1].status == "failed" and snapshot.unsuccessful == 1
    memory.calls.clear()
    watcher.refresh()
    # The failed run costs one existence check: a re-submission may be retrying it.
    assert memory.calls == Counter({"exists": 3, "get": 2, "age": 2})
    failed = runs.read_run(RUN_IDS[1])
    assert runs.set_aside_attempt(failed)  # what a re-submission does before attempt 2
    assert watcher.refresh().runs[1].status == "queued"


def test_a_stale_live_state_without_a_claim_is_queued(
    store: tuple[CountingStore, RunStore],
) -> None:
    memory, runs = store
    memory.touch(f"runs/{RUN_IDS[1]}/claim.json", 120)
    runs.write_live(RUN_IDS[1], {"updated_at": iso(time.time() - 300), "step": 3})
    snapshot = Watcher(runs, "5e" * 6, lease_s=60).refresh()
    assert snapshot.runs[1].status == "queued"


def test_eta_needs_a_finished_run() -> None:
    assert estimate_eta([], [3.0], 2) is None
    assert estimate_eta([10.0], [], 0) == 0.0
    assert estimate_eta([10.0, 20.0], [5.0, 5.0], 2) == pytest.approx(25.0)  # 2 slots


def test_watch_once_prints_plain_lines(store: tuple[CountingStore, RunStore],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    _, runs = store
    monkeypatch.setattr("orchestrator.cli.context.Context.runs", lambda self: runs)
    result = CliRunner().invoke(cli, ["watch", "5e" * 6, "--once"], catch_exceptions=False,
                                standalone_mode=False)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"sweep {'5e' * 6}: 1/4 done (2 queued, 1 running, 1 succeeded)")
    assert "; eta " in lines[0]
    assert lines[2].startswith(f"{RUN_IDS[1]} running attempt=2 step=7 elapsed=")
    assert "loss=0.25" in lines[2] and "overrides=x=b2" in lines[2]
    assert lines[3].startswith(f"{RUN_IDS[2]} queued attempt=1 step=- elapsed=-")


def test_watch_ends_with_1_when_a_run_failed(tmp_path: Path, orch: Callable[..., Any]) -> None:
    runs = RunStore(open_store(str(tmp_path / "store"), project_dir=tmp_path))
    runs.write_sweep(SweepDoc(sweep_id="5e" * 6, runs=(SweepEntry(RUN_IDS[0]),
                                                       SweepEntry(RUN_IDS[1]))))
    runs.commit_run(record(RUN_IDS[0], RunStatus.SUCCEEDED), {})
    runs.commit_run(record(RUN_IDS[1], RunStatus.FAILED, reason="exit code 3"), {})
    proc = orch("watch", "5e" * 6, "--store", str(tmp_path / "store"), "--interval", "0.1")
    assert proc.returncode == 1, proc.stderr
    assert "reason=exit code 3" in proc.stdout
    assert proc.stderr.strip() == f"error: sweep {'5e' * 6}: 1 run(s) failed or cancelled"


def test_show_lists_earlier_attempts(tmp_path: Path, orch: Callable[..., Any]) -> None:
    uri = str(tmp_path / "store")
    runs = RunStore(open_store(uri, project_dir=tmp_path))
    first = record(RUN_IDS[0], RunStatus.FAILED, reason="exit code 137", exit_code=137,
                   ended_at="2026-11-27T23:00:00.000Z")
    runs.commit_run(first, {"stdout.log": b"first\n"})
    assert runs.set_aside_attempt(first)
    runs.commit_run(record(RUN_IDS[0], RunStatus.SUCCEEDED, attempt=2, resumed_from_attempt=1),
                    {"stdout.log": b"second\n"})

    proc = orch("show", RUN_IDS[0], "--store", uri, "--json")
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    assert shown["status"] == "succeeded" and shown["attempt"] == 2
    assert shown["resumed_from_attempt"] == 1
    assert shown["attempts"] == [{
        "attempt": 1, "status": "failed", "reason": "exit code 137", "exit_code": 137,
        "started_at": None, "ended_at": "2026-11-27T23:00:00.000Z",
    }]
    as_yaml = orch("show", RUN_IDS[0], "--store", uri)
    assert as_yaml.returncode == 0, as_yaml.stderr
    import yaml

    assert yaml.safe_load(as_yaml.stdout)["attempts"] == shown["attempts"]
    assert as_yaml.stdout.rstrip().endswith("ended_at: '2026-11-27T23:00:00.000Z'")

    single = orch("show", RUN_IDS[1][:4], "--store", uri, "--json")  # unknown: still an error
    assert single.returncode == 2


# --------------------------------------------------------------------------- end to end

SLOW_STEPS = """
import json, os, sys, time
out = os.path.join(os.environ["ORCH_OUTPUT"], "metrics.jsonl")
for step in range(1, 13):
    with open(out, "a") as f:
        f.write(json.dumps({"step": step, "loss": 1.0 / step}) + "\\n")
    print(f"line {step}", flush=True)
    print(f"err {step}", file=sys.stderr, flush=True)
    time.sleep(0.5)
"""


def _wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> str:
    from seaweed import shared_seaweed

    return shared_seaweed(tmp_path_factory.getbasetemp())


@pytest.mark.docker
def test_watch_sees_a_run_progress_from_another_process(
    make_project: Callable[..., Path], orch: Callable[..., Any], seaweed: str
) -> None:
    from seaweed import fresh_bucket, s3_client, s3_env

    root = make_project("watched", files={"slow.py": SLOW_STEPS,
                                          "configs/config.yaml": "x: 1\n"},
                        command=["python3", "slow.py"])
    env = {**os.environ, **s3_env(seaweed), "ORCH_LIVE_S": "0.5"}
    bucket = fresh_bucket(seaweed)
    uri = f"s3://{bucket}/watch"
    sweep = subprocess.Popen([ORCH, "sweep", "-p", str(root), "--store", uri, "x=1,2", "--json"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        client = s3_client(seaweed)

        def sweep_doc() -> list[str]:
            listed = client.list_objects_v2(Bucket=bucket, Prefix="watch/sweeps/")
            keys = [item["Key"] for item in listed.get("Contents", [])]
            return [k for k in keys if k.endswith(".json") and not k.endswith(".index.json")]

        (key,) = _wait_for(sweep_doc, 120, "the sweep document")
        sweep_id = key.rsplit("/", 1)[1].removesuffix(".json")

        def progressed() -> str | None:
            proc = orch("watch", sweep_id, "--store", uri, "--once", env=env)
            assert proc.returncode == 0, proc.stderr
            running = [line for line in proc.stdout.splitlines()[1:] if " running " in line]
            stepped = [line for line in running if "step=-" not in line]
            return stepped[0] if stepped else None

        line = _wait_for(progressed, 60, "a running run with a step")
        step = int(line.split("step=")[1].split()[0])
        assert 0 < step < 12 and "loss=" in line and "attempt=1" in line
        # Until the end: it exits by itself, 0, once the sweep is done.
        watched = orch("watch", sweep_id, "--store", uri, "--interval", "0.3", env=env,
                       timeout=180)
        out, err = sweep.communicate(timeout=120)
    finally:
        sweep.kill()
    assert sweep.returncode == 0, err
    assert watched.returncode == 0, watched.stderr
    last = watched.stdout.strip().splitlines()[-3:]
    assert last[0].startswith(f"sweep {sweep_id}: 2/2 done (2 succeeded)")
    assert all(" succeeded attempt=1 step=- " in line and "loss=0.0833333" in line
               for line in last[1:])


@pytest.mark.docker
def test_logs_follow_prints_each_line_once(make_project: Callable[..., Path],
                                           orch: Callable[..., Any]) -> None:
    root = make_project("followed", files={"slow.py": SLOW_STEPS,
                                           "configs/config.yaml": "x: 1\n"},
                        command=["python3", "slow.py"])
    sweep = subprocess.Popen([ORCH, "sweep", "-p", str(root), "--json"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        runs = root / ".orch" / "runs"
        claim = _wait_for(lambda: list(runs.glob("*/claim.json")), 120, "a claimed run")
        run_id = claim[0].parent.name
        _wait_for(lambda: subprocess.run(
            ["docker", "ps", "-q", "--filter", f"label=org.orch.run_id={run_id}"],
            capture_output=True, text=True).stdout.strip(), 60, "the run's container")
        followed = orch("logs", "-f", run_id[:8], "-p", str(root), timeout=120)
        sweep.communicate(timeout=120)
    finally:
        sweep.kill()
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout == "".join(f"line {i}\n" for i in range(1, 13))
    assert followed.stderr == "".join(f"err {i}\n" for i in range(1, 13))
    assert (runs / run_id / "stdout.log").read_text() == followed.stdout
    again = orch("logs", "-f", run_id, "-p", str(root))  # complete: the stored logs, once
    assert again.stdout == followed.stdout and again.stderr == followed.stderr


@pytest.mark.docker
def test_logs_follow_waits_for_a_queued_run(make_project: Callable[..., Path],
                                            orch: Callable[..., Any]) -> None:
    """`orch logs -f` on a run still queued behind another (--jobs 1) waits for it to start
    and prints all of it, once."""
    root = make_project("queuedfollow", files={"slow.py": SLOW_STEPS,
                                               "configs/config.yaml": "x: 1\n"},
                        command=["python3", "slow.py"])
    sweep = subprocess.Popen([ORCH, "sweep", "-p", str(root), "x=1,2", "--jobs", "1",
                              "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        runs = root / ".orch" / "runs"
        first = _wait_for(lambda: list(runs.glob("*/claim.json")), 120, "a claimed run")
        docs = list((root / ".orch" / "sweeps").glob("*[0-9a-f].json"))
        planned = [entry["run_id"] for entry in json.loads(docs[0].read_text())["runs"]]
        queued = next(run_id for run_id in planned if run_id != first[0].parent.name)
        assert not (runs / queued / "claim.json").exists()
        followed = orch("logs", "-f", queued[:8], "-p", str(root), timeout=180)
        out, err = sweep.communicate(timeout=120)
    finally:
        sweep.kill()
    assert sweep.returncode == 0, err
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout == "".join(f"line {i}\n" for i in range(1, 13))
    assert followed.stderr == "".join(f"err {i}\n" for i in range(1, 13))
    assert (runs / queued / "stdout.log").read_text() == followed.stdout


def test_following_a_queued_run_stops_when_no_live_submission_will_run_it(
    tmp_path: Path,
) -> None:
    """A queued run is waited for while its sweep's submission is alive: the open marker
    younger than the lease, or a run of the sweep claimed. Once neither holds (a killed
    submitter), the follower returns instead of waiting for ever."""
    from orchestrator.runner.logs import follow
    from orchestrator.store.dir import DirStore

    runs = RunStore(DirStore(tmp_path / "store"))
    runs.write_sweep(SweepDoc(sweep_id="5f" * 6,
                              runs=(SweepEntry("aaaa1111"), SweepEntry("bbbb2222"))))
    marker = next((tmp_path / "store" / "sweeps").glob("5f5f5f5f5f5f.open-*"))

    def age_marker() -> None:
        os.utime(marker, (time.time() - 120, time.time() - 120))

    def polls_until(change: Callable[[], None]) -> int:
        """Follow the queued run; ``change`` happens at the third look for its container;
        the looks made."""
        polls = 0

        class Daemon:  # no container of the run, ever
            class api:  # noqa: N801 - the docker client's attribute
                @staticmethod
                def containers(**_: Any) -> list[Any]:
                    nonlocal polls
                    polls += 1
                    if polls == 3:
                        change()
                    return []

        printed = follow(runs, Daemon, "bbbb", lambda chunk: None, lease_s=60, poll_s=0.01,
                         check_s=0.0)
        assert printed.stdout == 0
        return polls

    # A fresh marker: waited for until the marker is old (the submitter died).
    assert polls_until(age_marker) == 3
    # An old marker, but the sweep's other run is claimed: waited for until it is released.
    assert runs.claims.claim("aaaa1111", "someone", lease_s=60)
    assert polls_until(lambda: runs.claims.release("aaaa1111")) == 3
    # Neither: it returns at once.
    assert polls_until(lambda: None) == 1
