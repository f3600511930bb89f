"""A run's outputs out of the store: :func:`pull` (``orch pull``).

    pull("3f2a9c1b7d4e")                                  # every output, into "."
    pull("3f2a9c1b7d4e", ["**/*.ckpt", "csv"], "out")     # only these, into out/
    pull("3f2a", store="s3://bucket/team")                 # a unique prefix of the id

What is asked for: paths relative to the run's output directory (``$ORCH_OUTPUT``), as
shell globs (``*`` and ``?`` stay within one directory, ``**`` spans any number, ``[...]``
is a set). A pattern selects each output it matches and everything under a directory it
matches, so ``csv`` or ``csv/`` is that whole directory. Files keep their paths relative
to the output directory under ``dest``. A pattern that selects nothing is an error naming
it (with a few of the run's outputs), and so is a run id that is unknown or ambiguous.

How each file arrives, several at once (a thread pool, ``workers``): the store writes it
to a temporary file beside its destination (``.NAME.orch-pull-*``), its size and SHA-256
are checked against those the run's manifest kept when the run was committed, and only then
is it renamed into place: a file never appears half-written under its name, whether the
connection drops, the check fails or Ctrl-C stops the pull (the temporary file is removed,
the workers stop within one chunk). A file already at the destination with the recorded
size and SHA-256 is kept without downloading it again (``rsync --checksum``); any other
is replaced. Records written before orch kept sizes and digests name their outputs only:
their files are downloaded and placed unchecked, and the result says which
(``PullResult.unchecked``).

A file that does not match its record is not written, and :class:`ArtifactMismatch` (a
StoreError: the store holds corrupt data, exit 2) names it after the other files are in
place; a file listed by the record but missing from the store raises NotFound likewise.
Pulled files are the caller's (under ``sudo``, ``SUDO_UID``'s: :mod:`.owner`), with the
mode new files get (``0666`` less the umask).

Why one module of this size: selecting (the glob language against the run's manifest)
and fetching (checked, renamed into place, resumable) are one command's two halves, and
the errors of the first name what the second would have fetched.
"""

from __future__ import annotations

import bisect
import contextlib
import inspect
import os
import re
import threading
import uuid
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..errors import NotFound, StoreError, UsageError
from ..schema.record import ArtifactFile, RunRecord
from .interface import Store, check_key
from .owner import Owner
from .runstore import RunStore, describe_file

#: Files fetched at once by default (the same as the input transfers).
WORKERS = 16
#: How many of a run's outputs an error about an unmatched pattern lists.
_SHOWN = 5
_GLOB_CHARS = re.compile(r"[*?\[]")


class ArtifactMismatch(StoreError):
    """A downloaded output does not have the size or SHA-256 its run's record kept."""

    def __init__(self, message: str, result: PullResult) -> None:
        super().__init__(message)
        #: What was pulled nonetheless (every other file, checked and in place).
        self.result = result


class PullProgress(Protocol):
    """What a pull reports while it runs (the CLI's bar); called from worker threads."""

    def planned(self, files: int, total_bytes: int | None) -> None:
        """Once, before the first byte: how many files, and their bytes when known."""

    def advanced(self, nbytes: int) -> None:
        """Bytes received (or found already in place)."""


@dataclass(frozen=True)
class PulledFile:
    name: str
    """Its path relative to the run's output directory."""
    path: Path
    size: int
    sha256: str | None
    fetched: bool
    """False when an identical file was already at ``path``."""
    checked: bool
    """Checked against the record's size and SHA-256 (False only for old records)."""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "size": self.size,
                "sha256": self.sha256, "fetched": self.fetched, "checked": self.checked}


@dataclass(frozen=True)
class PullResult:
    run_id: str
    dest: Path
    files: tuple[PulledFile, ...]

    @property
    def fetched(self) -> tuple[PulledFile, ...]:
        return tuple(f for f in self.files if f.fetched)

    @property
    def unchanged(self) -> tuple[PulledFile, ...]:
        return tuple(f for f in self.files if not f.fetched)

    @property
    def fetched_bytes(self) -> int:
        return sum(f.size for f in self.fetched)

    @property
    def unchecked(self) -> tuple[PulledFile, ...]:
        return tuple(f for f in self.files if not f.checked)

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "dest": str(self.dest),
                "fetched": len(self.fetched), "fetched_bytes": self.fetched_bytes,
                "unchanged": len(self.unchanged), "unchecked": len(self.unchecked),
                "files": [f.to_json() for f in self.files]}


