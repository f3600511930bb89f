"""The Ray backend: every run is a Ray task, placed by Ray on a node with its CPUs and GPUs.

On the driver (the ``orch sweep`` process) a small dispatcher thread keeps at most
``max_in_flight`` tasks in the cluster and resolves each run's future as soon as its task
ends (``ray.wait``, one task at a time: results stream back, nothing waits for the slowest).

On its node the task (:func:`run_on_node`)

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
driver as that type (the sweep driver then waits for the other submitter).

GPU-less test machines: with ``ORCH_FAKE_GPUS=1`` in a *node's* environment, runs there
still get and record the GPU ids Ray assigned (and see them as ``NVIDIA_VISIBLE_DEVICES``)
but no device request is sent to Docker, which would fail without the NVIDIA runtime.
Such records carry ``"gpus_simulated": true``. Never set it on a real GPU node.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import re
import shlex
import socket
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from ..errors import BackendError, ImageError, NotFound, OrchestratorError, UsageError
from ..store import RunStore
from .base import Job

#: Set to 1 in a node's environment to simulate its GPUs (tests on GPU-less machines).
FAKE_GPUS_ENV = "ORCH_FAKE_GPUS"
#: Ray retries a task this often when its worker or node dies (never on a run's own error).
MAX_RETRIES = 3
#: How long a task waits for the driver's uploads of image blobs to reach the store.
BLOB_WAIT_S = 300.0
#: How long a node's run may keep the cluster busy after ``close()`` before it is cancelled.
CLOSE_GRACE_S = 600.0
_POLL_S = 0.05
_INSTALL_HINT = "--backend ray needs Ray: pip install 'orch[ray]'"


def import_ray() -> Any:
    """The ``ray`` module, or BackendError with the install hint."""
    try:
        import ray
    except ImportError as exc:
        raise BackendError(_INSTALL_HINT) from exc
    return ray


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class RayBackend:
    """Runs jobs as Ray tasks on a cluster (``address``) or on a Ray started here (None)."""

    name = "ray"
    shares_daemon = False

    def __init__(
        self,
        runs: RunStore,
        *,
        address: str | None,
        max_in_flight: int | None = None,
        s3_endpoint: str | None = None,
        max_retries: int = MAX_RETRIES,
    ) -> None:
        self._store_uri = shared_store_uri(runs.store.uri)
        self._s3_endpoint = s3_endpoint
        self._ray = ray = import_ray()
        self._address = address or os.environ.get("RAY_ADDRESS") or None
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            _init(ray, self._address)
        self._local = self._address is None
        try:
            resources = ray.cluster_resources()
            self._nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        except Exception as exc:  # noqa: BLE001 - any failure here means no usable cluster
            self._shutdown()
            raise BackendError(
                f"the Ray cluster {self._where()} does not answer: {_one_line(exc)}"
            ) from exc
        self.max_in_flight = max(1, max_in_flight or int(resources.get("CPU", 1)))
        self._remote = ray.remote(max_retries=max_retries, retry_exceptions=False)(run_on_node)
        self._max_retries = max_retries
        self._cond = threading.Condition()
        self._queue: deque[tuple[Job, Future[dict[str, Any]]]] = deque()
        self._in_flight: dict[Any, tuple[Job, Future[dict[str, Any]]]] = {}
        self._closed = False
        self._thread = threading.Thread(target=self._dispatch, name="orch-ray", daemon=True)
        self._thread.start()

    def _where(self) -> str:
        return f"at {self._address}" if self._address else "started here"

    # -- the Backend interface ----------------------------------------------------------

    def submit(self, job: Job) -> Future[dict[str, Any]]:
        """Queue ``job``; it becomes a Ray task once fewer than ``max_in_flight`` run."""
        future: Future[dict[str, Any]] = Future()
        problem = self._infeasible(job)
        if problem:
            future.set_exception(BackendError(problem))
            return future
        with self._cond:
            if self._closed:
                raise BackendError("the Ray backend is closed")
            self._queue.append((job, future))
            self._cond.notify_all()
        return future

    def close(self) -> None:
        """Drop queued jobs, let running ones commit (cancel them if interrupted), disconnect."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            queued = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for _, future in queued:
            future.cancel()
        try:
            self._thread.join(CLOSE_GRACE_S)
        finally:
            self._cancel_in_flight("the sweep stopped before this run ended")
            self._shutdown()

    # -- driver side ----------------------------------------------------------------------

    def _infeasible(self, job: Job) -> str | None:
        """A Ray started here has a fixed set of nodes: a run no node can hold would hang.

        An existing cluster may autoscale, so there Ray itself queues (and warns about)
        tasks that no current node can hold.
        """
        if not self._local:
            return None
        if any(n.get("CPU", 0) >= job.cpus and n.get("GPU", 0) >= job.gpus for n in self._nodes):
            return None
        gpus = max((n.get("GPU", 0) for n in self._nodes), default=0)
        cpus = max((n.get("CPU", 0) for n in self._nodes), default=0)
        return (
            f"run {job.run_id} asks for {job.gpus} GPU(s) and {job.cpus:g} CPU(s) but the "
            f"Ray started here has {gpus:g} GPU(s) and {cpus:g} CPU(s): pass --ray-address "
            f"of a cluster with such nodes or lower resources in orch.yaml"
        )

    def _launch(self, job: Job, future: Future[dict[str, Any]]) -> None:
        if not future.set_running_or_notify_cancel():
            return
        options: dict[str, Any] = {
            "num_cpus": job.cpus,
            "num_gpus": job.gpus,
            "name": f"orch-run-{job.run_id}",
        }
        memory = memory_bytes(job.memory)
        if memory:
            options["memory"] = memory
        try:
            ref = self._remote.options(**options).remote(job, self._store_uri, self._s3_endpoint)
        except Exception as exc:  # noqa: BLE001 - translated for the driver
            future.set_exception(
                BackendError(
                    f"cannot submit run {job.run_id} to the Ray cluster {self._where()}: "
                    f"{_one_line(exc)}"
                )
            )
            return
        self._in_flight[ref] = (job, future)

    def _dispatch(self) -> None:
        ray = self._ray
        try:
            while True:
                with self._cond:
                    while not self._closed and not self._queue and not self._in_flight:
                        self._cond.wait()
                    if self._closed and not self._in_flight:
                        return
                    while self._queue and len(self._in_flight) < self.max_in_flight:
                        self._launch(*self._queue.popleft())
                    refs = list(self._in_flight)
                if not refs:
                    continue
                ready, _ = ray.wait(refs, num_returns=1, timeout=_POLL_S, fetch_local=True)
                for ref in ready:
                    with self._cond:
                        job, future = self._in_flight.pop(ref)
                    self._resolve(ref, job, future)
        except Exception as exc:  # noqa: BLE001 - every waiting future must learn of it
            error = BackendError(f"lost the Ray cluster {self._where()}: {_one_line(exc)}")
            with self._cond:
                self._closed = True
                pending = [f for _, f in self._in_flight.values()] + [f for _, f in self._queue]
                self._in_flight.clear()
                self._queue.clear()
            for future in pending:
                if not future.done():
                    future.set_exception(error)

    def _resolve(self, ref: Any, job: Job, future: Future[dict[str, Any]]) -> None:
        try:
            record = self._ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - sorted out by task_error
            future.set_exception(task_error(exc, job, self._max_retries))
        else:
            future.set_result(record)

    def _cancel_in_flight(self, reason: str) -> None:
        with self._cond:
            left = list(self._in_flight.items())
            self._in_flight.clear()
        for ref, (_, future) in left:
            # Not forced: the task gets KeyboardInterrupt, so its container is removed.
            with contextlib.suppress(Exception):
                self._ray.cancel(ref)
            if not future.done():
                future.set_exception(BackendError(reason))

    def _shutdown(self) -> None:
        if self._owns_ray:
            self._owns_ray = False
            with contextlib.suppress(Exception):
                self._ray.shutdown()


