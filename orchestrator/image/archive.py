"""Thin docker-archives: several images in one tar, carrying only the layers the daemon lacks.

moby's loader checks each layer's chain ID before opening its file, so a layer the
daemon already has may be listed in the manifest without its bytes. Podman's
docker-archive reader wants a file for every layer of the manifest (and reuses a layer it
has without reading it): each layer not sent is an empty file, which both engines load.
Docker 20.10 loads only this format (not an OCI layout).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .._util.files import atomic_write
from .._util.ids import DIGEST
from ..daemon.client import DockerClient, describe
from ..errors import ImageError
from . import cache
from .imageconfig import ImageConfig
from .tarball import Entry, layer_chunks

#: The label of environment images: how :func:`present_prefix` finds them, tagged or not.
ENV_LABEL = "org.orch.kind=env"


@dataclass(frozen=True)
class ArchiveImage:
    config: ImageConfig
    tags: tuple[str, ...] = ()


@dataclass
class LayerSource:
    """Where a layer's bytes come from, when the daemon needs them."""

    data: bytes | None = None
    path: Path | None = None


@dataclass
class ThinArchive:
    images: list[ArchiveImage] = field(default_factory=list)
    layers: dict[str, LayerSource] = field(default_factory=dict)

    def add_image(self, config: ImageConfig, tags: Sequence[str] = ()) -> None:
        if all(image.config.image_id != config.image_id for image in self.images):
            self.images.append(ArchiveImage(config, tuple(tags)))

    def add_layer(
        self, diff_id: str, *, data: bytes | None = None, path: Path | None = None
    ) -> None:
        self.layers.setdefault(diff_id, LayerSource(data, path))

    def write(self, out: IO[bytes]) -> None:
        for chunk in self.chunks():
            out.write(chunk)

    def chunks(self) -> Iterator[bytes | memoryview]:
        """The archive through the same deterministic tar writer as layers: the loader
        unpacks it whole before reading manifest.json, so member order does not matter."""
        entries = [
            Entry(f"{_hex(diff_id)}/layer.tar", data=source.data, source=source.path)
            for diff_id, source in self.layers.items()
        ]
        entries += [
            Entry(f"{_hex(diff_id)}/layer.tar", data=b"") for diff_id in self._not_sent()
        ]
        manifest: list[dict[str, Any]] = []
        for image in self.images:
            config_name = f"{_hex(image.config.image_id)}.json"
            entries.append(Entry(config_name, data=image.config.raw))
            manifest.append(
                {
                    "Config": config_name,
                    "RepoTags": list(image.tags) or None,
                    "Layers": [f"{_hex(d)}/layer.tar" for d in image.config.diff_ids],
                }
            )
        entries.append(Entry("manifest.json", data=json.dumps(manifest, sort_keys=True).encode()))
        return layer_chunks(entries)

    def _not_sent(self) -> list[str]:
        """Layers the manifest lists that the engine is expected to have already.

        Each gets an empty file: Docker looks a layer up by its chain ID before opening
        its file, but Podman's docker-archive reader refuses an archive that lacks a file
        for any layer of the manifest (it reuses a layer it has without reading the file).
        """
        absent: list[str] = []
        for image in self.images:
            absent += [
                d for d in image.config.diff_ids if d not in self.layers and d not in absent
            ]
        return absent

    def load(self, client: DockerClient) -> None:
        """Load into the daemon behind ``client`` in one request.

        The archive goes to the daemon as it is written (small ones from memory, ones
        with layer files read as they are sent): nothing is spooled to disk first.
        """
        if not self.images:
            return
        import docker.errors

        loaded: set[str] = set()
        try:
            for message in client.api.load_image(self._body(), quiet=True):
                if isinstance(message, dict) and message.get("error"):
                    raise ImageError(f"docker load failed: {_explain(message['error'])}")
                if isinstance(message, dict) and isinstance(message.get("stream"), str):
                    loaded.update(_loaded_names(message["stream"]))
        except docker.errors.APIError as exc:
            raise ImageError(f"docker load failed: {_explain(describe(exc))}") from exc
        # The daemon names each image it loaded (its tag, or its ID when untagged); only
        # when an answer lacks one is the daemon's image list asked.
        unconfirmed = [
            i.config.image_id
            for i in self.images
            if not (loaded & {i.config.image_id, *i.tags})
        ]
        if not unconfirmed:
            return
        present = _image_ids(client)  # one call, not one inspect per image
        missing = [image_id for image_id in unconfirmed if image_id not in present]
        if missing:
            raise ImageError(
                f"the daemon did not load {missing[0]}: a layer it lacks was not sent "
                f"(remove stale orch images with 'orch image prune' and retry)"
            )

    def _body(self) -> bytes | Iterator[bytes | memoryview]:
        if all(source.path is None for source in self.layers.values()):
            buffer = io.BytesIO()
            self.write(buffer)
            return buffer.getvalue()
        return streamed(self.chunks())


def streamed(chunks: Iterator[bytes | memoryview]) -> Iterator[bytes | memoryview]:
    """``chunks`` as a request body, read as it is sent: nothing is spooled to disk, and
    a layer file that cannot be read is an ImageError, not the HTTP library's."""
    try:
        yield from chunks
    except OSError as exc:
        raise ImageError(f"cannot read a layer for the daemon: {exc}") from exc


