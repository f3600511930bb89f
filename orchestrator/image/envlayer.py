"""The environment layers: locked wheels installed without running pip, one layer per package.

Each wheel is unpacked by pypa's ``installer`` into a destination that collects layer
entries instead of writing a file system, at the paths the base image's own
``pip install`` would use (see :mod:`.interpreter`; on Debian)::

    /usr/local/lib/python3.11/dist-packages   purelib and platlib: a site directory, so
                                              ``site`` processes the packages' .pth files
    /usr/local/bin                            scripts (on PATH), shebang /usr/bin/python3
    /usr/local/include/python3.11/<name>      headers
    /usr/local                                data

Bytecode is compiled into the layers by the base image's interpreter (:mod:`.bytecode`),
hash-based, so importing needs no writable cache and the bytes stay reproducible.
RECORD is the one installer writes (sorted, so deterministic) and INSTALLER says ``orch``.

**Layers.** Every wheel gets a layer of its own, keyed by the wheel's sha256, the
interpreter and these rules, and cached under ``<cache>/layers/pkg-<key>.tar``: a lock
that changes one package rebuilds one layer, and two projects that pin the same wheel
share its layer in the store. Layers are stacked heaviest first, so that the big ones
sit at the bottom (Docker identifies a layer on a node by the layers below it too: a
change to a small package leaves the chain of the big ones intact). Below them is the
bytecode of the base interpreter's standard library, one layer per base image, and below
that the payload layers: a big package's files other than its Python sources
(``<cache>/layers/pkg-<key>-payload.tar``, see :func:`split_payload`), which need no
bytecode and so reach the daemon while the sources compile (:class:`_Build`). Past
:data:`MAX_LAYERS` packages the smallest share one layer (Docker allows 127 layers in
all, and the base, code and config layers need theirs).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import posixpath
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from installer import install
from installer.destinations import WheelDestination
from installer.exceptions import InstallerError
from installer.records import Hash, RecordEntry
from installer.scripts import InvalidScript, Script
from installer.sources import WheelFile
from installer.utils import Scheme, construct_record_file, fix_shebang

from ..canonical import digest
from ..docker_api import DockerClient
from ..errors import BuildCancelled, ImageError, OrchestratorError
from ..files import atomic_write, sha256_file
from ..ids import HEX64
from ..stopping import Stop
from . import bytecode, cache
from .interpreter import Interpreter
from .tarball import Entry, fixed_mtime, write_layer_file

if TYPE_CHECKING:
    from installer.scripts import ScriptSection

#: Bumped whenever the layout or content rules of the layers change.
ENV_LAYER_FORMAT = 3
#: Package layers at most; Docker's limit is 127 layers per image, and payload layers
#: (a few: each is 32 MiB of binaries at least) come on top.
MAX_LAYERS = 100
#: A package installing this much besides its Python sources, and this much source,
#: gets a payload layer (torch: 620 MB of libraries, 45 MB of sources).
SPLIT_BYTES = 32 << 20
SPLIT_SOURCE_BYTES = 4 << 20
#: Wheels at least this big are unpacked and compiled by the heavy chain (see _Build).
HEAVY_WHEEL = 16 << 20
# Files larger than this are staged on disk, not kept in memory.
_SPILL_BYTES = 1 << 20
_CHUNK = 1 << 20


@dataclass(frozen=True)
class EnvLayer:
    """One environment layer: its tar in the cache, diff ID, and the wheels it installs
    (none: the bytecode of the interpreter's standard library); ``payload`` when it holds
    a package's files other than its Python sources (see :func:`split_payload`)."""

    diff_id: str
    path: Path
    size: int
    wheels: tuple[str, ...]
    payload: bool = False


def env_image_settings() -> dict[str, str]:
    """Environment variables the image needs for the layers: none (the site dir is Python's)."""
    return {}


def scheme_paths(interpreter: Interpreter, distribution: str) -> dict[str, str]:
    """Where each wheel scheme goes, relative to the image root (as pip's posix scheme)."""
    paths = {
        "purelib": interpreter.purelib,
        "platlib": interpreter.platlib,
        "scripts": interpreter.scripts,
        "headers": posixpath.join(interpreter.include, distribution),
        "data": interpreter.data,
    }
    return {name: path.strip("/") for name, path in paths.items()}


def plan_layers(wheels: Sequence[Path], max_layers: int = MAX_LAYERS) -> list[list[Path]]:
    """The wheels grouped into layers, bottom first: heaviest first, one each, the
    smallest sharing the last layer when there are more than ``max_layers``."""
    ordered = sorted(wheels, key=lambda p: (-p.stat().st_size, p.name))
    if len(ordered) <= max_layers:
        return [[wheel] for wheel in ordered]
    own = max_layers - 1
    return [[wheel] for wheel in ordered[:own]] + [sorted(ordered[own:], key=lambda p: p.name)]


def wheel_id(wheel: Path) -> str:
    """The wheel's sha256: the wheelhouse folder name (``.../sha256/<hex>/<file>``) or hashed."""
    folder = wheel.parent
    if folder.parent.name == "sha256" and HEX64.match(folder.name):
        return folder.name
    return sha256_file(wheel)


def layer_key(group: Sequence[Path], interpreter: Interpreter) -> str:
    """What one layer's bytes depend on: its wheels, the interpreter, the rules, the mtime."""
    return digest(
        {
            "format": ENV_LAYER_FORMAT,
            "interpreter": interpreter.to_json(),
            "mtime": fixed_mtime(),
            "wheels": sorted([wheel.name, wheel_id(wheel)] for wheel in group),
        }
    )


def env_layer_entries(
    wheels: Sequence[Path], interpreter: Interpreter, stage: Path | None = None
) -> list[Entry]:
    """The entries of ``wheels`` installed together (no bytecode), in memory without ``stage``."""
    destination = _install_group(wheels, interpreter, stage)
    return [item.entry for item in destination.files.values()]


def stdlib_key(image_id: str, interpreter: Interpreter) -> str:
    """What the standard library's bytecode depends on: the base image, its interpreter."""
    return digest(
        {
            "format": ENV_LAYER_FORMAT,
            "interpreter": interpreter.to_json(),
            "mtime": fixed_mtime(),
            "stdlib_of": image_id,
        }
    )


def is_payload(path: str) -> bool:
    """Whether an installed file goes to its package's payload layer when it has one:
    everything but Python sources (and their bytecode) and the ``.dist-info`` metadata."""
    return not path.endswith(".py") and ".dist-info/" not in path


def split_payload(entries: Sequence[Entry]) -> tuple[list[Entry], list[Entry]]:
    """``(payload, rest)`` of one package's entries; no payload when it is not worth a
    layer of its own (see :data:`SPLIT_BYTES`)."""
    payload = [e for e in entries if e.kind == "file" and is_payload(e.path)]
    sources = sum(e.size() for e in entries if e.kind == "file" and bytecode.is_source(e.path))
    if sum(e.size() for e in payload) < SPLIT_BYTES or sources < SPLIT_SOURCE_BYTES:
        return [], list(entries)
    return payload, [e for e in entries if not (e.kind == "file" and is_payload(e.path))]


#: Called with the environment's bottom layers each time more of them are written.
OnReady = Callable[[list[EnvLayer]], None]


def write_env_layers(
    client: DockerClient,
    image_id: str,
    interpreter: Interpreter,
    wheels: Sequence[Path],
    cache_root: Path,
    *,
    stdlib: bool = True,
    on_ready: OnReady | None = None,
    stop: Stop | None = None,
    say: Callable[[str], None] | None = None,
) -> list[EnvLayer]:
    """Write (or reuse) the layers of ``wheels`` for the base image ``image_id``, bottom first.

    The order: the payload layers (a big package's files other than its Python sources,
    see :func:`split_payload`; they need no bytecode), then with ``stdlib`` the bytecode
    of the interpreter's standard library (the base recipe ships none, and a run's user
    cannot write it, so without it every run would compile what it imports), then one
    layer per package, heaviest first. Layers already in the cache are neither unpacked
    nor compiled again. Files that two packages install with different content are
    refused, across all layers. ``on_ready`` is given the longest written prefix of the
    layers whenever it grows, while the rest are still built (see :class:`_Build`).
    ``say`` is told what is built and how long it took; a cancelled ``stop`` ends the build
    with :class:`~orchestrator.errors.Interrupted`, the layers written so far cached.
    """
    groups = plan_layers(wheels)
    keys = [layer_key(g, interpreter).removeprefix("sha256:") for g in groups]
    names = [_names(g) for g in groups]
    layers_dir = cache.layers(cache_root)
    known: dict[int, _Package] = {}
    for index, key in enumerate(keys):
        found = _read_package(layers_dir, key, names[index])
        if found is not None:
            known[index] = found
    std_key = stdlib_key(image_id, interpreter).removeprefix("sha256:") if stdlib else None
    std = _read_layer(layers_dir, f"pkg-{std_key}", ()) if std_key else None
    missing = [index for index in range(len(groups)) if index not in known]
    if not missing and (std_key is None or std is not None):
        _check_conflicts([(names[i], known[i].files) for i in range(len(groups))])
        return _ordered([known[i] for i in range(len(groups))], std)
    say = say or (lambda line: None)
    stdlib_too = " and the standard library's bytecode" if std_key and std is None else ""
    say(f"environment: building {len(missing)} of {len(groups)} package layers{stdlib_too}")
    started = time.monotonic()
    layers_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=layers_dir, prefix=".stage-") as tmp:
        build = _Build(client, image_id, interpreter, layers_dir, Path(tmp), on_ready, stop)
        layers = build.run(groups, keys, names, known, std_key, std)
    size = sum(layer.size for layer in layers)
    say(
        f"environment: {len(layers)} layers ({size / 1e6:.0f} MB) built in "
        f"{time.monotonic() - started:.1f} s"
    )
    return layers


