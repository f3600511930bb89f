"""Pinned dependencies: the lock file, its digest, and a content-addressed wheelhouse.

A lock is a pip requirements file in ``--require-hashes`` form: every line is
``name==version --hash=sha256:...``. Wheels are fetched on the host (containers
cannot reach the index) by one ``pip download`` for the target interpreter and
platform, checked against the lock, and kept under ``cache_dir/sha256/<hex>/``
so that a warm build touches no network.

Which wheel a requirement resolves to, when its hashes name several compatible
ones, is decided by pip once and recorded under ``cache_dir/resolved/``: a warm
cache then makes the same choice pip made, never a different one that happens to
be on disk.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.markers import InvalidMarker, Marker, UndefinedComparison
from packaging.requirements import InvalidRequirement
from packaging.requirements import Requirement as _PkgRequirement
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from ..canonical import digest
from ..errors import ImageError
from ..files import atomic_write, sha256_file

#: Debian 12 (the base image) has glibc 2.36: any manylinux wheel up to 2.36 runs there.
DEFAULT_PLATFORM = "manylinux_2_36_x86_64"
DEFAULT_PYTHON = "3.11"

_HEX64 = re.compile(r"[0-9a-f]{64}")
_MANYLINUX = re.compile(r"manylinux_(\d+)_(\d+)_(\w+)")
_LEGACY_MANYLINUX = {
    "manylinux1": (2, 5),
    "manylinux2010": (2, 12),
    "manylinux2014": (2, 17),
}
_LEGACY_BY_GLIBC = {glibc: name for name, glibc in _LEGACY_MANYLINUX.items()}
# pip's "#" comment rule: at line start or after whitespace.
_COMMENT = re.compile(r"(^|\s+)#.*$")
# Marker variables whose target value orch cannot know from "3.11" and a platform tag.
_PATCH_MARKERS = ("python_full_version", "implementation_version")
_HOST_MARKERS = ("platform_release", "platform_version")
_OPTION_HINTS = {
    "-e": "editable requirements cannot be locked: build a wheel and pin it with its hash",
    "--editable": "editable requirements cannot be locked: build a wheel and pin it with its hash",
    "-r": "includes are not supported: flatten everything into one lock file",
    "--requirement": "includes are not supported: flatten everything into one lock file",
    "-c": "constraint files are not supported: pin every package in the lock itself",
    "--constraint": "constraint files are not supported: pin every package in the lock itself",
}
_INDEX_OPTIONS = {
    "-i",
    "--index-url",
    "--extra-index-url",
    "--no-index",
    "-f",
    "--find-links",
    "--trusted-host",
}


@dataclass(frozen=True)
class Requirement:
    """One pinned package of a lock: PEP 503 name, exact version, sorted sha256 hashes."""

    name: str
    version: str
    hashes: tuple[str, ...]  # "sha256:<hex>", sorted

    def pin(self) -> str:
        return f"{self.name}=={self.version}"

    def hex_digests(self) -> list[str]:
        return [h.removeprefix("sha256:") for h in self.hashes]


# -- the lock file -----------------------------------------------------------------


def parse_lock(
    path: Path, python_version: str = DEFAULT_PYTHON, platform: str = DEFAULT_PLATFORM
) -> list[Requirement]:
    """Parse a hash-pinned requirements file for the target ``python_version``.

    Requirements whose environment marker is false for the target (Linux, CPython,
    ``python_version``, the machine of ``platform``) are left out. Anything pip's
    ``--require-hashes`` mode would refuse, and anything that would make the result
    depend on more than the file (includes, URLs, index options), raises
    :class:`ImageError` naming the line.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ImageError(
            f"lock file {path} not found: create it (pip-compile --generate-hashes)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ImageError(f"cannot read lock file {path}: {exc}") from exc
    environment = _marker_environment(python_version, platform)
    seen: dict[str, tuple[int, Requirement]] = {}
    for number, line in _logical_lines(text):
        where = f"{path}:{number}"
        req = _parse_line(line, where, environment, python_version)
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
    line: str, where: str, environment: dict[str, str], python_version: str
) -> Requirement | None:
    if "${" in line:
        raise ImageError(
            f"{where}: environment variables are not allowed in a lock: write the value"
        )
    if line.startswith("-"):
        _check_global_option(line, where)
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
    if parsed.marker is not None and not _marker_applies(
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
    return Requirement(name, version, tuple(sorted(set(hashes))))


def _check_global_option(line: str, where: str) -> None:
    option = line.split()[0].split("=")[0]
    if option == "--require-hashes":
        return  # orch always checks hashes
    if option in _OPTION_HINTS:
        raise ImageError(f"{where}: {option}: {_OPTION_HINTS[option]}")
    if option in _INDEX_OPTIONS:
        raise ImageError(
            f"{where}: {option} is not supported in a lock: "
            "configure the index in pip's config (pip.conf, PIP_INDEX_URL)"
        )
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
        if not _HEX64.fullmatch(hexdigest):
            raise ImageError(f"{where}: '{name}' has a malformed sha256 hash {value!r}")
        hashes.append(f"sha256:{hexdigest}")
    return hashes


# -- markers and tags for the target -----------------------------------------------


def _split_platform(platform: str) -> tuple[tuple[int, int] | None, str]:
    """(glibc version, arch) of a manylinux platform tag; (None, arch) for others."""
    match = _MANYLINUX.fullmatch(platform)
    if match:
        return (int(match.group(1)), int(match.group(2))), match.group(3)
    legacy, _, arch = platform.partition("_")
    if legacy in _LEGACY_MANYLINUX and arch:
        return _LEGACY_MANYLINUX[legacy], arch
    _, _, arch = platform.partition("_")
    return None, arch or platform


def target_platforms(platform: str) -> list[str]:
    """Every platform tag a target ``platform`` accepts, best first.

    pip takes ``--platform`` literally (``manylinux_2_36`` does not imply
    ``manylinux_2_17``), so a glibc target is spelled out down to manylinux_2_5,
    with the legacy aliases (manylinux2014/2010/1) next to their PEP 600 names.
    """
    glibc, arch = _split_platform(platform)
    if glibc is None or glibc[0] != 2:
        return [platform]
    result: list[str] = []
    for minor in range(glibc[1], 4, -1):
        result.append(f"manylinux_2_{minor}_{arch}")
        if (2, minor) in _LEGACY_BY_GLIBC:
            result.append(f"{_LEGACY_BY_GLIBC[(2, minor)]}_{arch}")
    return result


def _python_tuple(python_version: str) -> tuple[int, int]:
    match = re.fullmatch(r"3\.(\d+)(\.\d+)?", python_version)
    if not match:
        raise ImageError(
            f"unsupported target Python version {python_version!r}: use e.g. '3.11' or '3.11.2'"
        )
    return 3, int(match.group(1))


def _marker_environment(python_version: str, platform: str) -> dict[str, str]:
    major, minor = _python_tuple(python_version)
    full = python_version if python_version.count(".") == 2 else f"{major}.{minor}.0"
    _, arch = _split_platform(platform)
    # Every key is given so that nothing of the host leaks into the evaluation.
    return {
        "python_version": f"{major}.{minor}",
        "python_full_version": full,
        "implementation_version": full,
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "os_name": "posix",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": arch,
        "platform_release": "",
        "platform_version": "",
        "extra": "",
    }


def _marker_applies(
    marker: Marker, where: str, environment: dict[str, str], python_version: str
) -> bool:
    text = str(marker)
    unknown = list(_HOST_MARKERS)
    if python_version.count(".") < 2:
        unknown += _PATCH_MARKERS
    for variable in unknown:
        if re.search(rf"\b{variable}\b", text):
            raise ImageError(
                f"{where}: marker '{text}' uses {variable}, which orch cannot know for the "
                "target: use python_version, sys_platform or platform_machine markers"
            )
    try:
        return marker.evaluate(environment)
    except (InvalidMarker, UndefinedComparison, ValueError) as exc:
        raise ImageError(f"{where}: cannot evaluate marker '{text}': {exc}") from exc


def _supported_tags(python_version: str, platform: str) -> list[Tag]:
    version = _python_tuple(python_version)
    abi = f"cp{version[0]}{version[1]}"
    platforms = target_platforms(platform)
    return [
        *cpython_tags(version, abis=[abi], platforms=platforms),
        *compatible_tags(version, interpreter=abi, platforms=platforms),
    ]


def _tag_ranks(python_version: str, platform: str) -> dict[Tag, int]:
    """Each supported tag with its preference (0 is best), as pip ranks them."""
    ranks: dict[Tag, int] = {}
    for rank, tag in enumerate(_supported_tags(python_version, platform)):
        ranks.setdefault(tag, rank)
    return ranks


def pip_download_args(
    python_version: str = DEFAULT_PYTHON, platform: str = DEFAULT_PLATFORM
) -> list[str]:
    """The target flags of ``pip download``: binary only, no resolution, hashes checked."""
    major, minor = _python_tuple(python_version)
    args = [
        "--no-deps",
        "--only-binary=:all:",
        "--require-hashes",
        "--python-version",
        f"{major}.{minor}",
        "--implementation",
        "cp",
        "--abi",
        f"cp{major}{minor}",
    ]
    for tag in target_platforms(platform):
        args += ["--platform", tag]
    return args


# -- the wheelhouse ----------------------------------------------------------------


def ensure_wheels(
    reqs: Sequence[Requirement],
    cache_dir: Path,
    python_version: str = DEFAULT_PYTHON,
    platform: str = DEFAULT_PLATFORM,
) -> list[Path]:
    """One wheel per requirement, from the cache or from one ``pip download``.

    Returns the cached wheel paths (``cache_dir/sha256/<hex>/<file>``) sorted by name.
    """
    tags = _tag_ranks(python_version, platform)
    platforms = target_platforms(platform)
    found: dict[str, Path] = {}
    missing: list[Requirement] = []
    for req in reqs:
        if not req.hashes:
            raise ImageError(f"'{req.name}' has no hash: pin it with hashes (pip hash)")
        cached = _cached_wheel(req, cache_dir, python_version, platforms, tags)
        if cached is None:
            missing.append(req)
        else:
            found[req.name] = cached
    if missing:
        found.update(_download(missing, cache_dir, python_version, platform))
    return [found[name] for name in sorted(found)]


def _resolution_path(
    req: Requirement, cache_dir: Path, python_version: str, platforms: list[str]
) -> Path:
    key = digest(
        {
            "name": req.name,
            "version": req.version,
            "hashes": sorted(req.hashes),
            "python": python_version,
            "platforms": platforms,
        }
    )
    return cache_dir / "resolved" / (key.removeprefix("sha256:") + ".json")


def _cached_wheel(
    req: Requirement,
    cache_dir: Path,
    python_version: str,
    platforms: list[str],
    tags: dict[Tag, int],
) -> Path | None:
    record = _resolution_path(req, cache_dir, python_version, platforms)
    if record.is_file():
        try:
            chosen = json.loads(record.read_text())
            hexdigest, filename = str(chosen["sha256"]), str(chosen["filename"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        path = cache_dir / "sha256" / hexdigest / filename
        return path if f"sha256:{hexdigest}" in req.hashes and path.is_file() else None
    if len(req.hashes) != 1:
        # Several files are allowed: only pip knows which one it would pick.
        return None
    candidates = []
    for hexdigest in req.hex_digests():
        folder = cache_dir / "sha256" / hexdigest
        for path in folder.glob("*.whl") if folder.is_dir() else ():
            rank = _wheel_rank(path.name, req, tags)
            if rank is not None:
                candidates.append((rank, path.name, path))
    return min(candidates)[2] if candidates else None


def _wheel_rank(filename: str, req: Requirement, tags: dict[Tag, int]) -> int | None:
    try:
        name, version, _, wheel_tags = parse_wheel_filename(filename)
    except (InvalidWheelFilename, InvalidVersion):
        return None
    if name != req.name or version != Version(req.version):
        return None
    ranks = [tags[tag] for tag in wheel_tags if tag in tags]
    return min(ranks) if ranks else None


def _download(
    reqs: list[Requirement], cache_dir: Path, python_version: str, platform: str
) -> dict[str, Path]:
    by_name = {req.name: req for req in reqs}
    platforms = target_platforms(platform)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Inside cache_dir, so that moving into the wheelhouse is an atomic rename.
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".download-") as tmp:
        work = Path(tmp)
        lock = work / "requirements.txt"
        lock.write_text(
            "".join(req.pin() + "".join(f" --hash={h}" for h in req.hashes) + "\n" for req in reqs)
        )
        out = work / "wheels"
        args = [sys.executable, "-m", "pip", "download"]
        args += pip_download_args(python_version, platform)
        args += ["--no-input", "--disable-pip-version-check", "--progress-bar", "off"]
        args += ["-d", str(out), "-r", str(lock)]
        result = _run_pip(args)
        if result.returncode != 0:
            raise ImageError(_pip_error(result.stderr, reqs, python_version, platform))
        fetched: dict[str, Path] = {}
        for path in sorted(out.iterdir()) if out.is_dir() else []:
            try:
                name = canonicalize_name(parse_wheel_filename(path.name)[0])
            except (InvalidWheelFilename, InvalidVersion):
                raise ImageError(
                    f"pip download returned {path.name}, which is not a wheel"
                ) from None
            req = by_name.get(name)
            if req is None:
                raise ImageError(f"pip download returned {path.name}, which the lock does not pin")
            actual = "sha256:" + sha256_file(path)
            if actual not in req.hashes:
                raise ImageError(
                    f"hash mismatch for '{req.pin()}': the lock expects "
                    f"{' or '.join(req.hashes)}, the download ({path.name}) has {actual}: "
                    "update the lock (pip hash) or check the index"
                )
            target = cache_dir / "sha256" / actual.removeprefix("sha256:") / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            choice = {"sha256": actual.removeprefix("sha256:"), "filename": path.name}
            atomic_write(
                _resolution_path(req, cache_dir, python_version, platforms),
                json.dumps(choice, sort_keys=True).encode(),
            )
            fetched[name] = target
    absent = sorted(set(by_name) - set(fetched))
    if absent:
        raise ImageError(
            f"pip download returned no wheel for '{by_name[absent[0]].pin()}': "
            "check the lock and pip's index configuration"
        )
    return fetched


def _run_pip(args: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(args, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise ImageError(f"cannot run pip ({args[0]} -m pip): {exc}") from exc


def _pip_error(stderr: str, reqs: list[Requirement], python_version: str, platform: str) -> str:
    """One line saying what pip could not do, from pip's stderr."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if any("No module named pip" in line for line in lines):
        return f"pip is not installed for {sys.executable}: install pip in orch's environment"
    unreachable = [
        line
        for line in lines
        if "Retrying" in line
        and any(
            kind in line for kind in ("NewConnectionError", "SSLError", "ProxyError", "Timeout")
        )
    ]
    for line in lines:
        match = re.search(r"No matching distribution found for (\S+)", line)
        if match and unreachable:
            reason = re.search(
                r"(\[Errno[^\]]*\][^'\)\"]*|SSLError\([^)]*|ProxyError)", unreachable[0]
            )
            return (
                f"no wheel for '{match.group(1)}': pip could not reach the index "
                f"({reason.group(1).strip() if reason else 'connection failed'}): "
                "check the network, proxy and PIP_INDEX_URL"
            )
        if match:
            return (
                f"no wheel for '{match.group(1)}' for Python {python_version} on {platform} "
                "(sdist only?): pick a version with a wheel for the target, or build one"
            )
    if any("DO NOT MATCH THE HASHES" in line for line in lines):
        for index, line in enumerate(lines):
            match = re.match(r"(\S+==\S+) from (\S+)", line)
            if not match:
                continue
            filename = match.group(2).rstrip(":").rsplit("/", 1)[-1]
            rest = " ".join(lines[index + 1 : index + 3])
            expected = re.search(r"Expected sha256 ([0-9a-f]{64})", rest)
            got = re.search(r"Got\s+([0-9a-f]{64})", rest)
            detail = ""
            if expected and got:
                detail = (
                    f": the lock expects sha256:{expected.group(1)}, "
                    f"the index served {filename} with sha256:{got.group(1)}"
                )
            return (
                f"hash mismatch for '{match.group(1)}'{detail}: update the lock (pip hash), "
                f"check that it has a wheel for Python {python_version} on {platform}, "
                "or check the index"
            )
        return "hash mismatch in pip download: update the lock (pip hash) or check the index"
    errors = [line for line in lines if line.startswith("ERROR:")]
    last = errors[-1] if errors else (lines[-1] if lines else "no output")
    names = ", ".join(r.pin() for r in reqs)
    return f"pip download failed for {names}: {last.removeprefix('ERROR: ')}"
