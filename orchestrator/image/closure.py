"""Is the lock complete? Every requirement of every locked wheel must be pinned by the lock.

pip in ``--require-hashes`` mode refuses a lock that misses a dependency before it
installs anything; orch does the same before it builds anything, from each wheel's own
metadata (``Requires-Dist``, ``Requires-Python``), with markers evaluated for the target
interpreter and platform and extras followed where the lock or a dependency asks for
them. The error names the package that requires the missing one, and what it requires.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from email.message import Message
from email.parser import HeaderParser
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import InvalidRequirement
from packaging.requirements import Requirement as Dependency
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from ..errors import ImageError
from .lock import Requirement
from .target import marker_applies, marker_environment

_HINT = "add it to the lock (re-run pip-compile / uv pip compile with --generate-hashes)"


def wheel_metadata(wheel: Path) -> Message:
    """The ``METADATA`` of a wheel, parsed as the email-style headers it is."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            names = [
                n
                for n in archive.namelist()
                if n.count("/") == 1 and n.endswith(".dist-info/METADATA")
            ]
            if len(names) != 1:
                raise ImageError(f"{wheel.name} has {len(names)} .dist-info/METADATA files")
            text = archive.read(names[0]).decode("utf-8")
    except (OSError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise ImageError(f"cannot read the metadata of {wheel.name}: {exc}") from exc
    return HeaderParser().parsestr(text)


def check_closure(
    reqs: Sequence[Requirement],
    wheels: Sequence[Path],
    python_version: str,
    platform: str,
    lock: Path | str = "the lock",
) -> None:
    """Raise :class:`ImageError` unless the lock pins every dependency of its wheels.

    ``python_version`` should be the target's full version (``3.11.2``), so that
    ``python_full_version`` markers can be answered.
    """
    pinned = {req.name: req for req in reqs}
    metadata: dict[str, tuple[str, Message]] = {}
    name: str
    for wheel in wheels:
        try:
            name = canonicalize_name(parse_wheel_filename(wheel.name)[0])
        except InvalidWheelFilename as exc:
            raise ImageError(f"{wheel.name} is not a wheel: {exc}") from exc
        metadata[name] = (wheel.name, wheel_metadata(wheel))
    environment = marker_environment(python_version, platform)
    full = python_version if python_version.count(".") == 2 else python_version + ".0"
    todo: list[tuple[str, str]] = [(req.name, e) for req in reqs for e in ("", *req.extras)]
    done: set[tuple[str, str]] = set()
    while todo:
        name, extra = todo.pop()
        if (name, extra) in done or name not in metadata:
            continue
        done.add((name, extra))
        filename, meta = metadata[name]
        if not extra:
            _check_requires_python(meta, filename, full)
        for line in meta.get_all("Requires-Dist") or []:
            dep = _dependency(line, filename)
            if dep.marker is not None and not _applies(
                dep.marker, extra, filename, environment, python_version
            ):
                continue
            dep_name = canonicalize_name(dep.name)
            owner = pinned[name]
            requirer = f"{owner.name}[{extra}]=={owner.version}" if extra else owner.pin()
            found = pinned.get(dep_name)
            if found is None:
                raise ImageError(
                    f"{lock} is incomplete: {requirer} requires '{_shown(dep)}', which the "
                    f"lock does not pin: {_HINT}"
                )
            if dep.specifier and not dep.specifier.contains(found.version, prereleases=True):
                raise ImageError(
                    f"{lock} is inconsistent: {requirer} requires '{_shown(dep)}', but the "
                    f"lock pins {found.pin()}: re-resolve the lock"
                )
            todo += [(dep_name, canonicalize_name(e)) for e in dep.extras]
            todo.append((dep_name, ""))


def _dependency(line: str, filename: str) -> Dependency:
    try:
        return Dependency(line)
    except InvalidRequirement as exc:
        raise ImageError(f"{filename}: cannot parse Requires-Dist {line!r}: {exc}") from exc


def _shown(dep: Dependency) -> str:
    extras = f"[{','.join(sorted(dep.extras))}]" if dep.extras else ""
    return f"{dep.name}{extras}{dep.specifier}"


def _mentions_extra(marker: Marker) -> bool:
    return "extra" in str(marker)


def _applies(
    marker: Marker,
    extra: str,
    filename: str,
    environment: dict[str, str],
    python_version: str,
) -> bool:
    if extra and not _mentions_extra(marker):
        return False  # checked already, without the extra
    return marker_applies(
        marker, f"{filename} Requires-Dist", {**environment, "extra": extra}, python_version
    )


def _check_requires_python(meta: Message, filename: str, full_version: str) -> None:
    spec = meta.get("Requires-Python")
    if not spec:
        return
    try:
        allowed = SpecifierSet(spec)
    except InvalidSpecifier:
        return  # pip ignores an invalid Requires-Python too
    if not allowed.contains(full_version, prereleases=True):
        raise ImageError(
            f"{filename} requires Python {spec}, but the base image has {full_version}: "
            "pin a version that supports it"
        )
