"""Content-addressed blobs: ``blobs/sha256/<hex>``, each stored once, checked on the way."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from ..errors import NotFound, StoreError, UsageError
from ..files import sha256_file
from ..ids import DIGEST
from .base import Store


class Blobs:
    """Image layers and configs by digest. Every read is verified against its name."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _key(self, digest: str) -> tuple[str, str]:
        match = DIGEST.match(digest) if isinstance(digest, str) else None
        if match is None:
            raise UsageError(f"invalid digest {digest!r}: expected sha256:<64 lowercase hex>")
        return f"blobs/sha256/{match.group(1)}", match.group(1)

    def _corrupt(self, digest: str, key: str) -> StoreError:
        return StoreError(
            f"blob {digest} in {self.store.uri} is corrupt: delete {key} and rerun the sweep "
            "that made it (it uploads the blob again)"
        )

    def has(self, digest: str) -> bool:
        return self.store.exists(self._key(digest)[0])

    def put(
        self,
        digest: str,
        source: bytes | Path,
        *,
        known_missing: bool = False,
        trusted: bool = False,
    ) -> bool:
        """Store a blob under its digest: True if uploaded, False if already there.

        ``known_missing``: the caller has just listed the store and not found it, so the
        existence check (a round trip per blob) is skipped; the content is still checked.
        ``trusted``: a file from orch's own layer caches, hashed when it was written
        there (a base layer checked at export, the environment layer hashed as it was
        written), is not read a second time to hash it again; every read of a blob is
        still checked against its digest.
        """
        key, expected = self._key(digest)
        if not known_missing and self.store.exists(key):
            return False
        if isinstance(source, bytes | bytearray | memoryview):
            data = bytes(source)
            actual = hashlib.sha256(data).hexdigest()
            if actual != expected:
                raise StoreError(f"refusing blob {digest}: its content hashes to sha256:{actual}")
            return self.store.create(key, data)
        path = Path(os.fspath(source))
        if trusted:
            self.store.put_file(key, path)
            return True
        try:
            actual = sha256_file(path)
        except OSError as exc:
            raise StoreError(f"cannot read blob source {path}: {exc.strerror or exc}") from exc
        if actual != expected:
            raise StoreError(f"refusing blob {digest} from {path}: it hashes to sha256:{actual}")
        self.store.put_file(key, path)
        return True

    def get(self, digest: str) -> bytes:
        key, expected = self._key(digest)
        try:
            data = self.store.get(key)
        except NotFound:
            raise NotFound(f"blob {digest} is not in store {self.store.uri}") from None
        if hashlib.sha256(data).hexdigest() != expected:
            raise self._corrupt(digest, key)
        return data

    def get_file(self, digest: str, path: Path, *, verify: bool = True) -> None:
        """The blob into ``path``; ``verify=False`` for a reader that checks the bytes
        itself (``docker load`` checks every layer against its diff ID)."""
        key, expected = self._key(digest)
        target = Path(path)
        try:
            self.store.get_file(key, target)
        except NotFound:
            raise NotFound(f"blob {digest} is not in store {self.store.uri}") from None
        if verify and sha256_file(target) != expected:
            target.unlink(missing_ok=True)
            raise self._corrupt(digest, key)

    def digests(self) -> Iterable[str]:
        """Every blob in the store, as ``sha256:<hex>``."""
        return (f"sha256:{key.rsplit('/', 1)[1]}" for key in self.store.list("blobs/sha256/"))
