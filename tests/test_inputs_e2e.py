"""Data inputs end to end: real Docker, real SeaweedFS, a gitignored 100 MB data directory.

A sweep over ``dataset=canadian,all`` gives runs that each read (only) their own input,
read-only; changing one input gives new ids to exactly its runs; a rerun on an empty
daemon with an empty cache gets the same bytes from the S3 store alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import git_commit_all
from seaweed import admin_client, fresh_bucket, s3_env, shared_seaweed

pytestmark = [pytest.mark.docker, pytest.mark.s3]

DATA_BYTES = 100 * 1024 * 1024

PROBE = r'''
import hashlib, json, os, pathlib
cfg = json.load(open("/orch/config.json"))
root = pathlib.Path(cfg["dataset"]["path"])
files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
digest = hashlib.sha256()
for path in files:
    digest.update(str(path.relative_to(root) if root.is_dir() else "").encode() + b"\0")
    digest.update(path.read_bytes())
try:
    (root / "new" if root.is_dir() else root).write_bytes(b"x")
    wrote = 1
except OSError:
    wrote = 0
seen = sorted(k for k in os.environ if k.startswith("ORCH_INPUT_"))
want = ["ORCH_INPUT_" + cfg["dataset"]["name"].upper()]
json.dump({"files": len(files), "h": int(digest.hexdigest()[:12], 16), "wrote": wrote,
           "uid": os.getuid(), "env_ok": int(seen == want),
           "env_path": int(os.environ.get(seen[0] if seen else "", "") == str(root))},
          open(pathlib.Path(os.environ["ORCH_OUTPUT"]) / "metrics.json", "w"))
'''


def host_hash(root: Path) -> int:
    """What PROBE computes, on the host."""
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(root) if root.is_dir() else "").encode() + b"\0")
        digest.update(path.read_bytes())
    return int(digest.hexdigest()[:12], 16)


@pytest.fixture(scope="session")
def big_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """100 MB, sparse but not all zeros (random blocks at a few offsets), plus a small dir."""
    root = tmp_path_factory.mktemp("bigdata")
    big = root / "canadian.npz"
    with big.open("wb") as handle:
        handle.truncate(DATA_BYTES)
        for offset in range(0, DATA_BYTES, DATA_BYTES // 8):
            handle.seek(offset)
            handle.write(os.urandom(4096))
    small = root / "all"
    for i in range(12):
        (small / f"part{i // 4}").mkdir(parents=True, exist_ok=True)
        (small / f"part{i // 4}" / f"rows{i}.csv").write_bytes(os.urandom(2048))
    return root


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    return shared_seaweed(tmp_path_factory.getbasetemp())


def orch_cmd(*args: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("orch")
    return subprocess.run([str(exe), *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=timeout)


@pytest.fixture(scope="module")
def proj(tmp_path_factory: pytest.TempPathFactory, base_image: str, big_data: Path,
         endpoint: str) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("inputs") / "inproj"
    (root / "configs" / "dataset").mkdir(parents=True)
    (root / "configs" / "config.yaml").write_text("defaults:\n  - dataset: canadian\n  - _self_\n")
    for name in ("canadian", "all"):
        (root / "configs" / "dataset" / f"{name}.yaml").write_text(
            f"name: {name}\npath: ${{orch.input:{name}}}\n")
    (root / "probe.py").write_text(PROBE)
    shutil.copytree(big_data, root / "data")
    (root / "orch.yaml").write_text(yaml.safe_dump({
        "name": "inproj", "base_image": base_image, "command": ["python3", "probe.py"],
        "inputs": {"canadian": "data/canadian.npz", "all": "data/all/"},
    }, sort_keys=False))
    (root / ".gitignore").write_text(".orch/\ndata/\n")
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    git_commit_all(root)
    bucket = fresh_bucket(endpoint)
    cache = tmp_path_factory.mktemp("cache-driver")
    env = {**s3_env(endpoint), "ORCH_CACHE": str(cache)}
    store = f"s3://{bucket}/exp"
    return {"root": root, "bucket": bucket, "store": store, "env": env, "cache": cache,
            "runs": {}}


def sweep(proj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    proc = orch_cmd("sweep", "-p", str(proj["root"]), "dataset=canadian,all", "--store",
                    proj["store"], "--json", env=proj["env"])
    assert proc.returncode == 0, proc.stderr
    return {run["overrides"][0].split("=")[1]: run for run in json.loads(proc.stdout)["runs"]}


def record(proj: dict[str, Any], run_id: str) -> dict[str, Any]:
    proc = orch_cmd("show", run_id, "--store", proj["store"], "--json", env=proj["env"])
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def first(proj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    runs = sweep(proj)
    proj["runs"]["first"] = runs
    return runs


def test_each_run_reads_its_own_input_read_only(proj: dict[str, Any], first: dict) -> None:
    data = proj["root"] / "data"
    expected = {"canadian": data / "canadian.npz", "all": data / "all"}
    for name, run in first.items():
        assert run["status"] == "succeeded", run
        metrics = run["metrics"]
        assert metrics["h"] == host_hash(expected[name]), name
        assert metrics["files"] == (1 if name == "canadian" else 12)
        assert metrics["wrote"] == 0 and metrics["uid"] == 65534
        assert metrics["env_ok"] == 1 and metrics["env_path"] == 1
    inputs = {row["name"]: row for row in json.loads(orch_cmd(
        "inputs", "-p", str(proj["root"]), "--store", proj["store"], "--json",
        env=proj["env"]).stdout)}
    assert inputs["canadian"]["uploaded"] and inputs["canadian"]["cached"]
    assert inputs["canadian"]["bytes"] == DATA_BYTES
    for name, run in first.items():
        shown = record(proj, run["run_id"])["inputs"]
        assert list(shown) == [name]  # a run depends on exactly the input its config names
        assert shown[name]["digest"] == inputs[name]["digest"]
        assert shown[name]["source"] == str(expected[name].relative_to(proj["root"])) + (
            "/" if name == "all" else "")
        assert shown[name]["files"] == inputs[name]["files"]


def test_data_is_mounted_not_baked_into_layers(proj: dict[str, Any], first: dict) -> None:
    client = admin_client(proj["env"]["AWS_ENDPOINT_URL"])
    sizes = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=proj["bucket"]):
        sizes.update({item["Key"]: item["Size"] for item in page.get("Contents", [])})
    shown = record(proj, first["canadian"]["run_id"])
    data_sha = hashlib.sha256((proj["root"] / "data" / "canadian.npz").read_bytes()).hexdigest()
    assert [key for key, size in sizes.items() if size == DATA_BYTES] == [
        f"exp/blobs/sha256/{data_sha}"]  # the data file, stored once, beside the layers
    code_layer = shown["layers"]["code"].split(":")[1]
    assert sizes[f"exp/blobs/sha256/{code_layer}"] < 1024 * 1024  # not in the code layer
    digest = shown["inputs"]["canadian"]["digest"]
    assert f"exp/blobs/sha256/{digest.split(':')[1]}" in sizes  # its manifest


def test_an_unchanged_resubmit_runs_nothing(proj: dict[str, Any], first: dict) -> None:
    again = sweep(proj)
    assert {run["status"] for run in again.values()} == {"skipped"}
    assert {n: r["run_id"] for n, r in again.items()} == {n: r["run_id"] for n, r in first.items()}


def test_changing_one_input_reruns_exactly_its_runs(proj: dict[str, Any], first: dict) -> None:
    (proj["root"] / "data" / "all" / "part0" / "rows0.csv").write_bytes(b"new rows\n")
    second = sweep(proj)
    proj["runs"]["second"] = second
    assert second["canadian"]["status"] == "skipped"
    assert second["canadian"]["run_id"] == first["canadian"]["run_id"]
    assert second["all"]["status"] == "succeeded"
    assert second["all"]["run_id"] != first["all"]["run_id"]
    assert second["all"]["metrics"]["h"] == host_hash(proj["root"] / "data" / "all")
    proc = orch_cmd("compare", first["all"]["run_id"], second["all"]["run_id"], "--store",
                    proj["store"], "--json", env=proj["env"])
    assert proc.returncode == 0, proc.stderr
    changed = json.loads(proc.stdout)["inputs"]
    assert [entry["name"] for entry in changed] == ["all"]


@pytest.mark.parametrize("name", ["canadian", "all"])
def test_a_rerun_on_a_fresh_machine_gets_the_same_bytes(
    proj: dict[str, Any], first: dict, second_docker_host: str, tmp_path: Path, name: str
) -> None:
    from test_s3_e2e import empty_daemon

    empty_daemon(second_docker_host)
    fresh = tmp_path / "empty-cache"
    # The project's own data directory is gone too: the store alone must do.
    proc = orch_cmd("rerun", first[name]["run_id"], "--store", proj["store"], "--json",
                    env={**proj["env"], "ORCH_CACHE": str(fresh),
                         "DOCKER_HOST": second_docker_host})
    assert proc.returncode == 0, proc.stderr + proc.stdout
    result = json.loads(proc.stdout)
    assert result["identical"] is True
    assert result["metrics"] == first[name]["metrics"]
    assert any((fresh / "inputs" / "objects").iterdir())


def test_node_side_materialize_from_an_s3_store(proj: dict[str, Any], first: dict,
                                                tmp_path: Path, monkeypatch) -> None:
    """What a Ray node runs before a run's container starts, with an empty cache."""
    from orchestrator.inputs import materialize
    from orchestrator.inputs.cache import HostCache
    from orchestrator.inputs.transfer import fetch, fetch_manifest
    from orchestrator.schema.record import RunRecord
    from orchestrator.store import RunStore, open_store

    for key, value in proj["env"].items():
        monkeypatch.setenv(key, value)
    runs = RunStore(open_store(proj["store"], project_dir=tmp_path))
    rec = RunRecord.from_json(record(proj, first["all"]["run_id"]))
    mounts = materialize(runs.blobs, rec.inputs, tmp_path / "node")
    tree = mounts["all"]
    original = proj["root"] / "data" / "all"
    laid = sorted(str(p.relative_to(tree)) for p in tree.rglob("*") if p.is_file())
    assert len(laid) == 12 and (tree / "part1" / "rows5.csv").read_bytes() == (
        original / "part1" / "rows5.csv").read_bytes()
    assert all(not p.stat().st_mode & 0o222 for p in tree.rglob("*"))
    # A node that already has some files fetches only the ones it lacks.
    cache = HostCache(tmp_path / "node")
    manifest = fetch_manifest("all", runs.blobs, cache, rec.inputs["all"].digest)
    victim = manifest.files[3]
    os.unlink(cache.object_path(victim.sha256, victim.exec))
    assert fetch("all", runs.blobs, cache, manifest).files == 1
    assert fetch("all", runs.blobs, cache, manifest).files == 0


