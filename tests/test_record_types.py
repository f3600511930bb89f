"""The typed records: what run.json and sweeps/<id>.json hold, read strictly and kept whole."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.errors import StoreError
from orchestrator.schema.record import (
    SCHEMA,
    CorruptRecord,
    Enforced,
    Layers,
    PrefixImages,
    RunPlan,
    RunRecord,
    RunResources,
    RunStatus,
    SweepDoc,
    SweepEntry,
)
from orchestrator.store import MemoryStore, RunStore

PLAN = RunPlan(
    run_id="3f2a9c1b7d4e",
    sweep_id="9b1c0e2d4f6a",
    project="demo",
    overrides=("optimizer=SGD",),
    config={"optimizer": {"name": "SGD", "lr": 0.01}},
    image_id="sha256:" + "a" * 64,
    base_image="sha256:" + "b" * 64,
    base_ref="sha256:" + "b" * 64,
    images=PrefixImages("sha256:" + "b" * 64, "sha256:" + "c" * 64, "sha256:" + "d" * 64),
    layers=Layers(("sha256:" + "1" * 64,), ("sha256:" + "2" * 64,), "sha256:" + "3" * 64,
                  "sha256:" + "4" * 64),
    command=("python3", "train.py"),
    env={"ORCH_RUN_ID": "3f2a9c1b7d4e"},
    resources=RunResources(cpus=2, gpus=1, memory="2g", timeout=60),
)


def finished(**outcome: object) -> RunRecord:
    defaults: dict[str, object] = {"status": RunStatus.SUCCEEDED, "metrics": {"loss": 0.5}}
    return RunRecord.finish(PLAN, **{**defaults, **outcome})


def test_round_trip_through_json_is_exact() -> None:
    record = finished(gpus=("0",), node="n1", exit_code=0, artifacts=("model.txt",))
    data = json.loads(json.dumps(record.to_json()))
    assert RunRecord.from_json(data) == record
    assert data["schema"] == SCHEMA and data["status"] == "succeeded"
    assert data["layers"]["base"] == ["sha256:" + "1" * 64]


def test_the_documented_fields_are_written() -> None:
    data = finished().to_json()
    documented = {
        "schema", "run_id", "sweep_id", "project", "status", "reason", "overrides", "config",
        "image_id", "repo_digest", "base_image", "base_ref", "images", "layers", "env_key",
        "code_key", "command", "env", "resources", "network", "git_commit", "git_tree",
        "dirty", "pinned", "exit_code", "started_at", "ended_at", "duration_s", "host",
        "node", "gpus", "metrics", "artifacts", "attempt", "inputs",
    }
    assert set(data) == documented
    assert "gpus_simulated" not in data and "rerun_of" not in data
    assert finished(gpus_simulated=True).to_json()["gpus_simulated"] is True


def test_fields_of_a_newer_schema_are_kept_on_a_rewrite() -> None:
    data = {**finished().to_json(), "schema": SCHEMA + 1, "lineage": {"parent": "x"}}
    record = RunRecord.from_json(data)
    assert record.extra == {"lineage": {"parent": "x"}}
    assert record.to_json() == data


def test_a_plan_drops_everything_the_run_observed() -> None:
    record = finished(gpus=("0", "1"), gpus_simulated=True, node="n1", host="h")
    plan = record.plan()
    assert type(plan) is RunPlan
    assert plan == PLAN
    assert not any(hasattr(plan, name) for name in ("gpus_simulated", "node", "metrics"))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"status": "exploded"}, "status"),
        ({"status": None}, "status"),
        ({"run_id": 7}, "run_id"),
        ({"metrics": {"loss": "low"}}, "metrics"),
        ({"metrics": [1, 2]}, "metrics"),
        ({"overrides": "a=1"}, "overrides"),
        ({"exit_code": True}, "exit_code"),
        ({"gpus": [0]}, "gpus"),
        ({"resources": {"cpus": "many"}}, "cpus"),
        ({"layers": {"base": "sha256:x"}}, "base"),
        ({"network": "host"}, "network"),  # a rerun must never start it on the host network
    ],
)
def test_a_corrupt_field_is_named(change: dict[str, object], field: str) -> None:
    data = {**finished().to_json(), **change}
    with pytest.raises(CorruptRecord) as info:
        RunRecord.from_json(data, "s3://b/runs/x/run.json")
    message = str(info.value)
    assert f"'{field}'" in message and "s3://b/runs/x/run.json" in message
    assert isinstance(info.value, StoreError)


def test_records_of_older_writers_read_with_defaults() -> None:
    record = RunRecord.from_json({"run_id": "abc", "status": "failed"})
    assert record.status is RunStatus.FAILED and record.metrics == {} and record.layers is None


def test_store_reports_corrupt_run_json_with_its_key() -> None:
    runs = RunStore(MemoryStore())
    runs.store.put("runs/abc/run.json", b"")
    with pytest.raises(CorruptRecord, match="runs/abc/run.json"):
        runs.read_run("abc")
    runs.store.put("runs/abc/run.json", b'{"run_id": "abc", "status": 3}')
    with pytest.raises(CorruptRecord, match="'status'"):
        runs.read_run("abc")


def test_sweep_doc_round_trip_and_run_ids() -> None:
    doc = SweepDoc(sweep_id="s1", project="demo", created_at="2026-12-01T00:00:00.000Z",
                   args=("x=1,2",), runs=(SweepEntry("r1", ("x=1",)), SweepEntry("r2", ("x=2",))))
    assert SweepDoc.from_json(json.loads(json.dumps(doc.to_json()))) == doc
    assert doc.run_ids == ["r1", "r2"]
    with pytest.raises(CorruptRecord, match="runs"):
        SweepDoc.from_json({**doc.to_json(), "runs": [{"overrides": []}]})


def test_status_is_the_documented_set() -> None:
    assert [s.value for s in RunStatus] == [
        "queued", "running", "succeeded", "failed", "cancelled", "pruned"]
    assert not RunStatus.RUNNING.finished and RunStatus.CANCELLED.finished


_json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                          st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8))
_configs = st.recursive(_json_scalars, lambda inner: st.dictionaries(
    st.text(min_size=1, max_size=6), inner, max_size=4), max_leaves=12)


@given(config=st.dictionaries(st.text(min_size=1, max_size=6), _configs, max_size=5),
       metrics=st.dictionaries(st.text(min_size=1, max_size=6),
                               st.floats(allow_nan=False, allow_infinity=False), max_size=4))
def test_any_config_and_metrics_round_trip(config: dict[str, object],
                                           metrics: dict[str, float]) -> None:
    record = dataclasses.replace(finished(metrics=metrics), config=config)
    assert RunRecord.from_json(json.loads(json.dumps(record.to_json()))) == record


ENFORCED = Enforced(engine="Docker 20.10.24", pids=4096, memory=256 << 20, cpus=0.5,
                    tmpfs={"/tmp": "size=1g,mode=1777"}, read_only_root=True)


def test_what_was_enforced_round_trips_and_older_records_read_without_it() -> None:
    record = finished(enforced=ENFORCED)
    data = json.loads(json.dumps(record.to_json()))
    assert data["enforced"] == {"engine": "Docker 20.10.24", "pids": 4096, "memory": 256 << 20,
                                "cpus": 0.5, "tmpfs": {"/tmp": "size=1g,mode=1777"},
                                "read_only_root": True, "note": ""}
    assert RunRecord.from_json(data) == record
    older = finished().to_json()
    assert "enforced" not in older
    assert RunRecord.from_json(older).enforced is None
    with pytest.raises(CorruptRecord, match="enforced"):
        RunRecord.from_json({**data, "enforced": {**data["enforced"], "pids": "many"}})


def test_process_and_scratch_limits_are_kept_only_when_set() -> None:
    assert "pids" not in RunResources().to_json() and "tmp" not in RunResources().to_json()
    asked = RunResources(pids=64, tmp="16m")
    assert RunResources.from_json(asked.to_json(), "r") == asked
    # the size becomes a tmpfs option: a record cannot smuggle other options in
    with pytest.raises(CorruptRecord, match="tmp"):
        RunResources.from_json({"tmp": "1g,exec,suid"}, "r")
