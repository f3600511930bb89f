"""The wheelhouse: a lock's wheels for the target, content-addressed and fetched once.

A lock (:mod:`.lock`) pins every package with its hashes. Wheels are fetched on the
host (containers cannot reach the index) by one ``pip download`` for the target
interpreter and platform (:mod:`.target`), checked against the lock, and kept under
``cache_dir/sha256/<hex>/`` so that a warm build touches no network.

Which wheel a requirement resolves to, when its hashes name several compatible
ones, is decided by pip once and recorded under ``cache_dir/resolved/``: a warm
cache then makes the same choice pip made, never a different one that happens to
be on disk.

A requirement pip finds no wheel for may be pinned by its sdist's hash (pip-compile
does so for sdist-only releases). Given an :class:`~.sdist.SdistBuilder`, orch fetches
that sdist itself (pip cannot download one without running its build backend here, on
the host: pip is asked only where the file is), keeps it under
``cache_dir/sha256/<hex>/`` once its hash matches the lock, and has it built into a
wheel in a container (:mod:`.sdist`).

Why one module of this size: pip's download, the recorded resolution and the sdist fetch
decide together which file a requirement becomes, and each reads the others' cache
layout.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.requirements import InvalidRequirement
from packaging.requirements import Requirement as _PkgRequirement
from packaging.tags import Tag
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from .._util.canonical import digest
from .._util.files import atomic_write, sha256_file
from .._util.ids import SHA256_HEX
from .._util.stopping import Stop
from ..errors import BuildCancelled, ImageError

# Re-exported: whoever fetches wheels also parses the lock and names the target.
from .lock import Lock as Lock
from .lock import Requirement as Requirement
from .lock import lock_digest as lock_digest
from .lock import parse_lock as parse_lock
from .lock import read_lock as read_lock
from .target import DEFAULT_PLATFORM as DEFAULT_PLATFORM
from .target import DEFAULT_PYTHON as DEFAULT_PYTHON
from .target import pip_download_args as pip_download_args
from .target import tag_ranks
from .target import target_platforms as target_platforms

if TYPE_CHECKING:
    from .sdist import SdistBuilder


def ensure_wheels(
    reqs: Sequence[Requirement],
    cache_dir: Path,
    python_version: str = DEFAULT_PYTHON,
    platform: str = DEFAULT_PLATFORM,
    *,
    pip_options: Sequence[str] = (),
    stop: Stop | None = None,
    say: Callable[[str], None] | None = None,
    sdists: SdistBuilder | None = None,
) -> list[Path]:
    """One wheel per requirement, from the cache or from one ``pip download``.

    ``pip_options`` are the lock's index lines (:attr:`Lock.pip_options`), passed to pip.
    Returns the cached wheel paths (``cache_dir/sha256/<hex>/<file>``) sorted by name.
    pip runs in a session of its own, so a terminal's Ctrl-C does not reach it: a drained
    ``stop`` lets the download finish, a cancelled one terminates it. With ``sdists``, a
    requirement that has no wheel for the target but an sdist with a locked hash gets a
    wheel built from it (``cache_dir/sha256/<sdist hex>/built-<recipe>/<file>``).
    """
    tags = tag_ranks(python_version, platform)
    platforms = target_platforms(platform)
    stop = stop or Stop()
    found: dict[str, Path] = {}
    missing: list[Requirement] = []
    for req in reqs:
        if not req.hashes:
            raise ImageError(f"'{req.name}' has no hash: pin it with hashes (pip hash)")
        # A built wheel exists only where pip found no wheel for this target.
        cached = sdists.built(req, cache_dir) if sdists is not None else None
        if cached is None:
            cached = _cached_wheel(req, cache_dir, python_version, platforms, tags)
        if cached is None:
            missing.append(req)
        else:
            found[req.name] = cached
    if missing:
        if say is not None:
            say(f"environment: downloading {len(missing)} of {len(reqs)} wheels with pip")
        fetched, sources = _download(
            missing, cache_dir, python_version, platform, pip_options, stop, sdists is not None
        )
        found.update(fetched)
        for req in sources:
            assert sdists is not None  # sources are only looked for with a builder
            sdist = _fetch_sdist(req, cache_dir, python_version, platform, pip_options, stop)
            found[req.name] = sdists.build(
                req,
                sdist,
                cache_dir,
                python_version,
                platform,
                pip_options=pip_options,
                stop=stop,
                say=say,
            )
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
    reqs: list[Requirement],
    cache_dir: Path,
    python_version: str,
    platform: str,
    pip_options: Sequence[str],
    stop: Stop,
    sources: bool = False,
) -> tuple[dict[str, Path], list[Requirement]]:
    """The wheels pip downloads for ``reqs``; with ``sources``, also the requirements
    pip found no wheel for (pip stops at the first: each is taken out, pip asked again)."""
    by_name = {req.name: req for req in reqs}
    platforms = target_platforms(platform)
    cache_dir.mkdir(parents=True, exist_ok=True)
    no_wheel: list[Requirement] = []
    # Inside cache_dir, so that moving into the wheelhouse is an atomic rename.
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".download-") as tmp:
        work = Path(tmp)
        out = work / "wheels"
        while True:
            wanted = [req for req in reqs if req not in no_wheel]
            if not wanted:
                return {}, no_wheel
            result = _run_pip(
                _pip_args(wanted, work, out, python_version, platform, pip_options), stop
            )
            if stop.cancelled:
                raise BuildCancelled("no wheel was downloaded")
            if result.returncode == 0:
                break
            lacking = by_name.get(_no_wheel_for(result.stderr) or "") if sources else None
            if lacking is None or lacking in no_wheel:
                raise ImageError(_pip_error(result.stderr, wanted, python_version, platform))
            no_wheel.append(lacking)
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
    absent = sorted(set(by_name) - set(fetched) - {req.name for req in no_wheel})
    if absent:
        raise ImageError(
            f"pip download returned no wheel for '{by_name[absent[0]].pin()}': "
            "check the lock and pip's index configuration"
        )
    return fetched, no_wheel


def _pip_args(
    reqs: Sequence[Requirement],
    work: Path,
    out: Path,
    python_version: str,
    platform: str,
    pip_options: Sequence[str],
) -> list[str]:
    """``pip download`` of ``reqs`` by hash, for the target, into ``out``."""
    lock = work / "requirements.txt"
    lock.write_text(
        "".join(req.pin() + "".join(f" --hash={h}" for h in req.hashes) + "\n" for req in reqs)
    )
    args = [sys.executable, "-m", "pip", "download"]
    args += pip_download_args(python_version, platform)
    args += ["--no-input", "--disable-pip-version-check", "--progress-bar", "off"]
    args += list(pip_options)
    return [*args, "-d", str(out), "-r", str(lock)]


def _no_wheel_for(stderr: str) -> str | None:
    """The requirement pip found no wheel for, when the index answered (else None)."""
    if _unreachable(stderr.splitlines()):
        return None
    match = re.search(r"No matching distribution found for (\S+)", stderr)
    if match is None:
        return None
    try:
        return canonicalize_name(_PkgRequirement(match.group(1)).name)
    except InvalidRequirement:
        return None


# -- sdists --------------------------------------------------------------------------


def _fetch_sdist(
    req: Requirement,
    cache_dir: Path,
    python_version: str,
    platform: str,
    pip_options: Sequence[str],
    stop: Stop,
) -> Path:
    """``req``'s sdist with a locked hash: from ``cache_dir/sha256/<hex>/`` or downloaded
    there, its hash checked before it is kept."""
    from .sdist import sdist_matches

    for hexdigest in req.hex_digests():
        folder = cache_dir / "sha256" / hexdigest
        for path in sorted(folder.iterdir()) if folder.is_dir() else ():
            if path.is_file() and sdist_matches(path.name, req):
                return path
    urls = _sdist_urls(req, cache_dir, python_version, platform, pip_options, stop)
    if not urls:
        raise ImageError(
            f"no wheel for '{req.pin()}' for Python {python_version} on {platform}, and no "
            "sdist of it on the index: pick a version with a wheel for the target"
        )
    mismatches: list[str] = []
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".download-") as tmp:
        for url in urls:
            filename = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
            path = Path(tmp) / filename
            _fetch_url(url, path, req)
            if stop.cancelled:
                raise BuildCancelled("the sdist was not downloaded")
            actual = "sha256:" + sha256_file(path)
            if actual not in req.hashes:
                mismatches.append(f"{filename} has {actual}")
                continue
            target = cache_dir / "sha256" / actual.removeprefix("sha256:") / filename
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            return target
    raise ImageError(
        f"hash mismatch for '{req.pin()}': the lock expects {' or '.join(req.hashes)}, "
        f"the index's sdist {', '.join(mismatches)}: update the lock (pip hash) or check the index"
    )


def _sdist_urls(
    req: Requirement,
    cache_dir: Path,
    python_version: str,
    platform: str,
    pip_options: Sequence[str],
    stop: Stop,
) -> list[str]:
    """Where pip sees ``req``'s sdists, with pip's own index configuration and the lock's.

    A binary-only ``pip download -vvv`` logs each sdist it skips ("No sources permitted");
    downloading one through pip would prepare it, running its build backend on the host.
    """
    from .sdist import sdist_matches

    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".download-") as tmp:
        args = _pip_args([req], Path(tmp), Path(tmp) / "out", python_version, platform, pip_options)
        result = _run_pip([*args, "-vvv"], stop)
    if stop.cancelled:
        raise BuildCancelled("no sdist was downloaded")
    urls = []
    pattern = re.compile(r"Skipping link: No sources permitted for [^:]+: (\S+)")
    for match in pattern.finditer(result.stdout + result.stderr):
        url = match.group(1)
        name = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
        if sdist_matches(name, req) and url not in urls:
            urls.append(url)
    return urls


def _fetch_url(url: str, path: Path, req: Requirement) -> None:
    """Copy ``url`` (``file:``, ``http:``, ``https:``) to ``path``, with pip's CA bundle."""
    scheme = urllib.parse.urlsplit(url).scheme
    try:
        if scheme == "file":
            shutil.copyfile(urllib.request.url2pathname(urllib.parse.urlsplit(url).path), path)
            return
        if scheme not in ("http", "https"):
            raise ImageError(f"cannot download the sdist of '{req.pin()}' from {url}")
        context = ssl.create_default_context(cafile=os.environ.get("PIP_CERT") or None)
        timeout = float(os.environ.get("PIP_DEFAULT_TIMEOUT") or 60)
        with (
            urllib.request.urlopen(url, timeout=timeout, context=context) as response,  # noqa: S310 - scheme checked above
            path.open("wb") as out,
        ):
            shutil.copyfileobj(response, out, 1 << 20)
    except (OSError, urllib.error.URLError, ValueError) as exc:
        raise ImageError(f"cannot download the sdist of '{req.pin()}' from {url}: {exc}") from exc


def _run_pip(args: list[str], stop: Stop) -> subprocess.CompletedProcess[str]:
    try:
        with (
            subprocess.Popen(
                args,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                text=True,
                start_new_session=True,
            ) as proc,
            stop.on_cancel(proc.terminate),
        ):
            out, err = proc.communicate()
    except OSError as exc:
        raise ImageError(f"cannot run pip ({args[0]} -m pip): {exc}") from exc
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def _pip_error(stderr: str, reqs: list[Requirement], python_version: str, platform: str) -> str:
    """One line saying what pip could not do, from pip's stderr."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if any("No module named pip" in line for line in lines):
        return f"pip is not installed for {sys.executable}: install pip in orch's environment"
    unreachable = _unreachable(lines)
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
            expected = re.search(rf"Expected sha256 ({SHA256_HEX})", rest)
            got = re.search(rf"Got\s+({SHA256_HEX})", rest)
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


def _unreachable(lines: Sequence[str]) -> list[str]:
    """pip's lines saying that it could not connect to an index."""
    return [
        line
        for line in lines
        if "Retrying" in line
        and any(
            kind in line for kind in ("NewConnectionError", "SSLError", "ProxyError", "Timeout")
        )
    ]
