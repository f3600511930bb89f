"""The backend interface: where a job runs is the backend's business, what it records is not."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Protocol

from ..schema.job import Job
from ..schema.record import RunRecord


class Backend(Protocol):
    name: str
    #: True when runs use the driver's own Docker daemon (the images it just loaded);
    #: False when they run elsewhere and fetch images from the store or a registry.
    shares_daemon: bool

    def submit(self, job: Job, on_start: Callable[[], None] | None = None) -> Future[RunRecord]:
        """Start the job; the future yields its committed record (or raises OrchestratorError).

        ``on_start`` is called when the run's container is about to start (a backend that
        cannot tell calls it when the job is handed to the cluster).
        """
        ...

    def cancel(self) -> None:
        """The sweep is cancelled: start nothing more, stop what runs (their records say
        ``cancelled``); the futures still resolve."""
        ...

    def close(self) -> None: ...
