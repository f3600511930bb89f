"""The Docker client seam: image code takes any object shaped like docker_api.DockerClient.

These partial fakes (only the members each test reaches) stand in for a daemon; the real
client is checked against the same protocol by mypy (with types-docker) and exercised by
the docker tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import IO, Any

import docker.errors
import pytest

from orchestrator.errors import ImageError
from orchestrator.image import base_image as base
from orchestrator.image.archive import ThinArchive, has_image
from orchestrator.image.imageconfig import make_config

IMAGE = "sha256:" + "1" * 64


class FakeImage:
    def __init__(self, image_id: str) -> None:
        self.id = image_id
        self.labels: dict[str, Any] = {}
        self.attrs: dict[str, Any] = {"Id": image_id}


class FakeAPI:
    def __init__(self) -> None:
        self.images_present: set[str] = set()
        self.tags: dict[str, str] = {}
        self.loaded: list[bytes] = []

    def inspect_image(self, image: str, /) -> dict[str, Any]:
        if image not in self.images_present and image not in self.tags:
            raise docker.errors.ImageNotFound(f"no such image: {image}")
        return {"Id": self.tags.get(image, image)}

    def images(self, *, quiet: bool = False, all: bool = False, filters: Any = None) -> list[Any]:
        return sorted(self.images_present)

    def load_image(
        self, data: bytes | IO[bytes] | Iterator[bytes], /, quiet: bool | None = None
    ) -> Iterable[Any]:
        if isinstance(data, bytes):
            self.loaded.append(data)
        elif hasattr(data, "read"):
            self.loaded.append(data.read())
        else:
            self.loaded.append(b"".join(data))
        return [{"stream": "Loaded image"}]

    def tag(self, image: str, repository: str, tag: str | None = None, /) -> bool:
        self.tags[f"{repository}:{tag}"] = image
        return True


class FakeImages:
    def __init__(self, api: FakeAPI) -> None:
        self._api = api

    def get(self, name: str, /) -> FakeImage:
        return FakeImage(self._api.inspect_image(name)["Id"])


class FakeClient:
    def __init__(self) -> None:
        self.api = FakeAPI()
        self.images = FakeImages(self.api)

    def ping(self) -> bool:
        return True


def test_has_image_asks_the_daemon() -> None:
    client = FakeClient()
    assert not has_image(client, IMAGE)
    client.api.images_present.add(IMAGE)
    assert has_image(client, IMAGE)


def test_ensure_tag_tags_once() -> None:
    client = FakeClient()
    client.api.images_present.add(IMAGE)
    base.ensure_tag(client, IMAGE)
    assert client.api.tags == {base.TAG: IMAGE}
    client.api.tag = None  # a second tag call would fail
    base.ensure_tag(client, IMAGE)


def test_a_thin_archive_that_loads_nothing_it_names_is_an_error() -> None:
    client = FakeClient()
    archive = ThinArchive()
    config = make_config(architecture="amd64", os_name="linux", diff_ids=[], env=[], cmd=None)
    archive.add_image(config, ["orch/x:1"])
    with pytest.raises(ImageError, match="did not load"):
        archive.load(client)
    assert len(client.api.loaded) == 1 and client.api.loaded[0]
