"""The one place a Docker client is made, and Docker's errors become ours."""

from __future__ import annotations

import os
from typing import Any

from .errors import BackendError


def connect(docker_host: str | None = None, timeout: int = 120) -> Any:
    """A docker SDK client for ``docker_host`` (default: DOCKER_HOST or the local socket).

    Raises BackendError with how to start a daemon when none answers.
    """
    import docker
    import docker.errors

    host = docker_host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    try:
        client = docker.DockerClient(base_url=host, timeout=timeout)
        client.ping()
    except (docker.errors.DockerException, OSError) as exc:
        raise BackendError(
            f"cannot reach the Docker daemon at {host}: start it (make setup, or dockerd &) "
            f"or set DOCKER_HOST"
        ) from exc
    return client


def describe(exc: Exception) -> str:
    """One line out of a docker SDK exception."""
    explanation = getattr(exc, "explanation", None)
    text = str(explanation or exc)
    return " ".join(text.split())
