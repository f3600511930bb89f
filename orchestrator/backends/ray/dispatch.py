"""The Ray backend's driver side: every run is a Ray task, placed by Ray on a node with
its CPUs and GPUs.

On the driver (the ``orch sweep`` process) a small dispatcher thread keeps at most
``max_in_flight`` tasks in the cluster and resolves each run's future as soon as its task
ends (``ray.wait``, one task at a time: results stream back, nothing waits for the
slowest). What a task does on its node is :mod:`.node`.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from ...errors import BackendError, OrchestratorError
from ...runner.execute import NotStarted
from ...schema.job import Job
from ...schema.record import RunRecord
from ...store import RunStore
from ..node import shared_store_uri
from .cluster import import_ray, init, one_line
from .node import run_on_node, warm_worker

#: Ray retries a task this often when its worker or node dies (never on a run's own error).
MAX_RETRIES = 3
#: How long a node's run may keep the cluster busy after ``close()`` before it is cancelled.
CLOSE_GRACE_S = 600.0
#: How long a cancelled task without a claim may still take to claim its run (it was
#: interrupted between Ray starting it and orch claiming the run).
CLAIM_GRACE_S = 5.0
_POLL_S = 0.05

_Entry = tuple[Job, Future[RunRecord]]


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
        self._runs = runs
        self._store_uri = shared_store_uri(runs.store.uri, "ray")
        self._s3_endpoint = s3_endpoint
        self._ray = ray = import_ray()
        # Ray's own variable (a Ray Job's driver is given the cluster this way).
        self._address = address or os.environ.get("RAY_ADDRESS") or None
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            init(ray, self._address)
        self._local = self._address is None
        try:
            resources = ray.cluster_resources()
            self._nodes: list[dict[str, float]] = [
                n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")
            ]
        except Exception as exc:  # noqa: BLE001 - any failure here means no usable cluster
            self._shutdown()
            raise BackendError(
                f"the Ray cluster {self._where()} does not answer: {one_line(exc)}"
            ) from exc
        self.max_in_flight = max(1, max_in_flight or int(resources.get("CPU", 1)))
        self._remote = ray.remote(max_retries=max_retries, retry_exceptions=False)(run_on_node)
        self._max_retries = max_retries
        self._warm_up(ray, len(self._nodes))
        self._cond = threading.Condition()
        self._queue: deque[_Entry] = deque()
        self._in_flight: dict[Any, _Entry] = {}  # keyed by Ray's ObjectRef
        #: The sweep asked Ray to interrupt its tasks: their answers are read in the store.
        self._interrupted = False
        self._on_start: dict[Future[RunRecord], Callable[[], None]] = {}
        self._closed = False
        self._thread = threading.Thread(target=self._dispatch, name="orch-ray", daemon=True)
        self._thread.start()

    def _warm_up(self, ray: Any, nodes: int) -> None:
        """Start the sweep's worker processes now, while the driver still composes and
        loads the first images: a tiny task per slot, spread over the nodes, imports
        what a run needs and opens the node's store and Docker client. Ray keeps a job's
        idle workers for its next tasks, so the runs find them started. Not waited for."""
        warm = ray.remote(num_cpus=1, max_retries=0)(warm_worker)
        strategy = "SPREAD" if nodes > 1 else "DEFAULT"
        for _ in range(self.max_in_flight):
            with contextlib.suppress(Exception):  # only a head start: the runs do it anyway
                warm.options(scheduling_strategy=strategy).remote(
                    self._store_uri, self._s3_endpoint
                )

    def _where(self) -> str:
        return f"at {self._address}" if self._address else "started here"

    # -- the Backend interface ----------------------------------------------------------

    def submit(self, job: Job, on_start: Callable[[], None] | None = None) -> Future[RunRecord]:
        """Queue ``job``; it becomes a Ray task once fewer than ``max_in_flight`` run
        (``on_start`` is called then: the driver cannot see the node's container start)."""
        future: Future[RunRecord] = Future()
        if on_start is not None:
            self._on_start[future] = on_start
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

    def cancel(self) -> None:
        """The sweep is cancelled: queued jobs never start, running tasks are interrupted.

        A task's interrupt stops its container, which commits a ``cancelled`` record; its
        future then yields that record like any other (a lost task fails as usual).
        """
        with self._cond:
            queued = list(self._queue)
            self._queue.clear()
            left = list(self._in_flight)
            self._interrupted = True
        for _, future in queued:
            future.cancel()
        for ref in left:
            with contextlib.suppress(Exception):
                self._ray.cancel(ref)  # not forced: the task gets KeyboardInterrupt

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

    # -- the dispatcher -------------------------------------------------------------------

    def _infeasible(self, job: Job) -> str | None:
        """A Ray started here has a fixed set of nodes: a run no node can hold would hang.

        An existing cluster may autoscale, so there Ray itself queues (and warns about)
        tasks that no current node can hold.
        """
        if not self._local:
            return None
        cpus_wanted = job.plan.resources.cpus
        if any(n.get("CPU", 0) >= cpus_wanted and n.get("GPU", 0) >= job.gpus for n in self._nodes):
            return None
        gpus = max((n.get("GPU", 0) for n in self._nodes), default=0)
        cpus = max((n.get("CPU", 0) for n in self._nodes), default=0)
        return (
            f"run {job.run_id} asks for {job.gpus} GPU(s) and {cpus_wanted:g} CPU(s) but the "
            f"Ray started here has {gpus:g} GPU(s) and {cpus:g} CPU(s): pass --ray-address "
            f"of a cluster with such nodes or lower resources in orch.yaml"
        )

    def _launch(self, job: Job, future: Future[RunRecord]) -> None:
        on_start = self._on_start.pop(future, None)
        if not future.set_running_or_notify_cancel():
            return
        if on_start is not None:
            on_start()
        resources = job.plan.resources
        options: dict[str, Any] = {
            "num_cpus": resources.cpus,
            "num_gpus": resources.gpus,
            "name": f"orch-run-{job.run_id}",
        }
        try:
            memory = memory_bytes(resources.memory)
        except BackendError as exc:
            future.set_exception(exc)
            return
        if memory:
            options["memory"] = memory
        try:
            ref = self._remote.options(**options).remote(job, self._store_uri, self._s3_endpoint)
        except Exception as exc:  # noqa: BLE001 - translated for the driver
            future.set_exception(
                BackendError(
                    f"cannot submit run {job.run_id} to the Ray cluster {self._where()}: "
                    f"{one_line(exc)}"
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
            error = BackendError(f"lost the Ray cluster {self._where()}: {one_line(exc)}")
            with self._cond:
                self._closed = True
                pending = [f for _, f in self._in_flight.values()] + [f for _, f in self._queue]
                self._in_flight.clear()
                self._queue.clear()
            for future in pending:
                if not future.done():
                    future.set_exception(error)

    def _resolve(self, ref: Any, job: Job, future: Future[RunRecord]) -> None:
        try:
            record: RunRecord = self._ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - sorted out by task_error
            # An interrupted task may also fail in Ray's own code: interrupted while Ray
            # deserializes its arguments, on a worker that inherited SIGINT ignored,
            # Ray calls the SIG_IGN constant (TypeError: 'Handlers' object is not
            # callable). Whatever it answers, the store says what became of the run.
            if _cancelled(exc) or self._interrupted:  # may take a while: not here
                threading.Thread(target=self._resolve_cancelled, args=(job, future),
                                 name="orch-ray-cancelled", daemon=True).start()
            else:
                future.set_exception(task_error(exc, job, self._max_retries))
        else:
            future.set_result(record)

    def _resolve_cancelled(self, job: Job, future: Future[RunRecord]) -> None:
        """A task the sweep cancelled. Ray answers TaskCancelledError even when the task
        caught the interrupt, stopped its container and committed the run ``cancelled``,
        and may answer it before that commit: the record is read from the store once the
        task's claim is released. A task interrupted before it claimed the run (its image
        still loading) did not start it."""
        waited_from = time.monotonic()
        try:
            while not self._runs.is_complete(job.run_id):
                if time.monotonic() - waited_from > 2 * job.lease_s or (
                    time.monotonic() - waited_from > CLAIM_GRACE_S
                    and not self._runs.claims.is_live(job.run_id, job.lease_s)
                ):
                    future.set_exception(NotStarted(job.run_id))
                    return
                time.sleep(0.2)
            future.set_result(self._runs.read_run(job.run_id))
        except Exception as exc:  # noqa: BLE001 - the sweep's future must learn of it
            future.set_exception(exc)

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


def memory_bytes(memory: str | None) -> int | None:
    """Docker's size strings ("512m", "2g") in bytes, for Ray's ``memory`` resource.

    Docker's own parser, so Ray reserves exactly what Docker will limit the run to.
    """
    if not memory:
        return None
    from docker.errors import DockerException
    from docker.utils import parse_bytes

    try:
        return int(parse_bytes(memory))
    except DockerException as exc:
        raise BackendError(f"resources.memory {memory!r}: {exc}") from exc


def _cancelled(exc: BaseException) -> bool:
    """Ray's answer for a task it was asked to cancel (as itself, or as a task's error)."""
    from ray.exceptions import RayTaskError, TaskCancelledError

    cause = exc.cause if isinstance(exc, RayTaskError) else exc
    return isinstance(cause, TaskCancelledError)


def task_error(exc: BaseException, job: Job, retries: int) -> BaseException:
    """What the driver sees when a run's task did not return a record.

    A run's own errors come back inside RayTaskError: ClaimHeld and orch errors keep
    their type; anything else, and a task lost with its worker or node after every
    retry, becomes one BackendError line.
    """
    from ray.exceptions import RayTaskError

    from ...runner.execute import ClaimHeld

    if isinstance(exc, RayTaskError):
        cause = exc.cause
        if isinstance(cause, ClaimHeld):
            return ClaimHeld(job.run_id)
        if isinstance(cause, OrchestratorError):
            return cause
        return BackendError(
            f"run {job.run_id} failed on its Ray node: "
            f"{one_line(cause) if cause is not None else 'unknown error'}"
        )
    if isinstance(exc, OrchestratorError):
        return exc
    first = one_line(exc).split(". ")[0]
    return BackendError(
        f"run {job.run_id}: its Ray task was lost (tried {retries + 1} times): {first}"
    )
