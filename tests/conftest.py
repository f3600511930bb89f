"""Shared fixtures. Fixtures that start real services are session-scoped."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from helpers import REPO, copy_demo, git_commit_all

# Tests commit into throwaway repositories; give git an identity without touching ~/.gitconfig.
for _name, _value in {
    "GIT_AUTHOR_NAME": "orch tests", "GIT_AUTHOR_EMAIL": "tests@orch.invalid",
    "GIT_COMMITTER_NAME": "orch tests", "GIT_COMMITTER_EMAIL": "tests@orch.invalid",
}.items():
    os.environ.setdefault(_name, _value)


@pytest.fixture(scope="session", autouse=True)
def _stop_the_resident_driver() -> Iterator[None]:
    """The suite's ``orch`` commands start a resident driver (:mod:`orchestrator.resident`):
    it goes with the suite instead of idling on after it (removing its socket stops it)."""
    yield
    from orchestrator.resident import client

    path = client.socket_path()
    if path is not None and os.path.exists(path):
        os.unlink(path)


@pytest.fixture(scope="session")
def docker_client() -> object:
    from orchestrator.daemon.client import connect

    return connect()


@pytest.fixture(scope="session")
def base_image(docker_client: object) -> str:
    """The default base image's ID, built by images/build_base.py when missing."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "images" / "build_base.py")],
        capture_output=True, text=True, check=True, cwd=REPO,
    )
    image_id = proc.stdout.strip().splitlines()[-1]
    assert image_id.startswith("sha256:")
    return image_id


ProjectFactory = Callable[..., Path]


@pytest.fixture
def make_project(tmp_path: Path, base_image: str) -> ProjectFactory:
    """A committed copy of the demo project (configs/, train.py, its gitignored data/) with
    extra settings; ``inputs`` are declared beside the demo's own."""

    def factory(name: str = "demo", commit: bool = True, files: dict[str, str] | None = None,
                **settings: object) -> Path:
        root = tmp_path / name
        data = {"name": name, "base_image": base_image, "command": ["python3", "train.py"],
                **copy_demo(root)}
        data.update({**settings, "inputs": {**data["inputs"], **settings.get("inputs", {})}})
        (root / "orch.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
        for rel, text in (files or {}).items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text)
        subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
        if commit:
            git_commit_all(root, "initial")
        return root

    return factory


@pytest.fixture
def orch() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the real `orch` console script, as a user would."""
    exe = Path(sys.executable).with_name("orch")

    def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, **(env or {})}
        return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=cwd,
                              env=full_env, timeout=timeout)

    return run


@pytest.fixture(scope="session")
def session_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("session")


@pytest.fixture(scope="session")
def registry_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A distribution registry on a loopback port."""
    from services import registry

    with registry(tmp_path_factory.mktemp("registry")) as host:
        yield host


@pytest.fixture(scope="session")
def second_docker_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second Docker daemon with an empty image cache: a fresh node."""
    import docker
    from services import second_daemon

    with second_daemon(tmp_path_factory.mktemp("dockerd2")) as host:
        client = docker.DockerClient(base_url=host, timeout=60)
        assert client.images.list(all=True) == [], "a fresh second daemon must have no image"
        assert client.containers.list(all=True) == []
        client.close()
        yield host


@pytest.fixture(scope="session")
def second_client(second_docker_host: str) -> Iterator[object]:
    import docker

    client = docker.DockerClient(base_url=second_docker_host, timeout=120)
    yield client
    client.close()