def _names(group: Sequence[Path]) -> tuple[str, ...]:
    return tuple(sorted(wheel.name for wheel in group))


@dataclass(frozen=True)
class _Package:
    """One package group's layers (its payload layer when it has one) and every file it installs."""

    layer: EnvLayer
    payload: EnvLayer | None
    files: dict[str, str]


#: A place in the environment: ("payload", package), ("stdlib", -1) or ("package", package).
Slot = tuple[str, int]


def _slots(split: Sequence[bool], stdlib: bool) -> list[Slot]:
    """The environment's layers, bottom first: the payloads of the packages that have one,
    the standard library's bytecode, then every package, in the packages' order."""
    payloads = [("payload", i) for i, has in enumerate(split) if has]
    packages = [("package", i) for i in range(len(split))]
    return [*payloads, *([("stdlib", -1)] if stdlib else []), *packages]


def _ordered(packages: Sequence[_Package], std: EnvLayer | None) -> list[EnvLayer]:
    def layer(slot: Slot) -> EnvLayer:
        kind, i = slot
        if kind == "payload":
            payload = packages[i].payload
            assert payload is not None
            return payload
        if kind == "stdlib":
            assert std is not None
            return std
        return packages[i].layer

    split = [package.payload is not None for package in packages]
    return [layer(slot) for slot in _slots(split, std is not None)]


