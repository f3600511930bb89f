"""An input's manifest: the canonical list of its files, whose hash is the input's digest.

A manifest is this JSON object, serialized canonically (sorted keys, no whitespace,
UTF-8, ``orchestrator._util.canonical``)::

    {"files": [{"exec": false, "path": "train/a.npz", "sha256": "<64 hex>", "size": 1234},
               ...],
     "kind": "dir",
     "orch_input": 1}

and the input's digest is ``sha256:`` + the SHA-256 of exactly those bytes. It covers,
for every regular file of the input:

* ``path``: the path relative to the input's root, ``/``-separated, as UTF-8 (names are
  taken byte for byte: no Unicode normalization, case kept); files are sorted by it;
* ``size`` in bytes and ``sha256`` of the content;
* ``exec``: the owner's execute bit (as git keeps it); no other mode bit, no owner, no
  time stamp;

and ``kind``: ``"dir"`` for a directory, ``"file"`` for an input that is one file (then
``files`` holds one entry whose ``path`` is ``""``: a file input's own name does not
matter, it is mounted at ``/orch/inputs/<name>``). Empty directories, directory modes and
symlinks as such are not covered: a symlink inside the input counts as the file it points
to (under the link's path). So renaming, adding, removing, editing a file or flipping
its execute bit changes the digest; copying the input elsewhere, touching it or
``chmod go-r`` does not.

The manifest is stored once, as the blob of its own digest (``blobs/sha256/<hex>``),
beside the blobs of its files.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

from .._util.canonical import canonical_bytes
from .._util.ids import HEX64
from ..errors import InputError

FORMAT = 1
KINDS = ("dir", "file")


@dataclass(frozen=True, order=True)
class FileEntry:
    """One file of an input: its relative path (``""`` for a file input), size, hash, mode."""

    path: str
    size: int
    sha256: str
    exec: bool = False

    @property
    def digest(self) -> str:
        """The file's blob digest in the store."""
        return f"sha256:{self.sha256}"

    def to_json(self) -> dict[str, object]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256, "exec": self.exec}


def check_path(path: str) -> str | None:
    """Why ``path`` cannot be a relative file path in a manifest, or None if it can."""
    if not path:
        return "empty path"
    if path.startswith("/"):
        return "absolute path"
    if "\x00" in path:
        return "NUL in path"
    if any(part in ("", ".", "..") for part in path.split("/")):
        return "empty, '.' or '..' component"
    return None


@dataclass(frozen=True)
class Manifest:
    kind: str
    files: tuple[FileEntry, ...]

    @classmethod
    def build(cls, kind: str, files: Iterable[FileEntry]) -> Manifest:
        """A manifest of these files in canonical order; refuses what could not be mounted."""
        entries = tuple(sorted(files, key=lambda entry: entry.path))
        if kind not in KINDS:
            raise ValueError(f"unknown manifest kind {kind!r}")
        if kind == "file":
            if len(entries) != 1 or entries[0].path != "":
                raise ValueError("a file input has exactly one entry, with path ''")
            return cls(kind, entries)
        seen: set[str] = set()
        for entry in entries:
            problem = check_path(entry.path)
            if problem:
                raise ValueError(f"{entry.path!r}: {problem}")
            if entry.path in seen:
                raise ValueError(f"{entry.path!r} appears twice")
            seen.add(entry.path)
        # A file cannot also be a directory holding other files.
        for entry in entries:
            parts = entry.path.split("/")
            for i in range(1, len(parts)):
                if "/".join(parts[:i]) in seen:
                    raise ValueError(f"{entry.path!r} is under a file of the same input")
        return cls(kind, entries)

    def to_json(self) -> dict[str, object]:
        return {
            "orch_input": FORMAT,
            "kind": self.kind,
            "files": [entry.to_json() for entry in self.files],
        }

    def to_bytes(self) -> bytes:
        """The canonical bytes: what the digest is the hash of, and what the store keeps."""
        return canonical_bytes(self.to_json())

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.to_bytes()).hexdigest()

    @property
    def total_bytes(self) -> int:
        return sum(entry.size for entry in self.files)

    def distinct(self) -> dict[tuple[str, bool], FileEntry]:
        """One entry per distinct (content, execute bit): what the cache holds."""
        return {(entry.sha256, entry.exec): entry for entry in self.files}

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> Manifest:
        """Parse stored bytes; anything but a canonical manifest is refused, naming ``where``."""

        def bad(why: str) -> InputError:
            return InputError(f"corrupt input manifest {where}: {why}")

        try:
            value = json.loads(data)
        except (UnicodeDecodeError, ValueError) as exc:
            raise bad(f"not JSON ({exc})") from None
        if not isinstance(value, dict) or value.get("orch_input") != FORMAT:
            raise bad(f"not an orch input manifest of format {FORMAT}")
        files = value.get("files")
        if not isinstance(files, list):
            raise bad("'files' is not a list")
        entries = []
        for item in files:
            if not (
                isinstance(item, dict)
                and set(item) == {"path", "size", "sha256", "exec"}
                and isinstance(item["path"], str)
                and isinstance(item["size"], int)
                and not isinstance(item["size"], bool)
                and item["size"] >= 0
                and isinstance(item["sha256"], str)
                and HEX64.match(item["sha256"])
                and isinstance(item["exec"], bool)
            ):
                raise bad(f"malformed entry {str(item)[:80]}")
            entries.append(FileEntry(item["path"], item["size"], item["sha256"], item["exec"]))
        try:
            manifest = cls.build(str(value.get("kind")), entries)
        except ValueError as exc:
            raise bad(str(exc)) from None
        if manifest.to_bytes() != data:
            raise bad("not in canonical form")
        return manifest
