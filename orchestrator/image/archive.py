"""Thin docker-archives: several images in one tar, carrying only the layers the daemon lacks.

moby's loader checks each layer's chain ID before opening its file, so a layer the
daemon already has may be listed in the manifest without being in the archive.
Docker 20.10 loads only this format (not an OCI layout).
"""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..docker_api import describe
from ..errors import ImageError
from .imageconfig import ImageConfig
from .tarball import fixed_mtime


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
        mtime = fixed_mtime()
        manifest: list[dict[str, Any]] = []
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.GNU_FORMAT) as tar:
            for diff_id, source in sorted(self.layers.items()):
                name = f"{diff_id.split(':', 1)[1]}/layer.tar"
                info = tarfile.TarInfo(name)
                info.mtime = mtime
                if source.data is not None:
                    info.size = len(source.data)
                    tar.addfile(info, io.BytesIO(source.data))
                elif source.path is not None:
                    info.size = source.path.stat().st_size
                    with source.path.open("rb") as handle:
                        tar.addfile(info, handle)
            for image in self.images:
                hex_id = image.config.image_id.split(":", 1)[1]
                info = tarfile.TarInfo(f"{hex_id}.json")
                info.mtime = mtime
                info.size = len(image.config.raw)
                tar.addfile(info, io.BytesIO(image.config.raw))
                manifest.append(
                    {
                        "Config": f"{hex_id}.json",
                        "RepoTags": list(image.tags) or None,
                        "Layers": [
                            f"{d.split(':', 1)[1]}/layer.tar" for d in image.config.diff_ids
                        ],
                    }
                )
            raw = json.dumps(manifest, sort_keys=True).encode()
            info = tarfile.TarInfo("manifest.json")
            info.mtime = mtime
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))

    def load(self, client: Any) -> None:
        """Load into the daemon behind ``client`` in one request."""
        if not self.images:
            return
        import docker.errors

        with tempfile.SpooledTemporaryFile(max_size=64 << 20) as spool:
            self.write(spool)
            spool.seek(0)
            try:
                for message in client.api.load_image(spool, quiet=True):
                    if isinstance(message, dict) and message.get("error"):
                        raise ImageError(f"docker load failed: {message['error']}")
            except docker.errors.APIError as exc:
                raise ImageError(f"docker load failed: {describe(exc)}") from exc
        present = _image_ids(client)  # one call, not one inspect per image
        missing = [i.config.image_id for i in self.images if i.config.image_id not in present]
        if missing:
            raise ImageError(
                f"the daemon did not load {missing[0]}: a layer it lacks was not sent "
                f"(remove stale orch images with 'orch image prune' and retry)"
            )


def _image_ids(client: Any) -> set[str]:
    import docker.errors

    try:
        return set(client.api.images(all=True, quiet=True))
    except docker.errors.APIError as exc:
        raise ImageError(f"cannot list the daemon's images: {describe(exc)}") from exc


def has_image(client: Any, image_id: str) -> bool:
    import docker.errors

    try:
        client.api.inspect_image(image_id)
    except docker.errors.ImageNotFound:
        return False
    except docker.errors.APIError as exc:
        raise ImageError(f"cannot inspect {image_id}: {describe(exc)}") from exc
    return True
