"""The SLURM backend's driver side: the sweep's runs become tasks of job arrays.

``submit`` only queues a job; a moment later (``flush_s``: the driver hands over a batch
of runs in one go) the queued jobs are written to the store and submitted as one array
per set of resources, throttled to ``--jobs`` with ``%N``. A poller then follows the
arrays: one ``scontrol show job`` and one store listing per array and poll. A task's
``outcome.json`` resolves its run's future; a task that ended without one (killed,
cancelled before it started, a node that does not see the store) is explained from its
state and exit status.

The tasks need nothing from the driver once submitted: with ``detach`` it returns as soon
as the arrays are in, and the records arrive in the store all the same.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..._util.stopping import Stop
from ...compose.project import SlurmOptions
from ...errors import BackendError, OrchestratorError
from ...runner.execute import ClaimHeld, NotStarted
from ...schema.job import Job
from ...schema.record import RunRecord, RunResources
from ...store import RunStore
from ..node import shared_store_uri
from .commands import REST, Slurm, TaskState
from .protocol import (
    COMMITTED,
    EXIT_STORE_UNSEEN,
    HELD,
    NOT_STARTED,
    TaskOutcome,
    batch_prefix,
    index_of_outcome,
    job_key,
)
from .script import ArrayRequest, array_script, finish_script, stop_grace

log = logging.getLogger("orchestrator.slurm")

POLL_S = 0.5
FLUSH_S = 0.2


@dataclass
class _Task:
    job: Job
    future: Future[RunRecord]
    on_start: Callable[[], None] | None = None
    started: bool = False


@dataclass
class _Array:
    batch: str
    job_id: str
    tasks: dict[int, _Task] = field(default_factory=dict)

    def open(self) -> dict[int, _Task]:
        return {i: t for i, t in self.tasks.items() if not t.future.done()}


class SlurmBackend:
    """Runs jobs as tasks of SLURM job arrays, on the cluster whose client commands this
    process has (``SLURM_CONF``)."""

    name = "slurm"
    shares_daemon = False

    def __init__(
        self,
        runs: RunStore,
        options: SlurmOptions,
        *,
        log_dir: Path,
        python: str,
        jobs: int | None = None,
        s3_endpoint: str | None = None,
        stop: Stop | None = None,
        detach: bool = False,
        slurm: Slurm | None = None,
        poll_s: float = POLL_S,
        flush_s: float = FLUSH_S,
    ) -> None:
        self.runs = runs
        self.options = options
        #: The driver returns once the arrays are submitted; the tasks commit on their own.
        self.detached = detach
        self._uri = shared_store_uri(runs.store.uri, "slurm")
        self._slurm = slurm or Slurm()
        # Also the first word with the controller: a cluster that does not answer fails here.
        config = self._slurm.config()
        self._max_array = config.max_array_size
        self._stop_grace_s = stop_grace(config.kill_wait_s)
        self._log_dir = log_dir
        self._python = python
        self._jobs = jobs
        self._s3_endpoint = s3_endpoint
        self._stop = stop or Stop()
        self._poll_s = poll_s
        self._flush_s = flush_s
        self._cond = threading.Condition()
        self._buffer: list[_Task] = []
        self._flush_at = 0.0
        self._arrays: list[_Array] = []
        self._closed = False
        self._cancelled = False
        self._drained = False
        #: Job ids of every array submitted (``orch sweep --detach`` prints them).
        self.submitted: list[str] = []
        self._thread = threading.Thread(target=self._loop, name="orch-slurm", daemon=True)
        self._thread.start()

    # -- the Backend interface ----------------------------------------------------------

    def submit(self, job: Job, on_start: Callable[[], None] | None = None) -> Future[RunRecord]:
        future: Future[RunRecord] = Future()
        with self._cond:
            if self._closed:
                raise BackendError("the SLURM backend is closed")
            if not self._buffer:
                self._flush_at = time.monotonic() + self._flush_s
            self._buffer.append(_Task(job, future, on_start))
            self._cond.notify_all()
        return future

    def cancel(self) -> None:
        """Ctrl-C twice, SIGTERM: ``scancel`` every array. A running task gets SIGTERM,
        stops its container and commits the run as ``cancelled``; pending ones vanish."""
        with self._cond:
            self._cancelled = True
            buffered, self._buffer = self._buffer, []
            ids = [a.job_id for a in self._arrays]
            self._cond.notify_all()
        for task in buffered:
            task.future.set_exception(NotStarted(task.job.run_id))
        with contextlib.suppress(BackendError):  # the poller reports what became of them
            self._slurm.cancel(ids)

    def close(self) -> None:
        """Stop following the arrays. Tasks still running go on and commit their runs to
        the store (nothing of theirs needs this process); a re-submission finds them."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()
        with self._cond:
            left = [t for a in self._arrays for t in a.open().values()] + self._buffer
            self._buffer = []
        for task in left:
            if not task.future.done():
                task.future.set_exception(NotStarted(task.job.run_id))

    # -- the poller -----------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return  # close() settles what was never submitted
                wait = self._poll_s
                if self._buffer:
                    wait = min(wait, self._flush_at - time.monotonic())
                if wait > 0:
                    self._cond.wait(wait)
                if self._closed:
                    return
                due = bool(self._buffer) and time.monotonic() >= self._flush_at
                taken, self._buffer = (self._buffer, []) if due else ([], self._buffer)
            if taken:
                self._flush(taken)
            if not self.detached:
                self._drain_if_asked()
                self._poll()

    def _drain_if_asked(self) -> None:
        """The first Ctrl-C: tasks not started yet never start (the running ones finish)."""
        if self._drained or not self._stop.draining:
            return
        self._drained = True
        with self._cond:
            ids = [a.job_id for a in self._arrays if a.open()]
        with contextlib.suppress(BackendError):
            self._slurm.cancel(ids, pending_only=True)

    def _flush(self, tasks: list[_Task]) -> None:
        """Submit ``tasks`` as arrays: one per set of resources, split to fit
        ``MaxArraySize``, each split after the one before it (so ``%N`` holds)."""
        submitted = self._submit_groups(tasks)
        if self.detached and submitted:
            self._hand_over(tasks[0].job.sweep_id, submitted)
        if self.detached:  # settled last: the driver returns once they are
            for array in submitted:
                for task in array.tasks.values():
                    task.future.set_exception(NotStarted(task.job.run_id))

    def _hand_over(self, sweep_id: str, arrays: list[_Array]) -> None:
        """A detached sweep stays open after this process: its marker (which keeps its
        blobs from gc) is handed to the arrays, and a last job, after them, closes it."""
        ids = [a.job_id for a in arrays]
        try:
            marker = self.runs.hand_over(sweep_id, {"slurm_jobs": ids})
            script = finish_script(
                store_uri=self._uri, sweep_id=sweep_id, marker=marker,
                batches=[a.batch for a in arrays], after=ids, python=self._python,
                log_dir=self._log_dir, options=self.options, s3_endpoint=self._s3_endpoint,
            )
            self.submitted.append(self._slurm.submit(script))
        except OrchestratorError as exc:  # the runs go on; only their index waits for gc
            log.warning("sweep %s: could not submit its closing job: %s", sweep_id, exc)

    def _submit_groups(self, tasks: list[_Task]) -> list[_Array]:
        submitted: list[_Array] = []
        groups: dict[RunResources, list[_Task]] = {}
        for task in tasks:
            groups.setdefault(task.job.plan.resources, []).append(task)
        for resources, group in groups.items():
            after: list[str] = []
            for start in range(0, len(group), self._max_array):
                chunk = group[start : start + self._max_array]
                try:
                    array = self._submit_array(resources, chunk, after)
                except OrchestratorError as exc:
                    for task in chunk:
                        task.future.set_exception(exc)
                    continue
                after = [array.job_id]
                submitted.append(array)
                if self.detached:
                    continue
                with self._cond:
                    self._arrays.append(array)
                    late = self._cancelled  # cancel() ran while this array was submitted
                if late:
                    with contextlib.suppress(BackendError):
                        self._slurm.cancel([array.job_id])
        return submitted

    def _submit_array(
        self, resources: RunResources, tasks: list[_Task], after: list[str]
    ) -> _Array:
        batch = f"{tasks[0].job.sweep_id[:12]}-{uuid.uuid4().hex[:12]}"
        store = self.runs.store
        with ThreadPoolExecutor(8, thread_name_prefix="orch-slurm-put") as pool:
            puts = [
                pool.submit(store.put, job_key(batch, i), _encode(task.job))
                for i, task in enumerate(tasks)
            ]
            for put in puts:
                put.result()
        self._log_dir.mkdir(parents=True, exist_ok=True)
        request = ArrayRequest(
            store_uri=self._uri,
            batch=batch,
            size=len(tasks),
            resources=resources,
            job_name=f"orch-{tasks[0].job.plan.project or 'run'}",
            python=self._python,
            log_dir=self._log_dir,
            throttle=self._jobs,
            s3_endpoint=self._s3_endpoint,
            after=after,
            stop_grace_s=self._stop_grace_s,
        )
        job_id = self._slurm.submit(array_script(request, self.options))
        self.submitted.append(job_id)
        return _Array(batch, job_id, dict(enumerate(tasks)))

    def _poll(self) -> None:
        with self._cond:
            arrays = [a for a in self._arrays if a.open()]
            self._arrays = arrays
        for array in arrays:
            try:
                # Task states first, then outcomes: a task that wrote its outcome and
                # ended in between is found by the listing, never taken for lost.
                states = self._slurm.tasks(array.job_id)
                done = {}
                for key in self.runs.store.list(batch_prefix(array.batch)):
                    index = index_of_outcome(key, array.batch)
                    if index is not None:
                        done[index] = key
            except OrchestratorError as exc:
                for task in array.open().values():
                    task.future.set_exception(exc)
                continue
            for index, task in array.open().items():
                state = _state(states, index)
                if index in done:
                    self._resolve(task, done[index])
                elif states is None or (state is not None and state.ended):
                    self._lost(array, index, task, state)
            for index, task in array.open().items():  # after the ends: a slot was freed
                state = _state(states, index)
                if state is not None and state.running and not task.started:
                    task.started = True
                    if task.on_start is not None:
                        task.on_start()
            if not array.open():
                self._forget(array)

    def _forget(self, array: _Array) -> None:
        """Every run of the array is settled: its jobs and outcomes are of no more use."""
        with contextlib.suppress(OrchestratorError):
            for key in list(self.runs.store.list(batch_prefix(array.batch))):
                self.runs.store.delete(key)

    def _resolve(self, task: _Task, key: str) -> None:
        run_id = task.job.run_id
        try:
            outcome = TaskOutcome.decode(self.runs.store.get(key), self.runs.where(key))
            if outcome.outcome == COMMITTED:
                task.future.set_result(self.runs.read_run(run_id))
            elif outcome.outcome == HELD:
                task.future.set_exception(ClaimHeld(run_id))
            elif outcome.outcome == NOT_STARTED:
                task.future.set_exception(NotStarted(run_id))
            else:
                where = f" on SLURM node {outcome.node}" if outcome.node else ""
                task.future.set_exception(BackendError(f"run {run_id}{where}: {outcome.message}"))
        except OrchestratorError as exc:
            task.future.set_exception(exc)

    def _lost(self, array: _Array, index: int, task: _Task, state: TaskState | None) -> None:
        """A task ended without saying how: the store may still hold its record (killed
        right after its commit); else the state says why."""
        run_id = task.job.run_id
        try:
            if self.runs.is_complete(run_id):
                task.future.set_result(self.runs.read_run(run_id))
                return
        except OrchestratorError as exc:
            task.future.set_exception(exc)
            return
        task_id = f"{array.job_id}_{index}"
        if state is not None and state.exit_code == EXIT_STORE_UNSEEN:
            task.future.set_exception(BackendError(
                f"SLURM node {state.node or '?'} does not see the store {self._uri} (task "
                f"{task_id}): a directory store must be on a filesystem every node mounts at "
                "the same path; use that path, or s3://bucket/prefix"
            ))
            return
        if self._cancelled or self._drained or (state is not None and state.state == "CANCELLED"
                                                and not task.started):
            task.future.set_exception(NotStarted(run_id))
            return
        how = (f"ended {state.state} (exit {state.exit_code}, signal {state.signal})"
               if state is not None else "is no longer known to SLURM")
        task.future.set_exception(BackendError(
            f"run {run_id}: its SLURM task {task_id} {how} without committing it; the "
            f"task's output is {self._log_dir}/{array.job_id}_{index}.out"
        ))


def _state(states: dict[int, TaskState] | None, index: int) -> TaskState | None:
    if states is None:
        return None
    return states.get(index) or states.get(REST)


def _encode(job: Job) -> bytes:
    return json.dumps(job.to_json(), sort_keys=True).encode()