def _loaded_names(stream: str) -> set[str]:
    """The names in the engine's answer: Docker's one line per image, Podman's one line
    ``Loaded image: localhost/a:1,localhost/b:2,sha256:...`` (short names under
    ``localhost/``)."""
    names = set()
    for line in stream.splitlines():
        for prefix in ("Loaded image ID: ", "Loaded image: "):
            if line.startswith(prefix):
                for name in line[len(prefix) :].split(","):
                    name = name.strip()
                    names.add(name)
                    names.add(name.removeprefix("localhost/"))
                break
    return names


#: What the daemon says of a layer whose bytes are wrong: the decompressed tar does not
#: hash to its diff ID (Podman: the digest did not match), the gzip stream is damaged (Go's
#: reader, or unpigz when dockerd finds it on PATH), or the data ends too early.
_CORRUPT = (
    "invalid diffID", "Digest did not match", "gzip: ", "flate: ", "unpigz: ", "unexpected EOF"
)
#: The digest of no bytes: what an engine reads from the empty file of a layer not sent.
_EMPTY = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#: Podman lists why each format it tried failed; orch's archives are docker-archives.
_PODMAN_FORMATS = re.compile(r"\* docker-archive: (?P<why>.*?)(?: \* [a-z-]+: |$)", re.S)


def _explain(error: str) -> str:
    """The daemon checks every layer against its diff ID; say what that means here."""
    found = _PODMAN_FORMATS.search(error)
    if found is not None:
        error = found["why"].strip()
    if _EMPTY in error:
        return (
            f"{error} (a layer the engine lacks was not sent: orch judged it present; "
            f"remove stale orch images with 'orch image prune' and retry)"
        )
    if any(sign in error for sign in _CORRUPT):
        return (
            f"{error} (a layer blob is corrupt: delete it from the store's blobs and rerun "
            f"the sweep that made it, which uploads it again)"
        )
    return error


def _hex(digest: str) -> str:
    return digest.split(":", 1)[1]


def _image_ids(client: DockerClient) -> set[str]:
    import docker.errors

    try:
        return set(client.api.images(all=True, quiet=True))
    except docker.errors.APIError as exc:
        raise ImageError(f"cannot list the daemon's images: {describe(exc)}") from exc


def present_prefix(
    client: DockerClient, diff_ids: Sequence[str], label: str, cache_root: Path | None = None
) -> int:
    """How many of ``diff_ids`` (bottom first) the daemon has as one chain already.

    Looked up in the images with ``label`` (``name=value``, as ``docker images
    --filter label=...``): a layer is present when one of them has it above the same
    layers, since Docker identifies a layer on a node by its whole chain. A daemon keeps
    every environment ever built (786 images cost a rebuild 1.9 s of inspects), so each
    image's layers are asked once and kept in the cache: an image ID is the digest of a
    config that lists its layers, so what it says never changes.
    """
    import docker.errors

    wanted = list(diff_ids)
    best = 0
    known = _LayerMemo(cache.image_layers(cache_root))
    try:
        candidates = client.api.images(quiet=True, all=True, filters={"label": label})
        for image in candidates:
            layers = known.get(image)
            if layers is None:
                layers = client.api.inspect_image(image)["RootFS"]["Layers"]
                known.put(image, layers)
            common = 0
            for mine, theirs in zip(wanted, layers, strict=False):
                if mine != theirs:
                    break
                common += 1
            best = max(best, common)
    except docker.errors.APIError:
        return 0  # send every layer: slower, never wrong
    return best


class _LayerMemo:
    """``<dir>/<image hex>.json``: an image's layers, as the daemon once reported them."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    def _path(self, image_id: str) -> Path | None:
        found = DIGEST.match(image_id)
        return self._directory / f"{found.group(1)}.json" if found else None

    def get(self, image_id: str) -> list[str] | None:
        path = self._path(image_id)
        try:
            layers = json.loads(path.read_bytes()) if path is not None else None
        except (OSError, ValueError):
            return None
        if isinstance(layers, list) and all(isinstance(layer, str) for layer in layers):
            return layers
        return None

    def put(self, image_id: str, layers: list[str]) -> None:
        path = self._path(image_id)
        if path is None:
            return
        try:
            atomic_write(path, json.dumps(layers).encode(), fsync=False)
        except OSError:
            pass  # an unwritable cache only costs an inspect next time


def tag_image(client: DockerClient, image: str, reference: str) -> None:
    """Name ``image`` ``reference`` (``repository:tag``; a registry's port stays in the
    repository). The daemon's errors are the caller's: a name matters more to some."""
    repository, _, tag = reference.rpartition(":")
    client.api.tag(image, repository, tag)


def has_image(client: DockerClient, image_id: str) -> bool:
    import docker.errors

    try:
        client.api.inspect_image(image_id)
    except docker.errors.ImageNotFound:
        return False
    except docker.errors.APIError as exc:
        raise ImageError(f"cannot inspect {image_id}: {describe(exc)}") from exc
    return True
