"""Pruning the host cache of inputs: ``orch gc --cache DAYS``.

Unit tests on a real cache directory, and one end to end: a pruned cache is filled again
from the store by a rerun, and an input a running container mounts is never pruned.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from orchestrator.inputs import HostCache, Manifest, prune
from orchestrator.inputs.manifest import FileEntry

DAY = 86400.0


def add_input(cache: HostCache, tmp: Path, files: dict[str, bytes]) -> Manifest:
    """A directory input in the cache, as staging and a mount leave it."""
    entries = []
    for rel, data in files.items():
        source = tmp / hashlib.sha256(data).hexdigest()
        source.write_bytes(data)
        entry = FileEntry(rel, len(data), hashlib.sha256(data).hexdigest())
        cache.add_from_file("x", entry, str(source))
        entries.append(entry)
    manifest = Manifest.build("dir", entries)
    cache.put_manifest(manifest)
    cache.mount_source(manifest)
    return manifest


def age(path: Path, days: float) -> None:
    stamp = time.time() - days * DAY
    os.utime(path, (stamp, stamp), follow_symlinks=False)


def age_input(cache: HostCache, manifest: Manifest, days: float) -> None:
    age(cache.manifest_path(manifest.digest), days)
    for entry in manifest.files:
        age(cache.object_path(entry.sha256), days)


@pytest.fixture
def cache(tmp_path: Path) -> HostCache:
    return HostCache(tmp_path / "cache")


def test_prunes_what_no_run_mounted_lately_and_keeps_what_is_shared(
    cache: HostCache, tmp_path: Path
) -> None:
    old = add_input(cache, tmp_path, {"a.txt": b"old only", "shared.txt": b"in both"})
    new = add_input(cache, tmp_path, {"b.txt": b"new only", "shared.txt": b"in both"})
    age_input(cache, old, 30)
    age_input(cache, new, 30)
    cache.mount_source(new)  # a run mounted it just now

    pruned = prune(cache.root.parent, 14 * DAY, mounted=())

    assert pruned.inputs == [old.digest] and pruned.kept == 1
    assert pruned.objects == 1 and pruned.bytes == len(b"old only")
    assert cache.get_manifest(old.digest) is None
    assert not (cache.trees / old.digest.removeprefix("sha256:")).exists()
    assert not cache.has_object(hashlib.sha256(b"old only").hexdigest())
    assert not cache.missing(new)  # its files, the shared one too, are all there
    assert (cache.mount_source(new) / "shared.txt").read_bytes() == b"in both"


def test_keeps_a_mounted_input_young_objects_and_a_dry_run_removes_nothing(
    cache: HostCache, tmp_path: Path
) -> None:
    mounted = add_input(cache, tmp_path, {"a.txt": b"in use"})
    unused = add_input(cache, tmp_path, {"b.txt": b"unused"})
    age_input(cache, mounted, 30)
    age_input(cache, unused, 30)
    # An object a sweep is staging right now: written, its manifest not yet.
    staging = FileEntry("", 7, hashlib.sha256(b"staging").hexdigest())
    (tmp_path / "staging").write_bytes(b"staging")
    cache.add_from_file("x", staging, str(tmp_path / "staging"))
    before = sorted(str(p) for p in cache.root.rglob("*"))

    tree = str(cache.mount_source(mounted))
    age(cache.manifest_path(mounted.digest), 30)  # as if the mount was long ago
    dry = prune(cache.root.parent, DAY, mounted=[tree], dry_run=True)
    assert dry.inputs == [unused.digest] and dry.objects == 1
    assert sorted(str(p) for p in cache.root.rglob("*")) == before

    done = prune(cache.root.parent, DAY, mounted=[tree])
    assert done.inputs == [unused.digest]
    assert not cache.missing(mounted) and cache.has_object(staging.sha256)
    assert cache.get_manifest(unused.digest) is None


def test_an_empty_or_missing_cache_prunes_nothing(tmp_path: Path) -> None:
    pruned = prune(tmp_path / "nothing-here", 0, mounted=())
    assert (pruned.inputs, pruned.objects, pruned.kept) == ([], 0, 0)


@pytest.mark.docker
def test_gc_cache_end_to_end(make_project, orch, tmp_path: Path, docker_client) -> None:
    root = make_project("prune")
    cache_root = tmp_path / "cache"
    env = {"ORCH_CACHE": str(cache_root)}
    proc = orch("sweep", "-p", str(root), "dataset=canadian,all", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    runs = {r["overrides"][0]: r for r in json.loads(proc.stdout)["runs"]}
    cache = HostCache(cache_root)
    canadian = runs["dataset=canadian"]
    record = json.loads(orch("show", canadian["run_id"], "-p", str(root), "--json").stdout)
    digest = record["inputs"]["canadian"]["digest"]
    manifest = cache.get_manifest(digest)
    assert manifest is not None
    source = cache.mount_source(manifest)
    tree_all = cache.trees / json.loads(
        orch("show", runs["dataset=all"]["run_id"], "-p", str(root), "--json").stdout
    )["inputs"]["all"]["digest"].removeprefix("sha256:")
    assert tree_all.is_dir()

    # A running orch container mounting the 'canadian' input keeps it; 'all' goes.
    holder = docker_client.containers.run(
        canadian["image_id"], ["sleep", "60"], detach=True, labels={"org.orch.run_id": "holder"},
        volumes={str(source): {"bind": "/orch/inputs/canadian", "mode": "ro"}},
    )
    try:
        proc = orch("gc", "-p", str(root), "--cache", "0", env=env)
        assert proc.returncode == 0, proc.stderr
        assert "input cache: removed 1 inputs" in proc.stdout and "kept 1 inputs" in proc.stdout
        assert cache.get_manifest(digest) is not None and not tree_all.exists()
    finally:
        holder.remove(force=True)

    # Nothing is lost: the store has every input a record names; a rerun fetches it again.
    proc = orch("rerun", runs["dataset=all"]["run_id"], "-p", str(root), "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["metrics"] == runs["dataset=all"]["metrics"]
    proc = orch("gc", "-p", str(root), "--cache", "0", env=env)
    assert proc.returncode == 0 and "removed 2 inputs" in proc.stdout, proc.stdout
