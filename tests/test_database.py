"""The store as a database of every experiment: results and best across sweeps, names,
tags and notes, SQL, the catalog under concurrent writers, gc, and export to MLflow.

Stores are filled through :class:`RunStore` (the writers' own API), on a directory and
on a real SeaweedFS; the commands are driven through the CLI.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from seaweed import admin_client, fresh_bucket, s3_env, shared_seaweed

from orchestrator.cli import cli
from orchestrator.db.catalog import Catalog
from orchestrator.schema.record import RunRecord, SweepDoc
from orchestrator.store import DirStore, RunStore
from orchestrator.store.labels import change, read_labels
from orchestrator.store.s3 import S3Store


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> str:
    return shared_seaweed(tmp_path_factory.getbasetemp())


class Where:
    """A store to fill and the CLI arguments/environment that reach it."""

    def __init__(self, runs: RunStore, uri: str, env: dict[str, str]) -> None:
        self.runs, self.uri, self.env = runs, uri, env

    def orch(self, *args: str, code: int = 0) -> str:
        result = CliRunner().invoke(cli, [*args, "--store", self.uri], env=self.env)
        assert result.exit_code == code, (args, result.stdout, result.stderr)
        return result.stdout if code == 0 else result.stderr

    def refused(self, *args: str) -> str:
        err = self.orch(*args, code=2)
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), err
        return lines[0]


@pytest.fixture(params=["dir", pytest.param("s3", marks=pytest.mark.s3)])
def where(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
          ) -> Where:
    monkeypatch.chdir(tmp_path)  # outside any project: the whole store
    if request.param == "dir":
        root = tmp_path / "store"
        return Where(RunStore(DirStore(root)), str(root), {})
    endpoint = request.getfixturevalue("seaweed")
    bucket = fresh_bucket(endpoint)
    store = S3Store(admin_client(endpoint), bucket, "db")
    return Where(RunStore(store), f"s3://{bucket}/db", s3_env(endpoint))


def rid(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:12]


def record(run_id: str, sweep_id: str, lr: float, status: str = "succeeded",
           project: str = "demo", **extra: Any) -> RunRecord:
    metrics = {"loss": round(1 / (1 + lr * 100), 6), "accuracy": 0.5 + lr} if status == \
        "succeeded" else {}
    return RunRecord.from_json({
        "schema": 1, "run_id": run_id, "sweep_id": sweep_id, "project": project,
        "status": status, "overrides": [f"optimizer.lr={lr}"],
        "config": {"optimizer": {"name": "adam", "lr": lr}, "model": {"hidden": 8}},
        "metrics": metrics, "image_id": "sha256:" + "a" * 64,
        "started_at": "2026-12-01T10:00:00.000Z", "ended_at": "2026-12-01T10:00:02.000Z",
        **extra,
    })


def write_sweep(runs: RunStore, name: str, lrs: list[float], *, failed: int | None = None,
                project: str = "demo", close: bool = True, created: str = "10"
                ) -> tuple[str, list[RunRecord]]:
    sweep_id = rid("sweep", name)
    records = [record(rid(name, lr), sweep_id, lr,
                      "failed" if i == failed else "succeeded", project)
               for i, lr in enumerate(lrs)]
    runs.write_sweep(SweepDoc.from_json({
        "sweep_id": sweep_id, "project": project,
        "created_at": f"2026-12-01T{created}:00:00.000Z", "args": [name],
        "runs": [{"run_id": r.run_id, "overrides": list(r.overrides)} for r in records],
    }))
    steps = b'{"step": 1, "loss": 0.9}\n{"step": 2, "loss": 0.7}\n'
    # What was committed (the record names its outputs: none), as a driver holds it.
    records = [runs.commit_run(r, {"metrics.jsonl": steps}) for r in records]
    if close:
        runs.write_sweep_index(sweep_id, records)
    return sweep_id, records


@pytest.fixture
def three(where: Where) -> dict[str, Any]:
    """Three sweeps: a baseline (named, tagged), one with a failed run, one of another
    project; and a rerun of a baseline run."""
    runs = where.runs
    base, base_records = write_sweep(runs, "base", [0.1, 0.01], created="09")
    wide, wide_records = write_sweep(runs, "wide", [0.001, 0.05, 0.2], failed=2, created="10")
    other, _ = write_sweep(runs, "other", [0.3], project="elsewhere", created="11")
    change(runs.store, "sweep", base, add=["lstm"], name="baseline-lr", note="first try")
    rerun = record(rid("rerun"), base, 0.1, rerun_of=base_records[0].run_id)
    runs.commit_run(rerun, {})
    return {"base": base, "wide": wide, "other": other, "rerun": rerun.run_id,
            "base_records": base_records, "wide_records": wide_records}


def as_json(text: str) -> list[dict[str, Any]]:
    value = json.loads(text)
    assert isinstance(value, list)
    return value


# -- results and best across sweeps -----------------------------------------------------


def test_results_across_sweeps_names_tags_and_reruns(where: Where, three: dict[str, Any]
                                                    ) -> None:
    everything = as_json(where.orch("results", "--format", "json"))
    # Outside a project: every run of the store, the rerun included (7 = 2 + 3 + 1 + 1).
    assert len(everything) == 7
    assert three["rerun"] in {r["run_id"] for r in everything}
    by_name = as_json(where.orch("results", "baseline-lr", "--format", "json"))
    assert {r["run_id"] for r in by_name} == {
        *(r.run_id for r in three["base_records"]), three["rerun"]}
    assert as_json(where.orch("results", "lstm", "--format", "json")) == by_name
    tagged = as_json(where.orch("results", "--where", "tag=lstm", "--format", "json"))
    assert {r["run_id"] for r in tagged} == {r["run_id"] for r in by_name}
    # Across sweeps, each run object says which sweep it is of (one sweep: the contract's
    # object exactly).
    named = [r for r in everything if r["sweep_name"] == "baseline-lr"]
    assert {r["run_id"] for r in named} == {r["run_id"] for r in tagged}
    assert all(r["tags"] == ["lstm"] for r in named) and "sweep_name" not in tagged[0]
    two = as_json(where.orch("results", three["base"], three["wide"], "--format", "json"))
    assert len(two) == 6
    failed = as_json(where.orch("results", "--status", "failed", "--format", "json"))
    assert [r["status"] for r in failed] == ["failed"]
    top = as_json(where.orch("results", "--sort", "loss", "--limit", "2", "--format", "json"))
    assert [r["metrics"]["loss"] for r in top] == sorted(r["metrics"]["loss"] for r in top)
    assert len(top) == 2 and top[0]["metrics"]["loss"] == min(
        r["metrics"].get("loss", 9) for r in everything)
    table = where.orch("results", "--sort", "loss")
    assert "sweep" in table.splitlines()[0] and "baseline-lr" in table
    assert "optimizer.lr" in table and "model.hidden" not in table  # only what varies


def test_best_answers_the_one_question(where: Where, three: dict[str, Any]) -> None:
    answer = json.loads(where.orch("best", "loss", "--json"))
    everything = as_json(where.orch("results", "--format", "json"))
    ok = [r for r in everything if r["status"] == "succeeded"]
    best = min(ok, key=lambda r: r["metrics"]["loss"])
    assert answer["run_id"] == best["run_id"] and answer["direction"] == "min"
    assert answer["image_id"] == "sha256:" + "a" * 64
    assert answer["runner_up"]["config_diff"]["optimizer.lr"][0] == best["config"][
        "optimizer"]["lr"]
    assert answer["rerun"].startswith(f"orch rerun {best['run_id']}")
    text = where.orch("best", "accuracy")  # guessed: higher is better
    assert "best accuracy (max)" in text and "rerun:" in text
    assert "(min)" in where.orch("best", "accuracy:min")
    assert "close: loss" in where.refused("best", "los")


def test_running_and_queued_runs_are_listed_with_live_metrics(where: Where) -> None:
    runs = where.runs
    sweep_id, records = write_sweep(runs, "live", [0.1, 0.2, 0.3], close=False)
    # Make two of the three in flight: one running (claim + live.json), one queued.
    runs.store.delete(f"runs/{records[1].run_id}/run.json")
    runs.store.delete(f"runs/{records[2].run_id}/run.json")
    assert runs.claims.claim(records[1].run_id, "someone", lease_s=600)
    runs.write_live(records[1].run_id, {"status": "running", "step": 3,
                                        "metrics": {"loss": 0.42}})
    shown = {r["run_id"]: r for r in as_json(where.orch("results", sweep_id, "--format",
                                                        "json"))}
    assert shown[records[0].run_id]["status"] == "succeeded"
    assert shown[records[1].run_id]["status"] == "running"
    assert shown[records[1].run_id]["metrics"] == {"loss": 0.42}
    assert shown[records[2].run_id]["status"] == "queued"
    counts = where.orch("runs")
    assert sweep_id in counts


# -- names, tags, notes -----------------------------------------------------------------


def test_tag_note_and_name_commands(where: Where, three: dict[str, Any]) -> None:
    where.orch("tag", three["wide"], "+wide", "+lstm")
    where.orch("tag", "baseline-lr", "-lstm")
    run = three["wide_records"][0].run_id
    where.orch("tag", run, "+keeper")
    where.orch("note", three["wide"], "lr from 1e-3 to 0.2")
    where.orch("name", three["wide"], "wide-lr")
    labels = read_labels(where.runs.store)
    assert labels.of("sweep", three["wide"]).tags == {"wide", "lstm"}
    assert labels.of("sweep", three["base"]).tags == set()
    assert labels.of("run", run).tags == {"keeper"}
    assert labels.of("sweep", three["wide"]).note == "lr from 1e-3 to 0.2"
    keeper = as_json(where.orch("results", "--where", "tag=keeper", "--format", "json"))
    assert [r["run_id"] for r in keeper] == [run]
    assert len(as_json(where.orch("results", "wide-lr", "--format", "json"))) == 3
    # Unknown names and tags list the close ones.
    assert "close: wide-lr" in where.refused("results", "wide-lx")
    assert "close: lstm" in where.refused("results", "--where", "tag=lstn")
    assert "+TAG" in where.refused("tag", three["wide"], "lstm")


def test_report_and_watch_take_names_and_tags_like_results(
    where: Where, three: dict[str, Any], tmp_path: Path
) -> None:
    page = tmp_path / "base.html"
    for ref in ("baseline-lr", "lstm", three["base"][:6]):  # a name, a tag, an id prefix
        where.orch("report", ref, "-o", str(page))
        assert three["base_records"][0].run_id in page.read_text()
        page.unlink()
        watched = where.orch("watch", ref, "--once")
        assert watched.startswith(f"sweep {three['base']}:"), watched
    # A reused name: the newest sweep of that name, and stderr says so.
    change(where.runs.store, "sweep", three["wide"], name="baseline-lr")
    for verb, args, code in (("reporting", ["report", "baseline-lr", "-o", str(page)], 0),
                             ("watching", ["watch", "baseline-lr", "--once"], 1)):  # wide failed
        result = CliRunner().invoke(cli, [*args, "--store", where.uri], env=where.env)
        assert result.exit_code == code, result.stderr
        assert (f"'baseline-lr' names 2 sweeps; {verb} the newest, {three['wide']} "
                f"(others: {three['base']};") in result.stderr
    assert three["wide_records"][0].run_id in page.read_text()
    assert "close: baseline-lr" in where.refused("report", "baseline-lx", "-o", str(page))
    assert "close: baseline-lr" in where.refused("watch", "baseline-lx")


def test_concurrent_taggers_lose_nothing(where: Where, three: dict[str, Any]) -> None:
    store = where.runs.store
    barrier = threading.Barrier(8)

    def tagger(i: int) -> None:
        barrier.wait()
        change(store, "sweep", three["wide"], add=[f"t{i}", "shared"])

    threads = [threading.Thread(target=tagger, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    tags = read_labels(store).of("sweep", three["wide"]).tags
    assert tags == {f"t{i}" for i in range(8)} | {"shared"}


# -- SQL ----------------------------------------------------------------------------------


def test_query_runs_and_steps(where: Where, three: dict[str, Any]) -> None:
    rows = as_json(where.orch(
        "query",
        "SELECT run_id, sweep_name, config.optimizer.lr AS lr, metrics.loss AS loss "
        "FROM runs WHERE status = 'succeeded' AND list_contains(tags, 'lstm') "
        "ORDER BY loss LIMIT 10",
        "--format", "json",
    ))
    assert {r["sweep_name"] for r in rows} == {"baseline-lr"} and len(rows) == 3
    assert [r["loss"] for r in rows] == sorted(r["loss"] for r in rows)
    steps = as_json(where.orch(
        "query", "SELECT count(*) AS n, max(step) AS last FROM steps WHERE name = 'loss'",
        "--format", "json"))
    assert steps == [{"n": 2 * 6, "last": 2.0}]  # the rerun logged no steps
    csv_text = where.orch("query", "SELECT project, count(*) AS n FROM runs GROUP BY 1 "
                          "ORDER BY 1", "--format", "csv")
    assert csv_text == "project,n\ndemo,6\nelsewhere,1\n"
    error = where.refused("query", "SELEC run_id FROM runs")
    assert "syntax error" in error and "SELEC" in error
    assert "runz" in where.refused("query", "SELECT * FROM runz")


# -- the catalog: bounded reads, correct beside writers -----------------------------------


def test_catalog_reads_one_object_per_closed_sweep(where: Where, three: dict[str, Any]
                                                  ) -> None:
    snap = Catalog(where.runs).read()
    assert snap.stats["sweeps"] == 3 and snap.stats["indexed"] == 3
    assert snap.stats["run_reads"] == 1  # the rerun, found by its pointer
    assert len(snap.records) == 7


def test_a_retry_committed_after_the_index_is_found(where: Where) -> None:
    runs = where.runs
    sweep_id, records = write_sweep(runs, "retry", [0.1, 0.2], failed=1)
    assert Catalog(runs).read([sweep_id]).stats["run_reads"] == 0
    # A re-submission (another process, so another RunStore) retries the failed run.
    second = RunStore(runs.store)
    second.write_sweep(runs.read_sweep(sweep_id))
    assert second.set_aside_attempt(records[1])
    mid = {r["run_id"]: r["status"] for r in Catalog(runs).read([sweep_id]).records}
    assert mid[records[1].run_id] == "queued"  # not the stale index's "failed"
    retried = record(records[1].run_id, sweep_id, 0.2, attempt=2)
    second.commit_run(retried, {})
    after = {r["run_id"]: r for r in Catalog(runs).read([sweep_id]).records}
    assert after[records[1].run_id]["status"] == "succeeded"
    assert after[records[1].run_id]["attempt"] == 2
    second.write_sweep_index(sweep_id, [records[0], retried])
    snap = Catalog(runs).read([sweep_id])
    assert snap.stats["run_reads"] == 0 and not snap.listing.open


@pytest.mark.parametrize("sql", ["", "  ", ";", " ; ;"])
def test_an_empty_query_is_one_error_line(where: Where, three: dict[str, Any], sql: str) -> None:
    assert "the query is empty" in where.refused("query", sql)


def test_query_while_a_sweep_commits(where: Where, three: dict[str, Any]) -> None:
    runs = where.runs
    sweep_id = rid("sweep", "busy")
    records = [record(rid("busy", i), sweep_id, i / 100) for i in range(20)]
    runs.write_sweep(SweepDoc.from_json({
        "sweep_id": sweep_id, "project": "demo", "created_at": "2026-12-01T12:00:00.000Z",
        "runs": [{"run_id": r.run_id} for r in records]}))
    done = threading.Event()
    seen: list[int] = []

    def reader() -> None:
        while not done.is_set():
            out = where.orch("query", f"SELECT count(*) AS n FROM runs WHERE sweep_id = "
                                      f"'{sweep_id}' AND status = 'succeeded'",
                             "--format", "json")
            seen.append(json.loads(out)[0]["n"])

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for r in records:
            runs.commit_run(r, {})
        runs.write_sweep_index(sweep_id, records)
    finally:
        done.set()
        thread.join()
    assert seen == sorted(seen)  # never fewer than before: no run lost on the way
    final = where.orch("query", f"SELECT count(*) AS n FROM runs WHERE sweep_id='{sweep_id}'",
                       "--format", "json")
    assert json.loads(final) == [{"n": 20}]


# -- bad input ---------------------------------------------------------------------------


def test_bad_input_is_one_line(where: Where, three: dict[str, Any]) -> None:
    line = where.refused("results", "--where", "nosuch=1")
    assert "optimizer.lr" in line and "tag" in line  # says which keys exist
    assert "close" in where.refused("results", "--status", "faild")
    assert "not a sweep id" in where.refused("results", "no/such")


# -- gc -----------------------------------------------------------------------------------


def _blob(runs: RunStore, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    runs.blobs.put(digest, data)
    return digest


def test_gc_keeps_referenced_and_young_blobs(where: Where) -> None:
    runs = where.runs
    layer = _blob(runs, b"layer bytes")
    config = _blob(runs, json.dumps({"rootfs": {"diff_ids": [layer]}}).encode())
    orphan = _blob(runs, b"nobody wants me")
    old_attempt_layer = _blob(runs, b"an earlier attempt's layer")
    sweep_id = rid("sweep", "gc")
    kept = record(rid("gc", 1), sweep_id, 0.1, image_id=config)
    runs.write_sweep(SweepDoc.from_json({"sweep_id": sweep_id, "runs": [
        {"run_id": kept.run_id}]}))
    runs.commit_run(record(kept.run_id, sweep_id, 0.1, status="failed",
                           layers={"base": [old_attempt_layer], "env": "", "code": "",
                                   "config": ""}), {})
    assert runs.set_aside_attempt(runs.read_run(kept.run_id))
    runs.commit_run(kept, {})
    runs.write_sweep_index(sweep_id, [kept])
    # Abandoned partial run (no claim, no record) and a stale claim on a complete run.
    runs.store.put("runs/0badc0ffee00/stdout.log", b"half")
    runs.store.put("runs/0badc0ffee00/checkpoint.tar", b"resume me")

    young = where.orch("gc", "--dry-run")
    assert "would remove 0 unreferenced blobs" in young  # all younger than the grace

    from orchestrator.db import gc as gc_module

    report = gc_module.collect(runs, lease_s=0.0, grace_s=0.0, dry_run=True)
    assert report.blobs == [f"blobs/sha256/{orphan.split(':')[1]}"]
    assert runs.blobs.has(orphan)  # dry run
    report = gc_module.collect(runs, lease_s=0.0, grace_s=0.0)
    assert not runs.blobs.has(orphan)
    for digest in (layer, config, old_attempt_layer):
        assert runs.blobs.has(digest)
    assert report.partial_runs == {"0badc0ffee00"}
    assert not runs.store.exists("runs/0badc0ffee00/stdout.log")
    assert runs.store.exists("runs/0badc0ffee00/checkpoint.tar")


def test_gc_beside_a_running_sweep_keeps_what_it_will_commit(where: Where) -> None:
    runs = where.runs
    old_orphan = _blob(runs, b"old and unreferenced")
    # A sweep starts: opens, uploads its environment, claims a run that is still going.
    sweep_id = rid("sweep", "running")
    running = record(rid("running", 1), sweep_id, 0.1)
    import time

    time.sleep(1.2)
    writer = RunStore(runs.store)
    writer.write_sweep(SweepDoc.from_json({"sweep_id": sweep_id, "runs": [
        {"run_id": running.run_id}]}))
    env_layer = _blob(writer, b"the running sweep's env layer")
    assert writer.claims.claim(running.run_id, "driver", lease_s=600)
    writer.store.put(f"runs/{running.run_id}/stdout.log", b"working")

    from orchestrator.db import gc as gc_module

    # Everything older than 1 s is fair game, but the open sweep moves the cutoff back.
    report = gc_module.collect(runs, lease_s=600.0, grace_s=1.0)
    assert runs.blobs.has(env_layer)
    assert runs.blobs.has(old_orphan)  # written less than a minute (clock skew) before
    assert report.partial_runs == set()
    assert runs.store.exists(f"runs/{running.run_id}/claim.json")
    # The run then commits and the sweep closes: nothing it needed is gone.
    done = record(running.run_id, sweep_id, 0.1, layers={"base": [env_layer], "env": "",
                                                           "code": "", "config": ""})
    writer.commit_run(done, {})
    writer.write_sweep_index(sweep_id, [done])
    gc_module.collect(runs, lease_s=600.0, grace_s=0.0)
    assert runs.blobs.has(env_layer)
    assert not runs.blobs.has(old_orphan)


# -- MLflow -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``mlflow server`` on loopback with a SQLite backend."""
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    from seaweed import free_ports

    binary = Path(sys.executable).parent / "mlflow"
    if not binary.exists() and not shutil.which("mlflow"):
        pytest.skip("MLflow is not installed: pip install 'orch[mlflow]'")
    root = tmp_path_factory.mktemp("mlflow")
    port = free_ports(1)[0]
    proc = subprocess.Popen(
        [str(binary if binary.exists() else "mlflow"), "server", "--host", "127.0.0.1",
         "--port", str(port), "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--default-artifact-root", str(root / "artifacts"), "--workers", "1"],
        stdout=(root / "log").open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("mlflow server did not start: "
                                + (root / "log").read_text()[-2000:])
                time.sleep(0.5)
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.slow
def test_export_to_mlflow_twice_adds_nothing(
    where: Where, three: dict[str, Any], mlflow_server: str
) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    experiment = f"orch-{rid(where.uri)}"
    out = where.orch("export", "mlflow", "--tracking-uri", mlflow_server,
                     "--experiment", experiment)
    assert "exported 7 runs" in out
    again = where.orch("export", "mlflow", "--tracking-uri", mlflow_server,
                       "--experiment", experiment)
    assert "exported 0 runs" in again and "7 already there" in again
    client = MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name(experiment)
    found = client.search_runs([exp.experiment_id], max_results=100)
    assert len(found) == 7
    by_orch = {run.data.tags["orch.run_id"]: run for run in found}
    base_run = three["base_records"][0]
    run = by_orch[base_run.run_id]
    assert run.data.params["optimizer.lr"] == "0.1"
    assert run.data.params["model.hidden"] == "8"
    assert run.data.metrics["loss"] == base_run.metrics["loss"]
    assert run.data.tags["orch.sweep_id"] == three["base"]
    assert run.data.tags["orch.sweep_name"] == "baseline-lr"
    assert run.data.tags["orch.image_id"] == "sha256:" + "a" * 64
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [(m.step, m.value) for m in history if m.value in (0.9, 0.7)] == [(1, 0.9), (2, 0.7)]
    failed = by_orch[three["wide_records"][2].run_id]
    assert failed.info.status == "FAILED"


# -- indexes read by DuckDB as fetched bytes (orchestrator.db.frame) ----------------------


def test_a_corrupt_index_is_skipped_and_its_sweep_read_run_by_run(
    where: Where, three: dict[str, Any]
) -> None:
    store = where.runs.store
    store.put(f"sweeps/{three['wide']}.index.json", b'{"sweep_id": "' + b"x" * 10)
    rows = as_json(where.orch("query", "SELECT run_id, status FROM runs ORDER BY run_id",
                              "--format", "json"))
    assert len(rows) == 7
    shown = as_json(where.orch("results", three["wide"], "--format", "json"))
    assert {r["run_id"] for r in shown} == {r.run_id for r in three["wide_records"]}


def test_an_index_record_that_is_not_its_run_is_read_from_the_run(
    where: Where, three: dict[str, Any]
) -> None:
    store = where.runs.store
    key = f"sweeps/{three['base']}.index.json"
    index = json.loads(store.get(key))
    first = three["base_records"][0].run_id
    index["runs"][first] = {**index["runs"][first], "run_id": "0" * 12, "status": "bogus"}
    store.put(key, json.dumps(index).encode())
    rows = as_json(where.orch("query", f"SELECT status FROM runs WHERE run_id = '{first}'",
                              "--format", "json"))
    assert rows == [{"status": "succeeded"}]  # from its run.json, not the bad index entry


def test_results_from_the_frame_match_results_from_whole_records(
    where: Where, three: dict[str, Any]
) -> None:
    from orchestrator.results import render

    records = Catalog(where.runs).read().records
    for args in (
        ["--where", "optimizer.lr>=0.01", "--sort", "loss", "--limit", "3"],
        ["--sort", "-accuracy"],
        ["--where", "tag=lstm", "--where", "optimizer.name=adam"],
        ["--where", "metrics.loss<0.9", "--status", "succeeded"],
        [],
    ):
        for fmt in ("json", "csv", "table"):
            shown = where.orch("results", *args, "--format", fmt)
            options: dict[str, Any] = {
                "sort": args[args.index("--sort") + 1] if "--sort" in args else None,
                "where": [args[i + 1] for i, a in enumerate(args) if a == "--where"],
                "status": [args[args.index("--status") + 1]] if "--status" in args else [],
                "limit": int(args[args.index("--limit") + 1]) if "--limit" in args else None,
            }
            assert shown.rstrip("\n") == render(records, fmt, **options).rstrip("\n"), args
    line = where.refused("results", "--sort", "nosuch")
    assert "accuracy" in line and "loss" in line  # the known metrics, as before