def pull(
    run_id: str,
    paths: Sequence[str] | str = (),
    dest: str | os.PathLike[str] = ".",
    *,
    store: str | os.PathLike[str] | Store | RunStore | None = None,
    project: str | os.PathLike[str] | None = None,
    s3_endpoint: str | None = None,
    workers: int = WORKERS,
    progress: PullProgress | None = None,
) -> PullResult:
    """Download run ``run_id``'s outputs (those ``paths`` select; none: all) into ``dest``.

    ``store``: a URI (a path, ``file://PATH``, ``s3://bucket/prefix``) or a store object;
    None is ``.orch/`` of the project at ``project`` (default: the current directory or
    a parent). ``run_id`` may be a unique prefix. See the module's docstring for what is
    selected, checked, kept and replaced.
    """
    runs = _run_store(store, project, s3_endpoint)
    record = runs.read_run(runs.resolve_run_id(run_id))
    patterns = [paths] if isinstance(paths, str) else list(paths)
    chosen = _select(record, _available(runs, record), patterns)
    return _Puller(runs, record, Path(os.fspath(dest)), max(1, workers), progress).run(chosen)


Entry = tuple[str, "ArtifactFile | None"]
"""An output's name and the size and SHA-256 its commit saw (None: an old record's)."""


def _available(runs: RunStore, record: RunRecord) -> Iterator[Entry]:
    """The run's outputs, streamed from its manifest. A record from before manifests
    lists them inline, perhaps without sizes or some at all: the store's listing of its
    ``output/`` completes it."""
    if record.outputs is not None:
        yield from runs.outputs(record)
        return
    known = dict(runs.outputs(record))
    for name in runs.list_outputs(record.run_id):
        known.setdefault(name, None)
    yield from sorted(known.items())


def _run_store(
    store: str | os.PathLike[str] | Store | RunStore | None,
    project: str | os.PathLike[str] | None,
    s3_endpoint: str | None,
) -> RunStore:
    if isinstance(store, RunStore):
        return store
    if store is None or isinstance(store, str | os.PathLike):
        from ..compose.project import find_project
        from . import open_store

        base = Path(os.fspath(project or "."))
        uri = None if store is None else os.fspath(store)
        root = find_project(base) if uri is None else base
        return RunStore(open_store(uri, project_dir=root, s3_endpoint=s3_endpoint))
    if isinstance(store, Store):
        return RunStore(store)
    raise UsageError(f"store {store!r}: expected a URI, a path or a store object")