def test_a_rerun_whose_data_is_gone_fails_in_one_line(
    proj: dict[str, Any], first: dict, tmp_path: Path
) -> None:
    digest = record(proj, first["all"]["run_id"])["inputs"]["all"]["digest"]
    admin_client(proj["env"]["AWS_ENDPOINT_URL"]).delete_object(
        Bucket=proj["bucket"], Key=f"exp/blobs/sha256/{digest.split(':')[1]}")
    proc = orch_cmd("rerun", first["all"]["run_id"], "--store", proj["store"],
                    env={**proj["env"], "ORCH_CACHE": str(tmp_path / "empty")})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr == (
        f"error: input 'all' ({digest}) cannot be had exactly: its manifest is not in the store\n")


# -- S3 sources --------------------------------------------------------------------------


def test_an_s3_source_is_snapshotted_by_content(endpoint: str, make_project, tmp_path: Path,
                                                orch) -> None:
    bucket = fresh_bucket(endpoint)
    client = admin_client(endpoint)
    files = {"vectors/a.vec": b"0.1 0.2\n", "vectors/sub/b.vec": os.urandom(5000)}
    for rel, data in files.items():
        client.put_object(Bucket=bucket, Key=f"corpora/fasttext/{rel}", Body=data)
        (tmp_path / "local" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "local" / rel).write_bytes(data)
    root = make_project(inputs={"embeddings": f"s3://{bucket}/corpora/fasttext",
                                "local": str(tmp_path / "local")})
    env = {**s3_env(endpoint), "ORCH_CACHE": str(tmp_path / "cache")}

    def listing() -> dict[str, Any]:
        proc = orch("inputs", "-p", str(root), "--json", env=env)
        assert proc.returncode == 0, proc.stderr
        return {row["name"]: row for row in json.loads(proc.stdout)}

    rows = listing()
    # The same files have the same digest wherever they are kept.
    assert rows["embeddings"]["digest"] == rows["local"]["digest"]
    assert rows["embeddings"]["cached"] and rows["embeddings"]["files"] == 2
    assert listing()["embeddings"]["digest"] == rows["embeddings"]["digest"]
    client.put_object(Bucket=bucket, Key="corpora/fasttext/vectors/a.vec", Body=b"changed")
    assert listing()["embeddings"]["digest"] != rows["embeddings"]["digest"]


