"""Planning the environment's layers (see :mod:`.envlayer`): which wheels share a layer,
what each layer's bytes depend on (its cache key), the order of the layers, and the
cached layers found again; a package's files split into payload and sources.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._util.canonical import digest
from .._util.files import sha256_file
from .._util.ids import HEX64
from ..errors import ImageError
from . import bytecode
from .interpreter import Interpreter
from .tarball import Entry, fixed_mtime

#: Bumped whenever the layout or content rules of the layers change.
ENV_LAYER_FORMAT = 3
#: Package layers at most; Docker's limit is 127 layers per image, and payload layers
#: (a few: each is 32 MiB of binaries at least) come on top.
MAX_LAYERS = 100
#: A package installing this much besides its Python sources, and this much source,
#: gets a payload layer (torch: 620 MB of libraries, 45 MB of sources).
SPLIT_BYTES = 32 << 20
SPLIT_SOURCE_BYTES = 4 << 20
#: Wheels at least this big are unpacked and compiled by the heavy chain
#: (see :class:`.envbuild.Build`).
HEAVY_WHEEL = 16 << 20


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


def group_names(group: Sequence[Path]) -> tuple[str, ...]:
    return tuple(sorted(wheel.name for wheel in group))


@dataclass(frozen=True)
class Package:
    """One package group's layers (its payload layer when it has one) and every file it installs."""

    layer: EnvLayer
    payload: EnvLayer | None
    files: dict[str, str]


#: A place in the environment: ("payload", package), ("stdlib", -1) or ("package", package).
Slot = tuple[str, int]


def slots(split: Sequence[bool], stdlib: bool) -> list[Slot]:
    """The environment's layers, bottom first: the payloads of the packages that have one,
    the standard library's bytecode, then every package, in the packages' order."""
    payloads = [("payload", i) for i, has in enumerate(split) if has]
    packages = [("package", i) for i in range(len(split))]
    return [*payloads, *([("stdlib", -1)] if stdlib else []), *packages]


def ordered(packages: Sequence[Package], std: EnvLayer | None) -> list[EnvLayer]:
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
    return [layer(slot) for slot in slots(split, std is not None)]


def check_conflicts(listings: Sequence[tuple[tuple[str, ...], dict[str, str]]]) -> None:
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


def read_package(layers_dir: Path, key: str, names: tuple[str, ...]) -> Package | None:
    """A package group's layers from the cache, or None when any part is missing or stale."""
    meta = read_record(layers_dir / f"pkg-{key}.json", layers_dir / f"pkg-{key}.tar")
    if meta is None or not isinstance(meta[1].get("payload"), bool):
        return None
    record, files = meta[1], meta[1].get("files")
    if not isinstance(files, dict):
        return None
    payload = None
    if record["payload"]:
        payload = read_layer(layers_dir, f"pkg-{key}-payload", names, payload=True)
        if payload is None:
            return None
    layer = EnvLayer(meta[0], layers_dir / f"pkg-{key}.tar", record["size"], names)
    return Package(layer, payload, files)


def read_layer(
    layers_dir: Path, name: str, names: tuple[str, ...], payload: bool = False
) -> EnvLayer | None:
    meta = read_record(layers_dir / f"{name}.json", layers_dir / f"{name}.tar")
    if meta is None:
        return None
    return EnvLayer(meta[0], layers_dir / f"{name}.tar", meta[1]["size"], names, payload=payload)


def read_record(meta: Path, tar: Path) -> tuple[str, dict[str, Any]] | None:
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
