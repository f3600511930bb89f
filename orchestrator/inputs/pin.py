"""Pinning declared inputs for a sweep: digest each, then stage it in the cache and store.

``pin`` computes each input's manifest (a local path through the stat cache; an S3
source by snapshotting it into the host cache); ``stage`` copies local files into the
host cache (checked against the manifest, so a file edited since it was hashed is an
error) and uploads the input to the store (files, then manifest). ``status`` is what
``orch inputs`` shows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..schema.record import InputRef
from .cache import HostCache
from .decl import InputDecl
from .manifest import Manifest
from .s3source import S3ClientFactory, snapshot
from .scan import Scanned, ScanStats, scan
from .transfer import BlobStore, Transfer, fetch_manifest, upload


@dataclass(frozen=True)
class Pinned:
    """An input whose digest is known: a scanned local source or a snapshotted S3 one."""

    decl: InputDecl
    content: Scanned | Manifest

    @property
    def name(self) -> str:
        return self.decl.name

    @property
    def digest(self) -> str:
        return self.content.digest

    def manifest(self) -> Manifest:
        """Built on demand: an unchanged local input needs only its digest."""
        return self.content if isinstance(self.content, Manifest) else self.content.manifest()

    @property
    def ref(self) -> InputRef:
        if isinstance(self.content, Manifest):
            files, size = len(self.content.files), self.content.total_bytes
        else:
            files, size = self.content.summary.files, self.content.summary.bytes
        return InputRef(digest=self.digest, files=files, bytes=size, source=self.decl.source)

    def readers(self) -> dict[tuple[str, bool], str]:
        return {} if isinstance(self.content, Manifest) else self.content.readers()


def _no_s3(endpoint: str | None) -> object:
    raise InputError("an s3:// input needs an S3 client: pass make_client to pin()")


def pin(
    decls: Iterable[InputDecl],
    project_root: Path,
    cache_root: Path,
    *,
    make_client: S3ClientFactory | None = None,
    stats: ScanStats | None = None,
) -> dict[str, Pinned]:
    """The manifests of these inputs, by name (S3 sources land in the host cache here)."""
    cache = HostCache(cache_root)
    pinned: dict[str, Pinned] = {}
    for decl in decls:
        if decl.is_s3:
            manifest = snapshot(decl.name, decl.source, decl.endpoint, make_client or _no_s3, cache)
            cache.put_manifest(manifest)
            pinned[decl.name] = Pinned(decl, manifest)
        else:
            scanned = scan(decl.name, decl.local_path(project_root), cache.stat, stats=stats)
            pinned[decl.name] = Pinned(decl, scanned)
    return pinned


def from_store(decl: InputDecl, digest: str, blobs: BlobStore, cache_root: Path) -> Pinned:
    """An input another machine pinned and staged (a detached sweep's submitter): its
    manifest comes from the store, so this machine needs neither its source nor its files."""
    return Pinned(decl, fetch_manifest(decl.name, blobs, HostCache(cache_root), digest))


def stage(pinned: Mapping[str, Pinned], blobs: BlobStore, cache_root: Path) -> dict[str, Transfer]:
    """Every pinned input into the host cache, then into the store; what was uploaded."""
    cache = HostCache(cache_root)
    uploaded: dict[str, Transfer] = {}
    for name, item in sorted(pinned.items()):
        cache.lease(item.digest)  # a prune beside this sweep leaves its objects alone
        if blobs.has(item.digest) and cache.manifest_path(item.digest).is_file():
            uploaded[name] = Transfer()  # staged before: its manifest is in both places
            continue
        manifest = item.manifest()
        missing = cache.missing(manifest)
        readers = item.readers() if missing else {}
        for entry in missing:
            source = readers.get((entry.sha256, entry.exec))
            if source is None:  # same bytes under the other mode bit
                source = next(r for (sha, _), r in readers.items() if sha == entry.sha256)
            cache.add_from_file(name, entry, source)
        cache.put_manifest(manifest)
        uploaded[name] = upload(name, blobs, cache, manifest)
    return uploaded


@dataclass(frozen=True)
class InputStatus:
    """One line of ``orch inputs``."""

    name: str
    source: str
    digest: str
    files: int
    bytes: int
    cached: bool
    uploaded: bool

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "source": self.source,
            "digest": self.digest,
            "files": self.files,
            "bytes": self.bytes,
            "cached": self.cached,
            "uploaded": self.uploaded,
        }


def status(
    pinned: Mapping[str, Pinned], blobs: BlobStore | None, cache_root: Path
) -> list[InputStatus]:
    cache = HostCache(cache_root)
    rows = []
    for name, item in sorted(pinned.items()):
        ref = item.ref
        rows.append(
            InputStatus(
                name=name,
                source=item.decl.source,
                digest=item.digest,
                files=ref.files,
                bytes=ref.bytes,
                cached=not cache.missing(item.manifest()),
                uploaded=blobs.has(item.digest) if blobs is not None else False,
            )
        )
    return rows


def describe(
    decls: Iterable[InputDecl],
    project_root: Path,
    blobs: BlobStore | None,
    cache_root: Path,
    *,
    make_client: S3ClientFactory | None = None,
) -> list[InputStatus]:
    """``orch inputs``: digest every declared input (stat cache first) and say where it is."""
    return status(pin(decls, project_root, cache_root, make_client=make_client), blobs, cache_root)


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


def render_status(rows: Iterable[InputStatus]) -> str:
    """The table ``orch inputs`` prints."""
    header = ("NAME", "DIGEST", "FILES", "SIZE", "CACHED", "UPLOADED", "SOURCE")
    lines = [header] + [
        (
            row.name,
            row.digest[:19],
            str(row.files),
            human_size(row.bytes),
            "yes" if row.cached else "no",
            "yes" if row.uploaded else "no",
            row.source,
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )
