"""Wheels built from sdists: a lock may pin a package that its index has only as source.

hydra-core 1.3 depends on ``antlr4-python3-runtime==4.9.3``, which PyPI has only as an
sdist, so ``pip-compile --generate-hashes`` pins that ``.tar.gz`` by its hash. The
wheelhouse (:mod:`.wheels`) fetches such an sdist, checks its hash against the lock, and
hands it here; this module turns it into a wheel, which is then installed into a layer
like any downloaded one.

**Isolated.** Building runs the package's own code (``setup.py``, its build backend), so
it happens in a throwaway container of the project's base image: no network, user
``nobody``, no capabilities. A small driver calls the PEP 517 hooks of the sdist's
declared backend directly, with orch's pinned build tools (:data:`BUILD_TOOLS`, fetched
by hash on the host like any locked wheel) on ``sys.path``: what ``pip wheel --no-index
--no-build-isolation`` would do, without needing pip in the image. An sdist whose
``[build-system] requires`` (or whose backend's ``get_requires_for_build_wheel``) names
more than those tools is refused, naming what it needs; one that compiles C extensions
fails for want of a compiler in the base image, and says so in one line.

**Deterministic.** The build sees the same inputs on every machine: the same path
(``/tmp/orch-build/src``), ``SOURCE_DATE_EPOCH`` (orch's fixed mtime, also stamped in
the zip), ``PYTHONHASHSEED=0``, umask 022, the C locale, the base image's interpreter.
The layer made from the wheel depends only on its file names, contents and executable
bits (:mod:`.envlayer` fixes mtimes, owners and order), which these inputs decide.

**Cached** in the wheelhouse under the sdist's hash, one folder per build recipe
(:func:`recipe`: format, tools, base image)::

    <wheels>/sha256/<sdist hex>/<name>-<version>.tar.gz              the checked sdist
    <wheels>/sha256/<sdist hex>/built-<recipe>/<name>-...-<tags>.whl  the wheel built from it

Why one module of this size: the build's isolation, its determinism and its cache key are
one recipe (:func:`recipe` names what the container sees); apart, one could change
without the others.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
import tempfile
import time
import tomllib
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packaging.requirements import InvalidRequirement
from packaging.requirements import Requirement as BuildRequirement
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion

from .._util.canonical import digest
from .._util.stopping import Stop
from ..daemon.client import DockerClient, describe
from ..errors import BuildCancelled, ImageError
from .lock import Requirement
from .tarball import fixed_mtime
from .target import marker_applies, marker_environment

if TYPE_CHECKING:
    from ..daemon.client import Container

#: Bumped whenever the way a wheel is built changes: every built wheel is rebuilt.
SDIST_FORMAT = 1
#: What every sdist is built with, pinned by hash: setuptools' PEP 517 backend (also the
#: legacy ``setup.py`` one) and wheel, which older ``setup.py`` files import.
BUILD_TOOLS = (
    Requirement(
        "setuptools",
        "80.9.0",
        ("sha256:062d34222ad13e0cc312a4c02d73f059e86a4acbfbdea8f8f76b28c99f306922",),
    ),
    Requirement(
        "wheel",
        "0.45.1",
        ("sha256:708e7481cc80179af0e556bbf0cc00b8444c7321e2700b8d8580231d13017248",),
    ),
)
#: The backend PEP 517 prescribes for an sdist that declares none.
LEGACY_BACKEND = "setuptools.build_meta:__legacy__"
WORK = "/tmp/orch-sdist"  # inputs, sent with put_archive (read-only for nobody)
BUILD = "/tmp/orch-build"  # where the driver unpacks and builds: the same on every machine
#: The driver's exit status when the sdist needs build requirements orch does not have.
_MISSING_REQUIRES = 4
_DRIVER = r"""
import importlib, json, os, re, sys, tarfile, tomllib, zipfile
work, build = WORK, BUILD
job = json.load(open(os.path.join(work, "job.json")))
os.umask(0o022)
tools = os.path.join(build, "tools")
for name in job["tools"]:
    with zipfile.ZipFile(os.path.join(work, name)) as wheel:
        wheel.extractall(tools)
