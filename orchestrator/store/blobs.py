"""Content-addressed blobs: ``blobs/sha256/<hex>``, each stored once, checked on the way.

A blob may be stored gzip-encoded (image layers are: :meth:`Blobs.put_encoded`): its
name is still the sha256 of its decoded content, and a reader gets the stored bytes,
encoded (``docker load`` takes a gzip layer as it is). The store cannot tell the two
apart but by the gzip magic, so a blob whose plain bytes hash to its name is plain.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Iterable
from pathlib import Path

from .._util.files import sha256_file
from .._util.ids import DIGEST
from ..errors import NotFound, StoreError, UsageError
from .interface import Store


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

    def put_encoded(
        self, digest: str, source: bytes | Path, *, known_missing: bool = False
    ) -> bool:
        """Store the gzip encoding ``source`` of the blob ``digest``: True if uploaded.

        Bytes are decoded and checked against ``digest`` first; a file must come from
        orch's own layer cache, encoded from a tar hashed when it was written (so it is
        not decoded again here: ``docker load`` checks every layer it reads).
        """
        key, expected = self._key(digest)
        if not known_missing and self.store.exists(key):
            return False
        if isinstance(source, bytes | bytearray | memoryview):
            data = bytes(source)
            if not _is_gzip(data[:2]):
                raise StoreError(f"refusing blob {digest}: it is not gzip-encoded")
            try:
                actual = _decoded_sha256(iter([data]))
            except zlib.error as exc:
                raise StoreError(f"refusing blob {digest}: bad gzip data ({exc})") from exc
            if actual != expected:
                raise StoreError(f"refusing blob {digest}: it decodes to sha256:{actual}")
            return self.store.create(key, data)
        self.store.put_file(key, Path(os.fspath(source)))
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
        """The blob into ``path`` as stored (encoded, for an encoded one); ``verify=False``
        for a reader that checks the bytes itself (``docker load`` checks every layer
        against its diff ID)."""
        key, expected = self._key(digest)
        target = Path(path)
        try:
            self.store.get_file(key, target)
        except NotFound:
            raise NotFound(f"blob {digest} is not in store {self.store.uri}") from None
        if verify and not _file_matches(target, expected):
            target.unlink(missing_ok=True)
            raise self._corrupt(digest, key)

    def digests(self) -> Iterable[str]:
        """Every blob in the store, as ``sha256:<hex>``."""
        return (f"sha256:{key.rsplit('/', 1)[1]}" for key in self.store.list("blobs/sha256/"))


_CHUNK = 1 << 20


def _is_gzip(head: bytes) -> bool:
    return head[:2] == b"\x1f\x8b"


def _decoded_sha256(chunks: Iterable[bytes]) -> str:
    """sha256 of the decoded bytes of a gzip stream of one or more members."""
    sha = hashlib.sha256()
    decoder = zlib.decompressobj(31)
    for chunk in chunks:
        while chunk:
            sha.update(decoder.decompress(chunk))
            if not decoder.eof:
                break
            chunk = decoder.unused_data  # the next member starts here
            decoder = zlib.decompressobj(31)
    return sha.hexdigest()


def _file_matches(path: Path, expected: str) -> bool:
    if sha256_file(path) == expected:
        return True
    with path.open("rb") as handle:
        if not _is_gzip(handle.read(2)):
            return False
        handle.seek(0)
        try:
            return _decoded_sha256(iter(lambda: handle.read(_CHUNK), b"")) == expected
        except zlib.error:
            return False
