"""Bytecode for the environment layers, compiled by the base image's own interpreter.

A ``.pyc`` is only valid for the interpreter that wrote it, and the bytes a compiler
writes may change between patch releases, so the sources go into one short-lived
container of the base image (no network, sources sent with ``put_archive``, results read
with ``get_archive``: no bind mount, so any daemon will do) and come back as hash-based
bytecode (PEP 552, ``unchecked-hash``): no source mtime inside, nothing checked at import.

Determinism: each chunk of a group (one layer's files, sorted, cut every
:data:`CHUNK_FILES`) is compiled by a fresh interpreter with ``PYTHONHASHSEED=0`` (set
literals' order), in sorted path order, so a layer's bytecode depends on its own sources
only, never on which other layers were compiled beside it. Chunks run in parallel.

A group may also be the image's own sources (:class:`InImage`): the standard library,
which the base recipe ships without bytecode (Debian's would embed mtimes). Files that
do not compile (templates, Python 2 code, test data with syntax errors) get no ``.pyc``,
as with ``pip install``.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..docker_api import DockerClient, describe
from ..errors import ImageError
from .archive import streamed
from .interpreter import Interpreter
from .tarball import Entry, write_layer

WORK = "/tmp/orch-bytecode"
#: Files per compiling process: a big layer's files are compiled by several at once.
CHUNK_FILES = 400
#: Bytecode files up to this size are kept in memory (most are; torch's 5,400 are 140 MB).
_IN_MEMORY = 64 << 10
_WORKER = r"""
import importlib.util, json, os, py_compile, sys, warnings
warnings.simplefilter("ignore")
SITE = "dist-packages"
work, index = sys.argv[1], sys.argv[2]
job = json.load(open(os.path.join(work, "jobs.json")))[int(index)]
if isinstance(job, dict):  # the image's own sources under a folder
    files, top = [], "/" + job["scan"]
    for folder, dirs, names in os.walk(top):
        dirs[:] = sorted(d for d in dirs if d not in ("__pycache__", "site-packages", SITE))
        files += [os.path.join(folder, n)[1:] for n in sorted(names) if n.endswith(".py")]
    source = lambda rel: "/" + rel
else:
    files = job
    source = lambda rel: os.path.join(work, "src", index, rel)
for rel in sorted(files):
    final = "/" + rel
    cfile = os.path.join(work, "out", index, importlib.util.cache_from_source(final)[1:])
    try:
        py_compile.compile(
            source(rel), cfile=cfile, dfile=final, doraise=True,
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
        )
    except (py_compile.PyCompileError, SyntaxError, ValueError, UnicodeError, OSError):
        pass
"""
_DRIVER = r"""
import concurrent.futures, json, os, subprocess, sys
work, worker = sys.argv[1], sys.argv[2]
count = len(json.load(open(os.path.join(work, "jobs.json"))))
env = {"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0", "LC_ALL": "C.UTF-8"}
def run(index):
    args = [sys.executable, "-I", "-c", worker, work, str(index)]
    return subprocess.run(args, env=env).returncode
os.makedirs(os.path.join(work, "out"), exist_ok=True)
with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
    codes = list(pool.map(run, range(count)))
sys.exit(max(codes, default=0))
"""


@dataclass(frozen=True)
class InImage:
    """A group of the base image's own sources: every ``.py`` under ``root`` (relative to
    the image root), site directories left out; the interpreter's standard library."""

    root: str


def is_source(path: str) -> bool:
    return path.endswith(".py")


