"""Hashing a local input into its manifest, fast when nothing changed.

The walk refuses what cannot be pinned: a missing path, a socket, FIFO or device, a
symlink that leaves the input, dangles or loops, a name that is not UTF-8. A symlink that
stays inside the input counts as the file (or directory) it points to.

The stat cache keeps, per input root, ``path -> (size, mtime_ns, ctime_ns, inode,
device, exec, sha256)``; a file whose stat is unchanged is not read again, so an
unchanged 1 GB input costs one ``lstat`` per file. Like git's index it distrusts
"racily clean" entries: a file modified less than :data:`RACY_NS` before the hash began
is hashed again next time. A file whose stat changes between the walk and the end of
its hash (or that yields a different number of bytes) is an error, never a digest.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import stat
import time
from array import array
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from .._util.files import atomic_write
from ..errors import InputError
from .manifest import FileEntry, Manifest

#: Files modified within this long before hashing started are not trusted from the cache.
RACY_NS = 2_000_000_000
_CHUNK = 1 << 20
_CACHE_FORMAT = 1


class Found(NamedTuple):
    """A regular file the walk found: its path in the input, where to read it, its stat."""

    rel: str
    real: str
    st: os.stat_result

    @property
    def key(self) -> list[int]:
        st = self.st
        return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]

    @property
    def exec(self) -> bool:
        return bool(self.st.st_mode & stat.S_IXUSR)


def _kind_of(mode: int) -> str:
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file or directory"


def walk(name: str, source: Path) -> tuple[str, list[Found]]:
    """(kind, files) of a local input; InputError naming the input for anything unpinnable."""

    def fail(why: str) -> InputError:
        return InputError(f"input {name!r}: {why}")

    try:
        os.lstat(source)
    except FileNotFoundError:
        raise fail(f"{source} does not exist") from None
    except OSError as exc:
        raise fail(f"cannot read {source}: {exc.strerror}") from None
    try:
        root = os.path.realpath(source, strict=True)
        st = os.stat(root)
    except OSError as exc:
        raise fail(f"{source} cannot be resolved ({exc.strerror or exc})") from None
    if stat.S_ISREG(st.st_mode):
        return "file", [Found("", root, st)]
    if not stat.S_ISDIR(st.st_mode):
        raise fail(f"{source} is {_kind_of(st.st_mode)}")
    found: list[Found] = []
    _walk_dir(fail, root, root, "", (root,), found)
    return "dir", found


def _walk_dir(
    fail: Callable[[str], InputError],
    root: str,
    real_dir: str,
    rel_dir: str,
    chain: tuple[str, ...],
    found: list[Found],
) -> None:
    prefix = rel_dir + "/" if rel_dir else ""
    try:
        entries = list(os.scandir(real_dir))
    except OSError as exc:
        raise fail(f"cannot list {real_dir}: {exc.strerror}") from None
    for entry in entries:
        name = entry.name
        rel = prefix + name
        if not name.isascii():
            try:
                name.encode("utf-8")
            except UnicodeEncodeError:
                shown = rel.encode("utf-8", "surrogateescape")
                raise fail(f"{shown!r} is not a UTF-8 name") from None
        try:
            if entry.is_dir(follow_symlinks=False):
                _walk_dir(fail, root, entry.path, rel, (*chain, entry.path), found)
                continue
            if entry.is_file(follow_symlinks=False):
                found.append(Found(rel, entry.path, entry.stat(follow_symlinks=False)))
                continue
            st = entry.stat(follow_symlinks=False)
        except OSError as exc:
            raise fail(f"cannot stat {rel}: {exc.strerror}") from None
        if not stat.S_ISLNK(st.st_mode):
            raise fail(f"{rel} is {_kind_of(st.st_mode)}, not a file")
        path = entry.path
        try:
            real = os.path.realpath(path, strict=True)
        except OSError as exc:
            why = "loops" if exc.errno == errno.ELOOP else "dangles"
            raise fail(f"symlink {rel} {why} (-> {os.readlink(path)})") from None
        if real != root and not real.startswith(root.rstrip("/") + "/"):
            raise fail(f"symlink {rel} leaves the input (-> {real})")
        st = os.stat(real)
        if stat.S_ISDIR(st.st_mode):
            if real in chain:
                raise fail(f"symlink {rel} loops (back to {real})")
            _walk_dir(fail, root, real, rel, (*chain, real), found)
        elif stat.S_ISREG(st.st_mode):
            found.append(Found(rel, real, st))
        else:
            raise fail(f"{rel} points to {_kind_of(st.st_mode)}, not a file")


def hash_file(name: str, item: Found) -> str:
    """The hex SHA-256 of a file that must not change while (or since) it was walked."""
    changed = InputError(
        f"input {name!r}: {item.rel or item.real} changed while it was being hashed: "
        "hash again once it is stable"
    )
    try:
        fd = os.open(item.real, os.O_RDONLY | getattr(os, "O_NOATIME", 0))
    except PermissionError:
        fd = os.open(item.real, os.O_RDONLY)  # O_NOATIME needs ownership
    except OSError as exc:
        raise InputError(
            f"input {name!r}: cannot read {item.rel or item.real}: {exc.strerror}"
        ) from None
    try:
        before = os.fstat(fd)
        if _key(before) != item.key:
            raise changed
        digest = hashlib.sha256()
        total = 0
        buffer = bytearray(_CHUNK)
        view = memoryview(buffer)
        with open(fd, "rb", buffering=0, closefd=False) as handle:
            while True:
                count = handle.readinto(buffer)
                if not count:
                    break
                digest.update(view[:count])
                total += count
        if total != before.st_size or _key(os.fstat(fd)) != item.key:
            raise changed
        return digest.hexdigest()
    except OSError as exc:
        raise InputError(
            f"input {name!r}: cannot read {item.rel or item.real}: {exc.strerror}"
        ) from None
    finally:
        os.close(fd)


def _key(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


@dataclass
class ScanStats:
    files: int = 0
    hashed: int = 0
    hashed_bytes: int = 0


@dataclass(frozen=True)
class Summary:
    """What the stat cache remembers of a whole input when nothing in it had changed."""

    signature: str
    digest: str
    files: int
    bytes: int


class StatCache:
    """Per input root: ``<hash>.json`` (one entry per file) and ``<hash>.sig`` (the whole
    input's stat signature and digest: an unchanged input reads only this small file)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def _path(self, root: str, suffix: str) -> Path:
        name = hashlib.sha256(root.encode("utf-8", "surrogateescape")).hexdigest()[:32]
        return self.directory / (name + suffix)

    def _read(self, root: str, suffix: str) -> dict[str, Any]:
        try:
            data = json.loads(self._path(root, suffix).read_bytes())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("v") != _CACHE_FORMAT or data.get("root") != root:
            return {}
        return data

    def load(self, root: str) -> dict[str, list[Any]]:
        entries = self._read(root, ".json").get("entries")
        return entries if isinstance(entries, dict) else {}

    def summary(self, root: str) -> Summary | None:
        data = self._read(root, ".sig")
        try:
            return Summary(
                str(data["signature"]), str(data["digest"]), int(data["files"]), int(data["bytes"])
            )
        except (KeyError, TypeError, ValueError):
            return None

    def save(self, root: str, entries: dict[str, list[Any]], summary: Summary | None) -> None:
        try:
            self._write(root, ".json", {"entries": entries})
            if summary is None:
                self._path(root, ".sig").unlink(missing_ok=True)
            else:
                self._write(root, ".sig", dataclasses.asdict(summary))
        except OSError:
            pass  # a cache that cannot be written only costs a hash next time

    def _write(self, root: str, suffix: str, data: dict[str, Any]) -> None:
        body = {"v": _CACHE_FORMAT, "root": root, **data}
        atomic_write(
            self._path(root, suffix), json.dumps(body, separators=(",", ":")).encode(), fsync=False
        )


def _signature(kind: str, found: list[Found]) -> str:
    """The stat signature of a whole input: names, then the stat numbers packed as int64.

    Packing the numbers (rather than formatting a line per file) halves the cost of the
    unchanged check's second half; the walk's ``lstat`` per file is the first half.
    """
    times = array("q")  # signed: a file may predate 1970
    places = array("Q")  # unsigned: inode numbers use all 64 bits on some filesystems
    for _, _, st in found:
        times.extend((st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode & stat.S_IXUSR))
        places.extend((st.st_ino, st.st_dev))
    digest = hashlib.sha256(kind.encode())
    digest.update("\0".join([item.rel for item in found]).encode("utf-8", "surrogateescape"))
    digest.update(b"\0\0")
    digest.update(times.tobytes())
    digest.update(places.tobytes())
    return digest.hexdigest()


class Scanned:
    """A scanned local input: its digest at once; its manifest built when first asked for."""

    def __init__(
        self,
        name: str,
        kind: str,
        found: list[Found],
        shas: dict[str, str] | None,
        summary: Summary,
        cache: StatCache | None,
        root: str,
    ) -> None:
        self.name = name
        self.kind = kind
        self.found = found
        self._shas = shas
        self.summary = summary
        self._cache = cache
        self._root = root
        self._manifest: Manifest | None = None

    @property
    def digest(self) -> str:
        return self.summary.digest

    def shas(self) -> dict[str, str]:
        if self._shas is None:  # the unchanged fast path: the entries file has every hash
            known = self._cache.load(self._root) if self._cache is not None else {}
            shas = {}
            for item in self.found:
                entry = known.get(item.rel)
                if entry is None or entry[:5] != item.key:
                    raise InputError(
                        f"input {self.name!r}: {item.rel or item.real} changed while it was "
                        "being scanned: run again once it is stable"
                    )
                shas[item.rel] = str(entry[6])
            self._shas = shas
        return self._shas

    def manifest(self) -> Manifest:
        if self._manifest is None:
            shas = self.shas()
            entries = [FileEntry(i.rel, i.st.st_size, shas[i.rel], i.exec) for i in self.found]
            try:
                self._manifest = Manifest.build(self.kind, entries)
            except ValueError as exc:
                raise InputError(f"input {self.name!r}: {exc}") from None
        return self._manifest

    def readers(self) -> dict[tuple[str, bool], str]:
        """Where to read each distinct (sha256, exec) content."""
        shas = self.shas()
        return {(shas[item.rel], item.exec): item.real for item in self.found}


def scan(
    name: str,
    source: Path,
    cache: StatCache | None,
    *,
    workers: int | None = None,
    stats: ScanStats | None = None,
) -> Scanned:
    """Walk and digest a local input, hashing only the files the stat cache cannot vouch for."""
    started = time.time_ns()
    kind, found = walk(name, source)
    root = os.path.realpath(source)
    signature = _signature(kind, found)
    if stats is not None:
        stats.files += len(found)
    summary = cache.summary(root) if cache is not None else None
    if summary is not None and summary.signature == signature:
        return Scanned(name, kind, found, None, summary, cache, root)
    known = cache.load(root) if cache is not None else {}
    shas: dict[str, str] = {}
    todo: list[Found] = []
    for item in found:
        entry = known.get(item.rel)
        # entry: [size, mtime_ns, ctime_ns, ino, dev, exec, sha256]
        if entry is not None and entry[:5] == item.key and isinstance(entry[6], str):
            shas[item.rel] = entry[6]
        else:
            todo.append(item)
    if todo:
        count = workers or max(2, os.cpu_count() or 2)
        if len(todo) == 1 or count == 1:
            hashed = [hash_file(name, item) for item in todo]
        else:
            with ThreadPoolExecutor(max_workers=min(count, len(todo))) as pool:
                hashed = list(pool.map(lambda item: hash_file(name, item), todo))
        shas.update({item.rel: h for item, h in zip(todo, hashed, strict=True)})
    if stats is not None:
        stats.hashed += len(todo)
        stats.hashed_bytes += sum(item.st.st_size for item in todo)
    scanned = Scanned(name, kind, found, shas, Summary(signature, "", 0, 0), cache, root)
    manifest = scanned.manifest()
    scanned.summary = Summary(signature, manifest.digest, len(found), manifest.total_bytes)
    if cache is not None:
        # Racily clean files (modified just before the hash began) are hashed next time.
        fresh = started - RACY_NS
        trusted = {
            item.rel: [*item.key, item.exec, shas[item.rel]]
            for item in found
            if item.st.st_mtime_ns < fresh
        }
        cache.save(root, trusted, scanned.summary if len(trusted) == len(found) else None)
    return scanned
