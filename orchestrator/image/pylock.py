"""PEP 751 lock files (``pylock.toml``), as ``pip lock`` and ``uv export --format pylock.toml``
write them, read into the same :class:`~.lock.Lock` as a requirements lock.

Each ``[[packages]]`` entry becomes a pin of its ``version`` with the sha256 hashes of its
wheels and sdist (pip then picks the wheel for the target among them). Its ``marker`` is
evaluated for the target, with the lock's default groups and no extras. The ``index``
of each package is handed to ``pip download`` as an extra index; like a requirements
file's index lines it does not count in the digest. Entries pip cannot fetch by name and
hash (``vcs``, ``directory``, ``archive``) are refused, naming the package.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from packaging.markers import InvalidMarker, Marker
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from .._util.ids import HEX64
from ..errors import ImageError
from .lock import Lock, Requirement
from .target import marker_applies, marker_environment


def read_pylock(path: Path, python_version: str, platform: str) -> Lock:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ImageError(
            f"lock file {path} not found: create it (pip lock, or uv export --format pylock.toml)"
        ) from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ImageError(f"cannot read lock file {path}: {exc}") from exc
    version = str(document.get("lock-version", ""))
    if version.split(".")[0] != "1":
        raise ImageError(
            f"{path}: lock-version {version or '(missing)'} is not supported: need 1.x"
        )
    environment: dict[str, Any] = dict(marker_environment(python_version, platform))
    environment["extras"] = frozenset()
    groups = document.get("default-groups", [])
    environment["dependency_groups"] = frozenset(str(g) for g in groups)
    _check_python(document.get("requires-python"), f"{path}", python_version)
    if document.get("environments"):
        markers = [_marker(text, f"{path}: environments") for text in document["environments"]]
        if not any(
            marker_applies(m, f"{path}: environments", environment, python_version, "lock_file")
            for m in markers
        ):
            raise ImageError(
                f"{path}: none of its environments matches the target (Python {python_version} "
                f"on {platform}): lock for Linux and that Python"
            )
    packages = document.get("packages")
    if not isinstance(packages, list):
        raise ImageError(f"{path}: no [[packages]] table")
    seen: dict[str, Requirement] = {}
    indexes: list[str] = []
    for number, package in enumerate(packages, start=1):
        req, index = _package(package, f"{path}: packages[{number}]", environment, python_version)
        if req is None:
            continue
        if req.name in seen:
            raise ImageError(f"{path}: '{req.name}' is listed twice for the target: keep one entry")
        seen[req.name] = req
        if index and index not in indexes:
            indexes.append(index)
    options: list[str] = []
    for index in indexes:
        options += ["--extra-index-url", index]
    return Lock(path, tuple(sorted(seen.values(), key=lambda r: r.name)), tuple(options))


def _marker(text: object, where: str) -> Marker:
    try:
        return Marker(str(text))
    except InvalidMarker as exc:
        raise ImageError(f"{where}: invalid marker {text!r}: {exc}") from exc


def _check_python(spec: object, where: str, python_version: str) -> None:
    if not spec:
        return
    try:
        allowed = SpecifierSet(str(spec))
    except InvalidSpecifier as exc:
        raise ImageError(f"{where}: invalid requires-python {spec!r}") from exc
    full = python_version if python_version.count(".") == 2 else python_version + ".0"
    if not allowed.contains(full, prereleases=True):
        raise ImageError(
            f"{where}: requires-python {spec} excludes the base image's Python {python_version}"
        )


def _package(
    package: object, where: str, environment: dict[str, Any], python_version: str
) -> tuple[Requirement | None, str]:
    if not isinstance(package, dict) or not isinstance(package.get("name"), str):
        raise ImageError(f"{where}: a package needs a name")
    name = canonicalize_name(package["name"])
    where = f"{where} ('{name}')"
    if "marker" in package:
        marker = _marker(package["marker"], where)
        if not marker_applies(marker, where, environment, python_version, "lock_file"):
            return None, ""
    for kind in ("vcs", "directory", "archive"):
        if kind in package:
            raise ImageError(
                f"{where}: a {kind} package cannot be fetched by name and hash: "
                f"publish a wheel of '{name}' to an index and lock that"
            )
    try:
        version = str(Version(str(package.get("version", ""))))
    except InvalidVersion:
        raise ImageError(f"{where}: needs an exact version") from None
    files = list(package.get("wheels") or [])
    if package.get("sdist"):
        files.append(package["sdist"])
    hashes = []
    for item in files:
        value = (item.get("hashes") or {}).get("sha256") if isinstance(item, dict) else None
        if not isinstance(value, str) or not HEX64.match(value.lower()):
            shown = item.get("name", "a file") if isinstance(item, dict) else "a file"
            raise ImageError(f"{where}: {shown} has no sha256 hash: orch needs sha256 hashes")
        hashes.append(f"sha256:{value.lower()}")
    if not hashes:
        raise ImageError(f"{where}: lists no wheels: orch installs wheels only")
    index = package.get("index")
    return Requirement(name, version, tuple(sorted(set(hashes)))), (
        str(index) if isinstance(index, str) else ""
    )
