"""Commits that go wrong on the way to ``run.json``, shown by a proxy in front of a real
SeaweedFS and real containers:

- a commit slower than the lease (an output upload held up): the claim is renewed until
  ``run.json`` is written, so a second submitter waits instead of running the run again,
  and ``orch gc`` beside it removes nothing of the run still committing;
- a submitter killed while its image's blobs are still uploading: no record is written
  before every blob it names is stored, and a re-submission uploads again what a record
  names and the store lacks;
- a store outage longer than the retry budget at commit: the finished run stays on disk
  and the next submission commits it instead of running it again.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from faultkit import (
    ContainerStarts,
    StoreView,
    make_project,
    orch_env,
    remove_containers,
    run_orch,
    start_orch,
    wait_for,
)
from s3proxy import S3Proxy
from seaweed import admin_client, fresh_bucket, s3_env, shared_seaweed

pytestmark = [pytest.mark.faults, pytest.mark.docker, pytest.mark.s3]

#: A run with an output file of ``kb`` KiB that sleeps ``sleep`` seconds.
WRITER = """\
import json, os, time
cfg = json.load(open("/orch/config.json"))
out = os.environ["ORCH_OUTPUT"]
with open(os.path.join(out, "blob.bin"), "wb") as handle:
    handle.write(os.urandom(cfg["kb"] * 1024))