# -- what is asked for ------------------------------------------------------------------


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A compiled regex for a path glob: ``*``, ``?`` and ``[...]`` within one path
    component, ``**`` as a whole component for any number of them."""
    parts = pattern.split("/")
    regex = ""
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if part == "**":
            regex += ".+" if last else "(?:[^/]+/)*"
            continue
        regex += _component(part) + ("" if last else "/")
    return re.compile(regex + r"\Z", re.DOTALL)


def _component(part: str) -> str:
    out = []
    i = 0
    while i < len(part):
        char = part[i]
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[" and (end := _set_end(part, i)) > 0:
            body = part[i + 1 : end]
            negate = body[:1] in ("!", "^")
            body = body[1:] if negate else body
            escaped = re.sub(r"([\\\[\]])", r"\\\1", body)
            out.append("[" + ("^/" if negate else "") + escaped + "]")
            i = end
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def _set_end(part: str, start: int) -> int:
    """The index of the ``]`` closing the set opened at ``start``, or -1 (a literal ``[``).
    A ``]`` first in the set (after ``!``/``^``) is a member, as in the shell."""
    first = start + 1
    if part[first : first + 1] in ("!", "^"):
        first += 1
    return part.find("]", first + 1) if first < len(part) else -1


def _normalize(pattern: str) -> str:
    text = pattern.strip()
    while text.startswith("./"):
        text = text[2:]
    text = text.rstrip("/")
    if not text or text == ".":
        return "**"
    if text.startswith("/") or ".." in text.split("/") or "\x00" in text:
        raise UsageError(
            f"path {pattern!r}: give paths relative to the run's output directory, "
            "without '..' (e.g. model.ckpt, csv/*, **/*.ckpt)"
        )
    return text


def _select(record: RunRecord, available: Iterable[Entry],
            patterns: Sequence[str]) -> list[Entry]:
    """The outputs the patterns select (all for none), in the manifest's order; an error
    naming every pattern that selects nothing. The outputs are read once, as a stream."""
    compiled = []
    for pattern in patterns:
        text = _normalize(pattern)
        compiled.append((text, glob_regex(text) if _GLOB_CHARS.search(text) else None))
    chosen: list[Entry] = []
    matched = [False] * len(compiled)
    first: list[str] = []
    total = 0
    for entry in available:
        total += 1
        if len(first) < _SHOWN or entry[0] < first[-1]:  # the first few by name, kept sorted
            bisect.insort(first, entry[0])
            del first[_SHOWN:]
        if not compiled:
            chosen.append(entry)
            continue
        hits = [i for i, (text, regex) in enumerate(compiled) if _selects(entry[0], text, regex)]
        for i in hits:
            matched[i] = True
        if hits:
            chosen.append(entry)
    unmatched = [pattern for pattern, hit in zip(patterns, matched, strict=True) if not hit]
    if unmatched:
        what = ", ".join(repr(p) for p in unmatched)
        if total:
            shown = ", ".join(first)
            more = f", ... ({total} in all)" if total > _SHOWN else ""
            has = f"its outputs: {shown}{more}"
        else:
            has = "it has no outputs"
        raise UsageError(f"no output of run {record.run_id} matches {what}; {has}")
    return chosen


def _selects(name: str, text: str, regex: re.Pattern[str] | None) -> bool:
    """``name`` or one of its parent directories is ``text`` (or matches ``regex``)."""
    parts = name.split("/")
    prefixes = ("/".join(parts[:n]) for n in range(len(parts), 0, -1))
    if regex is None:
        return any(prefix == text for prefix in prefixes)
    return any(regex.match(prefix) for prefix in prefixes)


# -- fetching ---------------------------------------------------------------------------


class _Stopped(Exception):
    """Raised inside a worker's download when the pull is being stopped."""


@dataclass(frozen=True)
class _Failure:
    """A file not written: it does not match its record, or the store lost it."""

    name: str
    problem: str
    missing: bool = False