def _messages_to_stderr() -> None:
    """Ray's driver prints cluster events ("task failed, will be retried", "node marked
    dead") on stdout, which belongs to orch's results (``--json``): send them to stderr.
    """
    try:
        from ray._private import worker as ray_worker
    except ImportError:
        return
    original = getattr(ray_worker, "print_to_stdstream", None)
    if original is None or getattr(original, "orch_to_stderr", False):
        return

    def to_stderr(data: dict[str, Any], ignore_prefix: bool) -> None:
        original({**data, "is_err": True}, ignore_prefix)

    to_stderr.orch_to_stderr = True  # type: ignore[attr-defined]
    ray_worker.print_to_stdstream = to_stderr


def _init(ray: Any, address: str | None) -> None:
    """Start a local Ray (address None) or connect to a cluster; errors name the address."""
    _messages_to_stderr()
    quiet = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.ERROR,
        "configure_logging": True,
    }
    if address is None:
        try:
            # "local": a new Ray of our own even if a `ray start` cluster runs on this machine.
            ray.init(address="local", num_cpus=os.cpu_count() or 1, **quiet)
        except Exception as exc:  # noqa: BLE001 - translated at the boundary
            raise BackendError(f"cannot start a local Ray: {_one_line(exc)}") from exc
        return
    _check_reachable(address)
    quiet.pop("include_dashboard")
    try:
        ray.init(address=address, **quiet)
    except Exception as exc:  # noqa: BLE001 - translated at the boundary
        with contextlib.suppress(Exception):
            ray.shutdown()
        raise BackendError(
            f"cannot connect to the Ray cluster at {address}: {_one_line(exc)}"
        ) from exc


