"""Deterministic layer tars.

Two writes of the same entries give the same bytes on any machine, any day:
sorted paths, explicit parent directories, one fixed mtime, uid/gid 0 unless an
entry says otherwise, empty user/group names, fixed modes, hard links written as
plain files, no PAX atime/ctime. The layer's diff ID is the sha256 of those bytes.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Literal

from .._util.files import atomic_writer
from ..errors import ImageError

#: 2000-01-01T00:00:00Z: a constant, because an mtime of 0 confuses some tools.
DEFAULT_MTIME = 946684800

Kind = Literal["file", "dir", "symlink"]


def fixed_mtime() -> int:
    """The mtime stamped on every entry: SOURCE_DATE_EPOCH when set, else a constant."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "")
    return int(value) if value.isdigit() else DEFAULT_MTIME


@dataclass(frozen=True)
class Entry:
    """One member of a layer. ``path`` is relative and POSIX (``orch/config.yaml``)."""

    path: str
    kind: Kind = "file"
    data: bytes | None = None
    source: Path | None = None
    mode: int = 0o644
    target: str = ""
    uid: int = 0
    gid: int = 0

    def size(self) -> int:
        if self.kind != "file":
            return 0
        if self.data is not None:
            return len(self.data)
        if self.source is not None:
            return self.source.stat().st_size
        return 0


def normalize_path(path: str) -> str:
    """Validate a member path: relative, no ``..``, no empty parts."""
    pure = PurePosixPath(path.lstrip("/"))
    if not pure.parts or any(part in ("..", "") for part in pure.parts):
        raise ImageError(f"invalid layer path {path!r}: must be relative without '..'")
    return pure.as_posix()


def _with_parents(entries: Iterable[Entry]) -> list[Entry]:
    by_path: dict[str, Entry] = {}
    for entry in entries:
        path = normalize_path(entry.path)
        by_path[path] = Entry(
            path,
            entry.kind,
            entry.data,
            entry.source,
            entry.mode,
            entry.target,
            entry.uid,
            entry.gid,
        )
    for path in list(by_path):
        for parent in PurePosixPath(path).parents:
            key = parent.as_posix()
            if key != "." and key not in by_path:
                by_path[key] = Entry(key, "dir", mode=0o755)
    return [by_path[key] for key in sorted(by_path)]


#: File contents are copied through one buffer of this size: tarfile's 16 KiB copies and
#: 10 KiB stream records cost more than hashing the bytes does.
_COPY = 1 << 20


def layer_chunks(entries: Iterable[Entry]) -> Iterator[bytes | memoryview]:
    """The layer tar's bytes, piece by piece; a memoryview is valid until the next piece.

    The bytes are exactly those of ``tarfile`` in GNU format (its own headers, its
    block padding and end-of-archive records); only the copying is done here.
    """
    mtime = fixed_mtime()
    buffer = bytearray(_COPY)
    size = 0
    for entry in _with_parents(entries):
        info = tarfile.TarInfo(entry.path)
        info.mtime = mtime
        info.uid, info.gid = entry.uid, entry.gid
        info.uname = info.gname = ""
        info.mode = entry.mode & 0o7777
        if entry.kind == "dir":
            info.type = tarfile.DIRTYPE
        elif entry.kind == "symlink":
            info.type = tarfile.SYMTYPE
            info.linkname = entry.target
        elif entry.data is not None:
            info.size = len(entry.data)
        elif entry.source is not None:
            info.size = entry.source.stat().st_size
        header = info.tobuf(tarfile.GNU_FORMAT, tarfile.ENCODING, "surrogateescape")
        size += len(header) + info.size
        if entry.kind != "file" or not info.size:
            yield header
            continue
        yield header
        if entry.data is not None:
            yield entry.data
        elif entry.source is not None:
            yield from _file_chunks(entry.source, info.size, buffer)
        remainder = info.size % tarfile.BLOCKSIZE
        if remainder:
            yield tarfile.NUL * (tarfile.BLOCKSIZE - remainder)
            size += tarfile.BLOCKSIZE - remainder
    # Two zero blocks end the archive, then zeros up to a whole record (as tar -b20).
    size += tarfile.BLOCKSIZE * 2
    padding = -size % tarfile.RECORDSIZE
    yield tarfile.NUL * (tarfile.BLOCKSIZE * 2 + padding)


def write_layer(entries: Iterable[Entry], out: IO[bytes] | None) -> str:
    """Write the layer tar to ``out`` (or only hash it when ``out`` is None).

    Returns the diff ID, ``sha256:<hex>`` of the uncompressed tar bytes.
    """
    sha = hashlib.sha256()
    for chunk in layer_chunks(entries):
        sha.update(chunk)
        if out is not None:
            out.write(chunk)
    return "sha256:" + sha.hexdigest()


def _file_chunks(source: Path, size: int, buffer: bytearray) -> Iterator[memoryview]:
    view = memoryview(buffer)
    left = size
    with source.open("rb", buffering=0) as handle:
        while left:
            count = handle.readinto(view[: min(left, len(buffer))])
            if not count:
                raise ImageError(f"{source} shrank while its layer was written")
            yield view[:count]
            left -= count


def layer_bytes(entries: Iterable[Entry]) -> tuple[bytes, str]:
    """The layer as bytes in memory, with its diff ID (for small layers such as configs)."""
    buffer = io.BytesIO()
    diff_id = write_layer(entries, buffer)
    return buffer.getvalue(), diff_id


def write_layer_file(entries: Iterable[Entry], path: Path) -> str:
    """Write the layer atomically to ``path`` and return its diff ID."""
    with atomic_writer(path) as handle:
        return write_layer(entries, handle)


def tree_entries(
    root: Path, prefix: str = "", skip: Callable[[str], bool] | None = None
) -> list[Entry]:
    """Entries for a directory tree on disk, under ``prefix`` in the layer.

    Modes are kept (permission bits only); hard links become plain files; devices,
    sockets and fifos are left out. ``skip(relpath)`` excludes a path and, for a
    directory, everything below it.
    """
    entries: list[Entry] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        dirnames.sort()
        kept = []
        for name in dirnames:
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if skip is not None and skip(rel):
                continue
            full = Path(dirpath, name)
            if full.is_symlink():
                link = _entry(full, rel, prefix)
                if link is not None:
                    entries.append(link)
            else:
                kept.append(name)
                entries.append(Entry(_join(prefix, rel), "dir", mode=full.stat().st_mode & 0o7777))
        dirnames[:] = kept
        for name in sorted(filenames):
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if skip is not None and skip(rel):
                continue
            entry = _entry(Path(dirpath, name), rel, prefix)
            if entry is not None:
                entries.append(entry)
    return entries


def _join(prefix: str, rel: str) -> str:
    return f"{prefix.strip('/')}/{rel}" if prefix.strip("/") else rel


def _entry(full: Path, rel: str, prefix: str) -> Entry | None:
    st = full.lstat()
    if stat.S_ISLNK(st.st_mode):
        return Entry(_join(prefix, rel), "symlink", target=os.readlink(full), mode=0o777)
    if stat.S_ISREG(st.st_mode):
        return Entry(_join(prefix, rel), "file", source=full, mode=st.st_mode & 0o7777)
    return None
