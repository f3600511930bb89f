"""What a run left under ``/orch/output``, walked safely and listed on disk.

The walk goes through directory descriptors and never follows a link at any component, so
an output can never point or land outside its run; the names go to a listing file as they
are found, so memory does not grow with their number.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .._util.files import run_files


@dataclass
class Outputs:
    """The regular files a run left under ``/orch/output``: their relative paths in
    ``listing`` (a file, one JSON string per line, in walk order), never a list in
    memory, whatever their number; ``apart`` the top-level files orch reads itself
    (``metrics.json``, ``metrics.jsonl``), not listed."""

    root: Path
    listing: Path
    count: int = 0
    total_bytes: int = 0
    #: ``name: why`` for every entry not kept (links, devices, unsafe names).
    dropped: dict[str, str] = field(default_factory=dict)
    apart: dict[str, Path] = field(default_factory=dict)

    def names(self) -> Iterator[str]:
        """The listed names, read from the listing a line at a time."""
        if self.count == 0:
            return
        with self.listing.open(encoding="utf-8") as handle:
            for line in handle:
                yield str(json.loads(line))

    def items(self) -> Iterator[tuple[str, Path]]:
        """``(name, path)`` of each listed file: what a commit stores."""
        for name in self.names():
            yield name, self.root / name

    def add(self, name: str) -> None:
        """List one more file (already under ``root``)."""
        with self.listing.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(name) + "\n")
        self.count += 1

    def discard(self) -> None:
        """Keep none of them (they are over the limit); what was dropped stays said."""
        self.listing.write_bytes(b"")
        self.count = self.total_bytes = 0
        self.apart = {}


def collect_outputs(root: Path, listing: Path | None = None,
                    apart: Sequence[str] = ()) -> Outputs:
    """Walk the output directory through directory descriptors, never following a link
    at any component; keep regular files only, their names written to ``listing``
    (default: ``outputs.list`` beside ``root``) as they are found.

    Links, devices, FIFOs and any name that could not be stored safely (backslashes,
    control characters, not UTF-8) are left out and listed: an artifact can never point
    or land outside its run. The top-level files named in ``apart`` are returned in
    ``Outputs.apart`` instead of the listing. Memory is one directory's names at a time.
    """
    outputs = Outputs(root, listing or root.parent / "outputs.list")
    with outputs.listing.open("w", encoding="utf-8") as handle:
        for rel, dir_fd, name in run_files(root):
            try:
                info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(info.st_mode):
                shown = _shown(rel)
                outputs.dropped[shown] = "a link" if stat.S_ISLNK(info.st_mode) else "not a file"
                continue
            safe = safe_output_name(rel)
            if safe is None:
                outputs.dropped[_shown(rel)] = "unsafe name"
                continue
            outputs.total_bytes += info.st_size
            if safe in apart:
                outputs.apart[safe] = root / safe
                continue
            handle.write(json.dumps(safe) + "\n")
            outputs.count += 1
    return outputs


def _shown(rel: str) -> str:
    return rel.encode("utf-8", "backslashreplace").decode()


def safe_output_name(rel: str) -> str | None:
    """``a/b.txt`` as given; None for anything unsafe to store as a key."""
    parts = rel.split("/")
    for part in parts:
        if part in ("..", ".", "") or "\\" in part:
            return None
        if any(ord(c) < 32 or c == "\x7f" for c in part):
            return None
        try:
            part.encode("utf-8")
        except UnicodeEncodeError:
            return None
    return "/".join(parts)
