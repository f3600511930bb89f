"""What a run's task does on whichever node a cluster backend (Ray, SLURM) placed it,
before :func:`orchestrator.runner.execute.execute`: find the node's Docker daemon and put the run's
image on it by digest."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from .._util.files import locked
from ..daemon.client import DockerClient
from ..errors import BackendError, ImageError, NotFound
from ..schema.job import Job
from ..store import RunStore

T = TypeVar("T")

#: How long a task waits for the driver's uploads of image blobs to reach the store.
BLOB_WAIT_S = 300.0


def shared_store_uri(uri: str, backend: str) -> str:
    """The store URI every node opens; a store only this process can see is refused.

    A plain path becomes an absolute ``file://`` URI: it works when every node mounts that
    filesystem at the same path, which only a node can tell (a SLURM task that does not
    find the store says so).
    """
    if uri.startswith(("s3://", "file://")):
        return uri
    if "://" in uri:
        raise BackendError(
            f"--backend {backend} needs a store every node can reach (a shared directory or "
            f"s3://bucket/prefix), not {uri}"
        )
    return Path(uri).absolute().as_uri()


def docker_host() -> str:
    """This node's daemon, as the node's environment names it (else the local socket)."""
    return os.environ.get("DOCKER_HOST", "")


def ensure_run_image(
    client: DockerClient,
    runs: RunStore,
    job: Job,
    *,
    wait_s: float = BLOB_WAIT_S,
    poll_s: float = 0.1,
) -> str:
    """Put the job's image on this daemon by digest; returns where it came from.

    Blobs the driver is still uploading are waited for (bounded). Tasks of one node that
    may load the same environment or code layers take turns, so a layer is loaded once
    per node; once the code image is on the daemon, each run sends only its own layer,
    and the tasks of a node load side by side.
    """
    from ..image.archive import has_image
    from ..image.transport import ensure_image

    if has_image(client, job.image_id):
        return "daemon"
    images = job.plan.images
    prefixes = (images.base, images.env, images.code) if images is not None else None

    def fetch() -> str:
        return ensure_image(client, runs.blobs, job.image_id,
                            repo_digest=job.plan.repo_digest, prefixes=prefixes)

    if images is not None and has_image(client, images.code):
        return once_uploaded(fetch, job, wait_s=wait_s, poll_s=poll_s)
    with _node_lock(docker_host() or "default"):
        return once_uploaded(fetch, job, wait_s=wait_s, poll_s=poll_s)


def once_uploaded(
    fetch: Callable[[], T], job: Job, *, wait_s: float = BLOB_WAIT_S, poll_s: float = 0.1
) -> T:
    """``fetch()`` of the job's image from the store, again while it finds a blob missing:
    the driver may still be uploading it (bounded by ``wait_s``)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return fetch()
        except (NotFound, ImageError) as exc:
            missing = isinstance(exc, NotFound) or isinstance(exc.__cause__, NotFound)
            if not missing:
                raise
            if time.monotonic() > deadline:
                raise ImageError(
                    f"image {job.image_id} of run {job.run_id} did not reach the store's "
                    f"blobs within {wait_s:.0f}s ({exc})"
                ) from exc
        time.sleep(poll_s)


def _node_lock(docker_host: str) -> contextlib.AbstractContextManager[None]:
    """One image load at a time per daemon among the tasks of a node."""
    digest = hashlib.sha256(docker_host.encode()).hexdigest()[:16]
    return locked(Path(tempfile.gettempdir()) / f"orch-image-load-{digest}.lock")
