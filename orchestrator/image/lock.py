"""The lock file and its digest: a pip requirements file in ``--require-hashes`` form, or
a PEP 751 ``pylock.toml`` (:mod:`.pylock`).

Every requirement line reads ``name==version --hash=sha256:...``, as ``pip-compile
--generate-hashes``, ``uv pip compile --generate-hashes`` and ``uv export --format
requirements-txt`` write it. Parsing follows pip's own reading (continuations, comments,
environment markers, evaluated for the target rather than the host: see :mod:`.target`)
and refuses, naming the line, whatever pip's hash-checking mode would refuse and whatever
would make the result depend on more than the file (includes, URLs, editables).

Index lines (``--index-url``, ``--extra-index-url``, ``--find-links``, ``--no-index``,
``--trusted-host``) say where to download from: they are handed to ``pip download`` and
are not part of the digest, since the hashes pin the content. The digest counts the
pins, not their spelling or order.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement
from packaging.requirements import Requirement as _PkgRequirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from .._util.canonical import digest
from .._util.ids import HEX64
from ..errors import ImageError
from .target import DEFAULT_PLATFORM, DEFAULT_PYTHON, marker_applies, marker_environment

# pip's "#" comment rule: at line start or after whitespace.
_COMMENT = re.compile(r"(^|\s+)#.*$")
_OPTION_HINTS = {
    "-e": "editable requirements cannot be locked: build a wheel and pin it with its hash",
    "--editable": "editable requirements cannot be locked: build a wheel and pin it with its hash",
    "-r": "includes are not supported: flatten everything into one lock file",
    "--requirement": "includes are not supported: flatten everything into one lock file",
    "-c": "constraint files are not supported: pin every package in the lock itself",
    "--constraint": "constraint files are not supported: pin every package in the lock itself",
}
# Options that say where wheels come from, with the name pip download takes; True: a value.
_INDEX_OPTIONS = {
    "-i": ("--index-url", True),
    "--index-url": ("--index-url", True),
    "--extra-index-url": ("--extra-index-url", True),
    "--no-index": ("--no-index", False),
    "-f": ("--find-links", True),
    "--find-links": ("--find-links", True),
    "--trusted-host": ("--trusted-host", True),
}


@dataclass(frozen=True)
class Requirement:
    """One pinned package of a lock: PEP 503 name, exact version, sorted sha256 hashes."""

    name: str
    version: str
    hashes: tuple[str, ...]  # "sha256:<hex>", sorted
    #: Extras the lock asks for (``name[extra]==...``): they decide which of the
    #: package's own requirements must be in the lock, not what is installed.
    extras: tuple[str, ...] = ()

    def pin(self) -> str:
        return f"{self.name}=={self.version}"

    def hex_digests(self) -> list[str]:
        return [h.removeprefix("sha256:") for h in self.hashes]


@dataclass(frozen=True)
class Lock:
    """A parsed lock: the pins for the target and where pip may download them from."""

    path: Path
    requirements: tuple[Requirement, ...]
    #: pip download options from the file (index URLs, find-links): not identity.
    pip_options: tuple[str, ...] = ()

    @property
    def digest(self) -> str:
        return lock_digest(self.requirements)


def read_lock(
    path: Path, python_version: str = DEFAULT_PYTHON, platform: str = DEFAULT_PLATFORM
) -> Lock:
    """Read a requirements lock or, by its name (``pylock.toml``, ``pylock.*.toml``), a
    PEP 751 lock, for the target ``python_version`` and ``platform``."""
    if re.fullmatch(r"pylock(\.[^.]+)?\.toml", path.name):
        from .pylock import read_pylock

        return read_pylock(path, python_version, platform)
    options: list[str] = []
    reqs = _parse_requirements(path, python_version, platform, options)
    return Lock(path, tuple(reqs), tuple(options))


def parse_lock(
    path: Path, python_version: str = DEFAULT_PYTHON, platform: str = DEFAULT_PLATFORM
) -> list[Requirement]:
    """Parse a hash-pinned lock for the target ``python_version``: its pins, sorted.

    Requirements whose environment marker is false for the target (Linux, CPython,
    ``python_version``, the machine of ``platform``) are left out. Anything pip's
    ``--require-hashes`` mode would refuse, and anything that would make the result
    depend on more than the file (includes, URLs, editables), raises
    :class:`ImageError` naming the line.
    """
    return list(read_lock(path, python_version, platform).requirements)


def _parse_requirements(
    path: Path, python_version: str, platform: str, options: list[str]
) -> list[Requirement]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ImageError(
            f"lock file {path} not found: create it (pip-compile --generate-hashes)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ImageError(f"cannot read lock file {path}: {exc}") from exc
    environment = marker_environment(python_version, platform)
    seen: dict[str, tuple[int, Requirement]] = {}
    for number, line in _logical_lines(text):
        where = f"{path}:{number}"
        req = _parse_line(line, where, environment, python_version, path.parent, options)
        if req is None:
            continue
        if req.name in seen:
            first = seen[req.name][0]
            raise ImageError(
                f"{where}: '{req.name}' is listed twice (also line {first}): keep one pin"
            )
        seen[req.name] = (number, req)
    return sorted((req for _, req in seen.values()), key=lambda r: r.name)


def lock_digest(reqs: Iterable[Requirement]) -> str:
    """``sha256:<hex>`` of the parsed lock: comments, order and spelling do not count."""
    return digest(
        [
            {"name": r.name, "version": r.version, "hashes": sorted(r.hashes)}
            for r in sorted(reqs, key=lambda r: r.name)
        ]
    )


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Lines with backslash continuations joined and comments removed, as pip reads them."""
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        is_comment = raw.lstrip().startswith("#")
        if raw.endswith("\\") and not is_comment:
            if not pending:
                start = number
            pending.append(raw[:-1])
            continue
        if pending:
            # A comment line ends a continuation, as in pip.
            pending.append("" if is_comment else raw)
            line, number_ = "".join(pending), start
            pending = []
        else:
            line, number_ = raw, number
        line = _COMMENT.sub("", line).strip()
        if line:
            yield number_, line
    if pending:
        line = _COMMENT.sub("", "".join(pending)).strip()
        if line:
            yield start, line


