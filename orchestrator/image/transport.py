"""Images travel by digest: into the store's blobs, to and from a registry, onto any daemon.

Each blob is stored once under ``blobs/sha256/<hex>``: image configs, and layer tars
gzip-compressed (:mod:`.compress`) under their diff IDs; layers stored uncompressed by
earlier versions load as they are. A daemon that lacks a run image gets exactly the
layers it is missing: those above the longest chain it already has (from the run's
prefix images or any environment image on it), so a one-package change to a lock ships
that package's layer and the (smaller) layers stacked above it.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
import tempfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Protocol

from .._util.files import atomic_writer
from ..daemon.client import DockerClient, describe
from ..errors import ImageError, NotFound
from . import cache, compress
from .archive import ENV_LABEL, ThinArchive, has_image, present_prefix
from .imageconfig import ImageConfig


class Blobs(Protocol):
    """Where image blobs are read from: the store's ``blobs/sha256/`` (``RunStore.blobs``).

    Both raise :class:`~orchestrator.errors.NotFound` for a blob that is not there.
    """

    def get(self, digest: str) -> bytes: ...

    def get_file(self, digest: str, path: Path, *, verify: bool = True) -> None: ...


class LayerSink(Protocol):
    """Where layers are written to: the store's blobs (``RunStore.blobs``)."""

    def has(self, digest: str) -> bool: ...

    def put_encoded(
        self, digest: str, source: bytes | Path, *, known_missing: bool = False
    ) -> bool: ...


def store_layer(blobs: LayerSink, diff_id: str, source: bytes | Path) -> bool:
    """Put a layer into the store compressed, unless it is there: True if uploaded.

    A layer file from orch's cache is compressed once, into a copy beside it that the
    next store it goes to reuses.
    """
    if blobs.has(diff_id):
        return False
    if isinstance(source, Path):
        encoded: bytes | Path = compress.compressed_copy(source)
    else:
        encoded = compress.gzip_bytes(source)
    return blobs.put_encoded(diff_id, encoded, known_missing=True)


def base_layer_files(
    client: DockerClient, image_id: str, diff_ids: Iterable[str], *, cache_root: Path | None = None
) -> dict[str, Path]:
    """Cached tars of an image's layers, exported once with ``docker save`` if missing."""
    wanted = list(diff_ids)
    layers = cache.layers(cache_root)
    paths = {d: layers / f"{d.split(':')[1]}.tar" for d in wanted}
    if all(p.is_file() for p in paths.values()):
        return paths
    layers.mkdir(parents=True, exist_ok=True)
    import docker.errors

    with tempfile.TemporaryFile(dir=layers) as spool:
        try:
            for chunk in client.api.get_image(image_id):
                spool.write(chunk)
        except docker.errors.APIError as exc:
            raise ImageError(f"cannot export {image_id}: {describe(exc)}") from exc
        spool.seek(0)
        with tarfile.open(fileobj=spool, mode="r:") as tar:
            manifest_file = tar.extractfile("manifest.json")
            if manifest_file is None:
                raise ImageError(f"{image_id}: docker save output has no manifest.json")
            manifest = json.load(manifest_file)
            layer_names = manifest[0]["Layers"]
            for diff_id, name in zip(wanted, layer_names, strict=True):
                target = paths[diff_id]
                if target.is_file():
                    continue
                source = tar.extractfile(name)
                if source is None:
                    raise ImageError(f"{image_id}: layer {name} missing from docker save output")
                _copy_verified(source, target, diff_id)
    return paths


def _copy_verified(source: IO[bytes], target: Path, diff_id: str) -> None:
    sha = hashlib.sha256()
    # Raising inside the writer discards the copy: a wrong layer never gets the name.
    with atomic_writer(target) as out:
        while chunk := source.read(1 << 20):
            sha.update(chunk)
            out.write(chunk)
        if "sha256:" + sha.hexdigest() != diff_id:
            raise ImageError(f"layer {diff_id} exported with different content")


def push_to_registry(client: DockerClient, image_id: str, repository: str, tag: str) -> str:
    """Push and return ``repository@sha256:<manifest digest>``."""
    import docker.errors

    try:
        client.api.tag(image_id, repository, tag)
        for message in client.api.push(repository, tag=tag, stream=True, decode=True):
            if message.get("error"):
                raise ImageError(f"push to {repository} failed: {message['error']}")
        attrs = client.api.inspect_image(image_id)
    except docker.errors.APIError as exc:
        raise ImageError(f"push to {repository} failed: {describe(exc)}") from exc
    for digest in attrs.get("RepoDigests") or []:
        if digest.startswith(repository + "@"):
            return str(digest)
    raise ImageError(f"{repository}:{tag} pushed but the daemon reports no digest for it")


