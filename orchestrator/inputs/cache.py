"""The host cache of inputs: content-addressed, immutable, what containers mount.

Under ``<cache root>/inputs/``::

    objects/<sha256>      a file's bytes, mode 0444 (0555 as ``<sha256>.x``: executable)
    manifests/<sha256>    a manifest's canonical bytes, by the input's digest
    trees/<sha256>/...    a directory input laid out from hard links to objects, dirs 0555
    stat/<hash>.json      the stat cache of local sources (``scan``)
    leases/<sha256>       what a process locks (shared) while it uses an input
    leases/.prune         locked (exclusive) by a prune for its whole run

A process that is about to mount an input takes a lease on it first (:meth:`HostCache.lease`:
a shared ``flock``, held until the process ends, which is also when the kernel drops it,
so no lease goes stale) and a prune (``orch gc --cache``) removes only inputs whose lease
it can lock exclusively: an input a sweep fetched and is about to mount is never removed
under it, whatever its age.

Every object is checked against its name before it is published (written beside, hashed,
renamed), so whatever a run mounts is exactly what the manifest says; a tree is built
aside and renamed into place whole, so a half-built tree is never mounted. Files are
world-readable and nothing is writable: the container's user (65534) reads them through
a read-only bind mount.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import stat
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from ..errors import InputError
from .manifest import FileEntry, Manifest
from .scan import StatCache

_CHUNK = 1 << 20
FILE_MODE = 0o444
EXEC_MODE = 0o555
DIR_MODE = 0o555


#: Leases this process holds (lease file path -> descriptor), for the rest of its life.
_held: dict[str, int] = {}
_held_lock = threading.Lock()
_LOCK_FLAGS = os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC


class HostCache:
    def __init__(self, cache_root: Path) -> None:
        self.root = Path(cache_root) / "inputs"
        self.objects = self.root / "objects"
        self.manifests = self.root / "manifests"
        self.trees = self.root / "trees"
        self.leases = self.root / "leases"
        self.stat = StatCache(self.root / "stat")

    # -- leases -----------------------------------------------------------------------

    def lease(self, digest: str) -> None:
        """Keep the input ``digest`` from being pruned while this process lives; waits
        for a prune that is running to finish first."""
        path = self.leases / digest.removeprefix("sha256:")
        with _held_lock:
            if str(path) in _held:
                return
            self.leases.mkdir(parents=True, exist_ok=True)
            with self._pruning(fcntl.LOCK_SH):
                while True:
                    fd = os.open(path, _LOCK_FLAGS, 0o644)
                    fcntl.flock(fd, fcntl.LOCK_SH)
                    try:
                        same = os.stat(path).st_ino == os.fstat(fd).st_ino
                    except FileNotFoundError:
                        same = False
                    if same:
                        _held[str(path)] = fd
                        return
                    os.close(fd)  # a prune removed the file we opened: lock the new one

    @contextlib.contextmanager
    def _pruning(self, mode: int) -> Iterator[None]:
        self.leases.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.leases / ".prune", _LOCK_FLAGS, 0o644)
        try:
            fcntl.flock(fd, mode)
            yield
        finally:
            os.close(fd)

    def pruning(self) -> contextlib.AbstractContextManager[None]:
        """Held by a prune for its whole run: no lease is taken meanwhile."""
        return self._pruning(fcntl.LOCK_EX)

    @contextlib.contextmanager
    def unleased(self, digest: str, *, remove: bool) -> Iterator[bool]:
        """True when no process holds a lease on ``digest`` (it is then locked against
        new ones inside the block, and with ``remove`` its lease file goes at the end)."""
        path = self.leases / digest.removeprefix("sha256:")
        if not path.exists():
            yield True
            return
        fd = os.open(path, _LOCK_FLAGS, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
            if remove:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        finally:
            os.close(fd)

    def leased_digests(self) -> list[str]:
        """Digests some process holds a lease on now."""
        found = []
        for path in sorted(self.leases.iterdir()) if self.leases.is_dir() else []:
            if not path.name.startswith("."):
                with self.unleased(path.name, remove=False) as free:
                    if not free:
                        found.append("sha256:" + path.name)
        return found

    # -- objects ----------------------------------------------------------------------

    def object_path(self, sha256: str, exec: bool = False) -> Path:
        return self.objects / (f"{sha256}.x" if exec else sha256)

    def has_object(self, sha256: str, exec: bool = False) -> bool:
        return self.object_path(sha256, exec).is_file()

    def missing(self, manifest: Manifest) -> list[FileEntry]:
        """One entry per distinct (content, exec) the cache lacks."""
        return [e for e in manifest.distinct().values() if not self.has_object(e.sha256, e.exec)]

    @contextlib.contextmanager
    def _new_object(self, sha256: str, exec: bool) -> Iterator[BinaryIO]:
        """A file to write; published as the object only if its bytes hash to ``sha256``."""
        self.objects.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.objects, prefix=f".{sha256[:16]}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as handle:
                yield handle
            os.chmod(tmp, EXEC_MODE if exec else FILE_MODE)
            os.replace(tmp, self.object_path(sha256, exec))
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def add_from_file(self, name: str, entry: FileEntry, source: str) -> None:
        """Copy ``source`` into the cache as ``entry``'s object, checking it on the way."""
        if self.has_object(entry.sha256, entry.exec):
            return
        other = self.object_path(entry.sha256, not entry.exec)
        reader = str(other) if other.is_file() else source
        try:
            with open(reader, "rb") as src:
                self.add_from_stream(name, entry, src.readinto, what=entry.path or source)
        except OSError as exc:
            raise InputError(
                f"input {name!r}: cannot read {entry.path or source}: {exc.strerror}"
            ) from None

    def add_from_stream(
        self,
        name: str,
        entry: FileEntry,
        readinto: Callable[[bytearray], int | None],
        *,
        what: str,
    ) -> None:
        digest = hashlib.sha256()
        total = 0
        buffer = bytearray(_CHUNK)
        view = memoryview(buffer)
        with self._new_object(entry.sha256, entry.exec) as out:
            while True:
                count = readinto(buffer)
                if not count:
                    break
                digest.update(view[:count])
                out.write(view[:count])
                total += count
            if digest.hexdigest() != entry.sha256 or total != entry.size:
                raise InputError(
                    f"input {name!r}: {what} changed after it was hashed (now sha256:"
                    f"{digest.hexdigest()[:16]}..., {total} bytes): run again once it is stable"
                )

    def add_object_file(self, entry: FileEntry, downloaded: Path) -> None:
        """Publish a file already checked to hold ``entry``'s bytes (a verified download)."""
        os.chmod(downloaded, EXEC_MODE if entry.exec else FILE_MODE)
        self.objects.mkdir(parents=True, exist_ok=True)
        os.replace(downloaded, self.object_path(entry.sha256, entry.exec))

    def temp_path(self, entry: FileEntry) -> Path:
        self.objects.mkdir(parents=True, exist_ok=True)
        return self.objects / f".{entry.sha256[:16]}.{uuid.uuid4().hex[:8]}.part"

    def verify_object(self, entry: FileEntry) -> bool:
        """Hash a cached object again (a rerun's check that the cache was not tampered with)."""
        path = self.object_path(entry.sha256, entry.exec)
        try:
            with path.open("rb") as handle:
                ok = hashlib.file_digest(handle, "sha256").hexdigest() == entry.sha256
        except OSError:
            return False
        if not ok:
            _force_unlink(path)
        return ok

    # -- manifests --------------------------------------------------------------------

    def manifest_path(self, digest: str) -> Path:
        return self.manifests / digest.removeprefix("sha256:")

    def put_manifest(self, manifest: Manifest) -> None:
        path = self.manifest_path(manifest.digest)
        if path.is_file():
            return
        from .._util.files import atomic_write

        atomic_write(path, manifest.to_bytes(), fsync=False)

    def get_manifest(self, digest: str) -> Manifest | None:
        path = self.manifest_path(digest)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            _force_unlink(path)
            return None
        return Manifest.from_bytes(data, str(path))

    # -- what a container mounts ------------------------------------------------------

    def mount_source(self, manifest: Manifest) -> Path:
        """The host path to bind: the object of a file input, the tree of a directory."""
        with contextlib.suppress(OSError):  # when it was last used: what a prune goes by
            os.utime(self.manifest_path(manifest.digest))
        if manifest.kind == "file":
            entry = manifest.files[0]
            return self.object_path(entry.sha256, entry.exec)
        tree = self.trees / manifest.digest.removeprefix("sha256:")
        if not tree.is_dir():
            self._build_tree(manifest, tree)
        return tree

    def drop_tree(self, manifest: Manifest) -> None:
        tree = self.trees / manifest.digest.removeprefix("sha256:")
        if tree.is_dir():
            _force_rmtree(tree)

    def _build_tree(self, manifest: Manifest, tree: Path) -> None:
        self.trees.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.trees, prefix=f".{tree.name[:16]}.", suffix=".part"))
        try:
            made: set[str] = {""}
            for entry in manifest.files:
                parent = entry.path.rpartition("/")[0]
                if parent not in made:
                    (tmp / parent).mkdir(parents=True, exist_ok=True)
                    parts = parent.split("/")
                    made.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
                source = self.object_path(entry.sha256, entry.exec)
                target = tmp / entry.path
                try:
                    os.link(source, target)
                except OSError:  # another file system, or too many links: a copy will do
                    shutil.copy2(source, target)
            for rel in sorted(made, key=len, reverse=True):
                os.chmod(tmp / rel if rel else tmp, DIR_MODE)
            try:
                os.rename(tmp, tree)
            except OSError:
                if not tree.is_dir():
                    raise
                _force_rmtree(tmp)  # another process built the same tree first
        except BaseException:
            if tmp.exists():
                _force_rmtree(tmp)
            raise


def _force_unlink(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _force_rmtree(path: Path) -> None:
    def writable(func: Callable[..., object], target: str, _exc: object) -> None:
        parent = os.path.dirname(target)
        with contextlib.suppress(OSError):
            os.chmod(parent, stat.S_IRWXU)
            os.chmod(target, stat.S_IRWXU)
        with contextlib.suppress(OSError):
            func(target)

    for directory, _, _ in os.walk(path):
        with contextlib.suppress(OSError):
            os.chmod(directory, stat.S_IRWXU)
    shutil.rmtree(path, onerror=writable)
