"""The job a backend receives: one run's plan and what its node needs beside it."""

from __future__ import annotations

from dataclasses import dataclass

from .record import RunPlan


@dataclass(frozen=True)
class Job:
    """One run to execute: plain, picklable data (it crosses to Ray workers)."""

    plan: RunPlan
    #: Who submitted it: a random id per submission, the owner of the run's claim.
    owner: str
    #: A claim not renewed for this many seconds may be taken over (the submitter's
    #: setting travels with the job, so every node agrees on it).
    lease_s: float = 60.0
    image_tag: str = ""
    #: Files stored next to the run besides its outputs ("config.yaml", "dirty.diff").
    files: tuple[tuple[str, bytes], ...] = ()
    #: Extra runtime environment (never baked, never recorded): none by default.
    runtime_env: tuple[tuple[str, str], ...] = ()
    #: 1 for a run's first attempt; a re-submission retrying it makes the next one.
    attempt: int = 1
    #: The submitter's limits, so every node applies the same ones.
    max_output_bytes: int = 10 << 30
    checkpoint_s: float = 30.0
    live_s: float = 1.0
    #: A search that prunes runs: the node looks for a stop request in the store
    #: (``runs/<id>/stop.json``) each time it publishes, and stops the run as ``pruned``.
    stop_requests: bool = False

    @property
    def run_id(self) -> str:
        return self.plan.run_id

    @property
    def sweep_id(self) -> str:
        return self.plan.sweep_id

    @property
    def image_id(self) -> str:
        return self.plan.image_id

    @property
    def gpus(self) -> int:
        return self.plan.resources.gpus
