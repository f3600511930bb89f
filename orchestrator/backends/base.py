"""The backend interface and the job a backend receives."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Job:
    """One run to execute: plain, picklable data (it crosses to Ray workers)."""

    run_id: str
    sweep_id: str
    image_id: str
    image_tag: str
    command: tuple[str, ...]
    cpus: float
    gpus: int
    memory: str | None
    timeout: float | None
    network: str
    owner: str
    #: Fields of run.json known before the run (config, overrides, layers, git, ...).
    record: dict[str, Any] = field(default_factory=dict)
    #: Files stored next to the run besides its outputs ("config.yaml", "dirty.diff").
    files: tuple[tuple[str, bytes], ...] = ()
    #: Extra runtime environment (never baked, never recorded): none by default.
    runtime_env: tuple[tuple[str, str], ...] = ()


class Backend(Protocol):
    name: str
    #: True when runs use the driver's own Docker daemon (the images it just loaded);
    #: False when they run elsewhere and fetch images from the store or a registry.
    shares_daemon: bool

    def submit(self, job: Job) -> Future[dict[str, Any]]:
        """Start the job; the future yields its committed record (or raises OrchestratorError)."""
        ...

    def close(self) -> None: ...