def pull_by_digest(client: DockerClient, reference: str) -> str | None:
    """Pull ``repo@sha256:...``; the image ID, or None if the registry cannot serve it."""
    import docker.errors

    try:
        client.images.pull(reference)
        return str(client.api.inspect_image(reference)["Id"])
    except docker.errors.APIError:
        return None


#: Blobs fetched from the store at once (each a stream of its own).
FETCH_WORKERS = 8


def _config_from_store(blobs: Blobs, image_id: str) -> ImageConfig:
    try:
        raw = blobs.get(image_id)
    except NotFound as exc:
        raise ImageError(
            f"image {image_id} is neither on this daemon nor in the store's blobs"
        ) from exc
    config = ImageConfig(raw)
    if config.image_id != image_id:
        raise ImageError(f"blob {image_id} in the store is corrupt (its digest differs)")
    return config


def fetch_chain(
    client: DockerClient, blobs: Blobs, image_ids: Sequence[str], prefixes: Iterable[str]
) -> None:
    """Load ``image_ids`` (each one's layers a prefix of the next one's) from the store's
    blobs in one archive: the layers the daemon lacks are downloaded side by side and
    streamed to the daemon, which checks each against its diff ID as it registers it.

    ``prefixes`` are image IDs whose layers are a prefix of the wanted images' (code,
    environment, base image: longest first): the layers of the first one the daemon has
    are not sent.
    """
    with ThreadPoolExecutor(FETCH_WORKERS, thread_name_prefix="orch-fetch") as pool:
        configs = list(pool.map(lambda i: _config_from_store(blobs, i), image_ids))
        prefix_layers = [_layers_on_daemon(client, p) for p in prefixes if p]
        have = next((len(layers) for layers in prefix_layers if layers is not None), 0)
        if all(layers is None for layers in prefix_layers[:-1]):
            # Neither the code nor the environment image is here (a node's first run of
            # this environment): environment layers another environment on this daemon
            # stacked the same way. Not asked otherwise: it lists every image of the
            # daemon, 0.3 s on one with thousands of them, and finds nothing longer.
            have = max(have, present_prefix(client, configs[-1].diff_ids, ENV_LABEL))
        wanted: list[str] = []
        for config in configs:
            wanted += [d for d in config.diff_ids[have:] if d not in wanted]
        archive = ThinArchive()
        with tempfile.TemporaryDirectory(prefix="orch-fetch-") as tmp:
            paths = {d: Path(tmp) / d.split(":")[1] for d in wanted}
            # Not hashed here: docker load refuses a layer whose bytes do not match.
            fetched = [
                pool.submit(blobs.get_file, d, paths[d], verify=False) for d in wanted
            ]
            for done in fetched:
                done.result()
            for diff_id in wanted:
                archive.add_layer(diff_id, path=paths[diff_id])
            for config in configs:
                archive.add_image(config)
            archive.load(client)


def _layers_on_daemon(client: DockerClient, image_id: str) -> list[str] | None:
    """The layers of ``image_id`` when the daemon has it (one inspect), else None."""
    import docker.errors

    try:
        return list(client.api.inspect_image(image_id)["RootFS"]["Layers"])
    except docker.errors.ImageNotFound:
        return None
    except docker.errors.APIError as exc:
        raise ImageError(f"cannot inspect {image_id}: {describe(exc)}") from exc


def ensure_image(
    client: DockerClient,
    blobs: Blobs,
    image_id: str,
    *,
    repo_digest: str | None = None,
    prefixes: tuple[str, str, str] | None = None,
) -> str:
    """Make ``image_id`` present on this daemon; returns where it came from.

    Tried in order: the daemon itself, the registry digest recorded with the run, the
    store's blobs. ``prefixes`` are the (base, env, code) images the run image is built
    on: from the store they are loaded with it (in one archive), so that of every later
    run of the same sweep on this daemon only its small config layer travels.
    """
    if has_image(client, image_id):
        return "daemon"
    if repo_digest and pull_by_digest(client, repo_digest) == image_id:
        return "registry"
    base, env, code = prefixes or ("", "", "")
    chain = [p for p in (env, code) if p and not has_image(client, p)]
    fetch_chain(client, blobs, [*chain, image_id], [code, env, base])
    return "store"
