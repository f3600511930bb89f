"""Layers compressed for the store: gzip, deterministic, written in parallel.

A layer's blob in the store is named by its diff ID (the sha256 of the *uncompressed*
tar, what the image config lists), so compressing changes no image ID; ``docker load``
recognizes a gzip layer by its magic bytes and checks the decompressed stream against
the diff ID, as it does an uncompressed one, so blobs stored before compression load
unchanged.

The encoding is the same bytes for the same tar on every run: the tar is cut into
:data:`CHUNK` pieces, each one a gzip member of its own (RFC 1952 allows a file of
several; Go's and pigz's readers take them), written by zlib at :data:`LEVEL` with no
file name and mtime 0. Members are independent, so they are compressed side by side
(zlib releases the GIL) and the result does not depend on the number of threads.
Level 1 was chosen by measurement (docs/benchmarks.md, "Compressed blobs").
"""

from __future__ import annotations

import os
import zlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO

from .._util.files import atomic_writer

#: zlib's level: 1 takes a torch environment to 0.31x in half the time of level 6 (0.27x).
LEVEL = 1
#: Uncompressed bytes per gzip member: large enough that the ratio does not suffer.
CHUNK = 8 << 20
#: The suffix of a cached layer tar's compressed copy.
SUFFIX = ".gz"


def _member(chunk: bytes, level: int) -> bytes:
    # wbits 31: a gzip wrapper, whose header zlib writes with mtime 0 and no name.
    encoder = zlib.compressobj(level, zlib.DEFLATED, 31)
    return encoder.compress(chunk) + encoder.flush()


def _chunks(source: IO[bytes]) -> Iterator[bytes]:
    while chunk := source.read(CHUNK):
        yield chunk


def _encode(source: IO[bytes], out: IO[bytes], level: int, workers: int) -> None:
    with ThreadPoolExecutor(workers, thread_name_prefix="orch-gzip") as pool:
        pending: deque[Future[bytes]] = deque()
        for chunk in _chunks(source):
            pending.append(pool.submit(_member, chunk, level))
            # At most 2 chunks per thread in memory at once.
            while len(pending) > 2 * workers:
                out.write(pending.popleft().result())
        while pending:
            out.write(pending.popleft().result())


def gzip_bytes(data: bytes, level: int = LEVEL) -> bytes:
    """``data`` in the same encoding as :func:`gzip_file` (for layers kept in memory)."""
    import io

    out = io.BytesIO()
    _encode(io.BytesIO(data), out, level, 1)
    return out.getvalue()


def gzip_file(source: Path, target: Path, level: int = LEVEL, workers: int | None = None) -> Path:
    """Write the encoding of ``source`` to ``target`` atomically; returns ``target``."""
    threads = workers or os.cpu_count() or 1
    with source.open("rb") as handle, atomic_writer(target) as out:
        _encode(handle, out, level, threads)
    return target


def compressed_copy(tar: Path) -> Path:
    """The cached compressed copy of a cached layer tar, written beside it once.

    Its name follows the tar's, whose name is content-addressed (a cache key or the
    diff ID), so an existing copy is the right one.
    """
    target = tar.with_name(tar.name + SUFFIX)
    if target.is_file():
        return target
    return gzip_file(tar, target)