src = os.path.join(build, "src")
archive = os.path.join(work, job["sdist"])
# The file's hash was checked on the host; the container is thrown away, and Debian's
# Python 3.11.2 has no extraction filters.
if archive.endswith(".zip"):
    with zipfile.ZipFile(archive) as z:
        z.extractall(src)
else:
    with tarfile.open(archive) as t:
        t.extractall(src)
tops = os.listdir(src)
root = os.path.join(src, tops[0]) if len(tops) == 1 else src
if not os.path.isdir(root):
    root = src
os.chdir(root)
system = {}
if os.path.isfile("pyproject.toml"):
    with open("pyproject.toml", "rb") as f:
        system = tomllib.load(f).get("build-system", {})
backend_name = system.get("build-backend") or LEGACY_BACKEND
paths = [os.path.join(root, p) for p in system.get("backend-path", [])]
sys.path[:0] = [*paths, tools]
module, _, attr = backend_name.partition(":")
backend = importlib.import_module(module)
for part in filter(None, attr.split(".")):
    backend = getattr(backend, part)
hook = getattr(backend, "get_requires_for_build_wheel", None)
needed = hook({}) if hook else []
have = set(job["have"])
def norm(text):
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", text)
    return re.sub(r"[-_.]+", "-", match.group(1)).lower() if match else text
missing = [r for r in needed if norm(r) not in have]
if missing:
    print("orch-missing-requires: " + json.dumps(missing), flush=True)
    sys.exit(MISSING)