class _Build:
    """The missing layers, built by two chains side by side on the machine's cores.

    The heavy chain unpacks the big wheels (torch) and compiles their sources; the light
    chain does the same for the other wheels and the standard library, so its compiling
    overlaps the heavy unpacking.
    Payload layers are written by a thread of their own as soon as their package is
    unpacked. Once every package is unpacked the layer order is known, and each time a
    longer bottom part of it is written, ``on_ready`` is told: the payload layers go to
    the daemon while the sources still compile. Bytes never depend on this schedule:
    each layer is its package's own content, compiled by itself.
    """

    def __init__(
        self,
        client: DockerClient,
        image_id: str,
        interpreter: Interpreter,
        layers_dir: Path,
        stage: Path,
        on_ready: OnReady | None,
        stop: Stop | None = None,
    ) -> None:
        self.client = client
        self.image_id = image_id
        self.interpreter = interpreter
        self.layers_dir = layers_dir
        self.stage = stage
        self.on_ready = on_ready
        self.stop = stop or Stop()
        self._lock = threading.Lock()
        self._failed = threading.Event()
        #: Per package: whether it has a payload layer (known once it is unpacked).
        self._split: dict[int, bool] = {}
        self._payloads: dict[int, EnvLayer] = {}
        self._written: dict[int, EnvLayer] = {}
        self._files: dict[int, dict[str, str]] = {}
        self._std: EnvLayer | None = None
        self._reported = 0
        self._payload_writer = ThreadPoolExecutor(1, thread_name_prefix="orch-payload")
        self._payload_writes: list[Future[None]] = []

    def run(
        self,
        groups: list[list[Path]],
        keys: list[str],
        names: list[tuple[str, ...]],
        known: dict[int, _Package],
        std_key: str | None,
        std: EnvLayer | None,
    ) -> list[EnvLayer]:
        self.groups, self.keys, self.names, self.std_key = groups, keys, names, std_key
        for index, package in known.items():
            self._split[index] = package.payload is not None
            if package.payload is not None:
                self._payloads[index] = package.payload
            self._written[index] = package.layer
            self._files[index] = package.files
        self._std = std
        self._stdlib = std_key is not None
        missing = [index for index in range(len(groups)) if index not in known]
        heavy = [i for i in missing if sum(w.stat().st_size for w in groups[i]) >= HEAVY_WHEEL]
        light = [i for i in missing if i not in heavy]
        build_std = std is None and std_key is not None
        try:
            with ThreadPoolExecutor(2, thread_name_prefix="orch-env") as pool:
                chains = [
                    pool.submit(self._chain, heavy, False, "heavy"),
                    pool.submit(self._chain, light, build_std, "light"),
                ]
                _first_error(chains)
        except BaseException:
            self._failed.set()
            raise
        finally:
            self._payload_writer.shutdown(wait=True)
        _first_error(self._payload_writes)
        ready = self._ready()
        assert len(ready) == len(self._order())  # every layer was written
        return ready

    def _chain(self, indices: list[int], with_std: bool, name: str) -> None:
        try:
            self._build_chain(indices, with_std, self.stage / name)
        except BaseException:
            self._failed.set()
            raise

    def _build_chain(self, indices: list[int], with_std: bool, stage: Path) -> None:
        stage.mkdir()
        rest: dict[int, list[Entry]] = {}
        for i in indices:
            if self._failed.is_set():
                return
            # A folder per package: spilled files are numbered per package.
            (stage / f"g{i}").mkdir()
            installed = _install_group(
                self.groups[i], self.interpreter, stage / f"g{i}", self._check
            )
            entries = [item.entry for item in installed.files.values()]
            payload, rest[i] = split_payload(entries)
            if payload:
                write = self._payload_writer.submit(self._write_payload, i, payload)
                self._payload_writes.append(write)
            self._unpacked(i, bool(payload), installed.listing())
        jobs: list[list[Entry] | bytecode.InImage] = [rest[i] for i in indices]
        if with_std:
            jobs.insert(0, bytecode.InImage(self.interpreter.stdlib.strip("/")))
        if not jobs or self._failed.is_set():
            return
        self._check()
        client, interpreter = self.client, self.interpreter
        compiled = bytecode.compile_groups(
            client, self.image_id, interpreter, jobs, stage, self.stop
        )
        if with_std:
            assert self.std_key is not None
            self._done(None, self._write(f"pkg-{self.std_key}", compiled.pop(0), None, {}))
        for i, pyc in zip(indices, compiled, strict=True):
            self._done(i, self._write(f"pkg-{self.keys[i]}", rest[i] + pyc, i, self._files[i]))

    def _check(self) -> None:
        if self.stop.cancelled:
            raise BuildCancelled()

    def _write_payload(self, index: int, entries: list[Entry]) -> None:
        if self._failed.is_set():
            return
        layer = self._write(f"pkg-{self.keys[index]}-payload", entries, index, {})
        # Staged files deleted at once are dropped from the page cache unwritten: the
        # disk does not have to take torch's 620 MB twice while the build goes on.
        for entry in entries:
            if entry.source is not None:
                entry.source.unlink()
        with self._lock:
            self._payloads[index] = layer
        self._report()

    def _write(
        self, name: str, entries: list[Entry], index: int | None, files: dict[str, str]
    ) -> EnvLayer:
        tar = self.layers_dir / f"{name}.tar"
        diff_id = write_layer_file(entries, tar)
        wheels = () if index is None else self.names[index]
        payload = name.endswith("-payload")
        record: dict[str, Any] = {
            "diff_id": diff_id,
            "size": tar.stat().st_size,
            "mtime": fixed_mtime(),
            "format": ENV_LAYER_FORMAT,
            "wheels": list(wheels),
            "files": files,
        }
        if index is not None and not payload:
            record["payload"] = self._split[index]
        atomic_write(self.layers_dir / f"{name}.json", json.dumps(record, sort_keys=True).encode())
        return EnvLayer(diff_id, tar, record["size"], wheels, payload=payload)

    def _unpacked(self, index: int, split: bool, files: dict[str, str]) -> None:
        with self._lock:
            self._split[index] = split
            self._files[index] = files
            if len(self._split) == len(self.groups):
                # Every package is unpacked: the conflicts can be checked, the order is known.
                _check_conflicts([(self.names[i], self._files[i]) for i in range(len(self.groups))])
        self._report()

    def _done(self, index: int | None, layer: EnvLayer) -> None:
        """Package ``index``'s layer (None: the standard library's) is written."""
        with self._lock:
            if index is None:
                self._std = layer
            else:
                self._written[index] = layer
        self._report()

    def _report(self) -> None:
        """Tell ``on_ready`` of the longest written prefix, when it grew."""
        if self.on_ready is None:
            return
        with self._lock:
            if len(self._split) < len(self.groups):
                return
            ready = self._ready()
            if len(ready) <= self._reported:
                return
            self._reported = len(ready)
        self.on_ready(ready)

    def _order(self) -> list[Slot]:
        return _slots([self._split[i] for i in range(len(self.groups))], self._stdlib)

    def _ready(self) -> list[EnvLayer]:
        """The longest bottom part of the environment that is written (every package unpacked)."""
        ready: list[EnvLayer] = []
        for kind, i in self._order():
            if kind == "stdlib":
                layer = self._std
            else:
                layer = (self._payloads if kind == "payload" else self._written).get(i)
            if layer is None:
                break
            ready.append(layer)
        return ready


