"""One contract, three stores: a directory, memory, and a real SeaweedFS S3 bucket.

Whatever a store is, it must behave exactly like this; RunStore relies on nothing else.
"""

from __future__ import annotations

import http.server
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from seaweed import admin_client, free_ports, fresh_bucket, s3_env, shared_seaweed

from orchestrator.errors import NotFound, StoreError, UsageError
from orchestrator.store import DirStore, MemoryStore, Store, check_key, open_store
from orchestrator.store.s3 import S3Store


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> str:
    return shared_seaweed(tmp_path_factory.getbasetemp())


@pytest.fixture
def s3_bucket(seaweed: str) -> str:
    return fresh_bucket(seaweed)


@pytest.fixture(
    params=[
        "dir",
        "memory",
        pytest.param("s3", marks=pytest.mark.s3),
    ]
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "dir":
        return DirStore(tmp_path / "store")
    if request.param == "memory":
        return MemoryStore()
    endpoint = request.getfixturevalue("seaweed")
    bucket = request.getfixturevalue("s3_bucket")
    return S3Store(admin_client(endpoint), bucket, "some/prefix")


def test_put_get_overwrite(store: Store) -> None:
    store.put("a/b.txt", b"one")
    assert store.get("a/b.txt") == b"one"
    store.put("a/b.txt", b"two")
    assert store.get("a/b.txt") == b"two"
    store.put("empty", b"")
    assert store.get("empty") == b""


def test_missing_keys(store: Store, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="nope"):
        store.get("nope")
    with pytest.raises(NotFound):
        store.get_file("nope", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not store.exists("nope")
    assert store.age("nope") is None
    store.delete("nope")  # no error


def test_exists_and_delete(store: Store) -> None:
    store.put("runs/x/run.json", b"{}")
    assert store.exists("runs/x/run.json")
    assert not store.exists("runs/x")  # a "directory" is not a key
    store.delete("runs/x/run.json")
    assert not store.exists("runs/x/run.json")
    with pytest.raises(NotFound):
        store.get("runs/x/run.json")


def test_list_is_sorted_and_filters_by_string_prefix(store: Store) -> None:
    keys = ["b/2", "a/sub/deep", "a/10", "a/1", "a-b", "ab/x", "a.json"]
    for key in keys:
        store.put(key, key.encode())
    assert list(store.list("")) == sorted(keys)
    assert list(store.list("a/")) == ["a/1", "a/10", "a/sub/deep"]
    assert list(store.list("a/1")) == ["a/1", "a/10"]
    assert list(store.list("a")) == ["a-b", "a.json", "a/1", "a/10", "a/sub/deep", "ab/x"]
    assert list(store.list("zzz/")) == []
    assert list(store.list("a/sub/")) == ["a/sub/deep"]


def test_create_is_conditional(store: Store) -> None:
    assert store.create("claims/c.json", b"first") is True
    assert store.create("claims/c.json", b"second") is False
    assert store.get("claims/c.json") == b"first"
    store.delete("claims/c.json")
    assert store.create("claims/c.json", b"third") is True


def race(contenders: int, attempt: Callable[[int], bool]) -> list[int]:
    """Start ``attempt(i)`` in ``contenders`` threads at once; the i's that returned True."""
    barrier = threading.Barrier(contenders)
    results: list[bool] = [False] * contenders

    def run(i: int) -> None:
        barrier.wait()
        results[i] = attempt(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [i for i, won in enumerate(results) if won]


def test_concurrent_create_has_exactly_one_winner(store: Store) -> None:
    for round_ in range(3):
        key = f"race/{round_}/claim.json"

        def attempt(i: int, key: str = key) -> bool:
            return store.create(key, f"thread {i}".encode())

        wins = race(8, attempt)
        assert len(wins) == 1, wins
        assert store.get(key) == f"thread {wins[0]}".encode()


def test_put_file_and_get_file(store: Store, tmp_path: Path) -> None:
    source = tmp_path / "layer.tar"
    payload = bytes(range(256)) * 4096  # 1 MiB, every byte value
    source.write_bytes(payload)
    store.put_file("blobs/sha256/abc", source)
    assert store.get("blobs/sha256/abc") == payload
    target = tmp_path / "deep" / "er" / "copy.tar"
    store.get_file("blobs/sha256/abc", target)
    assert target.read_bytes() == payload
    assert [p.name for p in target.parent.iterdir()] == ["copy.tar"]  # no temp files left
    with pytest.raises(StoreError):
        store.put_file("x", tmp_path / "missing")


def test_age(store: Store) -> None:
    store.put("k", b"v")
    age = store.age("k")
    assert age is not None and 0 <= age < 5


@pytest.mark.parametrize(
    "key", ["../x", "/abs", "a//b", "", "a/../b", "a\\b", "a\x00b", "a/", "./a"]
)
def test_bad_keys_are_refused(store: Store, key: str) -> None:
    for op in (
        lambda: store.put(key, b""),
        lambda: store.get(key),
        lambda: store.create(key, b""),
        lambda: store.exists(key),
        lambda: store.delete(key),
        lambda: store.age(key),
    ):
        with pytest.raises(UsageError, match="invalid store key") as info:
            op()
        assert repr(key) in str(info.value)


def test_readers_never_see_a_partial_write(store: Store) -> None:
    old, new = b"o" * 300_000, b"n" * 400_000
    store.put("big", old)
    stop = threading.Event()
    seen: set[int] = set()

    def read() -> None:
        while not stop.is_set():
            seen.add(len(store.get("big")))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(10):
            store.put("big", new)
            store.put("big", old)
    finally:
        stop.set()
        reader.join()
    assert seen <= {len(old), len(new)}


def test_many_threads_share_one_store(store: Store) -> None:
    def work(i: int) -> None:
        for j in range(10):
            store.put(f"t/{i}/{j}", f"{i}-{j}".encode())
            assert store.get(f"t/{i}/{j}") == f"{i}-{j}".encode()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(list(store.list("t/"))) == 160


# -- keys and URIs ------------------------------------------------------------------------


def test_check_key_accepts_clean_relative_paths() -> None:
    assert check_key("runs/3f2a/output/model.txt") == "runs/3f2a/output/model.txt"
    assert check_key("a.b-c_d") == "a.b-c_d"


def test_open_store_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    project = tmp_path / "proj"
    assert open_store(None, project_dir=project).uri == (project / ".orch").as_uri()
    assert open_store("results", project_dir=project).uri == (tmp_path / "results").as_uri()
    assert (
        open_store(f"file://{tmp_path}/x y", project_dir=tmp_path).uri
        == (tmp_path / "x y").as_uri()
    )
    # a store's own URI opens the same store
    store = open_store(str(tmp_path / "s"), project_dir=tmp_path)
    store.put("k", b"v")
    assert open_store(store.uri, project_dir=tmp_path).get("k") == b"v"


@pytest.mark.parametrize("uri", ["gs://bucket/x", "s3://", "s3://a", "s3://bucket/../x"])
def test_open_store_refuses_other_forms(tmp_path: Path, uri: str) -> None:
    with pytest.raises(UsageError) as info:
        open_store(uri, project_dir=tmp_path)
    message = str(info.value)
    assert repr(uri) in message and "s3://BUCKET" in message and "\n" not in message


def test_dir_store_on_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(UsageError, match="not a directory"):
        open_store(str(tmp_path / "f"), project_dir=tmp_path)


def test_dir_store_hard_links_when_it_can(tmp_path: Path) -> None:
    source = tmp_path / "blob"
    source.write_bytes(b"x" * 1000)
    store = DirStore(tmp_path / "store")
    store.put_file("blobs/b", source)
    assert (tmp_path / "store/blobs/b").stat().st_ino == source.stat().st_ino
    assert list(store.list("")) == ["blobs/b"]  # scratch space is not listed


# -- S3 error translation ------------------------------------------------------------------


def _one_line_store_error(call: Callable[[], object]) -> str:
    with pytest.raises(StoreError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


@pytest.fixture
def s3_credentials(seaweed: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Credentials in the environment (boto3's chain), the endpoint left to each test."""
    for name, value in s3_env(seaweed).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    return seaweed


@pytest.mark.s3
def test_s3_open_store_roundtrip(s3_credentials: str, s3_bucket: str, tmp_path: Path) -> None:
    store = open_store(f"s3://{s3_bucket}/p/q/", project_dir=tmp_path, s3_endpoint=s3_credentials)
    assert store.uri == f"s3://{s3_bucket}/p/q"
    store.put("k", b"v")
    raw = admin_client(s3_credentials).get_object(Bucket=s3_bucket, Key="p/q/k")
    assert raw["Body"].read() == b"v"


@pytest.mark.s3
def test_s3_endpoint_from_environment(
    s3_credentials: str, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_credentials)
    store = open_store(f"s3://{s3_bucket}", project_dir=tmp_path)
    store.put("k", b"v")
    assert store.get("k") == b"v"


@pytest.mark.s3
def test_s3_missing_bucket(s3_credentials: str, tmp_path: Path) -> None:
    message = _one_line_store_error(
        lambda: open_store("s3://no-such-bucket", project_dir=tmp_path, s3_endpoint=s3_credentials)
    )
    assert "bucket 'no-such-bucket' does not exist at" in message
    assert "aws s3 mb s3://no-such-bucket" in message


@pytest.mark.s3
def test_s3_unreachable_endpoint_fails_quickly(s3_credentials: str, tmp_path: Path) -> None:
    (port,) = free_ports(1)
    endpoint = f"http://127.0.0.1:{port}"
    start = time.monotonic()
    message = _one_line_store_error(
        lambda: open_store(
            "s3://bucket", project_dir=tmp_path, s3_endpoint=endpoint, retry_budget_s=1.0
        )
    )
    assert time.monotonic() - start < 10
    assert f"cannot reach S3 endpoint {endpoint}" in message


@pytest.mark.s3
def test_s3_bad_credentials(
    s3_credentials: str, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    message = _one_line_store_error(
        lambda: open_store(f"s3://{s3_bucket}", project_dir=tmp_path, s3_endpoint=s3_credentials)
    )
    assert "refused access" in message and "AWS_ACCESS_KEY_ID" in message
    # the secret is never echoed
    assert "wrong" not in message


@pytest.mark.s3
def test_s3_missing_credentials(
    s3_credentials: str, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    message = _one_line_store_error(
        lambda: open_store(f"s3://{s3_bucket}", project_dir=tmp_path, s3_endpoint=s3_credentials)
    )
    assert "no usable AWS credentials" in message


def test_s3_endpoint_that_is_not_s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A web server that is not S3 (a wrong port) is named as such, not as a missing bucket."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        message = _one_line_store_error(
            lambda: open_store("s3://bucket", project_dir=tmp_path, s3_endpoint=endpoint)
        )
    finally:
        server.shutdown()
        server.server_close()
    assert "does not look like an S3 server" in message and endpoint in message


def test_a_directory_store_keeps_itself_out_of_git_and_cleans_old_scratch(
    tmp_path: Path,
) -> None:
    import os
    import subprocess
    import time

    project = tmp_path / "proj"
    project.mkdir()
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    scratch = project / ".orch" / ".tmp"
    scratch.mkdir(parents=True)
    old = scratch / "killed-writer"
    old.write_bytes(b"partial")
    os.utime(old, (time.time() - 2 * 86400,) * 2)
    fresh = scratch / "live-writer"
    fresh.write_bytes(b"partial")
    store = DirStore(project / ".orch")
    store.put("runs/a/run.json", b"{}")
    status = subprocess.run(["git", "-C", str(project), "status", "--porcelain",
                             "--untracked-files=all"], capture_output=True, text=True, check=True)
    assert status.stdout == ""
    assert not old.exists() and fresh.exists()
    assert list(store.list("")) == ["runs/a/run.json"]


@pytest.mark.parametrize("size", [0, 1, 3 * 65536, 5 * 65536 + 17])
def test_get_file_of_any_size_in_parts(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    """A big object comes back byte for byte whether it is read in one part or many
    (S3 reads past its first part as ranged GETs; the part size is made small here)."""
    from orchestrator.store import s3

    monkeypatch.setattr(s3, "RANGE_PART", 65536)
    payload = os.urandom(size)
    source = tmp_path / "blob"
    source.write_bytes(payload)
    store.put_file("blobs/sha256/parts", source)
    target = tmp_path / "copy"
    store.get_file("blobs/sha256/parts", target)
    assert target.read_bytes() == payload