out = os.path.join(build, "out")
os.makedirs(out)
print("orch-wheel: " + backend.build_wheel(out, {}), flush=True)
"""
_DRIVER = (
    _DRIVER.replace("WORK, BUILD", f"{WORK!r}, {BUILD!r}")
    .replace("LEGACY_BACKEND", repr(LEGACY_BACKEND))
    .replace("MISSING", str(_MISSING_REQUIRES))
)
# What a build that needs a C compiler prints when the image has none (setuptools'
# distutils, Python.h absent without python3-dev).
_NO_COMPILER = re.compile(
    r"command '[^']*\b(gcc|cc|clang|g\+\+|c\+\+)' failed"
    r"|unable to execute '[^']*\b(gcc|cc|clang)'"
    r"|Python\.h: No such file"
    r"|(gcc|cc|clang): (command )?not found"
)


def recipe(image_id: str) -> str:
    """What a built wheel depends on besides its sdist: the rules, the tools, the base
    image (its interpreter and what else it has, a compiler or none), the fixed mtime."""
    return digest(
        {
            "format": SDIST_FORMAT,
            "tools": [[t.name, t.version, list(t.hashes)] for t in BUILD_TOOLS],
            "base": image_id,
            "mtime": fixed_mtime(),
        }
    ).removeprefix("sha256:")


class SdistBuilder:
    """Builds the wheels of a lock's sdists in containers of ``image_id`` on ``client``."""

    def __init__(self, client: DockerClient, image_id: str) -> None:
        self.client = client
        self.image_id = image_id
        self.recipe = recipe(image_id)

    def _folder(self, cache_dir: Path, hexdigest: str) -> Path:
        return cache_dir / "sha256" / hexdigest / f"built-{self.recipe[:16]}"

    def built(self, req: Requirement, cache_dir: Path) -> Path | None:
        """The wheel built earlier from one of ``req``'s files by this recipe, if any."""
        for hexdigest in req.hex_digests():
            folder = self._folder(cache_dir, hexdigest)
            found = sorted(folder.glob("*.whl")) if folder.is_dir() else []
            if len(found) == 1:
                return found[0]
        return None

    def build(
        self,
        req: Requirement,
        sdist: Path,
        cache_dir: Path,
        python_version: str,
        platform: str,
        *,
        pip_options: Sequence[str] = (),
        stop: Stop | None = None,
        say: Callable[[str], None] | None = None,
    ) -> Path:
        """Build the wheel of ``sdist`` (already checked against ``req``'s hashes) and
        keep it in the wheelhouse beside the sdist; returns its path there."""
        from .wheels import ensure_wheels

        stop = stop or Stop()
        say = say or (lambda line: None)
        _check_build_system(req, sdist, python_version, platform)
        tools = ensure_wheels(
            BUILD_TOOLS, cache_dir, python_version, platform, pip_options=pip_options, stop=stop
        )
        say(f"environment: building {req.pin()} from its sdist {sdist.name} (no network)")
        started = time.monotonic()
        wheel_name, data = self._run(req, sdist, tools, stop)
        try:
            name, version, _, _ = parse_wheel_filename(wheel_name)
        except (InvalidWheelFilename, InvalidVersion) as exc:
            raise ImageError(f"building {req.pin()} gave {wheel_name!r}: {exc}") from exc
        if canonicalize_name(name) != req.name or str(version) != req.version:
            raise ImageError(
                f"building {req.pin()} from {sdist.name} gave {wheel_name}, "
                "another package or version: check the lock"
            )
        folder = self._folder(cache_dir, sdist.parent.name)
        # Written beside, then renamed: a folder with a wheel is a finished build.
        with tempfile.TemporaryDirectory(dir=sdist.parent, prefix=".build-") as tmp:
            (Path(tmp) / wheel_name).write_bytes(data)
            try:
                os.replace(tmp, folder)
            except OSError:
                if self.built(req, cache_dir) is None:  # not another build's result
                    raise
            Path(tmp).mkdir(exist_ok=True)  # for the context manager's cleanup
        say(f"environment: built {wheel_name} in {time.monotonic() - started:.1f} s")
        return folder / wheel_name

    def _run(
        self, req: Requirement, sdist: Path, tools: Sequence[Path], stop: Stop
    ) -> tuple[str, bytes]:
        """(wheel filename, wheel bytes) of a build in a container without network."""
        import docker.errors

        job = {
            "sdist": sdist.name,
            "tools": [tool.name for tool in tools],
            "have": [t.name for t in BUILD_TOOLS],
        }
        files = {"job.json": json.dumps(job).encode(), sdist.name: sdist.read_bytes()}
        files.update({tool.name: tool.read_bytes() for tool in tools})
        environment = {
            "SOURCE_DATE_EPOCH": str(fixed_mtime()),
            "PYTHONHASHSEED": "0",
            "PYTHONDONTWRITEBYTECODE": "1",
            "LC_ALL": "C.UTF-8",
            "TZ": "UTC",
            "HOME": f"{BUILD}/home",
            "PATH": "/usr/local/bin:/usr/bin:/bin",
        }
        container: Container | None = None
        try:
            container = self.client.containers.create(
                self.image_id,
                ["python3", "-I", "-c", _DRIVER],
                user="65534:65534",
                network_mode="none",
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                environment=environment,
                labels={"org.orch.role": "sdist-build"},
            )
            if not container.put_archive("/tmp", _inputs_tar(files)):
                raise ImageError(f"cannot send {sdist.name} to the build container")
            with stop.on_cancel(container.kill):
                if not stop.cancelled:
                    container.start()
                    status = container.wait().get("StatusCode")
            if stop.cancelled:
                raise BuildCancelled(f"building {req.pin()} was stopped")
            logs = container.logs(stdout=True, stderr=True).decode(errors="replace")
            if status != 0:
                raise ImageError(self._failure(req, int(status or 1), logs))
            match = re.search(r"^orch-wheel: (\S+)$", logs, re.MULTILINE)
            if match is None:
                raise ImageError(f"building {req.pin()} named no wheel: {_last_line(logs)}")
            stream, _ = container.get_archive(f"{BUILD}/out/{match.group(1)}")
            return match.group(1), _single_file(b"".join(stream), match.group(1))
        except docker.errors.DockerException as exc:
            raise ImageError(
                f"cannot build {req.pin()} in {self.image_id}: {describe(exc)}"
            ) from exc
        finally:
            if container is not None:
                try:
                    container.remove(force=True)
                except docker.errors.DockerException:  # noqa: S110 - best effort: it has exited
                    pass

    def _failure(self, req: Requirement, status: int, logs: str) -> str:
        missing = re.search(r"^orch-missing-requires: (.*)$", logs, re.MULTILINE)
        if status == _MISSING_REQUIRES and missing:
            return _unbuildable(req, f"its build backend asks for {missing.group(1)}")
        if _NO_COMPILER.search(logs):
            return (
                f"cannot build '{req.pin()}' from its sdist: it compiles C extensions and "
                f"the base image has no C compiler: lock a version of '{req.name}' that has a "
                "wheel for the target, or build the wheel yourself and lock it by its hash "
                "(serve it with --find-links)"
            )
        return f"building '{req.pin()}' from its sdist failed: {_last_line(logs)}"


