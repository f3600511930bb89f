"""Pruning a machine's host cache of inputs (``orch gc --cache``).

The cache is a copy: every input a run record names is in the store (and a local source
in its own directory too), so what is pruned here is fetched again when a run needs it.
Kept:

* inputs mounted within ``max_age_s`` (each mount touches the input's manifest here),
* inputs that running containers mount (``mounted``: their host paths),
* objects written within ``max_age_s`` (a sweep staging an input writes its objects
  before its manifest), and every object a kept manifest lists.

A tree (a directory input's hard links) goes with its manifest; orphan trees and
half-built ones go once old.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .cache import HostCache, _force_rmtree, _force_unlink


@dataclass
class Pruned:
    """What a prune removed (or, dry, would remove)."""

    inputs: list[str] = field(default_factory=list)  # digests
    objects: int = 0
    bytes: int = 0
    kept: int = 0

    def summary(self, dry_run: bool) -> str:
        verb = "would remove" if dry_run else "removed"
        return (
            f"input cache: {verb} {len(self.inputs)} inputs and {self.objects} files "
            f"({self.bytes} bytes) not mounted recently; kept {self.kept} inputs"
        )


def _age_s(path: Path, now: float) -> float:
    try:
        return now - path.lstat().st_mtime
    except OSError:
        return 0.0  # gone meanwhile: nothing to remove


def prune(
    cache_root: Path,
    max_age_s: float,
    mounted: Iterable[str],
    *,
    dry_run: bool = False,
    now: float | None = None,
) -> Pruned:
    # Real paths on both sides: a mount's source is the path as it was given to Docker.
    cache = HostCache(Path(cache_root).resolve())
    if dry_run:  # removes nothing, so takes no lock (and writes nothing)
        return _prune(cache, max_age_s, mounted, dry_run, now)
    with cache.pruning():
        return _prune(cache, max_age_s, mounted, dry_run, now)


def _prune(cache: HostCache, max_age_s: float, mounted: Iterable[str], dry_run: bool,
           now: float | None) -> Pruned:
    now = time.time() if now is None else now
    in_use = {os.path.realpath(p) for p in mounted}
    result = Pruned()
    keep: set[str] = set()  # object file names
    manifests = sorted(cache.manifests.iterdir()) if cache.manifests.is_dir() else []
    for path in manifests:
        if path.name.startswith("."):
            continue  # being written (atomic_write's temporary file)
        manifest = cache.get_manifest("sha256:" + path.name)
        if manifest is None:
            continue  # corrupt: get_manifest removed it
        objects = {cache.object_path(e.sha256, e.exec).name for e in manifest.files}
        tree = cache.trees / path.name
        used = str(tree) in in_use or any(str(cache.objects / name) in in_use for name in objects)
        with cache.unleased(manifest.digest, remove=not dry_run) as free:
            if used or not free or _age_s(path, now) < max_age_s:
                keep |= objects  # mounted, leased by a sweep about to mount it, or recent
                result.kept += 1
                continue
            result.inputs.append(manifest.digest)
            if not dry_run:
                cache.drop_tree(manifest)
                _force_unlink(path)
    # A lease on an input whose manifest is not here yet: its objects are being fetched,
    # and which they are is not known; keep every object this time.
    named_digests = {"sha256:" + p.name for p in manifests}
    if any(digest not in named_digests for digest in cache.leased_digests()):
        return result
    for obj in sorted(cache.objects.iterdir()) if cache.objects.is_dir() else []:
        if obj.name in keep or str(obj) in in_use or _age_s(obj, now) < max_age_s:
            continue
        try:
            size = obj.lstat().st_size
        except OSError:
            continue
        result.objects += 1
        result.bytes += size
        if not dry_run:
            _force_unlink(obj)
    named = {p.name for p in manifests}
    for tree in sorted(cache.trees.iterdir()) if cache.trees.is_dir() else []:
        orphan = tree.name not in named  # also a half-built ".part" tree
        if orphan and str(tree) not in in_use and _age_s(tree, now) >= max_age_s and not dry_run:
            _force_rmtree(tree)
    return result
