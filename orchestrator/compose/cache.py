"""A cache of composed sweeps: what Hydra gave for a list of points, kept on disk.

Two kinds of entry: a sweep's result (``<key>.json``: every point's config, its
``${hydra:...}`` values, its hydra node, its deferred keys, and the files read), and a
*defaults list*'s composition (``base-<key>.base``: the group choices of the points before
their plain values are applied, the expensive part of a Hydra compose). A new sweep that
only changes values (a new seed) composes its points on a cached defaults list exactly as
:meth:`~.config.Composer.compose_many` does on one it composed itself: the same pickled
config, the same step of Hydra's applied to a copy.

Composing even one point with Hydra costs a large part of a one-run sweep's fixed cost,
and a researcher re-submits the same sweep (a failed run retried, a dry run and then the
run, ``orch compose`` and then ``orch sweep``) on an unchanged config tree. The key says
everything the composition depends on:

- every file and directory of the config tree (names and bytes: editing a file, adding an
  option to a group or a new group all change it), and the tree's absolute path (the
  results name the files they read);
- the points' overrides, the primary config's name, the job name, the variables a run's
  ``${oc.env:...}`` may read, whether the hydra node is kept;
- the versions of hydra-core and omegaconf, the Hydra plugins installed beside orch (they
  decide which ``hydra/`` options stand in as empty, see :mod:`.config`), and the bytes of
  orch's own composing modules.

A tree that reaches outside itself (``hydra.searchpath``) or a composition that read
the clock (``${now:...}``) is never cached, nor a result that JSON would not give back exactly. An
entry is one JSON file, written under a temporary name and renamed into place (two
processes writing the same entry both write the same bytes); one that cannot be read or
has the wrong shape is a miss. The cache keeps the most recently used
:data:`MAX_ENTRIES` entries.

A defaults list is kept as the pickle of its OmegaConf config (nothing else keeps its node
types and flags), so the cache directory is trusted as Python's own ``__pycache__`` is:
it lives under the user's cache root, written and read by the user alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._util.files import atomic_write

__all__ = ["MAX_ENTRIES", "CachedSweep", "ComposeCache"]

#: Entries kept; each is a sweep's configs, so a few hundred KB at most for most projects.
MAX_ENTRIES = 128
#: A tree larger than this is not cached: hashing it would cost what composing saves.
MAX_TREE_BYTES = 8 << 20
MAX_TREE_FILES = 4000
#: Bumped when an entry's layout changes.
_FORMAT = 1
#: orch's modules whose code decides what a composition gives.
_COMPOSING = ("orchestrator.compose.config", "orchestrator.compose.configio",
              "orchestrator.compose.overrides", "orchestrator.compose.runtime",
              "orchestrator.inputs.decl")
#: Text in a config file or an override that makes the composition depend on more than
#: the tree (a config source elsewhere). A composition that read the clock is not stored
#: either (the composer knows: :mod:`.config`).
_UNCACHEABLE = (b"searchpath",)


@dataclass(frozen=True)
class CachedSweep:
    """A hit: each point's composition (the fields of :class:`~.config.Composed`, as
    plain JSON values) and the config files the composition read."""

    composed: list[dict[str, Any]]
    files: tuple[str, ...]


class ComposeCache:
    """Composed sweeps under ``root`` (one JSON file each)."""

    def __init__(self, root: Path, max_entries: int = MAX_ENTRIES) -> None:
        self.root = Path(root)
        self.max_entries = max_entries

    @classmethod
    def under(cls, cache_root: Path) -> ComposeCache:
        """The cache in orch's cache directory (``Settings.cache_root``)."""
        return cls(Path(cache_root) / "compose")

    # -- keys -------------------------------------------------------------------------

    @staticmethod
    def tree(config_dir: Path) -> str | None:
        """The config tree's digest, or None when it is not to be cached (see above)."""
        return _tree_digest(Path(config_dir))

    def key(
        self,
        config_dir: Path,
        tree: str | None,
        *,
        config_name: str,
        job_name: str,
        env: Mapping[str, str],
        keep_hydra: bool,
        points: Sequence[Sequence[str]],
        versions: Mapping[str, str],
    ) -> str | None:
        """The entry's name for this composition of the tree whose digest is ``tree``, or
        None when it must not be cached."""
        if tree is None or any(u.decode() in line for line in _flat(points) for u in _UNCACHEABLE):
            return None
        described = {
            "format": _FORMAT,
            "tree": tree,
            "config_dir": str(config_dir),
            "config_name": config_name,
            "job_name": job_name,
            "env": sorted(env.items()),
            "keep_hydra": keep_hydra,
            "points": [list(point) for point in points],
            "versions": dict(sorted(versions.items())),
            "plugins": _plugins(),
            "orch": _code_digest(),
        }
        return _hash(described)

    def base_key(
        self, config_dir: Path, tree: str, *, config_name: str, job_name: str,
        defaults: Sequence[str], versions: Mapping[str, str],
    ) -> str:
        """The name of a defaults list's composition (the group choices of a sweep's
        points, before their plain values are applied)."""
        return "base-" + _hash({
            "format": _FORMAT, "tree": tree, "config_dir": str(config_dir),
            "config_name": config_name, "job_name": job_name, "defaults": list(defaults),
            "versions": dict(sorted(versions.items())), "plugins": _plugins(),
            "orch": _code_digest(),
        })

    # -- entries ----------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def get(self, key: str) -> CachedSweep | None:
        """The entry, or None (absent, unreadable, or not an entry)."""
        path = self._path(key)
        try:
            data = json.loads(path.read_bytes())
        except (OSError, ValueError):
            return None
        if not (
            isinstance(data, dict)
            and data.get("key") == key
            and isinstance(data.get("composed"), list)
            and all(_is_composed(item) for item in data["composed"])
            and isinstance(data.get("files"), list)
            and all(isinstance(f, str) for f in data["files"])
        ):
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # recently used: kept longest
        return CachedSweep(data["composed"], tuple(data["files"]))

    def put(self, key: str, composed: list[dict[str, Any]], files: Sequence[str]) -> None:
        """Store an entry, if JSON gives it back exactly; a cache that cannot be written
        only costs speed."""
        body = {"key": key, "composed": composed, "files": list(files)}
        try:
            blob = json.dumps(body, allow_nan=True).encode()  # key order kept
        except (TypeError, ValueError):
            return
        if not _same(json.loads(blob), body):
            return
        try:
            atomic_write(self._path(key), blob, fsync=False)
            self._evict()
        except OSError:
            return

    def get_base(self, key: str) -> tuple[bytes, list[str], list[tuple[str, str]]] | None:
        """A defaults list's composition: its pickled config (with its hydra node), the
        files it read and the ``hydra/`` options it stood in for; None when absent or
        malformed."""
        path = self.root / f"{key}.base"
        try:
            if not (_own(self.root) and _own(path)):
                return None  # a pickle is code: only one the user alone could have written
            head, _, pickled = path.read_bytes().partition(b"\n")
            data = json.loads(head)
        except (OSError, ValueError):
            return None
        if not (isinstance(data, dict) and data.get("key") == key
                and data.get("size") == len(pickled)
                and isinstance(data.get("files"), list)
                and all(isinstance(f, str) for f in data["files"])
                and isinstance(data.get("placeholders"), list)
                and all(isinstance(p, list) and len(p) == 2 and all(isinstance(s, str) for s in p)
                        for p in data["placeholders"])):
            return None
        with contextlib.suppress(OSError):
            os.utime(path)
        return pickled, data["files"], [(g, o) for g, o in data["placeholders"]]

    def put_base(self, key: str, pickled: bytes, files: Sequence[str],
                 placeholders: Sequence[tuple[str, str]]) -> None:
        head = {"key": key, "size": len(pickled), "files": list(files),
                "placeholders": [list(p) for p in placeholders]}
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)  # see get_base
            atomic_write(self.root / f"{key}.base",
                         json.dumps(head).encode() + b"\n" + pickled, fsync=False)
            self._evict()
        except OSError:
            return

    def _evict(self) -> None:
        """Keep the ``max_entries`` most recently used entries."""
        entries: list[tuple[float, Path]] = []
        for path in [*self.root.glob("*.json"), *self.root.glob("*.base")]:
            with contextlib.suppress(OSError):
                entries.append((path.stat().st_mtime, path))
        entries.sort(reverse=True)
        for _, path in entries[self.max_entries :]:
            with contextlib.suppress(OSError):
                path.unlink()


