"""The local backend: containers on one Docker daemon, ``jobs`` at a time."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from .._util.stopping import Stop
from ..daemon.client import DockerClient
from ..errors import BackendError
from ..runner.execute import execute
from ..schema.job import Job
from ..schema.record import RunRecord
from ..store import RunStore


class GpuPool:
    """Hands each concurrent run distinct device ids, and takes them back after.

    A run takes all its ids at once, so two runs each waiting for a second GPU
    cannot deadlock.
    """

    def __init__(self, ids: list[str]) -> None:
        self._free = list(ids)
        self.size = len(ids)
        self._cond = threading.Condition()

    def take(self, count: int) -> list[str]:
        if count > self.size:
            raise BackendError(
                f"a run asks for {count} GPUs but {self.size} are available "
                f"(pass --gpu-ids or lower resources.gpus)"
            )
        with self._cond:
            self._cond.wait_for(lambda: len(self._free) >= count)
            taken, self._free = self._free[:count], self._free[count:]
            return taken

    def give(self, ids: list[str]) -> None:
        with self._cond:
            self._free.extend(ids)
            self._free.sort()
            self._cond.notify_all()


class LocalBackend:
    name = "local"
    shares_daemon = True

    def __init__(
        self,
        client: DockerClient,
        runs: RunStore,
        jobs: int = 1,
        gpu_ids: list[str] | None = None,
        *,
        stop: Stop | None = None,
        work_root: Path | None = None,
    ) -> None:
        self._client = client
        self._runs = runs
        self._stop = stop or Stop()
        self._work_root = work_root
        # Twice the threads of the limit: a run's bookkeeping (logs, outputs, commit)
        # overlaps with the next run's container, which alone holds a slot.
        self._slot = threading.BoundedSemaphore(max(1, jobs))
        self._pool = ThreadPoolExecutor(max_workers=2 * max(1, jobs), thread_name_prefix="orch-run")
        self._gpus = GpuPool(gpu_ids or [])

    def submit(self, job: Job, on_start: Callable[[], None] | None = None) -> Future[RunRecord]:
        return self._pool.submit(self._run, job, on_start)

    def _run(self, job: Job, on_start: Callable[[], None] | None) -> RunRecord:
        gpus = self._gpus.take(job.gpus) if job.gpus else []
        try:
            return execute(
                job, self._client, self._runs, gpu_ids=gpus, slot=self._slot,
                stop=self._stop, work_root=self._work_root, on_start=on_start,
            )
        finally:
            self._gpus.give(gpus)

    def cancel(self) -> None:
        """Nothing to do here: every run watches the shared :class:`Stop` itself."""

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
