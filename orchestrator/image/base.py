"""The default base image, built reproducibly from Debian packages.

``debootstrap --variant=minbase --include=python3`` gives a root filesystem; what varies
between two debootstraps (logs, caches, the host's hostname and resolv.conf, password-change
dates in shadow, compiled bytecode, device nodes, the mirror URL) is removed or fixed; the tree
becomes one deterministic layer (:mod:`.tarball`) and a canonical image config. The image ID
is the sha256 of that config, so the same package set gives the same ID on any machine, any
day. Building is slow (about a minute), so the computed ID is cached next to the rootfs,
keyed by the package list, and a build whose image the daemon already has costs a lookup.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..docker_api import DockerClient
from ..errors import BackendError, ImageError
from ..files import atomic_write
from . import cache
from .archive import ThinArchive, has_image
from .imageconfig import ImageConfig
from .tarball import Entry, fixed_mtime, tree_entries, write_layer_file

SUITE = "bookworm"
TAG = "orch/base:bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
RECIPE = f"orch base-image {SUITE}"
#: Bump when the recipe or the normalization changes: it keys the cached image IDs.
RECIPE_VERSION = "1"
ENV = [
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG=C.UTF-8",
]
LABEL_RECIPE = "org.orch.base.recipe"
LABEL_PACKAGES = "org.orch.base.packages"

Log = Callable[[str], None]


def _quiet(_message: str) -> None:
    return None


@dataclass(frozen=True)
class BaseImage:
    """A built base image: its ID, its single layer and the exact config bytes."""

    image_id: str
    diff_id: str
    config: bytes
    packages: str


# --- where things live -------------------------------------------------------------------


# Every function below that touches the cache takes ``cache_root`` (None: the default root,
# see .cache), so the base build and the run-image build share one cache.


def base_cache_dir(suite: str = SUITE, cache_root: Path | None = None) -> Path:
    """The rootfs and the cached image IDs of one suite."""
    return cache.base(suite, cache_root)


def layer_cache_dir(cache_root: Path | None = None) -> Path:
    """Layer tars, named ``<hex of the diff id>.tar``."""
    return cache.layers(cache_root)


def base_layer_path(diff_id: str, cache_root: Path | None = None) -> Path | None:
    """The cached layer tar with this diff ID, or None when it is not (or no longer) cached."""
    hex_id = diff_id.removeprefix("sha256:")
    if not re.fullmatch(r"[0-9a-f]{64}", hex_id):
        raise ImageError(f"invalid diff id {diff_id!r}: expected sha256:<64 hex digits>")
    path = layer_cache_dir(cache_root) / f"{hex_id}.tar"
    return path if path.is_file() else None


# --- inputs ------------------------------------------------------------------------------


def apt_mirror(apt_dir: Path = Path("/etc/apt")) -> str:
    """The host's Debian mirror: the first ``deb`` source for a plain suite, else the default.

    Reads deb822 ``*.sources`` files first, then one-line ``sources.list`` files.
    """
    for sources in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", _read(sources)):
            fields = _deb822_fields(stanza)
            suites = fields.get("suites", "").split()
            if "deb" in fields.get("types", "").split() and SUITE in suites:
                uris = fields.get("uris", "").split()
                if uris:
                    return uris[0].rstrip("/")
    one_line = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for sources in one_line:
        for line in _read(sources).splitlines():
            match = re.match(r"deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line.strip())
            if match and match.group(2) == SUITE:
                return match.group(1).rstrip("/")
    return DEFAULT_MIRROR


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _deb822_fields(stanza: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    key = ""
    for line in stanza.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        if line[0].isspace() and key:
            fields[key] += " " + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
    return fields


def docker_arch() -> str:
    """This machine's architecture as Docker names it."""
    machine = platform.machine().lower()
    names = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
    if machine not in names:
        raise ImageError(f"unsupported architecture {machine!r} for the base image")
    return names[machine]


# --- the root filesystem -----------------------------------------------------------------


