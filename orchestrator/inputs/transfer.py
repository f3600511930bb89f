"""Inputs between the host cache and orch's store (``blobs/sha256/``), both ways.

Upload: the files the store lacks (each distinct content once), then the manifest, last;
so a manifest in the store means every file it lists is there, and a reader never trusts
a half-uploaded input. Fetch: the manifest (checked against its digest), then the files
this cache lacks (each checked against its digest before it is published), then the tree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .._util.pool import parallel_map
from ..errors import InputError, NotFound, StoreError
from ..schema.record import InputRef
from .cache import HostCache
from .manifest import FileEntry, Manifest

#: Above this many files, one listing of ``blobs/sha256/`` beats a HEAD per file.
LIST_ABOVE = 64
WORKERS = 16


class BlobStore(Protocol):
    """What ``orchestrator.store.blobs.Blobs`` offers that inputs use."""

    def has(self, digest: str) -> bool: ...
    def put(self, digest: str, source: bytes | Path, *, known_missing: bool = False) -> bool: ...
    def get(self, digest: str) -> bytes: ...
    def get_file(self, digest: str, path: Path) -> None: ...
    def digests(self) -> Iterable[str]: ...


@dataclass
class Transfer:
    files: int = 0
    bytes: int = 0


def _store_has(blobs: BlobStore, entries: Sequence[FileEntry], workers: int) -> set[str]:
    if len(entries) > LIST_ABOVE:
        return set(blobs.digests())
    present = parallel_map(lambda e: blobs.has(e.digest), list(entries), workers)
    return {e.digest for e, here in zip(entries, present, strict=True) if here}


def upload(
    name: str, blobs: BlobStore, cache: HostCache, manifest: Manifest, *, workers: int = WORKERS
) -> Transfer:
    """Put an input (already in the host cache) into the store; a no-op when it is there."""
    done = Transfer()
    if blobs.has(manifest.digest):
        return done
    contents = {entry.sha256: entry for entry in manifest.distinct().values()}
    entries = list(contents.values())
    present = _store_has(blobs, entries, workers)
    todo = [entry for entry in entries if entry.digest not in present]

    def put(entry: FileEntry) -> None:
        path = cache.object_path(entry.sha256, entry.exec)
        if not path.is_file():
            path = cache.object_path(entry.sha256, not entry.exec)
        try:
            blobs.put(entry.digest, path, known_missing=True)
        except StoreError as exc:
            raise StoreError(f"input {name!r}: uploading {entry.path or name}: {exc}") from exc

    parallel_map(put, todo, workers)
    blobs.put(manifest.digest, manifest.to_bytes())
    done.files, done.bytes = len(todo), sum(entry.size for entry in todo)
    return done


def _unavailable(name: str, digest: str, why: str) -> InputError:
    return InputError(f"input {name!r} ({digest}) cannot be had exactly: {why}")


def fetch_manifest(name: str, blobs: BlobStore, cache: HostCache, digest: str) -> Manifest:
    manifest = cache.get_manifest(digest)
    if manifest is not None:
        return manifest
    try:
        data = blobs.get(digest)
    except NotFound:
        raise _unavailable(name, digest, "its manifest is not in the store") from None
    except StoreError as exc:
        raise _unavailable(name, digest, str(exc)) from None
    manifest = Manifest.from_bytes(data, f"blob {digest}")
    cache.put_manifest(manifest)
    return manifest


def fetch(
    name: str,
    blobs: BlobStore,
    cache: HostCache,
    manifest: Manifest,
    *,
    workers: int = WORKERS,
) -> Transfer:
    """Bring the files of ``manifest`` this cache lacks from the store, each verified."""
    done = Transfer()
    missing = cache.missing(manifest)

    def get(entry: FileEntry) -> None:
        other = cache.object_path(entry.sha256, not entry.exec)
        if other.is_file():  # same bytes, other mode: a local copy, checked
            cache.add_from_file(name, entry, str(other))
            return
        tmp = cache.temp_path(entry)
        try:
            blobs.get_file(entry.digest, tmp)
        except NotFound:
            why = f"file {entry.path or name} ({entry.digest}) is not in the store"
            raise _unavailable(name, manifest.digest, why) from None
        except StoreError as exc:
            raise _unavailable(name, manifest.digest, f"file {entry.path or name}: {exc}") from None
        cache.add_object_file(entry, tmp)

    parallel_map(get, missing, workers)
    done.files, done.bytes = len(missing), sum(entry.size for entry in missing)
    return done


def materialize(
    blobs: BlobStore,
    inputs: Mapping[str, InputRef],
    cache_root: Path,
    *,
    verify: bool = False,
    workers: int = WORKERS,
) -> dict[str, Path]:
    """The host path of each input, fetched from the store into this node's cache first.

    This is what a node runs before a run's container starts (the local backend, a Ray
    node, ``orch rerun``): only the files the node lacks travel; every byte mounted is
    checked against the recorded digest (``verify`` also hashes the cached files again).
    An input that cannot be had exactly raises one InputError naming it and its digest.
    """
    cache = HostCache(cache_root)
    mounts: dict[str, Path] = {}
    for name, ref in sorted(inputs.items()):
        cache.lease(ref.digest)  # held until this process ends: a prune leaves it alone
        manifest = fetch_manifest(name, blobs, cache, ref.digest)
        if verify:
            distinct = manifest.distinct().values()
            present = [e for e in distinct if cache.has_object(e.sha256, e.exec)]
            good = parallel_map(cache.verify_object, present, workers)
            if not all(good):  # bad objects were dropped: fetch them and lay the tree out anew
                cache.drop_tree(manifest)
        fetch(name, blobs, cache, manifest, workers=workers)
        mounts[name] = cache.mount_source(manifest)
    return mounts
