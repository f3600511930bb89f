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
change to a small package leaves the chain of the big ones intact). Below them all is
the bytecode of the base interpreter's standard library, one layer per base image. Past
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
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from installer import install
from installer.destinations import WheelDestination
from installer.exceptions import InstallerError
from installer.records import Hash, RecordEntry
from installer.scripts import InvalidScript, Script
from installer.sources import WheelFile
from installer.utils import Scheme, construct_record_file, fix_shebang

from ..canonical import digest
from ..docker_api import DockerClient
from ..errors import ImageError
from ..files import atomic_write, sha256_file
from . import bytecode, cache
from .interpreter import Interpreter
from .tarball import Entry, fixed_mtime, write_layer_file

if TYPE_CHECKING:
    from installer.scripts import ScriptSection

#: Bumped whenever the layout or content rules of the layers change.
ENV_LAYER_FORMAT = 2
#: Environment layers at most; Docker's limit is 127 layers per image.
MAX_LAYERS = 100
# Files larger than this are staged on disk, not kept in memory.
_SPILL_BYTES = 1 << 20
_CHUNK = 1 << 20


@dataclass(frozen=True)
class EnvLayer:
    """One environment layer: its tar in the cache, diff ID, and the wheels it installs
    (none: the bytecode of the interpreter's standard library)."""

    diff_id: str
    path: Path
    size: int
    wheels: tuple[str, ...]


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
    if folder.parent.name == "sha256" and re.fullmatch(r"[0-9a-f]{64}", folder.name):
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


def write_env_layers(
    client: DockerClient,
    image_id: str,
    interpreter: Interpreter,
    wheels: Sequence[Path],
    cache_root: Path,
    *,
    stdlib: bool = True,
) -> list[EnvLayer]:
    """Write (or reuse) the layers of ``wheels`` for the base image ``image_id``, bottom first.

    With ``stdlib``, the first layer holds the bytecode of the interpreter's standard
    library (its :attr:`EnvLayer.wheels` is empty): the base recipe ships none, and a
    run's user cannot write it, so without it every run would compile what it imports.
    Layers already in the cache are neither unpacked nor compiled again. Files that two
    packages install with different content are refused, across all layers.
    """
    groups: list[list[Path] | None] = [*([None] if stdlib else []), *plan_layers(wheels)]
    keys = [
        (stdlib_key(image_id, interpreter) if g is None else layer_key(g, interpreter))
        for g in groups
    ]
    keys = [key.removeprefix("sha256:") for key in keys]
    names = [() if g is None else _names(g) for g in groups]
    layers_dir = cache.layers(cache_root)
    known: dict[int, tuple[EnvLayer, dict[str, str]]] = {}
    for index, key in enumerate(keys):
        found = _read_meta(layers_dir / f"pkg-{key}.json", layers_dir / f"pkg-{key}.tar")
        if found is not None:
            diff_id, files = found
            tar = layers_dir / f"pkg-{key}.tar"
            known[index] = (EnvLayer(diff_id, tar, tar.stat().st_size, names[index]), files)
    missing = [index for index in range(len(groups)) if index not in known]
    if not missing:
        _check_conflicts([(names[i], known[i][1]) for i in range(len(groups))])
        return [known[index][0] for index in range(len(groups))]
    layers_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=layers_dir, prefix=".stage-") as tmp:
        stage = Path(tmp)
        installed: dict[int, _LayerDestination] = {}
        for i in missing:
            group = groups[i]
            if group is not None:
                installed[i] = _install_group(group, interpreter, stage)
        listings = {i: installed[i].listing() if i in installed else {} for i in missing}
        _check_conflicts(
            [(names[i], known[i][1] if i in known else listings[i]) for i in range(len(groups))]
        )
        entries = {
            i: [item.entry for item in installed[i].files.values()] if i in installed else []
            for i in missing
        }
        jobs: list[list[Entry] | bytecode.InImage] = [
            entries[i] if i in installed else bytecode.InImage(interpreter.stdlib.strip("/"))
            for i in missing
        ]
        compiled = bytecode.compile_groups(client, image_id, interpreter, jobs, stage)
        for i, pyc in zip(missing, compiled, strict=True):
            tar = layers_dir / f"pkg-{keys[i]}.tar"
            diff_id = write_layer_file(entries[i] + pyc, tar)
            record = {
                "diff_id": diff_id,
                "size": tar.stat().st_size,
                "mtime": fixed_mtime(),
                "format": ENV_LAYER_FORMAT,
                "wheels": list(names[i]),
                "files": listings[i],
            }
            atomic_write(
                layers_dir / f"pkg-{keys[i]}.json", json.dumps(record, sort_keys=True).encode()
            )
            known[i] = (EnvLayer(diff_id, tar, tar.stat().st_size, names[i]), listings[i])
    return [known[index][0] for index in range(len(groups))]


def _names(group: Sequence[Path]) -> tuple[str, ...]:
    return tuple(sorted(wheel.name for wheel in group))


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


def _read_meta(meta: Path, tar: Path) -> tuple[str, dict[str, str]] | None:
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
    diff_id, files = record.get("diff_id"), record.get("files")
    if not isinstance(diff_id, str) or not diff_id.startswith("sha256:"):
        return None
    if not isinstance(files, dict):
        return None
    return diff_id, files


# -- installing ----------------------------------------------------------------------


def _install_group(
    wheels: Sequence[Path], interpreter: Interpreter, stage: Path | None
) -> _LayerDestination:
    destination = _LayerDestination(interpreter, stage)
    for wheel in sorted(wheels, key=lambda p: p.name):
        destination.start(wheel.name)
        try:
            with WheelFile.open(wheel) as source:
                # Names only: the wheel's hash was checked against the lock already.
                source.validate_record(validate_contents=False)
                install(source, destination, additional_metadata={"INSTALLER": b"orch"})
        except ImageError:
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

    def __init__(self, interpreter: Interpreter, stage: Path | None) -> None:
        self.interpreter = interpreter
        self.stage = stage
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
