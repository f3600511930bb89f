"""Local files written the one safe way (a temporary file beside the target, then a
rename), and files a run wrote read the one safe way (never through a link).

A run owns its output and checkpoint directories and may swap any file or directory in
them for a link to anything on the host at any moment, while orch (root) reads them. So a
name checked is not a name opened: :func:`run_files` walks with directory descriptors
(``os.fwalk``, which never enters a directory that a link replaced after it was listed)
and :func:`open_run_file` opens relative to one with ``O_NOFOLLOW`` and checks the opened
file's type, so no component of what is read can be a link.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

#: Opening a run's file: never through a link, never blocking (a FIFO named like a file).
_RUN_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def run_files(root: Path) -> Iterator[tuple[str, int, str]]:
    """``(relative path, directory fd, name)`` of each non-directory entry under ``root``,
    in a stable order, never through a link; the fd is valid until the next item.

    Memory is one directory's names at a time, whatever the number of files."""
    for dirpath, dirnames, filenames, dirfd in os.fwalk(root, follow_symlinks=False):
        # fwalk lists a link to a directory with the directories (and never enters it):
        # here it is an entry like any other non-directory
        links = []
        for name in dirnames:
            try:
                if not stat.S_ISDIR(os.stat(name, dir_fd=dirfd, follow_symlinks=False).st_mode):
                    links.append(name)
            except FileNotFoundError:
                links.append(name)
        dirnames[:] = sorted(set(dirnames) - set(links))
        rel_dir = os.path.relpath(dirpath, root)
        for name in sorted([*filenames, *links]):
            yield (name if rel_dir == "." else f"{rel_dir}/{name}"), dirfd, name


def open_run_file(dir_fd: int, name: str) -> tuple[int, os.stat_result] | None:
    """A descriptor of the regular file ``name`` in ``dir_fd`` and its stat, or None when
    it is gone, a link, a FIFO, a device or anything but a regular file."""
    try:
        fd = os.open(name, _RUN_FILE_FLAGS, dir_fd=dir_fd)
    except OSError:
        return None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        return None
    os.set_blocking(fd, True)
    return fd, info


class ExactReader:
    """Exactly ``size`` bytes of ``handle``: a file that shrank while it was read is
    padded with zeros, one that grew is cut, so a tar member's header stays true."""

    def __init__(self, handle: BinaryIO, size: int) -> None:
        self._handle = handle
        self._left = size

    def read(self, n: int = -1) -> bytes:
        n = self._left if n < 0 else min(n, self._left)
        data = self._handle.read(n) if n else b""
        if len(data) < n:
            data += bytes(n - len(data))
        self._left -= len(data)
        return data


def sha256_file(path: Path) -> str:
    """The hex SHA-256 of a file's bytes, read in chunks (memory independent of size)."""
    with Path(path).open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


@contextlib.contextmanager
def atomic_writer(path: Path, *, fsync: bool = True) -> Iterator[BinaryIO]:
    """Yield a file to write; on success it replaces ``path`` in one rename.

    Readers see the old content or the new, never a part. With ``fsync`` the bytes are on
    disk before the rename publishes them, so a power cut cannot leave an empty file
    under the final name.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write(path: Path, data: bytes, *, fsync: bool = True) -> None:
    with atomic_writer(path, fsync=fsync) as handle:
        handle.write(data)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if missing) for the block: processes of
    one machine take turns (not to be trusted on a network filesystem)."""
    import fcntl

    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
