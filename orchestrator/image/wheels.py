"""The wheelhouse: a lock's wheels for the target, content-addressed and fetched once.

A lock (:mod:`.lock`) pins every package with its hashes. Wheels are fetched on the
host (containers cannot reach the index) by one ``pip download`` for the target
interpreter and platform (:mod:`.target`), checked against the lock, and kept under
``cache_dir/sha256/<hex>/`` so that a warm build touches no network.

Which wheel a requirement resolves to, when its hashes name several compatible
ones, is decided by pip once and recorded under ``cache_dir/resolved/``: a warm
cache then makes the same choice pip made, never a different one that happens to
be on disk.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from packaging.tags import Tag
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from ..canonical import digest
from ..errors import BuildCancelled, ImageError
from ..files import atomic_write, sha256_file
from ..stopping import Stop

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


def ensure_wheels(
    reqs: Sequence[Requirement],
    cache_dir: Path,
    python_version: str = DEFAULT_PYTHON,
    platform: str = DEFAULT_PLATFORM,
    *,
    pip_options: Sequence[str] = (),
    stop: Stop | None = None,
    say: Callable[[str], None] | None = None,
) -> list[Path]:
    """One wheel per requirement, from the cache or from one ``pip download``.

    ``pip_options`` are the lock's index lines (:attr:`Lock.pip_options`), passed to pip.
    Returns the cached wheel paths (``cache_dir/sha256/<hex>/<file>``) sorted by name.
    pip runs in a session of its own, so a terminal's Ctrl-C does not reach it: a drained
    ``stop`` lets the download finish, a cancelled one terminates it.
    """
    tags = tag_ranks(python_version, platform)
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
        if say is not None:
            say(f"environment: downloading {len(missing)} of {len(reqs)} wheels with pip")
        found.update(
            _download(missing, cache_dir, python_version, platform, pip_options, stop or Stop())
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
        args += list(pip_options)
        args += ["-d", str(out), "-r", str(lock)]
        result = _run_pip(args, stop)
        if stop.cancelled:
            raise BuildCancelled("no wheel was downloaded")
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