class _Puller:
    def __init__(self, runs: RunStore, record: RunRecord, dest: Path, workers: int,
                 progress: PullProgress | None) -> None:
        self.runs = runs
        self.record = record
        self.dest = dest
        self.workers = workers
        self.progress = progress
        self.owner = Owner.invoking()
        self.mode = 0o666 & ~_umask()
        self.stop = threading.Event()
        self.chunked = _takes_progress(runs.store)

    def run(self, entries: list[Entry]) -> PullResult:
        names = [name for name, _ in entries]
        self._check_targets(names)
        if self.progress is not None:
            sizes = [info.size if info is not None else None for _, info in entries]
            total = None if None in sizes else sum(s for s in sizes if s is not None)
            self.progress.planned(len(names), total)
        if names:
            try:
                self.owner.makedirs(self.dest)
            except OSError as exc:
                raise UsageError(f"cannot create {self.dest}: {exc.strerror or exc}") from exc
        outcomes = self._all(entries)
        files = tuple(o for o in outcomes if isinstance(o, PulledFile))
        result = PullResult(self.record.run_id, self.dest, files)
        failures = [o for o in outcomes if isinstance(o, _Failure)]
        if failures:
            raise _failure_error(self.record.run_id, failures, result)
        return result

    def _check_targets(self, names: list[str]) -> None:
        """Every destination is a safe path under ``dest`` with nothing in the way, before
        anything is downloaded (store keys are checked when written, but a store can be
        written by other tools)."""
        root = self.dest.resolve()
        dirs = {"/".join(name.split("/")[:n]) for name in names
                for n in range(1, name.count("/") + 1)}
        for name in names:
            try:
                check_key(name)
            except UsageError:
                raise StoreError(f"run {self.record.run_id} has an output with an unsafe "
                                 f"name {name!r}: not pulled; name other paths") from None
            final = self.dest / name
            if name in dirs:
                raise StoreError(f"run {self.record.run_id}'s output {name!r} is both a file "
                                 "and a directory in the store: pull the paths under it")
            if final.is_dir():
                raise UsageError(f"cannot write {final}: a directory is in the way")
            if not final.resolve().is_relative_to(root):
                raise UsageError(f"cannot write {final}: a link there leads out of {self.dest}")

    def _all(self, entries: list[Entry]) -> list[PulledFile | _Failure]:
        """Each entry fetched on the pool, a few per worker submitted ahead (100k files
        are not 100k futures); an exception stops the others, and so does Ctrl-C: the
        workers stop within a chunk and remove their temporary files before this returns
        or raises."""
        if not entries:
            return []
        pool = ThreadPoolExecutor(min(self.workers, len(entries)), thread_name_prefix="orch-pull")
        results: list[PulledFile | _Failure] = []
        pending: deque[Future[PulledFile | _Failure]] = deque()
        try:
            for name, info in entries:
                if len(pending) >= self.workers * 4:
                    results.append(pending.popleft().result())
                pending.append(pool.submit(self._one, name, info))
            while pending:
                results.append(pending.popleft().result())
            return results
        except BaseException:
            self.stop.set()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _one(self, name: str, expected: ArtifactFile | None) -> PulledFile | _Failure:
        if self.stop.is_set():
            raise _Stopped(name)
        final = self.dest / name
        if expected is not None and _same(final, expected):
            if self.progress is not None:
                self.progress.advanced(expected.size)
            return PulledFile(name, final, expected.size, expected.sha256, False, True)
        return self._fetch(name, final, expected)

    def _fetch(
        self, name: str, final: Path, expected: ArtifactFile | None
    ) -> PulledFile | _Failure:
        try:
            self.owner.makedirs(final.parent)
        except OSError as exc:
            raise UsageError(f"cannot create {final.parent}: {exc.strerror or exc}") from exc
        tmp = final.parent / f".{final.name}.orch-pull-{uuid.uuid4().hex[:8]}"
        try:
            try:
                self.runs.fetch_output(self.record.run_id, name, tmp,
                                       self._advance if self.chunked else None)
            except NotFound:
                return _Failure(name, "recorded but missing from the store", missing=True)
            except StoreError as exc:
                raise StoreError(f"run {self.record.run_id}: cannot download output "
                                 f"{name!r}: {exc}") from exc
            got = describe_file(tmp)
            if expected is not None and got != expected:
                problem = (f"{got.size} bytes, recorded {expected.size}"
                           if got.size != expected.size else
                           f"sha256 {got.sha256[:12]}..., recorded {expected.sha256[:12]}...")
                return _Failure(name, problem)
            if not self.chunked and self.progress is not None:
                self.progress.advanced(got.size)
            os.chmod(tmp, self.mode)
            self.owner.give(tmp)
            os.replace(tmp, final)
        except OSError as exc:
            raise UsageError(f"cannot write {final}: {exc.strerror or exc}") from exc
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        return PulledFile(name, final, got.size, got.sha256, True, expected is not None)

    def _advance(self, nbytes: int) -> None:
        if self.stop.is_set():
            raise _Stopped()
        if self.progress is not None:
            self.progress.advanced(nbytes)


def _failure_error(run_id: str, failures: list[_Failure], result: PullResult) -> StoreError:
    shown = "; ".join(f"{f.name}: {f.problem}" for f in failures[:_SHOWN])
    more = f"; ... ({len(failures)} in all)" if len(failures) > _SHOWN else ""
    done = f" ({len(result.files)} other files are in place)" if result.files else ""
    if all(f.missing for f in failures):
        return NotFound(f"run {run_id}: {len(failures)} output(s) missing from the store, "
                        f"not written{done}: {shown}{more}")
    return ArtifactMismatch(
        f"run {run_id}: {len(failures)} output(s) do not match the size and sha256 "
        f"recorded at commit (a corrupt store object), not written{done}: {shown}{more}",
        result,
    )


def _same(path: Path, expected: ArtifactFile) -> bool:
    """An existing regular file with the recorded size and SHA-256."""
    try:
        if not path.is_file() or path.stat().st_size != expected.size:
            return False
        return describe_file(path) == expected
    except OSError:
        return False


def _takes_progress(store: Store) -> bool:
    """Whether the store's ``get_file`` reports chunks (the directory and S3 stores): then
    a pull shows bytes as they come and stops within a chunk; others go a file at a time."""
    try:
        return "progress" in inspect.signature(store.get_file).parameters
    except (TypeError, ValueError):
        return False


def _umask() -> int:
    """This process's umask, read without changing it (other threads may be creating files)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask

