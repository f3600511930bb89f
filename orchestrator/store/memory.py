"""An in-memory store for fast unit tests (the way httpx ships ``MockTransport``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

from .._util.files import atomic_write
from ..errors import NotFound, StoreError
from .interface import check_key, check_prefix


class MemoryStore:
    """A dict of key -> (bytes, mtime) behind a lock. Same semantics as the real stores."""

    def __init__(self, uri: str = "memory://") -> None:
        self.uri = uri
        self._lock = threading.Lock()
        self._objects: dict[str, tuple[bytes, float]] = {}

    def put(self, key: str, data: bytes) -> None:
        check_key(key)
        with self._lock:
            self._objects[key] = (bytes(data), time.time())

    def put_file(self, key: str, path: Path) -> None:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise StoreError(f"cannot store {key!r}: cannot read {path}: {exc.strerror}") from exc
        self.put(key, data)

    def get(self, key: str) -> bytes:
        check_key(key)
        with self._lock:
            found = self._objects.get(key)
        if found is None:
            raise NotFound(f"no such key {key!r} in {self.uri}")
        return found[0]

    def get_file(self, key: str, path: Path) -> None:
        atomic_write(Path(path), self.get(key), fsync=False)  # a copy: see DirStore.get_file

    def exists(self, key: str) -> bool:
        check_key(key)
        with self._lock:
            return key in self._objects

    def list(self, prefix: str) -> Iterator[str]:
        check_prefix(prefix)
        with self._lock:
            keys = [key for key in self._objects if key.startswith(prefix)]
        return iter(sorted(keys))

    def create(self, key: str, data: bytes) -> bool:
        check_key(key)
        with self._lock:
            if key in self._objects:
                return False
            self._objects[key] = (bytes(data), time.time())
            return True

    def delete(self, key: str) -> None:
        check_key(key)
        with self._lock:
            self._objects.pop(key, None)

    def age(self, key: str) -> float | None:
        check_key(key)
        with self._lock:
            found = self._objects.get(key)
        return None if found is None else max(0.0, time.time() - found[1])

    def touch(self, key: str, age: float) -> None:
        """Test helper: make ``key`` look ``age`` seconds old."""
        with self._lock:
            data, _ = self._objects[key]
            self._objects[key] = (data, time.time() - age)
