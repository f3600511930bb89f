#!/usr/bin/env python3
"""Write the demo's datasets, the data inputs orch.yaml declares, into ``data/``.

    scripts/demo-data.py [DIRECTORY]        # default: data/ next to this repository's orch.yaml

``data/`` is gitignored, as a real project's data is: orch pins it by content, mounts it
read-only into each run and stores it in the store, never in git or an image layer.
``make setup`` runs this; it is deterministic (the same bytes with any Python 3 on any
machine, so the demo's run ids are the same everywhere) and rewrites no file that already
holds the right bytes (so the stat cache keeps vouching for them).

Each dataset is text classification in TSV, one document a line: ``LABEL<TAB>w3 w17 w5``
(the class, then the words; each class prefers its own few topical words).

- ``canadian.tsv``: one file, 160 documents of 2 classes over 64 words;
- ``all/``: a directory of two shards, ``part-0.tsv`` and ``part-1.tsv``, 200 documents of
  3 classes over 96 words.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Dataset:
    name: str
    samples: int
    classes: int
    vocabulary: int
    max_length: int
    shards: int  # 0: one file NAME.tsv; N: a directory NAME/ of part-0.tsv ... part-(N-1).tsv


DATASETS = (
    Dataset("canadian", samples=160, classes=2, vocabulary=64, max_length=12, shards=0),
    Dataset("all", samples=200, classes=3, vocabulary=96, max_length=16, shards=2),
)


def documents(spec: Dataset) -> list[str]:
    rng = random.Random(f"data:{spec.name}")  # str seeds hash the same way on every platform
    topical = min(spec.vocabulary, 8 * spec.classes)  # the words w0..w(topical-1)
    lines = []
    for _ in range(spec.samples):
        label = rng.randrange(spec.classes)
        words = []
        for _ in range(rng.randint(2, spec.max_length)):
            if rng.random() < 0.6:  # one of the few topical words of this class
                words.append(rng.randrange(label, topical, spec.classes))
            else:
                words.append(rng.randrange(spec.vocabulary))
        lines.append(f"{label}\t" + " ".join(f"w{word}" for word in words) + "\n")
    return lines


def files(spec: Dataset) -> dict[str, bytes]:
    """Relative path -> content."""
    lines = documents(spec)
    if not spec.shards:
        return {f"{spec.name}.tsv": "".join(lines).encode()}
    size = -(-len(lines) // spec.shards)
    return {
        f"{spec.name}/part-{i}.tsv": "".join(lines[i * size : (i + 1) * size]).encode()
        for i in range(spec.shards)
    }


def write(directory: Path) -> list[Path]:
    """Write every dataset under ``directory``; returns the files (re)written."""
    written = []
    for spec in DATASETS:
        for rel, data in files(spec).items():
            path = directory / rel
            try:
                if path.read_bytes() == data:
                    continue
            except OSError:
                pass
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
            written.append(path)
    return written


def main(argv: list[str]) -> int:
    directory = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent / "data"
    for path in write(directory):
        print(f"demo-data: wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
