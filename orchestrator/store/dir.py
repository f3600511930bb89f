"""A store in a local (or shared, POSIX) directory: one file per key.

Writes go to ``<root>/.tmp/`` first and are renamed into place, so readers never see a
partial file. Conditional create links a complete temporary file to the key, which fails
if the key exists: atomic and exclusive even across processes and NFS clients.
A file's bytes are fsync'ed before the rename or link that publishes it, so a power cut
leaves the old object or the complete new one, never an empty ``run.json``; the directory
is not synced, so the newest rename may be lost with the cut (the run then reads as not
finished, and is run again).

Stored files are the user's who runs orch (:mod:`.owner`): a run's outputs, written by the
container's user (65534), are copied into the store rather than hard-linked, and under
``sudo`` what the store creates is given to ``SUDO_UID``.

Why not :func:`orchestrator._util.files.atomic_writer`: its temporary file sits beside the
target, inside the key space, where :meth:`DirStore.list` would show it and a crashed
writer would leave it; the scratch directory keeps both out of every listing, and
:meth:`DirStore.create` needs a link, not a rename, to be exclusive.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from .._util.files import atomic_writer
from ..errors import NotFound, StoreError, UsageError
from .interface import check_key, check_prefix
from .owner import Owner

_TMP = ".tmp"
_GITIGNORE = ".gitignore"
#: Scratch files older than this are a killed writer's; removed when a process opens the store.
_STALE_TMP_S = 24 * 3600
_CHUNK = 1 << 20


class DirStore:
    """Keys are paths under ``root``; the directory is created on the first write."""

    def __init__(self, root: Path, owner: Owner | None = None) -> None:
        self.root = Path(root).expanduser().absolute()
        self.uri = self.root.as_uri()
        #: Whose the files and directories the store creates are (see :mod:`.owner`).
        self.owner = owner or Owner.invoking()
        self._prepared = False
        if self.root.exists() and not self.root.is_dir():
            raise UsageError(f"store {self.root} is not a directory: pass a directory path")

    def _path(self, key: str) -> Path:
        check_key(key)
        if key == _TMP or key.startswith(_TMP + "/"):
            raise UsageError(f"invalid store key {key!r}: {_TMP}/ is the store's scratch space")
        return self.root / key

    def _leaf(self, key: str) -> Path:
        """The path of a key about to be created or aged: a directory there is not
        "missing" (a claimer would retry, a waiter wait, forever) but an error."""
        path = self._path(key)
        if path.is_dir():
            raise StoreError(
                f"{path} is a directory where the store keeps an object ({key}): "
                "remove it (rm -r) and re-submit"
            )
        return path

    def _tmp(self) -> Path:
        tmp_dir = self.root / _TMP
        if not self._prepared:
            self._prepare(tmp_dir)
            self._prepared = True
        return tmp_dir / uuid.uuid4().hex

    def _prepare(self, tmp_dir: Path) -> None:
        """Make the store's directory: kept out of git (a store inside a project would
        otherwise show in ``git status``, and make every sweep's dirty check walk it),
        and rid of the scratch files a killed writer left behind."""
        self.owner.makedirs(tmp_dir)
        ignore = self.root / _GITIGNORE
        if not ignore.exists():
            with contextlib.suppress(OSError):
                ignore.write_text("# orch's result store: not part of the project's code\n*\n")
                self.owner.give(ignore)
        cutoff = time.time() - _STALE_TMP_S
        for leftover in tmp_dir.iterdir():
            with contextlib.suppress(OSError):
                if leftover.stat().st_mtime < cutoff:
                    leftover.unlink()

    def _write_synced(self, tmp: Path, data: bytes) -> None:
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        self.owner.give(tmp)

    def _fail(self, action: str, key: str, exc: OSError) -> StoreError:
        reason = exc.strerror or str(exc)
        return StoreError(f"cannot {action} {key!r} in {self.root}: {reason}; check the path")

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            tmp = self._tmp()
            try:
                self._write_synced(tmp, data)
                self.owner.makedirs(path.parent)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
        except OSError as exc:
            raise self._fail("write", key, exc) from exc

    def put_file(self, key: str, path: Path) -> None:
        """Hard-link ``path`` into the store when possible (same filesystem, and a file
        already the store owner's), else copy.

        A file of another user (a run's output, uid 65534) is copied: a link would keep
        that user's file in the store, and a chown of it would change the source too.
        A linked file shares its inode with ``path``: callers must replace, never rewrite
        in place, a file they have stored. Its :meth:`age` is that of the source file.
        """
        dest = self._path(key)
        source = Path(path)
        try:
            tmp = self._tmp()
            try:
                linked = False
                if self.owner.owns(source):
                    try:
                        os.link(source, tmp)
                        linked = True
                    except OSError as exc:
                        if exc.errno == errno.ENOENT:
                            raise
                if not linked:  # another file system, or another user's file
                    shutil.copyfile(source, tmp)
                    self.owner.give(tmp)
                _fsync_path(tmp)  # a linked source may not be on disk yet either
                self.owner.makedirs(dest.parent)
                os.replace(tmp, dest)
            finally:
                tmp.unlink(missing_ok=True)
        except FileNotFoundError as exc:
            if not source.exists():
                raise StoreError(f"cannot store {key!r}: source file {source} is missing") from exc
            raise self._fail("write", key, exc) from exc
        except OSError as exc:
            raise self._fail("write", key, exc) from exc

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NotFound(f"no such key {key!r} in {self.uri}") from None
        except OSError as exc:
            raise self._fail("read", key, exc) from exc

    def get_file(
        self, key: str, path: Path, *, progress: Callable[[int], None] | None = None
    ) -> None:
        """Copy the object to ``path``; ``progress`` is called with each chunk's size (an
        exception it raises stops the copy, leaving nothing at ``path``)."""
        source = self._path(key)
        target = Path(path)
        if not source.is_file():
            raise NotFound(f"no such key {key!r} in {self.uri}")
        try:
            # A copy out of the store, not synced: the store holds the durable one.
            with source.open("rb") as src, atomic_writer(target, fsync=False) as out:
                if progress is None:
                    shutil.copyfileobj(src, out, _CHUNK)
                else:
                    while chunk := src.read(_CHUNK):
                        out.write(chunk)
                        progress(len(chunk))
        except FileNotFoundError:
            raise NotFound(f"no such key {key!r} in {self.uri}") from None
        except OSError as exc:
            raise self._fail("copy out", key, exc) from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> Iterator[str]:
        check_prefix(prefix)
        # Walk only the deepest directory the prefix names, then filter by the string prefix.
        start = prefix if prefix.endswith("/") or not prefix else prefix.rpartition("/")[0]
        base = self.root / start if start else self.root
        keys: list[str] = []
        for dirpath, dirnames, filenames in os.walk(base):
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            if rel_dir == ".":
                rel_dir = ""
                dirnames[:] = [name for name in dirnames if name != _TMP]
                filenames = [name for name in filenames if name != _GITIGNORE]
            for name in filenames:
                key = f"{rel_dir}/{name}" if rel_dir else name
                if key.startswith(prefix):
                    keys.append(key)
        return iter(sorted(keys))

    def create(self, key: str, data: bytes) -> bool:
        path = self._leaf(key)
        try:
            tmp = self._tmp()
            try:
                self._write_synced(tmp, data)
                self.owner.makedirs(path.parent)
                try:
                    os.link(tmp, path)
                    return True
                except FileExistsError:
                    return False
                except OSError as exc:
                    if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                        raise
                # No hard links here (some FUSE/SMB mounts): exclusive open, then write.
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    return False
                self.owner.give(path)
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                return True
            finally:
                tmp.unlink(missing_ok=True)
        except OSError as exc:
            raise self._fail("create", key, exc) from exc

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
        except (NotADirectoryError, IsADirectoryError):
            return
        except OSError as exc:
            raise self._fail("delete", key, exc) from exc

    def age(self, key: str) -> float | None:
        path = self._leaf(key)
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            if path.is_file():
                return max(0.0, time.time() - path.stat().st_mtime)
        return None


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
