"""The store layout and commit protocol (RunStore), on memory and on a real S3 server."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from seaweed import SeaweedServer, admin_client, fresh_bucket, s3_client, shared_seaweed

from orchestrator.errors import NotFound, StoreError, UsageError
from orchestrator.schema.record import RunRecord, SweepDoc
from orchestrator.store import DirStore, MemoryStore, RunStore, Store
from orchestrator.store.s3 import S3Store


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> str:
    return shared_seaweed(tmp_path_factory.getbasetemp())


class RecordingStore:
    """Wraps a store and records every write and read, in order."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.uri = inner.uri
        self.ops: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def _log(self, op: str, key: str) -> None:
        with self._lock:
            self.ops.append((op, key))

    def put(self, key: str, data: bytes) -> None:
        self.inner.put(key, data)
        self._log("put", key)

    def put_file(self, key: str, path: Path) -> None:
        self.inner.put_file(key, path)
        self._log("put", key)

    def get(self, key: str) -> bytes:
        self._log("get", key)
        return self.inner.get(key)

    def get_file(self, key: str, path: Path) -> None:
        self._log("get", key)
        self.inner.get_file(key, path)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def list(self, prefix: str) -> Iterator[str]:
        self._log("list", prefix)
        return self.inner.list(prefix)

    def create(self, key: str, data: bytes) -> bool:
        created = self.inner.create(key, data)
        self._log("create" if created else "create-refused", key)
        return created

    def delete(self, key: str) -> None:
        self.inner.delete(key)
        self._log("delete", key)

    def age(self, key: str) -> float | None:
        return self.inner.age(key)

    def count(self, op: str) -> int:
        return sum(1 for seen, _ in self.ops if seen == op)