_HOST_PORT = re.compile(r"^(?:ray://)?\[?([A-Za-z0-9.:-]+?)\]?:(\d{1,5})$")


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds, not after Ray's long connect timeout, when nothing listens there."""
    if address == "auto":
        return
    match = _HOST_PORT.match(address)
    if match is None:
        raise BackendError(
            f"--ray-address {address!r}: expected HOST:PORT of the head node (e.g. "
            f"10.0.0.5:6379), ray://HOST:PORT or auto"
        )
    host, port = match.group(1), int(match.group(2))
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise BackendError(
            f"cannot connect to the Ray cluster at {address}: {exc.strerror or exc} "
            f"(is the head node up? ray start --head --port={port})"
        ) from exc


def shared_store_uri(uri: str) -> str:
    """The store URI every node opens; a store only this process can see is refused."""
    if uri.startswith(("s3://", "file://")):
        return uri
    if "://" in uri:
        raise BackendError(
            f"--backend ray needs a store every node can reach (a shared directory or "
            f"s3://bucket/prefix), not {uri}"
        )
    return Path(uri).absolute().as_uri()


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)b?\s*$", re.IGNORECASE)


def memory_bytes(memory: str | None) -> int | None:
    """Docker's size strings ("512m", "2g") in bytes, for Ray's ``memory`` resource."""
    if not memory:
        return None
    match = _SIZE.match(memory)
    if match is None:
        return None
    scale = 1024 ** "bkmgt".index((match.group(2) or "b").lower())
    return int(float(match.group(1)) * scale)


def task_error(exc: BaseException, job: Job, retries: int) -> BaseException:
    """What the driver sees when a run's task did not return a record.

    A run's own errors come back inside RayTaskError: ClaimHeld and orch errors keep
    their type; anything else, and a task lost with its worker or node after every
    retry, becomes one BackendError line.
    """
    from ray.exceptions import RayTaskError

    from ..execute import ClaimHeld

    if isinstance(exc, RayTaskError):
        cause = exc.cause
        if isinstance(cause, ClaimHeld):
            return ClaimHeld(job.run_id)
        if isinstance(cause, OrchestratorError):
            return cause
        return BackendError(
            f"run {job.run_id} failed on its Ray node: "
            f"{_one_line(cause) if cause is not None else 'unknown error'}"
        )
    if isinstance(exc, OrchestratorError):
        return exc
    first = _one_line(exc).split(". ")[0]
    return BackendError(
        f"run {job.run_id}: its Ray task was lost (tried {retries + 1} times): {first}"
    )