def debootstrap(rootfs: Path, mirror: str, suite: str = SUITE, log: Log = _quiet) -> None:
    """Create ``rootfs`` with debootstrap unless it is already there.

    Debootstrap runs into a sibling directory that is renamed at the end, so a rootfs that
    exists is complete. (A directory, so not :func:`~orchestrator.files.atomic_writer`,
    which publishes one file.)
    """
    if rootfs.is_dir():
        return
    if shutil.which("debootstrap") is None:
        raise ImageError("debootstrap is not installed: run scripts/ensure-docker.sh (as root)")
    work = rootfs.with_name(rootfs.name + ".partial")
    remove_tree(work)
    rootfs.parent.mkdir(parents=True, exist_ok=True)
    log(f"debootstrap {suite} from {mirror} into {rootfs} (about a minute)")
    cmd = ["debootstrap", "--variant=minbase", "--include=python3", suite, str(work), mirror]
    # A fixed umask and locale: files that debootstrap's scripts create take their modes and
    # contents from them.
    env = {**os.environ, "LC_ALL": "C", "LANGUAGE": "", "DEBIAN_FRONTEND": "noninteractive"}
    result = subprocess.run(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, umask=0o022
    )
    if result.returncode != 0:
        tail = "; ".join(result.stdout.strip().splitlines()[-3:])
        remove_tree(work)
        raise ImageError(f"debootstrap failed (exit {result.returncode}): {tail}")
    os.replace(work, rootfs)


def remove_tree(path: Path) -> None:
    """``rm -rf path``, after unmounting anything left mounted below it (proc, sys)."""
    if not path.exists():
        return
    for mount in sorted(_mounts_below(path), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], check=False, capture_output=True)
    shutil.rmtree(path, ignore_errors=True)
    if path.exists():
        raise ImageError(f"could not remove {path}")


def _mounts_below(path: Path) -> list[str]:
    prefix = str(path.resolve()).rstrip("/") + "/"
    mounts = []
    for line in _read(Path("/proc/self/mountinfo")).splitlines():
        fields = line.split()
        if len(fields) > 4:
            target = fields[4].replace("\\040", " ")
            if (target + "/").startswith(prefix):
                mounts.append(target)
    return mounts


def normalize_rootfs(rootfs: Path) -> None:
    """Remove or fix what differs between two debootstraps of the same packages.

    Idempotent. Checked by building twice into two directories and diffing contents and
    ``find -printf '%p %y %m %U %G %s %l'`` listings.
    """
    for pattern in (
        "var/cache/apt/*",
        "var/lib/apt/lists/*",
        "var/cache/ldconfig/aux-cache",  # records inode numbers and ctimes
        "var/cache/debconf/*-old",
        "var/lib/dpkg/*-old",
        "etc/*-",  # passwd-/shadow- backups, written with the build date
        "dev/*",  # device nodes and /proc links: Docker provides /dev at run time
        "var/log/*",
    ):
        for path in rootfs.glob(pattern):
            _remove(path)
    # The login records are expected to exist (with their group and mode), but empty.
    for name, mode, gid in (("lastlog", 0o664, 43), ("wtmp", 0o664, 43), ("btmp", 0o660, 43)):
        _write(rootfs / "var/log" / name, b"", mode, gid)
    (rootfs / "var/log/apt").mkdir(mode=0o755, exist_ok=True)
    _remove_bytecode(rootfs)
    # Copied from the host by debootstrap; Docker bind-mounts its own at run time.
    _write(rootfs / "etc/hostname", b"localhost\n", 0o644)
    _write(rootfs / "etc/resolv.conf", b"", 0o644)
    if (rootfs / "etc/machine-id").exists():
        _write(rootfs / "etc/machine-id", b"", 0o444)
    # Names the mirror used for the build, which must not change the image.
    _write(rootfs / "etc/apt/sources.list", f"deb {DEFAULT_MIRROR} {SUITE} main\n".encode(), 0o644)
    _fix_shadow_dates(rootfs / "etc/shadow")


def _remove_bytecode(rootfs: Path) -> None:
    """Bytecode embeds source mtimes, which the layer replaces by one fixed mtime."""
    for dirpath, dirnames, filenames in os.walk(rootfs):
        if "__pycache__" in dirnames:
            shutil.rmtree(Path(dirpath, "__pycache__"))
            dirnames.remove("__pycache__")
        for name in filenames:
            if name.endswith(".pyc"):
                Path(dirpath, name).unlink()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _write(path: Path, data: bytes, mode: int, gid: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)
    if gid is not None:
        os.chown(path, 0, gid)