@pytest.fixture(params=["memory", "dir", pytest.param("s3", marks=pytest.mark.s3)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> RecordingStore:
    if request.param == "memory":
        return RecordingStore(MemoryStore())
    if request.param == "dir":
        return RecordingStore(DirStore(tmp_path / "store"))
    endpoint = request.getfixturevalue("seaweed")
    return RecordingStore(S3Store(admin_client(endpoint), fresh_bucket(endpoint), "orch"))


@pytest.fixture
def runs(store: RecordingStore) -> RunStore:
    return RunStore(store)


def race(contenders: int, attempt: Callable[[int], bool]) -> list[int]:
    barrier = threading.Barrier(contenders)
    results = [False] * contenders

    def run(i: int) -> None:
        barrier.wait()
        results[i] = attempt(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [i for i, won in enumerate(results) if won]


def record(run_id: str, sweep_id: str = "sweep1", **extra: Any) -> RunRecord:
    return RunRecord.from_json({
        "schema": 1,
        "run_id": run_id,
        "sweep_id": sweep_id,
        "status": "succeeded",
        "overrides": [f"seed={run_id}"],
        "config": {"seed": run_id, "optimizer": {"name": "SGD", "lr": 0.01}},
        "metrics": {"loss": 0.5},
        **extra,
    })


def sweep(
    sweep_id: str, run_ids: list[str], created_at: str = "2026-11-27T23:00:00.000Z"
) -> SweepDoc:
    return SweepDoc.from_json({
        "schema": 1,
        "sweep_id": sweep_id,
        "project": "demo",
        "created_at": created_at,
        "args": ["seed=range(0,3)"],
        "runs": [{"run_id": run_id, "overrides": [f"seed={run_id}"]} for run_id in run_ids],
    })


# -- sweeps -------------------------------------------------------------------------------


def test_sweeps_roundtrip_and_list_newest_first(runs: RunStore, store: RecordingStore) -> None:
    runs.write_sweep(sweep("old", ["a"], "2026-01-01T00:00:00.000Z"))
    runs.write_sweep(sweep("new", ["b"], "2026-06-01T00:00:00.000Z"))
    runs.write_sweep(sweep("new", ["changed"], "2027-01-01T00:00:00.000Z"))  # written once
    assert runs.read_sweep("new").to_json()["runs"] == [{"run_id": "b", "overrides": ["seed=b"]}]
    runs.write_sweep_index("new", [])
    assert [s.sweep_id for s in runs.list_sweeps()] == ["new", "old"]
    text = store.get("sweeps/old.json").decode()
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n"


def test_missing_and_corrupt_records(runs: RunStore, store: RecordingStore) -> None:
    with pytest.raises(NotFound, match="no sweep 'nope' in store"):
        runs.read_sweep("nope")
    with pytest.raises(NotFound, match="run 'nope' is not in store"):
        runs.read_run("nope")
    store.put("runs/bad/run.json", b"{not json")
    with pytest.raises(StoreError, match="corrupt JSON in .*runs/bad/run.json"):
        runs.read_run("bad")
    with pytest.raises(UsageError, match="invalid run id"):
        runs.read_run("../etc")


# -- the commit protocol ------------------------------------------------------------------


def test_claim_commit_writes_run_json_last(
    runs: RunStore, store: RecordingStore, tmp_path: Path
) -> None:
    model = tmp_path / "model.txt"
    model.write_text("weights")
    assert runs.claims.claim("r1", "owner-a")
    assert not runs.is_complete("r1")
    assert not runs.claims.claim("r1", "owner-b")  # held
    files: dict[str, bytes | Path] = {
        "stdout.log": b"hello\n",
        "stderr.log": b"",
        "config.yaml": b"seed: 1\n",
        "metrics.json": b'{"loss": 0.5}',
        "output/model.txt": model,
        "dirty.diff": b"",
    }
    store.ops.clear()
    committed = runs.commit_run(record("r1"), files)

    puts = [key for op, key in store.ops if op == "put"]
    assert puts[-1] == "runs/r1/run.json"
    assert puts[-2] == "runs/r1/outputs.jsonl"  # the manifest, once every output is stored
    assert sorted(puts[:-2]) == sorted(f"runs/r1/{name}" for name in files)
    deletes = [i for i, (op, _) in enumerate(store.ops) if op == "delete"]
    assert deletes and min(deletes) > store.ops.index(("put", "runs/r1/run.json"))

    assert runs.is_complete("r1")
    assert runs.read_run("r1") == committed  # the record, naming the outputs' manifest
    assert (committed.outputs.files, committed.outputs.bytes) == (1, 7)  # type: ignore[union-attr]
    ((name, info),) = list(runs.outputs(committed))
    assert name == "model.txt" and info is not None and info.size == 7
    assert info.sha256 == hashlib.sha256(b"weights").hexdigest()
    assert runs.list_run_files("r1") == sorted([*files, "outputs.jsonl", "run.json"])
    assert runs.read_file("r1", "output/model.txt") == b"weights"
    assert not store.exists("runs/r1/claim.json")
    assert not runs.claims.claim("r1", "owner-b")  # complete: nothing to claim
    with pytest.raises(NotFound, match="has no file 'nope'"):
        runs.read_file("r1", "nope")


@pytest.mark.parametrize("name", ["../escape", "/abs", "run.json", "claim.json", "a//b"])
def test_commit_refuses_bad_file_names(runs: RunStore, store: RecordingStore, name: str) -> None:
    with pytest.raises(UsageError, match=name.replace("/", ".")):
        runs.commit_run(record("r2"), {"ok.log": b"", name: b"x"})
    assert not runs.is_complete("r2")
    assert not any(op == "put" for op, _ in store.ops)


def test_two_threads_claiming_one_run(runs: RunStore) -> None:
    for run_id in ("contested0", "contested1", "contested2"):

        def attempt(i: int, run_id: str = run_id) -> bool:
            return runs.claims.claim(run_id, f"owner-{i}", lease_s=60)

        wins = race(8, attempt)
        assert len(wins) == 1, wins


def test_holder_renews_and_release_frees(runs: RunStore, store: RecordingStore) -> None:
    assert runs.claims.claim("r3", "a", lease_s=60)
    first = store.get("runs/r3/claim.json")
    assert runs.claims.claim("r3", "a", lease_s=60)  # a heartbeat
    assert store.get("runs/r3/claim.json") != first
    assert json.loads(store.get("runs/r3/claim.json"))["owner"] == "a"
    runs.claims.release("r3")
    assert runs.claims.claim("r3", "b", lease_s=60)


def test_release_frees_only_its_owners_claim(runs: RunStore, store: RecordingStore) -> None:
    assert runs.claims.claim("r9", "a", lease_s=60)
    make_stale(store, "runs/r9/claim.json")
    assert runs.claims.claim("r9", "b", lease_s=1)  # a was slower than its lease
    assert not runs.claims.release("r9", "a")  # ... and must not free b's live claim
    assert runs.claims.holder("r9") == "b"
    assert runs.claims.release("r9", "b")
    assert runs.claims.holder("r9") is None


def test_set_aside_is_idempotent_and_numbers_next_attempts(runs: RunStore) -> None:
    failed = runs.commit_run(record("r8", status="failed", artifacts=["a1.txt"]),
                             {"stdout.log": b"one", "output/a1.txt": b"1"})
    # A set-aside cut short (SIGKILL): the record kept, run.json not yet removed.
    runs.store.put("runs/r8/attempts/1/run.json", runs.store.get("runs/r8/run.json"))
    assert runs.set_aside_attempt(failed) == 1  # finished, not refused
    assert not runs.is_complete("r8")
    assert runs.set_aside_attempt(failed) == 1  # and again: nothing left to do
    assert runs.next_attempt("r8") == 2
    assert runs.read_file("r8", "attempts/1/output/a1.txt") == b"1"
    assert runs.read_file("r8", "attempts/1/stdout.log") == b"one"
    # the kept attempt's outputs are read from its own copy of the manifest
    assert [name for name, _ in runs.outputs(failed, attempt=1)] == ["a1.txt"]
    # Run again as attempt 1 (by a submitter that saw no run.json): its commit removes the
    # earlier attempt's unlisted output and manifest, and its set-aside takes the next
    # free number.
    again = runs.commit_run(record("r8", status="failed", metrics={"loss": 0.7}),
                            {"stdout.log": b"two"})
    assert runs.list_outputs("r8") == []
    assert "outputs.jsonl" not in runs.list_run_files("r8")
    assert list(runs.outputs(again)) == []
    assert runs.set_aside_attempt(again) == 2
    assert runs.next_attempt("r8") == 3
    assert [r.metrics["loss"] for r in runs.read_attempts("r8")] == [0.5, 0.7]


def make_stale(store: RecordingStore, key: str) -> None:
    """Age ``key`` by more than a one-second lease."""
    inner = store.inner
    if isinstance(inner, MemoryStore):
        inner.touch(key, age=120)
    elif isinstance(inner, DirStore):
        then = time.time() - 120
        os.utime(inner.root / key, (then, then))
    else:
        time.sleep(2.1)  # S3's LastModified cannot be set, and has one-second resolution


def test_stale_claim_is_taken_over_by_exactly_one(runs: RunStore, store: RecordingStore) -> None:
    assert runs.claims.claim("r4", "crashed", lease_s=60)
    assert not runs.claims.claim("r4", "other", lease_s=60)
    make_stale(store, "runs/r4/claim.json")
    wins = race(6, lambda i: runs.claims.claim("r4", f"taker-{i}", lease_s=1.0))
    assert len(wins) == 1, wins
    assert json.loads(store.get("runs/r4/claim.json"))["owner"] == f"taker-{wins[0]}"
    assert not runs.claims.claim("r4", "crashed", lease_s=60)  # the old holder lost it
    runs.commit_run(record("r4"), {})
    assert runs.list_run_files("r4") == ["run.json"]
    assert list(store.list("runs/r4/claim")) == []  # takeover markers are gone


# -- reading many runs --------------------------------------------------------------------


def _populate(runs: RunStore, count: int) -> list[str]:
    run_ids = [f"{i:012x}" for i in range(count)]
    runs.write_sweep(sweep("big", run_ids))
    with ThreadPoolExecutor(32) as pool:
        list(
            pool.map(
                lambda run_id: runs.store.put(
                    f"runs/{run_id}/run.json", json.dumps(record(run_id, "big").to_json()).encode()
                ),
                run_ids[:-10],
            )
        )  # the last ten never completed
    return run_ids


def test_read_sweep_runs_with_and_without_index(runs: RunStore, store: RecordingStore) -> None:
    run_ids = _populate(runs, 1000)
    store.ops.clear()
    without = runs.read_sweep_runs("big")
    assert [r.run_id for r in without] == run_ids[:-10]  # sweep order, incomplete left out
    assert store.count("get") == 1 + 1 + 1000  # sweep, missing index, every run.json

    runs.write_sweep_index("big", without[:900])
    store.ops.clear()
    with_index = runs.read_sweep_runs("big")
    assert with_index == without
    assert store.count("get") == 1 + 1 + 100  # only runs missing from the index are read

    runs.write_sweep_index("big", without)
    store.ops.clear()
    assert runs.read_sweep_runs("big") == without
    assert store.count("get") == 1 + 1 + 10  # the ten incomplete runs are still looked for

    records = runs.read_runs([run_ids[0], run_ids[-1], "unknown"])
    assert records[0] == without[0] and records[1] is None and records[2] is None


def test_resolve_run_id(runs: RunStore) -> None:
    runs.store.put("runs/3f2a9c1b7d4e/run.json", b"{}")
    runs.store.put("runs/3f2b000000aa/run.json", b"{}")
    runs.store.put("runs/3f2b000000bb/claim.json", b"{}")  # in flight
    assert runs.resolve_run_id("3f2a") == "3f2a9c1b7d4e"
    assert runs.resolve_run_id("3f2b") == "3f2b000000aa"  # complete runs win
    assert runs.resolve_run_id("3f2b000000bb") == "3f2b000000bb"  # an exact id always does
    with pytest.raises(UsageError, match="ambiguous"):
        runs.resolve_run_id("3f")
    with pytest.raises(NotFound, match="no run matching 'ffff'"):
        runs.resolve_run_id("ffff")


# -- blobs --------------------------------------------------------------------------------


def test_blobs_are_stored_once_and_verified(
    runs: RunStore, store: RecordingStore, tmp_path: Path
) -> None:
    layer = tmp_path / "layer.tar"
    layer.write_bytes(b"layer bytes" * 10000)
    digest = "sha256:" + hashlib.sha256(layer.read_bytes()).hexdigest()
    config = b'{"architecture": "amd64"}'
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()

    assert not runs.blobs.has(digest)
    assert runs.blobs.put(digest, layer) is True
    assert runs.blobs.put(digest, layer) is False
    assert runs.blobs.put(config_digest, config) is True
    assert runs.blobs.put(config_digest, config) is False
    assert runs.blobs.has(digest)
    assert store.count("put") + store.count("create") == 2
    assert sorted(runs.blobs.digests()) == sorted([digest, config_digest])

    out = tmp_path / "fetched" / "layer.tar"
    runs.blobs.get_file(digest, out)
    assert out.read_bytes() == layer.read_bytes()
    assert runs.blobs.get(config_digest) == config

    with pytest.raises(StoreError, match="hashes to"):
        runs.blobs.put("sha256:" + "0" * 64, b"not that")
    with pytest.raises(UsageError, match="invalid digest"):
        runs.blobs.has("md5:abc")
    with pytest.raises(NotFound, match="not in store"):
        runs.blobs.get_file("sha256:" + "1" * 64, tmp_path / "x")


def test_corrupt_blob_is_detected(runs: RunStore, store: RecordingStore, tmp_path: Path) -> None:
    digest = "sha256:" + hashlib.sha256(b"good").hexdigest()
    store.put(f"blobs/sha256/{digest[7:]}", b"evil")
    with pytest.raises(StoreError, match="corrupt"):
        runs.blobs.get(digest)
    with pytest.raises(StoreError, match="corrupt"):
        runs.blobs.get_file(digest, tmp_path / "blob")
    assert not (tmp_path / "blob").exists()


# -- a store outage -----------------------------------------------------------------------


@pytest.mark.s3
@pytest.mark.slow
def test_puts_survive_a_10s_outage(tmp_path: Path) -> None:
    """The server dies mid-way through a series of puts and is back 10 s later: nothing lost."""
    with SeaweedServer(tmp_path / "weed") as server:
        client = s3_client(server.endpoint)
        client.create_bucket(Bucket="outage")
        store = S3Store(client, "outage", "p", retry_budget_s=60)
        runs = RunStore(store)
        down: list[float] = []

        def outage() -> None:
            time.sleep(1.0)
            server.stop()
            down.append(time.monotonic())
            time.sleep(10.0)
            server.start()
            down.append(time.monotonic())

        thread = threading.Thread(target=outage)
        thread.start()
        written: list[str] = []
        slowest = 0.0
        try:
            i, after = 0, 5  # a few more once the server is back
            while thread.is_alive() or after > 0:
                after -= 0 if thread.is_alive() else 1
                start = time.monotonic()
                runs.commit_run(record(f"run{i:04d}"), {"stdout.log": f"line {i}\n".encode()})
                assert runs.claims.claim(f"next{i:04d}", "me")  # conditional creates, too
                slowest = max(slowest, time.monotonic() - start)
                written.append(f"run{i:04d}")
                i += 1
                time.sleep(0.05)
        finally:
            thread.join()
        assert len(down) == 2, "the server was not restarted"
        assert slowest >= 8, "no put waited for the outage"
        for run_id in written:
            assert runs.read_run(run_id).run_id == run_id
            assert runs.read_file(run_id, "stdout.log") == f"line {int(run_id[3:])}\n".encode()
