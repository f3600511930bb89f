"""The environment layer: locked wheels installed without running anything in a container.

Each wheel is unpacked by pypa's ``installer`` into a destination that collects
layer entries instead of writing a file system, under one prefix::

    /orch/env/lib      purelib and platlib (on PYTHONPATH)
    /orch/env/bin      scripts (on PATH), shebang /usr/bin/python3
    /orch/env/include  headers
    /orch/env          data

No bytecode is compiled (the image sets PYTHONDONTWRITEBYTECODE), RECORD is the
one installer writes (sorted, so deterministic) and INSTALLER says ``orch``.
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
from typing import TYPE_CHECKING, Any, BinaryIO

from installer import install
from installer.destinations import WheelDestination
from installer.exceptions import InstallerError
from installer.records import Hash, RecordEntry
from installer.scripts import InvalidScript, Script
from installer.sources import WheelFile
from installer.utils import Scheme, construct_record_file, fix_shebang

from ..canonical import digest
from ..errors import ImageError
from ..files import atomic_write, sha256_file
from . import cache
from .tarball import Entry, fixed_mtime, write_layer_file

if TYPE_CHECKING:
    from installer.scripts import ScriptSection

ENV_PREFIX = "orch/env"
#: The interpreter of the base image; scripts' shebangs point at it.
SCRIPT_INTERPRETER = "/usr/bin/python3"
#: Bumped whenever the layout or content rules of the layer change.
ENV_LAYER_FORMAT = 1

_SCHEMES: dict[str, str] = {
    "purelib": f"{ENV_PREFIX}/lib",
    "platlib": f"{ENV_PREFIX}/lib",
    "scripts": f"{ENV_PREFIX}/bin",
    "headers": f"{ENV_PREFIX}/include",
    "data": ENV_PREFIX,
}
# Files larger than this are staged on disk by write_env_layer, not kept in memory.
_SPILL_BYTES = 1 << 20
_CHUNK = 1 << 20


def env_image_settings() -> dict[str, Any]:
    """What the image config needs for the layer: environment and a PATH prefix."""
    return {
        "Env": [f"PYTHONPATH=/{ENV_PREFIX}/lib", "PYTHONDONTWRITEBYTECODE=1"],
        "PathPrefix": f"/{ENV_PREFIX}/bin",
    }


def env_layer_entries(wheels: Sequence[Path]) -> list[Entry]:
    """The layer entries of ``wheels`` installed under ``orch/env``, all in memory."""
    return _install_all(wheels, stage=None)


def env_layer_key(wheels: Sequence[Path]) -> str:
    """A key for :func:`write_env_layer`: the wheels' content plus the layer's rules.

    Wheels from the wheelhouse (``.../sha256/<hex>/<file>``) are identified by their
    folder name; any other wheel is hashed.
    """
    ids = []
    for wheel in sorted(wheels, key=lambda p: p.name):
        folder = wheel.parent
        if folder.parent.name == "sha256" and re.fullmatch(r"[0-9a-f]{64}", folder.name):
            hexdigest = folder.name
        else:
            hexdigest = sha256_file(wheel)
        ids.append([wheel.name, hexdigest])
    return digest(
        {
            "format": ENV_LAYER_FORMAT,
            "prefix": ENV_PREFIX,
            "interpreter": SCRIPT_INTERPRETER,
            "wheels": ids,
        }
    )


def write_env_layer(wheels: Sequence[Path], cache_root: Path, key: str) -> tuple[Path, str]:
    """Write (or reuse) ``<cache_root>/layers/env-<key>.tar``; return its path and diff ID.

    ``key`` must change whenever the wheels do (see :func:`env_layer_key`). The diff
    ID is kept in ``env-<key>.json`` beside the tar, so a warm call hashes nothing.
    """
    hexkey = key.removeprefix("sha256:")
    if not re.fullmatch(r"[0-9A-Za-z_.-]{1,128}", hexkey):
        raise ImageError(f"invalid env layer key {key!r}: use a digest such as env_layer_key()")
    layers = cache.layers(cache_root)
    tar = layers / f"env-{hexkey}.tar"
    meta = layers / f"env-{hexkey}.json"
    known = _read_meta(meta, tar)
    if known is not None:
        return tar, known
    layers.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=layers, prefix=".stage-") as stage:
        diff_id = write_layer_file(_install_all(wheels, stage=Path(stage)), tar)
    record = {
        "diff_id": diff_id,
        "size": tar.stat().st_size,
        "mtime": fixed_mtime(),
        "format": ENV_LAYER_FORMAT,
    }
    atomic_write(meta, json.dumps(record, sort_keys=True).encode())
    return tar, diff_id


def _read_meta(meta: Path, tar: Path) -> str | None:
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
    return diff_id if isinstance(diff_id, str) and diff_id.startswith("sha256:") else None


# -- installing ----------------------------------------------------------------------


def _install_all(wheels: Sequence[Path], stage: Path | None) -> list[Entry]:
    destination = _LayerDestination(stage)
    for wheel in sorted(wheels, key=lambda p: p.name):
        destination.wheel = wheel.name
        try:
            with WheelFile.open(wheel) as source:
                # Names only: the wheel's hash was checked against the lock already.
                source.validate_record(validate_contents=False)
                install(source, destination, additional_metadata={"INSTALLER": b"orch"})
        except ImageError:
            raise
        except (InstallerError, InvalidScript, ValueError, KeyError, OSError) as exc:
            raise ImageError(f"cannot install {wheel.name}: {_first_line(exc)}") from exc
    dirs = [Entry(f"{ENV_PREFIX}/{name}", "dir", mode=0o755) for name in ("lib", "bin")]
    return dirs + [item.entry for item in destination.files.values()]


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

    def __init__(self, stage: Path | None) -> None:
        self.stage = stage
        self.files: dict[str, _Written] = {}
        self.wheel = ""
        self._spilled = 0

    def write_script(
        self, name: str, module: str, attr: str, section: ScriptSection
    ) -> RecordEntry:
        script_name, data = Script(name, module, attr, section).generate(
            SCRIPT_INTERPRETER, "posix"
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
            with fix_shebang(stream, SCRIPT_INTERPRETER) as fixed:
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
            return posixpath.relpath(_SCHEMES[file_scheme], _SCHEMES[scheme]) + "/"

        with construct_record_file(list(records), prefix_for_scheme) as stream:
            self._write(scheme, record_file_path, stream, executable=False)

    def _write(self, scheme: Scheme, path: str, stream: BinaryIO, executable: bool) -> RecordEntry:
        root = _SCHEMES[scheme]
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
