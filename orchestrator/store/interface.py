"""The store interface: a flat namespace of keys holding bytes, atomic per key.

Both kinds of store (a directory, an S3 bucket) and the in-memory one for tests implement
exactly this; everything about *what* the keys mean lives in :mod:`.runstore`.

Keys are relative POSIX paths (``runs/3f2a9c1b7d4e/run.json``), never ``..``, never
absolute, so a key cannot escape the store root whatever the store.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

from ..errors import UsageError


@runtime_checkable
class Store(Protocol):
    """What every store offers. All methods are safe to call from many threads."""

    uri: str
    """Where the store lives: ``file:///abs/path`` or ``s3://bucket/prefix``."""

    def put(self, key: str, data: bytes) -> None:
        """Write ``data`` at ``key``; readers see the old or the new bytes, never a part."""
        ...

    def put_file(self, key: str, path: Path) -> None:
        """Store the file at ``path`` under ``key``, atomically like :meth:`put`."""
        ...

    def get(self, key: str) -> bytes:
        """The bytes at ``key``; :class:`~orchestrator.errors.NotFound` if there are none."""
        ...

    def get_file(self, key: str, path: Path) -> None:
        """Write the object at ``key`` to ``path`` (atomically); NotFound if missing."""
        ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str) -> Iterator[str]:
        """Every key starting with ``prefix`` (a plain string prefix), sorted."""
        ...

    def create(self, key: str, data: bytes) -> bool:
        """Write ``data`` only if ``key`` does not exist: True if written, False if it did.

        Exactly one of many concurrent creators wins; this is what claims are built on.
        """
        ...

    def delete(self, key: str) -> None:
        """Remove ``key``; no error if it is missing."""
        ...

    def age(self, key: str) -> float | None:
        """Seconds since ``key`` was last written, None if it does not exist."""
        ...


def check_key(key: str) -> str:
    """Return ``key`` if it is a clean relative POSIX path, else raise UsageError."""
    if not isinstance(key, str) or not key:
        raise UsageError(f"invalid store key {key!r}: must be a non-empty relative path")
    problem = None
    if key.startswith("/"):
        problem = "must be relative, not start with '/'"
    elif "\\" in key:
        problem = "must use '/' separators, not '\\'"
    elif "\x00" in key:
        problem = "must not contain NUL"
    elif "//" in key:
        problem = "must not contain an empty path component ('//')"
    elif key.endswith("/"):
        problem = "must name an object, not end with '/'"
    elif any(part in (".", "..") for part in key.split("/")):
        problem = "must not contain '.' or '..' components"
    if problem:
        raise UsageError(f"invalid store key {key!r}: {problem}")
    return key


def check_prefix(prefix: str) -> str:
    """A listing prefix: empty, or a key, or a key followed by '/'."""
    if prefix == "":
        return prefix
    check_key(prefix[:-1] if prefix.endswith("/") and len(prefix) > 1 else prefix)
    return prefix