def _first_error(futures: Sequence[Future[None]]) -> None:
    for future in futures:
        exc = future.exception()
        if exc is not None:
            raise exc


def _check_conflicts(listings: Sequence[tuple[tuple[str, ...], dict[str, str]]]) -> None:
    owners: dict[str, tuple[str, str]] = {}
    for names, files in listings:
        for path, sha in files.items():
            previous = owners.get(path)
            if previous is None:
                owners[path] = (sha, names[0])
            elif previous[0] != sha:
                raise ImageError(
                    f"{previous[1]} and {names[0]} both install /{path} with "
                    "different content: drop one of them from the lock"
                )


def _read_package(layers_dir: Path, key: str, names: tuple[str, ...]) -> _Package | None:
    """A package group's layers from the cache, or None when any part is missing or stale."""
    meta = _read_record(layers_dir / f"pkg-{key}.json", layers_dir / f"pkg-{key}.tar")
    if meta is None or not isinstance(meta[1].get("payload"), bool):
        return None
    record, files = meta[1], meta[1].get("files")
    if not isinstance(files, dict):
        return None
    payload = None
    if record["payload"]:
        payload = _read_layer(layers_dir, f"pkg-{key}-payload", names, payload=True)
        if payload is None:
            return None
    layer = EnvLayer(meta[0], layers_dir / f"pkg-{key}.tar", record["size"], names)
    return _Package(layer, payload, files)