def _hash(described: Mapping[str, Any]) -> str:
    blob = json.dumps(described, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def _flat(points: Sequence[Sequence[str]]) -> list[str]:
    return [line for point in points for line in point]


def _is_composed(item: Any) -> bool:
    return (
        isinstance(item, dict)
        and isinstance(item.get("config"), dict)
        and isinstance(item.get("hydra"), dict)
        and (item.get("node") is None or isinstance(item.get("node"), dict))
        and isinstance(item.get("deferred"), list)
    )


def _same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (``1`` is not ``1.0`` nor ``True``,
    a tuple is not a list): what JSON gives back is then exactly what was stored."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


def _tree_digest(top: Path) -> str | None:
    """sha256 over the tree's directories, files and links (names and bytes); None when it
    is too large or reaches outside itself (see the module docstring)."""
    digest = hashlib.sha256()
    total = count = 0
    for folder, dirs, names in os.walk(top):
        dirs.sort()
        rel = os.path.relpath(folder, top)
        digest.update(b"D\0" + rel.encode("utf-8", "surrogateescape") + b"\0")
        for name in sorted(names) + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            path = os.path.join(folder, name)
            count += 1
            digest.update(b"F\0" + os.path.join(rel, name).encode("utf-8", "surrogateescape"))
            try:
                if os.path.islink(path):
                    digest.update(b"\0L\0" + os.readlink(path).encode("utf-8", "surrogateescape"))
                with open(path, "rb") as handle:
                    data = handle.read(MAX_TREE_BYTES + 1)
            except OSError:
                data = b"\0unreadable"
            total += len(data)
            if total > MAX_TREE_BYTES or count > MAX_TREE_FILES:
                return None
            if any(marker in data for marker in _UNCACHEABLE):
                return None
            digest.update(b"\0" + str(len(data)).encode() + b"\0" + data)
    return digest.hexdigest()


def _plugins() -> list[str]:
    """What the installed ``hydra_plugins`` namespace holds (names only, not imported)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("hydra_plugins")
    except (ImportError, ValueError):
        return []
    found: set[str] = set()
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        with contextlib.suppress(OSError):
            found.update(os.listdir(location))
    return sorted(found)


def _own(path: Path) -> bool:
    """Whether only the current user could have written ``path`` (owned by them, not
    writable by group or others)."""
    info = path.stat()
    return info.st_uid == os.getuid() and not info.st_mode & 0o022


_CODE: str | None = None


def _code_digest() -> str:
    """sha256 of orch's composing modules: a changed orch never reads an older entry."""
    global _CODE
    if _CODE is None:
        digest = hashlib.sha256()
        for name in _COMPOSING:
            spec = importlib.util.find_spec(name)
            assert spec is not None and spec.origin is not None  # orch's own modules
            digest.update(name.encode() + b"\0" + Path(spec.origin).read_bytes())
        _CODE = digest.hexdigest()
    return _CODE