def compile_groups(
    client: DockerClient,
    image_id: str,
    interpreter: Interpreter,
    groups: Sequence[Sequence[Entry] | InImage],
    stage: Path,
) -> list[list[Entry]]:
    """The ``__pycache__/*.pyc`` entries of each group's ``.py`` files, in group order.

    Entry paths are relative to the image root (``usr/local/lib/...``); the bytecode
    files are kept under ``stage``, which must outlive the returned entries.
    """
    sources = [
        []
        if isinstance(group, InImage)
        else [e for e in group if e.kind == "file" and is_source(e.path)]
        for group in groups
    ]
    if not any(sources) and not any(isinstance(group, InImage) for group in groups):
        return [[] for _ in groups]
    import docker.errors

    # Big groups (torch: 5,000 files) are cut into chunks that run in parallel. The cut
    # depends on the group's own sorted file list only, so the bytes do not change.
    jobs: list[object] = []
    owners: list[int] = []
    members: list[Entry] = []
    for number, (group, files) in enumerate(zip(groups, sources, strict=True)):
        if isinstance(group, InImage):
            jobs.append({"scan": group.root})
            owners.append(number)
            continue
        ordered = sorted(files, key=lambda e: e.path)
        for start in range(0, len(ordered), CHUNK_FILES):
            chunk = ordered[start : start + CHUNK_FILES]
            for entry in chunk:
                path = f"orch-bytecode/src/{len(jobs)}/{entry.path}"
                members.append(Entry(path, data=entry.data, source=entry.source))
            jobs.append([e.path for e in chunk])
            owners.append(number)
    members.append(Entry("orch-bytecode/jobs.json", data=json.dumps(jobs).encode()))
    command = ["python3", "-I", "-c", _DRIVER, WORK, _WORKER]
    container = None
    try:
        container = client.containers.create(
            image_id,
            command,
            network_mode="none",
            user="0:0",
            labels={"org.orch.role": "bytecode"},
        )
        # Streamed as the tar is written: the sources are not copied to disk first.
        sources_tar = streamed(lambda out: write_layer(members, out))
        if not container.put_archive("/tmp", sources_tar):
            raise ImageError("cannot send the sources to the bytecode container")
        container.start()
        status = container.wait()
        if status.get("StatusCode") != 0:
            logs = container.logs(stdout=True, stderr=True).decode(errors="replace").strip()
            last = logs.splitlines()[-1] if logs else str(status)
            raise ImageError(f"compiling bytecode in {image_id} failed: {last}")
        stream, _ = container.get_archive(f"{WORK}/out")
        return _read_results(stream, owners, len(groups), interpreter, stage)
    except docker.errors.DockerException as exc:
        raise ImageError(f"cannot compile bytecode in {image_id}: {describe(exc)}") from exc
    finally:
        if container is not None:
            try:
                container.remove(force=True)
            except docker.errors.DockerException:  # noqa: S110 - best effort: it has exited
                pass


class _ChunkReader(io.RawIOBase):
    """A file over the chunks of an HTTP response, for ``tarfile``'s stream mode."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._rest = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._rest:
            self._rest = next(self._chunks, b"")
            if not self._rest:
                return 0
        size = min(len(buffer), len(self._rest))
        buffer[:size] = self._rest[:size]
        self._rest = self._rest[size:]
        return size


def _read_results(
    stream: Iterator[bytes], owners: list[int], count: int, interpreter: Interpreter, stage: Path
) -> list[list[Entry]]:
    """The ``.pyc`` files as they arrive: small ones kept in memory, large ones on disk."""
    results: list[list[Entry]] = [[] for _ in range(count)]
    suffix = f".{interpreter.cache_tag}.pyc"
    reader = io.BufferedReader(_ChunkReader(stream), 1 << 20)
    with tarfile.open(fileobj=reader, mode="r|") as tar:
        number = 0
        for member in tar:
            if not member.isfile():
                continue
            parts = member.name.split("/", 2)  # out/<index>/<path>
            valid = len(parts) == 3 and parts[1].isdigit() and int(parts[1]) < len(owners)
            if not valid or not parts[2].endswith(suffix):
                raise ImageError(f"unexpected file {member.name!r} from the bytecode container")
            handle = tar.extractfile(member)
            if handle is None:
                continue
            owner = results[owners[int(parts[1])]]
            if member.size <= _IN_MEMORY:
                owner.append(Entry(parts[2], data=handle.read(), mode=0o644))
                continue
            number += 1
            path = stage / f"pyc-{number:08d}"
            with handle, path.open("wb") as out:
                while chunk := handle.read(1 << 20):
                    out.write(chunk)
            owner.append(Entry(parts[2], source=path, mode=0o644))
    return results