def _read_layer(
    layers_dir: Path, name: str, names: tuple[str, ...], payload: bool = False
) -> EnvLayer | None:
    meta = _read_record(layers_dir / f"{name}.json", layers_dir / f"{name}.tar")
    if meta is None:
        return None
    return EnvLayer(meta[0], layers_dir / f"{name}.tar", meta[1]["size"], names, payload=payload)


def _read_record(meta: Path, tar: Path) -> tuple[str, dict[str, Any]] | None:
    """``(diff_id, record)`` of one cached layer tar, when its record matches the tar."""
    try:
        record = json.loads(meta.read_text())
        size = tar.stat().st_size
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    # The mtime is part of the tar bytes: a different SOURCE_DATE_EPOCH is a different layer.
    current = {"size": size, "mtime": fixed_mtime(), "format": ENV_LAYER_FORMAT}
    if any(record.get(name) != value for name, value in current.items()):
        return None
    diff_id = record.get("diff_id")
    if not isinstance(diff_id, str) or not diff_id.startswith("sha256:"):
        return None
    return diff_id, record


# -- installing ----------------------------------------------------------------------


def _install_group(
    wheels: Sequence[Path],
    interpreter: Interpreter,
    stage: Path | None,
    check: Callable[[], None] = lambda: None,
) -> _LayerDestination:
    destination = _LayerDestination(interpreter, stage, check)
    for wheel in sorted(wheels, key=lambda p: p.name):
        destination.start(wheel.name)
        try:
            with WheelFile.open(wheel) as source:
                # Names only: the wheel's hash was checked against the lock already.
                source.validate_record(validate_contents=False)
                install(source, destination, additional_metadata={"INSTALLER": b"orch"})
        except OrchestratorError:
            raise
        except (InstallerError, InvalidScript, ValueError, KeyError, OSError) as exc:
            raise ImageError(f"cannot install {wheel.name}: {_first_line(exc)}") from exc
    return destination


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


@dataclass(frozen=True)
class _Written:
    entry: Entry
    sha256: str
    wheel: str


