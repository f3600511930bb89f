"""Bytecode for the environment layers, compiled by the base image's own interpreter.

A ``.pyc`` is only valid for the interpreter that wrote it, and the bytes a compiler
writes may change between patch releases, so the sources go into one short-lived
container of the base image (no network) and come back as hash-based bytecode (PEP 552,
``unchecked-hash``): no source mtime inside, nothing checked at import. A daemon on a
local socket that sees this machine's files (a token file written here says so) gets the
work folder bind-mounted; any other daemon gets the sources with ``put_archive`` and
gives the results back with ``get_archive``. The bytes are the same either way.

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
import os
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._util.stopping import Stop
from ..daemon.client import DockerClient, describe
from ..errors import BuildCancelled, ImageError
from .archive import streamed
from .interpreter import Interpreter
from .tarball import Entry, layer_chunks

WORK = "/tmp/orch-bytecode"
#: The driver's exit status when the mounted work folder is not the one orch wrote.
_NOT_SHARED = 3
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
work, worker, token = sys.argv[1], sys.argv[2], sys.argv[3]
if token:  # the work folder is mounted: is it ours?
    try:
        if open(os.path.join(work, "token")).read() != token:
            sys.exit(NOT_SHARED)
    except OSError:
        sys.exit(NOT_SHARED)
count = len(json.load(open(os.path.join(work, "jobs.json"))))
env = {"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0", "LC_ALL": "C.UTF-8"}
def run(index):
    args = [sys.executable, "-I", "-c", worker, work, str(index)]
    return subprocess.run(args, env=env).returncode
os.makedirs(os.path.join(work, "out"), exist_ok=True)
with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
    codes = list(pool.map(run, range(count)))
sys.exit(max(codes, default=0))
""".replace("NOT_SHARED", str(_NOT_SHARED))


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
    stop: Stop | None = None,
) -> list[list[Entry]]:
    """The ``__pycache__/*.pyc`` entries of each group's ``.py`` files, in group order.

    Entry paths are relative to the image root (``usr/local/lib/...``); the bytecode
    files are kept under ``stage``, which must outlive the returned entries. A cancelled
    ``stop`` kills the container and raises :class:`~orchestrator.errors.BuildCancelled`.
    """
    stop = stop or Stop()
    sources = [
        []
        if isinstance(group, InImage)
        else [e for e in group if e.kind == "file" and is_source(e.path)]
        for group in groups
    ]
    if not any(sources) and not any(isinstance(group, InImage) for group in groups):
        return [[] for _ in groups]
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
    jobs_json = json.dumps(jobs).encode()
    settings: dict[str, Any] = {"network_mode": "none", "labels": {"org.orch.role": "bytecode"}}
    if _is_local(client):
        results = _compile_mounted(client, image_id, members, jobs_json, stage, settings, stop)
        if results is not None:
            return _collect(results, owners, len(groups), interpreter)
    members.append(Entry("orch-bytecode/jobs.json", data=jobs_json))
    results = _compile_archived(client, image_id, members, stage, settings, stop)
    return _collect(results, owners, len(groups), interpreter)


def _is_local(client: DockerClient) -> bool:
    """Whether the daemon listens on a socket of this machine (it may share our files)."""
    return str(getattr(client.api, "base_url", "")).startswith("http+docker://")