def _unbuildable(req: Requirement, why: str) -> str:
    tools = " and ".join(t.pin() for t in BUILD_TOOLS)
    return (
        f"cannot build '{req.pin()}' from its sdist: {why}, and orch builds sdists with "
        f"{tools} only: lock a version of '{req.name}' that has a wheel for the target"
    )


def _check_build_system(req: Requirement, sdist: Path, python_version: str, platform: str) -> None:
    """Refuse an sdist whose declared build requirements orch's tools do not satisfy.

    Read from the archive's ``pyproject.toml`` on the host: reading runs none of its code.
    """
    system = _build_system(sdist)
    requires = system.get("requires", ["setuptools>=40.8.0"])
    if not isinstance(requires, list):
        raise ImageError(f"{sdist.name}: [build-system] requires is not a list")
    tools = {t.name: t for t in BUILD_TOOLS}
    environment = marker_environment(python_version, platform)
    for text in requires:
        try:
            need = BuildRequirement(str(text))
        except InvalidRequirement as exc:
            raise ImageError(f"{sdist.name}: cannot parse build requirement {text!r}") from exc
        where = f"{sdist.name} [build-system] requires"
        if need.marker is not None and not marker_applies(
            need.marker, where, environment, python_version
        ):
            continue
        tool = tools.get(canonicalize_name(need.name))
        if tool is None or not need.specifier.contains(tool.version, prereleases=True):
            raise ImageError(_unbuildable(req, f"it needs '{text}' to build"))
    backend = system.get("build-backend")
    if backend and not system.get("backend-path") and not str(backend).startswith("setuptools"):
        raise ImageError(_unbuildable(req, f"its build backend is {backend}"))


def _build_system(sdist: Path) -> dict[str, Any]:
    """The ``[build-system]`` table of the sdist's top-level ``pyproject.toml`` ({} if none)."""
    try:
        data = _top_level_file(sdist, "pyproject.toml")
    except (OSError, tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise ImageError(f"cannot read the sdist {sdist.name}: {exc}") from exc
    if data is None:
        return {}
    try:
        table = tomllib.loads(data.decode("utf-8")).get("build-system", {})
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ImageError(f"{sdist.name}: cannot read its pyproject.toml: {exc}") from exc
    return table if isinstance(table, dict) else {}


def _top_level_file(sdist: Path, name: str) -> bytes | None:
    if sdist.name.endswith(".zip"):
        with zipfile.ZipFile(sdist) as archive:
            names = [n for n in archive.namelist() if n.count("/") == 1 and n.endswith("/" + name)]
            return archive.read(names[0]) if len(names) == 1 else None
    with tarfile.open(sdist) as tar:
        for member in tar:
            parts = member.name.strip("./").split("/")
            if member.isfile() and len(parts) == 2 and parts[1] == name:
                handle = tar.extractfile(member)
                return handle.read() if handle is not None else None
    return None


def sdist_matches(filename: str, req: Requirement) -> bool:
    """Whether ``filename`` is an sdist of exactly ``req``'s name and version."""
    try:
        name, version = parse_sdist_filename(filename)
    except (InvalidSdistFilename, InvalidVersion):
        return False
    return canonicalize_name(name) == req.name and str(version) == req.version


def _inputs_tar(files: dict[str, bytes]) -> bytes:
    """The build's inputs as a tar for ``put_archive`` into /tmp, readable by anyone."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        folder = tarfile.TarInfo(WORK.removeprefix("/tmp/"))
        folder.type, folder.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(folder)
        for name in sorted(files):
            info = tarfile.TarInfo(f"{folder.name}/{name}")
            info.size, info.mode = len(files[name]), 0o644
            tar.addfile(info, io.BytesIO(files[name]))
    return buffer.getvalue()


def _single_file(archive: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar:
            if member.isfile() and member.name.rsplit("/", 1)[-1] == name:
                handle = tar.extractfile(member)
                if handle is not None:
                    return handle.read()
    raise ImageError(f"the build container did not return {name}")


def _last_line(logs: str) -> str:
    lines = [line.strip() for line in logs.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"