def _parse_line(
    line: str,
    where: str,
    environment: dict[str, str],
    python_version: str,
    folder: Path,
    pip_options: list[str],
) -> Requirement | None:
    if "${" in line:
        raise ImageError(
            f"{where}: environment variables are not allowed in a lock: write the value"
        )
    if line.startswith("-"):
        pip_options += _global_option(line, where, folder)
        return None
    tokens = line.split()
    split = next((i for i, t in enumerate(tokens) if t.startswith("-")), len(tokens))
    spec, options = " ".join(tokens[:split]), " ".join(tokens[split:])
    try:
        parsed = _PkgRequirement(spec)
    except InvalidRequirement as exc:
        raise ImageError(
            f"{where}: cannot parse {spec!r} ({exc}): "
            "a lock line must read 'name==version --hash=sha256:...'"
        ) from exc
    name = canonicalize_name(parsed.name)
    if parsed.url:
        raise ImageError(
            f"{where}: '{name}' is a direct URL requirement: pin '{name}==<version>' from an index"
        )
    if parsed.marker is not None and not marker_applies(
        parsed.marker, where, environment, python_version
    ):
        return None
    specs = list(parsed.specifier)
    if len(specs) != 1 or specs[0].operator != "==" or "*" in specs[0].version:
        shown = f"{name}{parsed.specifier}" if specs else name
        raise ImageError(f"{where}: '{shown}' is not pinned: use '{name}==<version>' with --hash")
    try:
        version = str(Version(specs[0].version))
    except InvalidVersion as exc:
        raise ImageError(f"{where}: '{name}' has an invalid version {specs[0].version!r}") from exc
    hashes = _parse_hashes(options, name, where)
    if not hashes:
        raise ImageError(
            f"{where}: '{name}' has no --hash: pin it with hashes "
            "(pip-compile --generate-hashes / pip hash)"
        )
    extras = tuple(sorted(canonicalize_name(extra) for extra in parsed.extras))
    return Requirement(name, version, tuple(sorted(set(hashes))), extras)


def _global_option(line: str, where: str, folder: Path) -> list[str]:
    """The pip download options of an option line; raises for what a lock cannot hold."""
    words = line.split(None, 1)
    option, _, inline = words[0].partition("=")
    if option in ("--require-hashes", "--pre", "--only-binary", "--prefer-binary"):
        return []  # orch always checks hashes and takes wheels only; the pins decide
    if option in _OPTION_HINTS:
        raise ImageError(f"{where}: {option}: {_OPTION_HINTS[option]}")
    if option in _INDEX_OPTIONS:
        name, takes_value = _INDEX_OPTIONS[option]
        if not takes_value:
            return [name]
        value = inline or (words[1].strip() if len(words) > 1 else "")
        if not value or " " in value:
            raise ImageError(f"{where}: {option} needs one value")
        if name == "--find-links" and "://" not in value:
            # As pip does: a relative path is relative to the requirements file.
            relative = folder / value
            if relative.exists():
                value = str(relative.resolve())
        return [name, value]
    if option == "--hash":
        raise ImageError(f"{where}: --hash must follow a requirement on the same (continued) line")
    raise ImageError(f"{where}: option {option} is not supported in a lock")


def _parse_hashes(options: str, name: str, where: str) -> list[str]:
    try:
        words = shlex.split(options)
    except ValueError as exc:
        raise ImageError(f"{where}: cannot parse options of '{name}': {exc}") from exc
    hashes: list[str] = []
    index = 0
    while index < len(words):
        word = words[index]
        if word == "--hash" and index + 1 < len(words):
            value, index = words[index + 1], index + 2
        elif word.startswith("--hash="):
            value, index = word[len("--hash=") :], index + 1
        else:
            raise ImageError(
                f"{where}: option {word.split('=')[0]!r} on '{name}' is not supported: "
                "only --hash is allowed after a requirement"
            )
        algorithm, _, hexdigest = value.partition(":")
        hexdigest = hexdigest.lower()
        if algorithm != "sha256":
            raise ImageError(
                f"{where}: '{name}' has a {algorithm or 'malformed'} hash: "
                "orch needs sha256 hashes (pip hash -a sha256)"
            )
        if not HEX64.match(hexdigest):
            raise ImageError(f"{where}: '{name}' has a malformed sha256 hash {value!r}")
        hashes.append(f"sha256:{hexdigest}")
    return hashes