class _LayerDestination(WheelDestination):
    """An installer ``WheelDestination`` that collects layer entries.

    Paths are POSIX and relative to the layer root. With a ``stage`` directory,
    large files go there (and are referenced by path) instead of staying in memory.
    """

    def __init__(
        self, interpreter: Interpreter, stage: Path | None, check: Callable[[], None]
    ) -> None:
        self.interpreter = interpreter
        self.stage = stage
        #: Called before each file: raises to stop the install (a cancelled build).
        self.check = check
        self.files: dict[str, _Written] = {}
        self.wheel = ""
        self.schemes: dict[str, str] = {}
        self._spilled = 0

    def start(self, wheel: str) -> None:
        """Install ``wheel`` next: its headers go to a folder of its own."""
        self.wheel = wheel
        distribution = wheel.split("-", 1)[0]
        self.schemes = scheme_paths(self.interpreter, distribution)

    def listing(self) -> dict[str, str]:
        """Every file installed, with its sha256: what conflicts are checked against."""
        return {path: item.sha256 for path, item in sorted(self.files.items())}

    def write_script(
        self, name: str, module: str, attr: str, section: ScriptSection
    ) -> RecordEntry:
        script_name, data = Script(name, module, attr, section).generate(
            self.interpreter.executable, "posix"
        )
        with io.BytesIO(data) as stream:
            return self._write(Scheme("scripts"), script_name, stream, executable=True)

    def write_file(
        self,
        scheme: Scheme,
        path: str | os.PathLike[str],
        stream: BinaryIO,
        is_executable: bool,
    ) -> RecordEntry:
        path_ = os.fspath(path)
        if scheme == "scripts":
            with fix_shebang(stream, self.interpreter.executable) as fixed:
                return self._write(scheme, path_, fixed, executable=True)
        return self._write(scheme, path_, stream, executable=is_executable)

    def finalize_installation(
        self,
        scheme: Scheme,
        record_file_path: str,
        records: Iterable[tuple[Scheme, RecordEntry]],
    ) -> None:
        def prefix_for_scheme(file_scheme: Scheme) -> str | None:
            if file_scheme == scheme:
                return None
            return posixpath.relpath(self.schemes[file_scheme], self.schemes[scheme]) + "/"

        with construct_record_file(list(records), prefix_for_scheme) as stream:
            self._write(scheme, record_file_path, stream, executable=False)

    def _write(self, scheme: Scheme, path: str, stream: BinaryIO, executable: bool) -> RecordEntry:
        self.check()
        root = self.schemes[scheme]
        layer_path = posixpath.normpath(posixpath.join(root, path))
        if path.startswith("/") or not (layer_path + "/").startswith(root.rstrip("/") + "/"):
            raise ImageError(f"{self.wheel}: {path!r} would be installed outside {root}/")
        entry, sha = self._read(layer_path, stream, 0o755 if executable else 0o644)
        previous = self.files.get(layer_path)
        if previous is not None:
            if previous.sha256 != sha.hexdigest() or previous.entry.mode != entry.mode:
                raise ImageError(
                    f"{previous.wheel} and {self.wheel} both install /{layer_path} with "
                    "different content: drop one of them from the lock"
                )
        else:
            self.files[layer_path] = _Written(entry, sha.hexdigest(), self.wheel)
        value = base64.urlsafe_b64encode(sha.digest()).decode("ascii").rstrip("=")
        return RecordEntry(path, Hash("sha256", value), entry.size())

    def _read(self, layer_path: str, stream: BinaryIO, mode: int) -> tuple[Entry, hashlib._Hash]:
        sha = hashlib.sha256()
        chunks: list[bytes] = []
        size = 0
        spill: BinaryIO | None = None
        spill_path: Path | None = None
        try:
            for chunk in iter(lambda: stream.read(_CHUNK), b""):
                sha.update(chunk)
                size += len(chunk)
                if spill is not None:
                    spill.write(chunk)
                    continue
                chunks.append(chunk)
                if self.stage is not None and size > _SPILL_BYTES:
                    self._spilled += 1
                    spill_path = self.stage / f"{self._spilled:08d}"
                    spill = spill_path.open("wb")
                    spill.writelines(chunks)
                    chunks = []
        finally:
            if spill is not None:
                spill.close()
        if spill_path is not None:
            return Entry(layer_path, "file", source=spill_path, mode=mode), sha
        return Entry(layer_path, "file", data=b"".join(chunks), mode=mode), sha