time.sleep(cfg["sleep"])
json.dump({"x": cfg["x"]}, open(os.path.join(out, "metrics.json"), "w"))
"""
CONFIG = "x: 0\nsleep: 0\nkb: 64\n"


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(shared_seaweed(tmp_path_factory.getbasetemp()))


def _blobs_missing(client: Any, bucket: str, records: dict[str, dict[str, Any]]) -> list[str]:
    """Blobs the records name (image, layers, prefix images) that the bucket lacks."""
    present = {key.rsplit("/", 1)[1] for key in StoreView.s3(client, bucket, "p")._keys()
               if key.startswith("blobs/sha256/")}
    missing = []
    for record in records.values():
        layers = record.get("layers") or {}
        images = record.get("images") or {}
        names = [record["image_id"], *layers.get("base", []), *layers.get("env", []),
                 layers.get("code"), layers.get("config"), images.get("env"), images.get("code")]
        missing += [f"{record['run_id']}: {d}" for d in names
                    if d and d.split(":")[1] not in present]
    return missing


def test_a_commit_slower_than_the_lease_is_not_taken_over(
    tmp_path: Path, base_image: str, endpoint: str,
    record_property: Callable[[str, object], None],
) -> None:
    bucket = fresh_bucket(endpoint)
    root = make_project(tmp_path / "proj", "fault-slowcommit", base_image, job=WRITER,
                        config=CONFIG)
    store = f"s3://{bucket}/p"
    args = ["sweep", "-p", str(root), "x=0", "--json", "--store", store]
    view = StoreView.s3(admin_client(endpoint), bucket, "p")
    plan: list[str] = []
    try:
        with S3Proxy(endpoint) as proxy, ContainerStarts() as starts:
            proxy.delay(r"^PUT /[^ ]*/runs/[^/]+/output/blob\.bin$", 10.0)  # lease: 3 s
            first = start_orch(args, orch_env(**s3_env(proxy.endpoint), ORCH_LEASE_S="3"),
                               tmp_path, "first")
            wait_for(lambda: proxy.count(r"output/blob\.bin$") > 0 or first.poll() is not None,
                     240, "the first submitter's output upload")
            second = start_orch(args, orch_env(**s3_env(endpoint), ORCH_LEASE_S="3"),
                                tmp_path, "second")
            time.sleep(5)  # past the lease, the upload still held up
            gc = run_orch(["gc", "-v", "--store", store, "-p", str(root)],
                          orch_env(**s3_env(endpoint), ORCH_LEASE_S="3"), 120)
            for proc in (first, second):
                proc.wait(timeout=240)
        for tag, proc in (("first", first), ("second", second)):
            assert proc.returncode == 0, (tmp_path / f"{tag}.err").read_text()
        assert gc.returncode == 0, gc.stderr
        assert "runs/" not in gc.stdout, gc.stdout  # nothing of the committing run
        result = json.loads((tmp_path / "first.out").read_text())
        plan = view.sweep_plan(result["sweep_id"])
        counts = view.count_run_json()
        started = {run_id: starts.counts[run_id] for run_id in plan}
        record_property("runs_duplicated", sum(max(0, n - 1) for n in started.values()))
        record_property("runs_lost", sum(1 for run_id in plan if counts[run_id] == 0))
        assert started == dict.fromkeys(plan, 1), started
        assert view.half_written() == []
        assert set(counts.values()) == {1}
        (record,) = view.recorded().values()
        assert view.outputs(plan[0]) == ["blob.bin"] and record["status"] == "succeeded"
        assert "claim.json" not in view.run_files()[plan[0]]  # released by its owner
        second_result = json.loads((tmp_path / "second.out").read_text())
        assert [r["status"] for r in second_result["runs"]] == ["succeeded"]
        record_property("faults_survived", 1)
    finally:
        remove_containers(plan)


def test_no_record_before_its_blobs_and_a_resubmission_repairs(
    tmp_path: Path, base_image: str, endpoint: str,
    record_property: Callable[[str, object], None],
) -> None:
    bucket = fresh_bucket(endpoint)
    client = admin_client(endpoint)
    root = make_project(tmp_path / "proj", "fault-blobs", base_image, job=WRITER,
                        config=CONFIG)
    store = f"s3://{bucket}/p"
    args = ["sweep", "-p", str(root), "x=range(0,2)", "--json", "--store", store]
    view = StoreView.s3(client, bucket, "p")
    plan: list[str] = []
    try:
        with S3Proxy(endpoint) as proxy, ContainerStarts() as starts:
            proxy.hold(r"^PUT /[^ ]*/blobs/sha256/")
            first = start_orch(args, orch_env(**s3_env(proxy.endpoint), ORCH_LEASE_S="5"),
                               tmp_path, "first")
            wait_for(lambda: proxy.count(r"^PUT .*/stdout\.log$") >= 2
                     or first.poll() is not None, 240, "both runs' commits")
            time.sleep(3)  # today's orch writes run.json within milliseconds of the logs
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=30)
            proxy.release(drop=True)
            recorded_before = set(view.recorded())
            missing = _blobs_missing(client, bucket, view.recorded())
            assert missing == [], missing  # no record names a blob the store lacks

            again = run_orch(args, orch_env(**s3_env(endpoint), ORCH_LEASE_S="5"), 300)
            assert again.returncode == 0, again.stderr
            result = json.loads(again.stdout)
            plan = view.sweep_plan(result["sweep_id"])
            assert {r["status"] for r in result["runs"]} <= {"succeeded", "skipped"}
            records = view.recorded()
            assert sorted(records) == sorted(plan)
            assert _blobs_missing(client, bucket, records) == []

            # A blob gone from under a record (a full disk, a hand, an older orch): the
            # next submission skips the run and uploads the blob again.
            lost = records[plan[0]]["layers"]["config"]
            client.delete_object(Bucket=bucket, Key=f"p/blobs/sha256/{lost.split(':')[1]}")
            repair = run_orch(args, orch_env(**s3_env(endpoint), ORCH_LEASE_S="5"), 300)
            assert repair.returncode == 0, repair.stderr
            assert {r["status"] for r in json.loads(repair.stdout)["runs"]} == {"skipped"}
            assert _blobs_missing(client, bucket, view.recorded()) == []
        again_run = {run_id for run_id in recorded_before if starts.counts[run_id] > 1}
        counts = view.count_run_json()
        record_property("runs_duplicated", len(again_run))
        record_property("runs_lost", sum(1 for run_id in plan if counts[run_id] == 0))
        assert again_run == set()
        assert view.half_written() == []
        record_property("faults_survived", 2)
    finally:
        remove_containers(plan)


def test_a_finished_run_survives_an_outage_at_commit(
    tmp_path: Path, base_image: str, endpoint: str,
    record_property: Callable[[str, object], None],
) -> None:
    bucket = fresh_bucket(endpoint)
    root = make_project(tmp_path / "proj", "fault-outage-commit", base_image, job=WRITER,
                        config=CONFIG)
    work = tmp_path / "work"
    env = {"ORCH_LEASE_S": "4", "ORCH_S3_RETRY_S": "2", "ORCH_WORK_DIR": str(work)}
    args = ["sweep", "-p", str(root), "x=0", "sleep=4", "--json", "--store",
            f"s3://{bucket}/p"]
    view = StoreView.s3(admin_client(endpoint), bucket, "p")
    plan: list[str] = []
    try:
        with S3Proxy(endpoint) as proxy, ContainerStarts() as starts:
            first = start_orch(args, orch_env(**s3_env(proxy.endpoint), **env), tmp_path,
                               "first")
            wait_for(lambda: proxy.count(r"^PUT .*/claim\.json$") > 0
                     or first.poll() is not None, 240, "the run's claim")
            time.sleep(1)
            proxy.down = True  # until after the run ends: its commit fails
            first.wait(timeout=240)
            err = (tmp_path / "first.err").read_text()
            assert first.returncode != 0, err
            assert [line for line in err.splitlines() if line.startswith("error:")], err
            assert view.count_run_json() == {}
            assert any((work / "pending").iterdir())  # the finished run, kept
            proxy.down = False
            again = run_orch(args, orch_env(**s3_env(proxy.endpoint), **env), 240)
        assert again.returncode == 0, again.stderr
        result = json.loads(again.stdout)
        plan = view.sweep_plan(result["sweep_id"])
        started = {run_id: starts.counts[run_id] for run_id in plan}
        counts = view.count_run_json()
        record_property("runs_duplicated", sum(max(0, n - 1) for n in started.values()))
        record_property("runs_lost", sum(1 for run_id in plan if counts[run_id] == 0))
        assert started == dict.fromkeys(plan, 1), started  # committed, not run again
        assert [r["status"] for r in result["runs"]] == ["succeeded"]
        (record,) = view.recorded().values()
        assert view.outputs(record["run_id"]) == ["blob.bin"] and record["metrics"] == {"x": 0}
        assert record["outputs"]["files"] == 1 and record["outputs"]["bytes"] == 64 * 1024
        assert view.half_written() == []
        assert not any((work / "pending").iterdir())
        record_property("faults_survived", 1)
    finally:
        remove_containers(plan)