def test_an_input_kept_in_git_is_mounted_not_baked_into_the_code_layer(
    make_project, orch, tmp_path: Path
) -> None:
    # Data committed to the repository (here: not gitignored) is still an input: pinned by
    # content and mounted, not a second copy in the code layer whose edits change the code.
    root = make_project("tracked", inputs={"vocab": "corpus/vocab.txt"},
                        files={"corpus/vocab.txt": "maple\nsyrup\n"})
    env = {"ORCH_CACHE": str(tmp_path / "cache")}

    def run_once() -> dict[str, Any]:
        proc = orch("sweep", "-p", str(root), "--json", env=env)
        assert proc.returncode == 0, proc.stderr
        [run] = json.loads(proc.stdout)["runs"]
        proc = orch("show", run["run_id"], "-p", str(root), "--json", env=env)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    first = run_once()
    assert set(first["inputs"]) == {"canadian", "vocab"}  # named by no config: every run's
    listing = subprocess.run(["docker", "run", "--rm", first["image_id"], "ls", "/orch/code"],
                             capture_output=True, text=True, check=True).stdout.split()
    assert "train.py" in listing and "corpus" not in listing
    (root / "corpus" / "vocab.txt").write_text("maple\nsyrup\nhockey\n")
    git_commit_all(root, "a bigger vocabulary")
    second = run_once()
    assert second["run_id"] != first["run_id"]
    assert second["inputs"]["vocab"]["digest"] != first["inputs"]["vocab"]["digest"]
    assert second["layers"]["code"] == first["layers"]["code"]


