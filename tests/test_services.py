"""The test services themselves: a registry on loopback and a second, empty Docker daemon.

What the multi-node tests rely on: an image pushed to the registry from the first daemon
can be pulled by digest on the second, with the same image ID.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from services import copy_image, registry

from orchestrator.image.tarball import Entry, layer_bytes

pytestmark = pytest.mark.docker

FIRST_DAEMON = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


@pytest.fixture
def tiny_image(docker_client: Any) -> Iterator[str]:
    """A one-file image of its own (a nonce keeps concurrent sessions apart), loaded and removed."""
    layer, diff_id = layer_bytes([Entry("hello.txt", data=f"hello {uuid.uuid4()}\n".encode())])
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    hex_id = hashlib.sha256(config).hexdigest()
    manifest = [{"Config": f"{hex_id}.json", "RepoTags": [], "Layers": ["layer/layer.tar"]}]
    archive = _tar(
        {
            "manifest.json": json.dumps(manifest).encode(),
            f"{hex_id}.json": config,
            "layer/layer.tar": layer,
        }
    )
    docker_client.images.load(archive)
    image_id = f"sha256:{hex_id}"
    yield image_id
    import docker.errors

    # Untagging the last tag (as the push test does) already deleted it.
    with contextlib.suppress(docker.errors.ImageNotFound):
        docker_client.images.remove(image_id, force=True)


def _tar(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_second_daemon_has_its_own_bridge(second_docker_host: str) -> None:
    """(That it starts empty is asserted by the fixture itself, before any test uses it.)"""
    import docker

    client = docker.DockerClient(base_url=second_docker_host, timeout=60)
    bridge = client.networks.get("bridge").attrs
    assert bridge["Options"]["com.docker.network.bridge.name"] == "orchbr1"
    assert bridge["IPAM"]["Config"][0]["Subnet"] == "172.30.0.0/24"
    client.close()


def test_push_then_pull_by_digest_on_the_second_daemon(
    docker_client: Any, tiny_image: str, registry_host: str, second_client: Any
) -> None:
    repo = f"{registry_host}/orch-test/tiny"
    docker_client.images.get(tiny_image).tag(repo, "v1")
    try:
        digest = ""
        for event in docker_client.images.push(repo, tag="v1", stream=True, decode=True):
            assert "error" not in event, event
            digest = event.get("aux", {}).get("Digest", digest)
        assert digest.startswith("sha256:")
        pulled = second_client.images.pull(f"{repo}@{digest}")
        try:
            assert pulled.id == tiny_image
            assert f"{repo}@{digest}" in pulled.attrs["RepoDigests"]
        finally:
            second_client.images.remove(pulled.id, force=True)
    finally:
        docker_client.images.remove(f"{repo}:v1")


def test_copy_image_between_daemons(
    tiny_image: str, second_docker_host: str, second_client: Any
) -> None:
    copy_image(FIRST_DAEMON, second_docker_host, tiny_image)
    try:
        assert second_client.images.get(tiny_image).id == tiny_image
    finally:
        second_client.images.remove(tiny_image, force=True)


@pytest.mark.slow
def test_a_copied_base_image_runs_on_the_second_daemon(
    base_image: str, second_docker_host: str, second_client: Any
) -> None:
    copy_image(FIRST_DAEMON, second_docker_host, base_image)
    try:
        out = second_client.containers.run(
            base_image, ["python3", "-c", "print('node2')"], user="65534:65534", remove=True
        )
        assert out.decode().strip() == "node2"
    finally:
        second_client.images.remove(base_image, force=True)


def test_services_leave_nothing_behind(tmp_path: Path) -> None:
    with registry(tmp_path) as host:
        assert host.startswith("127.0.0.1:")
    assert not (tmp_path / "registry").exists()