# -- node side ----------------------------------------------------------------------------

#: Per worker process: Ray reuses workers, so each opens the store and Docker once.
_NODE_CACHE: dict[tuple[str, ...], Any] = {}


def _node_runs(store_uri: str, s3_endpoint: str | None) -> RunStore:
    key = ("store", store_uri, s3_endpoint or "")
    if key not in _NODE_CACHE:
        from ..store import open_store

        _NODE_CACHE[key] = RunStore(
            open_store(store_uri, project_dir=Path("."), s3_endpoint=s3_endpoint)
        )
    runs: RunStore = _NODE_CACHE[key]
    return runs


def _node_docker() -> Any:
    key = ("docker", os.environ.get("DOCKER_HOST", ""))
    if key not in _NODE_CACHE:
        from ..docker_api import connect

        _NODE_CACHE[key] = connect()
    return _NODE_CACHE[key]


def run_on_node(job: Job, store_uri: str, s3_endpoint: str | None) -> dict[str, Any]:
    """The body of a run's Ray task: image onto this node's daemon, then execute."""
    import ray

    from ..execute import execute

    runs = _node_runs(store_uri, s3_endpoint)
    if runs.is_complete(job.run_id):  # a retry of an attempt that did commit
        return runs.read_run(job.run_id)
    client = _node_docker()
    ensure_run_image(client, runs, job)
    gpu_ids = [str(g) for g in ray.get_gpu_ids()]
    if gpu_ids and os.environ.get(FAKE_GPUS_ENV) == "1":
        client = SimulatedGpuClient(client, gpu_ids)
        job = dataclasses.replace(job, record={**job.record, "gpus_simulated": True})
    node = ray.get_runtime_context().get_node_id()
    return execute(job, client, runs, gpu_ids=gpu_ids, node=node)


def ensure_run_image(
    client: Any, runs: RunStore, job: Job, *, wait_s: float = BLOB_WAIT_S, poll_s: float = 0.5
) -> str:
    """Put the job's image on this daemon by digest; returns where it came from.

    Blobs the driver is still uploading are waited for (bounded); tasks of one node take
    turns, so a layer is loaded once per node.
    """
    from ..image.archive import has_image
    from ..rerun import ensure_image

    if has_image(client, job.image_id):
        return "daemon"
    record = {**job.record, "image_id": job.image_id}
    deadline = time.monotonic() + wait_s
    with _node_lock(os.environ.get("DOCKER_HOST", "default")):
        while True:
            try:
                return ensure_image(client, runs, record)
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


class SimulatedGpuClient:
    """A Docker client that runs containers *without* a GPU device request.

    Only for nodes with ``ORCH_FAKE_GPUS=1`` (GPU-less test machines): the container
    sees the assigned ids as ``NVIDIA_VISIBLE_DEVICES``, as the NVIDIA runtime would set
    them, and everything else goes to the real client unchanged.
    """

    def __init__(self, client: Any, gpu_ids: list[str]) -> None:
        self._client = client
        self.containers = _SimulatedGpuContainers(client.containers, gpu_ids)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class _SimulatedGpuContainers:
    def __init__(self, containers: Any, gpu_ids: list[str]) -> None:
        self._containers = containers
        self._gpu_ids = list(gpu_ids)

    def create(self, **kwargs: Any) -> Any:
        kwargs.pop("device_requests", None)
        env = dict(kwargs.get("environment") or {})
        env["NVIDIA_VISIBLE_DEVICES"] = ",".join(self._gpu_ids)
        kwargs["environment"] = env
        return self._containers.create(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._containers, name)


# -- detached sweeps: the driver itself runs on the cluster, as a Ray Job ------------------


