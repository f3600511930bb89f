"""Installing wheels into a layer (see :mod:`.envlayer`): pypa's ``installer`` writing
into a destination that collects layer entries at the paths the base image's own ``pip
install`` would use, instead of writing a file system.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import posixpath
from collections.abc import Callable, Iterable, Sequence
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

from ..errors import ImageError, OrchestratorError
from .interpreter import Interpreter
from .tarball import Entry

if TYPE_CHECKING:
    from installer.scripts import ScriptSection

# Files larger than this are staged on disk, not kept in memory.
_SPILL_BYTES = 1 << 20
_CHUNK = 1 << 20


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


def env_layer_entries(
    wheels: Sequence[Path], interpreter: Interpreter, stage: Path | None = None
) -> list[Entry]:
    """The entries of ``wheels`` installed together (no bytecode), in memory without ``stage``."""
    destination = install_group(wheels, interpreter, stage)
    return [item.entry for item in destination.files.values()]


def install_group(
    wheels: Sequence[Path],
    interpreter: Interpreter,
    stage: Path | None,
    check: Callable[[], None] = lambda: None,
) -> LayerDestination:
    destination = LayerDestination(interpreter, stage, check)
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
            raise ImageError(f"cannot install {wheel.name}: {first_line(exc)}") from exc
    return destination


def first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


@dataclass(frozen=True)
class Written:
    entry: Entry
    sha256: str
    wheel: str


class LayerDestination(WheelDestination):
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
        self.files: dict[str, Written] = {}
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
            self.files[layer_path] = Written(entry, sha.hexdigest(), self.wheel)
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