def _fix_shadow_dates(shadow: Path) -> None:
    """Set the "last password change" field (days since 1970) to the fixed build date."""
    if not shadow.is_file():
        return
    day = str(fixed_mtime() // 86400)
    lines = []
    for line in shadow.read_text(encoding="utf-8").splitlines():
        fields = line.split(":")
        if len(fields) > 2 and fields[2]:
            fields[2] = day
        lines.append(":".join(fields))
    st = shadow.stat()
    shadow.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.chown(shadow, st.st_uid, st.st_gid)
    os.chmod(shadow, st.st_mode & 0o7777)


def read_packages(rootfs: Path) -> str:
    """The installed packages of ``rootfs``, one ``name version arch`` a line, sorted."""
    cmd = [
        "dpkg-query",
        f"--admindir={rootfs / 'var/lib/dpkg'}",
        "-W",
        "-f=${Package} ${Version} ${Architecture}\\n",
    ]
    try:
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ImageError(f"cannot list the packages of {rootfs}: {exc}") from exc
    return "".join(line + "\n" for line in sorted(out.splitlines()) if line)


def packages_key(packages: str) -> str:
    """What a cached image ID is valid for: the package set, the recipe, the mtime, the arch."""
    material = f"{RECIPE_VERSION}\n{fixed_mtime()}\n{docker_arch()}\n{packages}"
    return hashlib.sha256(material.encode()).hexdigest()


# --- layer and config --------------------------------------------------------------------


def rootfs_entries(rootfs: Path) -> list[Entry]:
    """The layer entries of ``rootfs``, keeping each file's owner (shadow, setgid tools)."""
    entries = []
    for entry in tree_entries(rootfs):
        st = os.lstat(rootfs / entry.path)
        entries.append(replace(entry, uid=st.st_uid, gid=st.st_gid))
    return entries


def write_rootfs_layer(rootfs: Path, cache_root: Path | None = None) -> tuple[str, Path]:
    """Write the layer of ``rootfs`` into the layer cache; returns (diff_id, path)."""
    directory = layer_cache_dir(cache_root)
    # The final name is the layer's digest, known only once every byte is written: the tar
    # goes (atomically, synced) to a scratch name first, then is renamed to its digest.
    tmp = directory / f"incoming-{os.getpid()}.tar"
    try:
        diff_id = write_layer_file(rootfs_entries(rootfs), tmp)
        path = directory / f"{diff_id.removeprefix('sha256:')}.tar"
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return diff_id, path


def created_timestamp() -> str:
    """The fixed creation time (SOURCE_DATE_EPOCH when set), RFC 3339 in UTC."""
    return datetime.fromtimestamp(fixed_mtime(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def image_config(diff_id: str, packages: str, arch: str) -> bytes:
    """The canonical image config JSON: its sha256 is the image ID."""
    created = created_timestamp()
    config: dict[str, Any] = {
        "architecture": arch,
        "os": "linux",
        "created": created,
        "config": {
            "Env": list(ENV),
            "Cmd": ["python3"],
            "Labels": {LABEL_RECIPE: RECIPE, LABEL_PACKAGES: packages},
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": created, "created_by": RECIPE}],
    }
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


def image_id(config: bytes) -> str:
    return "sha256:" + hashlib.sha256(config).hexdigest()


# --- the cached ID -----------------------------------------------------------------------


def _id_cache_file(key: str, cache_root: Path | None) -> Path:
    return base_cache_dir(cache_root=cache_root) / "ids" / f"{key}.json"


def cached_image(packages: str, cache_root: Path | None = None) -> BaseImage | None:
    """The image built earlier from this package set, if this machine remembers it."""
    path = _id_cache_file(packages_key(packages), cache_root)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        config = record["config"].encode()
    except (OSError, ValueError, KeyError, AttributeError):
        return None
    if image_id(config) != record.get("image_id"):
        return None
    return BaseImage(record["image_id"], record["diff_id"], config, packages)


def remember_image(image: BaseImage, cache_root: Path | None = None) -> None:
    path = _id_cache_file(packages_key(image.packages), cache_root)
    record = {"image_id": image.image_id, "diff_id": image.diff_id, "config": image.config.decode()}
    atomic_write(path, (json.dumps(record, sort_keys=True, indent=1) + "\n").encode())


# --- the daemon --------------------------------------------------------------------------


def ensure_tag(client: DockerClient, image_ref: str, tag: str = TAG) -> None:
    """Point ``tag`` at ``image_ref`` unless it already does."""
    import docker.errors

    repo, _, name = tag.rpartition(":")
    try:
        if client.images.get(image_ref).id == _tag_target(client, tag):
            return
        client.api.tag(image_ref, repo, name)
    except docker.errors.DockerException as exc:
        raise BackendError(f"cannot tag {image_ref} as {tag}: {exc}") from exc


def _tag_target(client: DockerClient, tag: str) -> str | None:
    import docker.errors

    try:
        return str(client.images.get(tag).id)
    except docker.errors.ImageNotFound:
        return None


def base_archive(image: BaseImage, layer: Path, tag: str = TAG) -> ThinArchive:
    """The docker-archive that loads ``image`` (its config and its one layer) as ``tag``.

    Written by the same deterministic writer as the run images' thin archives.
    """
    archive = ThinArchive()
    archive.add_layer(image.diff_id, path=layer)
    archive.add_image(ImageConfig(image.config), [tag])
    return archive


# --- the whole build ---------------------------------------------------------------------


@contextmanager
def _build_lock(cache_root: Path | None) -> Iterator[None]:
    """One build at a time per cache (make setup and a test run may race)."""
    directory = base_cache_dir(cache_root=cache_root)
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def fast_path(
    client: DockerClient, packages_file: Path, cache_root: Path | None = None
) -> BaseImage | None:
    """The image for the recorded package set when the daemon already has it (no rootfs)."""
    if not packages_file.is_file():
        return None
    image = cached_image(packages_file.read_text(encoding="utf-8"), cache_root)
    if image is None or not has_image(client, image.image_id):
        return None
    return image


def build_image(
    rootfs: Path, log: Log = _quiet, cache_root: Path | None = None
) -> tuple[BaseImage, Path]:
    """Normalize ``rootfs`` and make (or reuse) its layer; returns the image and the layer."""
    normalize_rootfs(rootfs)
    packages = read_packages(rootfs)
    cached = cached_image(packages, cache_root)
    if cached is not None:
        layer = base_layer_path(cached.diff_id, cache_root)
        if layer is not None:
            return cached, layer
    log("writing the base layer")
    diff_id, layer = write_rootfs_layer(rootfs, cache_root)
    config = image_config(diff_id, packages, docker_arch())
    image = BaseImage(image_id(config), diff_id, config, packages)
    remember_image(image, cache_root)
    return image, layer


def ensure_base_image(
    client: DockerClient,
    packages_file: Path,
    *,
    mirror: str | None = None,
    rootfs: Path | None = None,
    frozen: bool = False,
    log: Log = _quiet,
    cache_root: Path | None = None,
) -> BaseImage:
    """Make sure the daemon behind ``client`` has the base image, tagged :data:`TAG`.

    ``packages_file`` records the package set the image was built from; it is rewritten when
    a fresh debootstrap brings other versions, unless ``frozen``, where that is an error.
    The rootfs, the layer and the cached ID live under ``cache_root`` (see :mod:`.cache`).
    """
    image = fast_path(client, packages_file, cache_root)
    if image is not None:
        ensure_tag(client, image.image_id)
        return image
    with _build_lock(cache_root):
        rootfs = rootfs or base_cache_dir(cache_root=cache_root) / "rootfs"
        debootstrap(rootfs, mirror or apt_mirror(), log=log)
        image, layer = build_image(rootfs, log, cache_root)
        _record_packages(packages_file, image.packages, frozen, log, cache_root)
        if has_image(client, image.image_id):
            log(f"the daemon already has {image.image_id}")
        else:
            log(f"loading {image.image_id} into the daemon")
            base_archive(image, layer).load(client)
        ensure_tag(client, image.image_id)
    return image


def _record_packages(
    path: Path, packages: str, frozen: bool, log: Log, cache_root: Path | None
) -> None:
    old = _read(path) if path.is_file() else None
    if old == packages:
        return
    if frozen:
        raise ImageError(
            f"the debootstrapped package set differs from {path}: the base image would change "
            f"(remove the cached rootfs under {base_cache_dir(cache_root=cache_root)} or build "
            "without --frozen)"
        )
    if old is not None:
        log(f"package set changed: rewriting {path} (the base image ID changes)")
    path.write_text(packages, encoding="utf-8")
