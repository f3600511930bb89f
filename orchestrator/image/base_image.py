"""The default base image, built reproducibly from Debian packages.

A debootstrapped, normalized root filesystem (:mod:`.rootfs`) becomes one deterministic
layer (:mod:`.tarball`) and a canonical image config. The image ID is the sha256 of that
config, so the same package set gives the same ID on any machine, any day. Building is slow
(about a minute), so the computed ID is cached next to the rootfs, keyed by the package
list, and a build whose image the daemon already has costs a lookup.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .._util.files import atomic_write
from .._util.ids import HEX64
from ..daemon.client import DockerClient
from ..errors import BackendError, ImageError
from . import cache
from .archive import ThinArchive, has_image, tag_image
from .imageconfig import ImageConfig

# The recipe's first half, re-exported: building the image starts with the rootfs.
from .rootfs import DEFAULT_MIRROR as DEFAULT_MIRROR
from .rootfs import SUITE as SUITE
from .rootfs import Log as Log
from .rootfs import apt_mirror as apt_mirror
from .rootfs import debootstrap as debootstrap
from .rootfs import normalize_rootfs as normalize_rootfs
from .rootfs import quiet, read_or_empty
from .rootfs import read_packages as read_packages
from .rootfs import remove_tree as remove_tree
from .tarball import Entry, fixed_mtime, tree_entries, write_layer_file

TAG = "orch/base:bookworm"
RECIPE = f"orch base-image {SUITE}"
#: Bump when the recipe or the normalization changes: it keys the cached image IDs.
RECIPE_VERSION = "1"
ENV = [
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG=C.UTF-8",
]
LABEL_RECIPE = "org.orch.base.recipe"
LABEL_PACKAGES = "org.orch.base.packages"
#: The package set of the default base image, shipped in the package (package data) so that
#: ``orch image base`` builds it from an installed wheel; ``images/`` in the source tree
#: links to it, and ``make base-image`` rewrites it when Debian's packages moved on.
PACKAGES_FILE = Path(__file__).with_name("bookworm-python.packages.txt")


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
    if not HEX64.match(hex_id):
        raise ImageError(f"invalid diff id {diff_id!r}: expected sha256:<64 hex digits>")
    path = layer_cache_dir(cache_root) / f"{hex_id}.tar"
    return path if path.is_file() else None


# --- the machine and the cache key -------------------------------------------------------


def docker_arch() -> str:
    """This machine's architecture as Docker names it."""
    machine = platform.machine().lower()
    names = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
    if machine not in names:
        raise ImageError(f"unsupported architecture {machine!r} for the base image")
    return names[machine]


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

    try:
        if client.images.get(image_ref).id == _tag_target(client, tag):
            return
        tag_image(client, image_ref, tag)
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


def default_image_id(client: DockerClient, cache_root: Path | None = None) -> str | None:
    """The ID of the default base image (the package set of :data:`PACKAGES_FILE`) when the
    daemon behind ``client`` has it, whoever built it there; None when it must be built."""
    image = fast_path(client, PACKAGES_FILE, cache_root)
    if image is not None:
        return image.image_id
    import docker.errors

    try:
        found = client.images.get(TAG)
    except docker.errors.DockerException:
        return None  # not there (or not readable): building it is the answer either way
    labels = found.attrs.get("Config", {}).get("Labels") or {}
    packages = PACKAGES_FILE.read_text(encoding="utf-8")
    if labels.get(LABEL_RECIPE) != RECIPE or labels.get(LABEL_PACKAGES) != packages:
        return None
    return str(found.id)


def build_image(
    rootfs: Path, log: Log = quiet, cache_root: Path | None = None
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
    log: Log = quiet,
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
    old = read_or_empty(path) if path.is_file() else None
    if old == packages:
        return
    if old is not None and not os.access(path, os.W_OK):
        # An installed wheel's copy, read-only for this user: it keeps the release's set.
        log(f"the package set differs from {path} (read-only, kept): the base image ID "
            "differs from the one this release of orch records")
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