@dataclasses.dataclass(frozen=True)
class DetachedSweep:
    """Where a detached sweep is: Ray's job status, and the sweep's result once it ended."""

    job_id: str
    status: str  # PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED
    message: str
    #: The ``orch sweep --json`` object of the finished sweep (None before, or if it broke).
    result: dict[str, Any] | None = None

    @property
    def done(self) -> bool:
        return self.status in ("SUCCEEDED", "FAILED", "STOPPED")


def _job_client(address: str) -> Any:
    import_ray()
    _check_reachable(address)
    try:
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(address)
    except Exception as exc:  # noqa: BLE001 - translated at the boundary
        raise BackendError(
            f"cannot reach the Ray Jobs API of the cluster at {address}: {_one_line(exc)} "
            f"(the head node must run the dashboard: ray start --head --include-dashboard=true)"
        ) from exc


def submit_detached(
    address: str, project_dir: Path, sweep_args: Sequence[str], store_uri: str
) -> str:
    """Submit ``orch sweep SWEEP_ARGS`` to the cluster as a Ray Job; returns its id.

    The project directory (git history included; .gitignore'd files left out) is uploaded
    with the job, and the sweep's driver runs on the head node: it builds the images on
    the head's Docker daemon, with the head's store credentials, then runs every point as
    a Ray task like an attached sweep. The store must be one the head and every node can
    reach; this machine may disconnect as soon as this returns.
    """
    uri = shared_store_uri(store_uri)
    if uri.startswith("file://") and not Path(uri[len("file://") :]).is_absolute():
        raise UsageError(f"--store {store_uri}: a detached sweep needs an absolute path")
    job_id = f"orch-sweep-{uuid.uuid4().hex[:12]}"
    entrypoint = shlex.join(
        ["orch", "sweep", "-p", ".", *sweep_args, "--store", uri, "--backend", "ray", "--json"]
    )
    client = _job_client(address)
    try:
        with _packaging_keeps_git():
            client.submit_job(
                entrypoint=entrypoint,
                submission_id=job_id,
                runtime_env={"working_dir": str(project_dir), "excludes": [".orch/"]},
                metadata={"orch": "sweep", "project_dir": str(project_dir)},
            )
    except Exception as exc:  # noqa: BLE001 - translated at the boundary
        raise BackendError(
            f"the Ray cluster at {address} refused the sweep job: {_one_line(exc)}"
        ) from exc
    return job_id


@contextlib.contextmanager
def _packaging_keeps_git() -> Iterator[None]:
    """Ray leaves ``.git`` out of uploaded working dirs by default; the sweep's driver
    needs it (runs are pinned to the commit). Ray's documented switch, for this upload only.
    """
    name = "RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES"
    previous = os.environ.get(name)
    os.environ[name] = ""
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def detached_status(address: str, job_id: str) -> DetachedSweep:
    """The state of a sweep submitted with :func:`submit_detached`."""
    client = _job_client(address)
    try:
        info = client.get_job_info(job_id)
        status = str(getattr(info.status, "value", info.status))
        logs = client.get_job_logs(job_id) if status in ("SUCCEEDED", "FAILED") else ""
    except Exception as exc:  # noqa: BLE001 - translated at the boundary
        if "does not exist" in str(exc) or "404" in str(exc):
            raise NotFound(f"no sweep job {job_id!r} on the Ray cluster at {address}") from exc
        raise BackendError(
            f"cannot read job {job_id} from the Ray cluster at {address}: {_one_line(exc)}"
        ) from exc
    return DetachedSweep(
        job_id, status, " ".join(str(info.message or "").split()), last_json_object(logs)
    )


def last_json_object(text: str) -> dict[str, Any] | None:
    """The sweep's ``--json`` output (indented, so it starts a line with ``{``) in a log."""
    decoder = json.JSONDecoder()
    start = len(text)
    while (start := text.rfind("{\n", 0, start)) != -1:
        if start and text[start - 1] != "\n":
            continue
        try:
            value, _ = decoder.raw_decode(text, start)
        except ValueError:
            continue
        if isinstance(value, dict) and "sweep_id" in value:
            return value
    return None
