"""The Docker client seam: image code takes any object shaped like docker_api.DockerClient.

These partial fakes (only the members each test reaches) stand in for a daemon; the real
client is checked against the same protocol by mypy (with types-docker) and exercised by
the docker tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import docker.errors
import pytest

from orchestrator.errors import ImageError
from orchestrator.image import base_image as base
from orchestrator.image.archive import ThinArchive, has_image, present_prefix
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


class RacyPodmanAPI:
    """Rootless Podman 4.3's create as it fails when two keep-id creates meet in libsubid:
    ``fails`` times with that message (or ``other`` once), then a container ID; it notes
    whether two creates were ever made at once."""

    def __init__(self, fails: int, other: bool = False) -> None:
        self.fails, self.other, self.calls, self.inside, self.overlapped = fails, other, 0, 0, False

    def create_container(self, **args: Any) -> dict[str, str]:
        import time

        self.calls += 1
        self.inside += 1
        self.overlapped |= self.inside > 1
        try:
            time.sleep(0.01)
            if self.other:
                raise docker.errors.APIError("container create: no such image")
            if self.calls <= self.fails:
                raise docker.errors.APIError(
                    "container create: keep-id requires additional UIDs or GIDs defined in "
                    "/etc/subuid and /etc/subgid to function correctly: %!w(<nil>)")
            return {"Id": f"c{self.calls}"}
        finally:
            self.inside -= 1


def test_a_keep_id_create_that_meets_podmans_subid_race_is_made_again() -> None:
    from orchestrator.daemon.engine import create_in_userns

    api = RacyPodmanAPI(fails=2)
    assert create_in_userns(api, {"image": IMAGE}) == {"Id": "c3"}
    # Another error is the caller's at once; the race met every time is too, in the end.
    with pytest.raises(docker.errors.APIError, match="no such image"):
        create_in_userns(RacyPodmanAPI(fails=0, other=True), {})
    always = RacyPodmanAPI(fails=99)
    with pytest.raises(docker.errors.APIError, match="keep-id requires"):
        create_in_userns(always, {})
    assert always.calls == 5


def test_keep_id_creates_of_parallel_runs_are_made_one_at_a_time() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from orchestrator.daemon.engine import create_in_userns

    api = RacyPodmanAPI(fails=0)
    with ThreadPoolExecutor(4) as pool:
        made = list(pool.map(lambda _: create_in_userns(api, {}), range(8)))
    assert len({m["Id"] for m in made}) == 8
    assert not api.overlapped


class _EnvImages:
    """A daemon holding many environment images (their layers each); counts inspects."""

    def __init__(self, images: dict[str, list[str]]) -> None:
        self._images = images
        self.inspected = 0

    def images(self, *, quiet: bool = False, all: bool = False, filters: Any = None) -> list[Any]:
        return list(self._images)

    def inspect_image(self, image: str, /) -> dict[str, Any]:
        self.inspected += 1
        return {"Id": image, "RootFS": {"Layers": self._images[image]}}


class _Daemon:
    def __init__(self, api: _EnvImages) -> None:
        self.api = api


def test_the_chain_a_rebuild_shares_is_found_asking_each_image_once(tmp_path: Path) -> None:
    """A daemon keeps every environment ever built: each one's layers are asked of it once
    (an image ID names its layers for good), not at every build (1.9 s at 786 images)."""
    def image(n: int) -> str:
        return "sha256:" + format(n, "064x")

    base, mine = ["sha256:base"], [f"sha256:pkg{i}" for i in range(5)]
    images = {image(i): [*base, f"sha256:other{i}"] for i in range(500)}
    images[image(999)] = [*base, *mine[:3], "sha256:old-pkg3"]  # the build before
    api = _EnvImages(images)
    label = "org.orch.kind=env"
    assert present_prefix(_Daemon(api), [*base, *mine], label, tmp_path) == 4
    assert api.inspected == 501
    assert present_prefix(_Daemon(api), [*base, *mine], label, tmp_path) == 4
    assert api.inspected == 501  # the next build asks none again
    images[image(1000)] = [*base, *mine]  # a new image is asked once
    assert present_prefix(_Daemon(api), [*base, *mine], label, tmp_path) == 6
    assert api.inspected == 502
