"""Local files written the one safe way: a temporary file beside the target, then a rename."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


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
