"""A run's Ray task, on whichever node Ray placed it.

:func:`run_on_node`

1. reopens the store from its URI; credentials come from the node's own environment
   (boto3's chain), never from the task's arguments;
2. talks to the node's Docker daemon (``DOCKER_HOST`` of the node, else the local socket);
3. gets the run image onto that daemon by digest: already there, else the registry the
   sweep pushed to, else the store's blobs (only the layers the daemon lacks);
4. calls :func:`orchestrator.execute.execute`, the only code that writes run records,
   with the GPU ids Ray assigned (``ray.get_gpu_ids()``) and the Ray node id.

Exactly-once records come from the store's claim, not from Ray: a task retried after its
node died claims the run again with the same owner, which the store allows; a run held by
another submitter raises :class:`~orchestrator.execute.ClaimHeld`, which reaches the
driver as that type.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ...docker_api import DockerClient
from ...errors import ImageError, NotFound
from ...job import Job
from ...record import RunRecord
from ...stopping import Stop
from ...store import RunStore
from .gpusim import SimulatedGpuClient, simulates_gpus

#: How long a task waits for the driver's uploads of image blobs to reach the store.
BLOB_WAIT_S = 300.0

#: Per worker process: Ray reuses workers, so each opens the store and Docker once.
_STORES: dict[tuple[str, str], RunStore] = {}
_DOCKER: dict[str, Any] = {}


def _node_runs(store_uri: str, s3_endpoint: str | None) -> RunStore:
    key = (store_uri, s3_endpoint or "")
    if key not in _STORES:
        from ...store import open_store

        _STORES[key] = RunStore(
            open_store(store_uri, project_dir=Path("."), s3_endpoint=s3_endpoint)
        )
    return _STORES[key]


def _docker_host() -> str:
    """This node's daemon, as the node's ``ray start`` environment names it."""
    return os.environ.get("DOCKER_HOST", "")


def _node_docker() -> Any:
    host = _docker_host()
    if host not in _DOCKER:
        from ...docker_api import connect

        _DOCKER[host] = connect(host or None)
    return _DOCKER[host]


def warm_worker(store_uri: str, s3_endpoint: str | None) -> None:
    """A worker's start-up, done before its first run: imports, the store, Docker.
    Whatever fails here fails again, and is reported, in the run that needs it."""
    try:
        from ... import execute  # noqa: F401 - the import is the work
        from ...image import transport  # noqa: F401

        _node_runs(store_uri, s3_endpoint)
        _node_docker()
    except Exception:  # noqa: BLE001 - see the docstring
        pass


def run_on_node(job: Job, store_uri: str, s3_endpoint: str | None) -> RunRecord:
    """The body of a run's Ray task: image onto this node's daemon, then execute."""
    import ray

    from ...execute import execute

    runs = _node_runs(store_uri, s3_endpoint)
    if runs.is_complete(job.run_id):  # a retry of an attempt that did commit
        return runs.read_run(job.run_id)
    client = _node_docker()
    ensure_run_image(client, runs, job)
    gpu_ids = [str(g) for g in ray.get_gpu_ids()]
    simulated = bool(gpu_ids) and simulates_gpus()
    if simulated:
        client = SimulatedGpuClient(client, gpu_ids)
    node = ray.get_runtime_context().get_node_id()
    stop = Stop()
    # The run goes on in a thread so that Ray's cancel (KeyboardInterrupt in this, the
    # task's main thread) becomes an orderly stop: container stopped, record committed.
    with ThreadPoolExecutor(1, thread_name_prefix="orch-node-run") as pool:
        attempt = pool.submit(
            execute, job, client, runs, gpu_ids=gpu_ids, node=node, gpus_simulated=simulated,
            stop=stop,
        )
        while True:
            try:
                return attempt.result()
            except KeyboardInterrupt:
                stop.cancel()


def ensure_run_image(
    client: DockerClient,
    runs: RunStore,
    job: Job,
    *,
    wait_s: float = BLOB_WAIT_S,
    poll_s: float = 0.1,
) -> str:
    """Put the job's image on this daemon by digest; returns where it came from.

    Blobs the driver is still uploading are waited for (bounded); tasks of one node take
    turns, so a layer is loaded once per node.
    """
    from ...image.archive import has_image
    from ...image.transport import ensure_image

    if has_image(client, job.image_id):
        return "daemon"
    images = job.plan.images
    prefixes = (images.base, images.env, images.code) if images is not None else None
    deadline = time.monotonic() + wait_s
    with _node_lock(_docker_host() or "default"):
        while True:
            try:
                return ensure_image(
                    client,
                    runs.blobs,
                    job.image_id,
                    repo_digest=job.plan.repo_digest,
                    prefixes=prefixes,
                )
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


@contextlib.contextmanager
def _node_lock(docker_host: str) -> Iterator[None]:
    """One image load at a time per daemon among the Ray workers of a node."""
    digest = hashlib.sha256(docker_host.encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"orch-image-load-{digest}.lock"
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
