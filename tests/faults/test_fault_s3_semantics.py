"""S3 servers that differ from AWS in what orch's claims rest on, shown by a proxy in front
of a real SeaweedFS:

- a server that ignores ``If-None-Match: *`` (older or partial implementations): orch
  probes conditional writes once per store and refuses with one ``error:`` line naming the
  store, before any container starts;
- a server whose clock is minutes off the submitter's: lease ages are measured with the
  server's clock on both sides, so a live claim is not taken over (and nothing runs twice).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from faultkit import (
    SLEEPER,
    ContainerStarts,
    StoreView,
    make_project,
    one_error_line,
    orch_env,
    remove_containers,
    run_orch,
    start_orch,
    wait_for,
)
from s3proxy import S3Proxy
from seaweed import admin_client, fresh_bucket, s3_env, shared_seaweed

pytestmark = [pytest.mark.faults, pytest.mark.docker, pytest.mark.s3]


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(shared_seaweed(tmp_path_factory.getbasetemp()))


def test_a_server_ignoring_if_none_match_is_refused(
    tmp_path: Path, base_image: str, endpoint: str,
    record_property: Callable[[str, object], None],
) -> None:
    bucket = fresh_bucket(endpoint)
    root = make_project(tmp_path / "proj", "fault-nocond", base_image)
    with S3Proxy(endpoint, admin=lambda: admin_client(endpoint)) as proxy:
        proxy.ignore_if_none_match = True
        result = run_orch(["sweep", "-p", str(root), "x=range(0,2)", "sleep=0",
                           "--store", f"s3://{bucket}/p"], orch_env(**s3_env(proxy.endpoint),
                                                                    ORCH_LEASE_S="5"), 300)
    assert result.returncode != 0
    line = one_error_line(result.stderr)
    assert f"s3://{bucket}/p" in line and "conditional writes" in line, line
    # refused before any run was claimed, let alone started
    view = StoreView.s3(admin_client(endpoint), bucket, "p")
    assert view.run_files() == {}
    record_property("faults_survived", 1)
    record_property("runs_duplicated", 0)


def test_a_skewed_clock_does_not_take_live_claims_over(
    tmp_path: Path, base_image: str, endpoint: str,
    record_property: Callable[[str, object], None],
) -> None:
    """The second submitter sees a server whose clock is 300 s behind its own (the same as
    a submitter 300 s ahead): measured with its own clock, every live claim looks stale."""
    bucket = fresh_bucket(endpoint)
    root = make_project(tmp_path / "proj", "fault-skew", base_image, job=SLEEPER)
    args = ["sweep", "-p", str(root), "x=range(0,2)", "sleep=8", "--jobs", "2", "--json",
            "--store", f"s3://{bucket}/p"]
    view = StoreView.s3(admin_client(endpoint), bucket, "p")
    plan: list[str] = []
    try:
        with S3Proxy(endpoint) as proxy, ContainerStarts() as starts:
            proxy.clock_shift_s = -300.0
            first = start_orch(args, orch_env(**s3_env(endpoint), ORCH_LEASE_S="4"),
                               tmp_path, "first")
            wait_for(lambda: sum("claim.json" in names for names in view.run_files().values())
                     >= 2 or first.poll() is not None, 240, "the first submitter's two claims")
            time.sleep(1)
            second = start_orch(args, orch_env(**s3_env(proxy.endpoint), ORCH_LEASE_S="4"),
                                tmp_path, "second")
            for proc in (first, second):
                proc.wait(timeout=240)
        for tag, proc in (("first", first), ("second", second)):
            assert proc.returncode == 0, (tmp_path / f"{tag}.err").read_text()
        result = json.loads((tmp_path / "second.out").read_text())
        plan = view.sweep_plan(result["sweep_id"])
        twice = {run_id: n for run_id, n in starts.counts.items() if run_id in plan and n > 1}
        counts = view.count_run_json()
        record_property("runs_duplicated", len(twice))
        record_property("runs_lost", sum(1 for run_id in plan if counts[run_id] == 0))
        assert twice == {}, twice
        assert sorted(counts) == sorted(plan) and set(counts.values()) == {1}
        assert {r["status"] for r in result["runs"]} == {"succeeded"}
        record_property("faults_survived", 1)
    finally:
        remove_containers(plan)