def _compile_mounted(
    client: DockerClient,
    image_id: str,
    members: list[Entry],
    jobs: bytes,
    stage: Path,
    settings: dict[str, Any],
    stop: Stop,
) -> list[tuple[int, str, Entry]] | None:
    """Compile with the work folder bind-mounted from ``stage``: no sources sent, no
    results read back through the API, the ``.pyc`` files stay where the workers wrote
    them. None when the daemon does not see this machine's files (another mount
    namespace, a VM): the caller sends them instead."""
    import docker.errors
    from docker.types import Mount

    work = Path(tempfile.mkdtemp(dir=stage, prefix="bytecode-"))
    token = os.urandom(16).hex()
    (work / "token").write_text(token)
    (work / "jobs.json").write_bytes(jobs)
    for member in members:
        target = work / member.path.removeprefix("orch-bytecode/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if member.data is not None:
            target.write_bytes(member.data)
        elif member.source is not None:
            os.link(member.source, target)
    command = ["python3", "-I", "-c", _DRIVER, WORK, _WORKER, token]
    # Our own user, so that what the workers write is ours to read and delete.
    user = f"{os.getuid()}:{os.getgid()}"
    mount = Mount(WORK, str(work), type="bind")
    container = None
    try:
        try:
            container = client.containers.create(
                image_id, command, user=user, mounts=[mount], **settings
            )
        except docker.errors.APIError:
            return None  # the daemon has no such path: it runs elsewhere
        status = _run(container, stop)
        if status == _NOT_SHARED:
            return None
        _check_status(container, status, image_id)
    except docker.errors.DockerException as exc:
        raise ImageError(f"cannot compile bytecode in {image_id}: {describe(exc)}") from exc
    finally:
        _remove(container)
    found = []
    out = work / "out"
    for folder, _, names in os.walk(out):
        for name in names:
            path = Path(folder, name)
            index, rel = path.relative_to(out).as_posix().split("/", 1)
            found.append((int(index), rel, Entry(rel, source=path, mode=0o644)))
    return found


def _compile_archived(
    client: DockerClient,
    image_id: str,
    members: list[Entry],
    stage: Path,
    settings: dict[str, Any],
    stop: Stop,
) -> list[tuple[int, str, Entry]]:
    """Compile with the sources sent by ``put_archive`` and the results read back."""
    import docker.errors

    command = ["python3", "-I", "-c", _DRIVER, WORK, _WORKER, ""]
    container = None
    try:
        container = client.containers.create(image_id, command, user="0:0", **settings)
        # Streamed as the tar is written: the sources are not copied to disk first.
        sources_tar = streamed(layer_chunks(members))
        if not container.put_archive("/tmp", sources_tar):
            raise ImageError("cannot send the sources to the bytecode container")
        _check_status(container, _run(container, stop), image_id)
        stream, _ = container.get_archive(f"{WORK}/out")
        return _read_results(stream, stage)
    except docker.errors.DockerException as exc:
        raise ImageError(f"cannot compile bytecode in {image_id}: {describe(exc)}") from exc
    finally:
        _remove(container)


def _run(container: Any, stop: Stop) -> object:
    """Start the container and wait for its exit status; a cancel kills it."""
    with stop.on_cancel(lambda: container.kill()):
        if not stop.cancelled:
            container.start()
            status = container.wait().get("StatusCode")
    if stop.cancelled:
        raise BuildCancelled()
    return status


def _check_status(container: Any, status: object, image_id: str) -> None:
    if status != 0:
        logs = container.logs(stdout=True, stderr=True).decode(errors="replace").strip()
        last = logs.splitlines()[-1] if logs else f"exit status {status}"
        raise ImageError(f"compiling bytecode in {image_id} failed: {last}")


def _remove(container: Any) -> None:
    import docker.errors

    if container is not None:
        try:
            container.remove(force=True)
        except docker.errors.DockerException:  # noqa: S110 - best effort: it has exited
            pass


def _collect(
    results: list[tuple[int, str, Entry]], owners: list[int], count: int, interpreter: Interpreter
) -> list[list[Entry]]:
    """The ``.pyc`` entries of each group, from ``(job, path, entry)`` of each file written."""
    grouped: list[list[Entry]] = [[] for _ in range(count)]
    suffix = f".{interpreter.cache_tag}.pyc"
    for job, rel, entry in results:
        if not 0 <= job < len(owners) or not rel.endswith(suffix) or ".." in rel.split("/"):
            raise ImageError(f"unexpected file {rel!r} from the bytecode container")
        grouped[owners[job]].append(entry)
    return grouped


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


def _read_results(stream: Iterator[bytes], stage: Path) -> list[tuple[int, str, Entry]]:
    """The ``.pyc`` files as they arrive: small ones kept in memory, large ones on disk."""
    results: list[tuple[int, str, Entry]] = []
    reader = io.BufferedReader(_ChunkReader(stream), 1 << 20)
    with tarfile.open(fileobj=reader, mode="r|") as tar:
        number = 0
        for member in tar:
            if not member.isfile():
                continue
            parts = member.name.split("/", 2)  # out/<index>/<path>
            if len(parts) != 3 or not parts[1].isdigit():
                raise ImageError(f"unexpected file {member.name!r} from the bytecode container")
            handle = tar.extractfile(member)
            if handle is None:
                continue
            job, rel = int(parts[1]), parts[2]
            if member.size <= _IN_MEMORY:
                results.append((job, rel, Entry(rel, data=handle.read(), mode=0o644)))
                continue
            number += 1
            path = stage / f"pyc-{number:08d}"
            with handle, path.open("wb") as out:
                while chunk := handle.read(1 << 20):
                    out.write(chunk)
            results.append((job, rel, Entry(rel, source=path, mode=0o644)))
    return results