# -- bad inputs: one error line, exit 2 ---------------------------------------------------


def bad(orch, root: Path, *args: str, env: dict[str, str] | None = None) -> str:
    proc = orch(*(args or ("inputs",)), "-p", str(root), env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    return proc.stderr


def test_bad_inputs_are_one_error_line(make_project, orch, tmp_path: Path,
                                       endpoint: str) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    data = tmp_path / "data"
    (data / "ok").mkdir(parents=True)
    (data / "ok" / "a").write_text("a")
    (data / "leaky").mkdir()
    (data / "leaky" / "link").symlink_to(outside)
    (data / "loopy").mkdir()
    (data / "loopy" / "me").symlink_to("me")
    (data / "sock").mkdir()
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(data / "sock" / "s"))
    cases = {
        "missing": (str(data / "nope"), "does not exist"),
        "leaky": (str(data / "leaky"), "symlink link leaves the input"),
        "loopy": (str(data / "loopy"), "symlink me loops"),
        "sockets": (str(data / "sock"), "s is a socket"),
        "device": ("/dev/null", "is a device"),
    }
    try:
        for name, (source, why) in cases.items():
            root = make_project(f"bad-{name}", inputs={name: source})
            line = bad(orch, root)
            assert f"input {name!r}" in line and why in line, line
    finally:
        sock.close()
    root = make_project("bad-name", inputs={"my-data": str(data / "ok")})
    assert "inputs.my-data" in bad(orch, root) and "not an identifier" in bad(orch, root)
    env = s3_env(endpoint)
    root = make_project("bad-s3", inputs={"corpus": "s3://no-such-bucket-orch/x/"})
    line = bad(orch, root, env=env)
    assert "input 'corpus'" in line and "does not exist" in line
    bucket = fresh_bucket(endpoint)
    root = make_project("bad-prefix", inputs={"corpus": f"s3://{bucket}/nothing/here"})
    assert "does not exist" in bad(orch, root, env=env)
    root = make_project("bad-key", inputs={"corpus": f"s3://{bucket}/x/"})
    line = bad(orch, root, env={**env, "AWS_SECRET_ACCESS_KEY": "wrong"})
    assert "input 'corpus'" in line and "not readable" in line
    root = make_project("bad-ref", inputs={"ok": str(data / "ok")},
                        files={"configs/dataset/named.yaml": "path: ${orch.input:nope}\n"})
    line = bad(orch, root, "sweep", "dataset=named", "--dry-run")
    assert "names input 'nope'" in line and "declared: all, canadian, ok" in line
