"""The job a backend receives: one run's plan and what its node needs beside it."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .record import CorruptRecord, RunPlan


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

    def to_json(self) -> dict[str, Any]:
        """The job as JSON, for a node that reads it from the store (a SLURM task)."""
        return {
            "plan": self.plan.plan_json(),
            "owner": self.owner,
            "lease_s": self.lease_s,
            "image_tag": self.image_tag,
            "files": {name: base64.b64encode(data).decode() for name, data in self.files},
            "runtime_env": dict(self.runtime_env),
            "attempt": self.attempt,
            "max_output_bytes": self.max_output_bytes,
            "checkpoint_s": self.checkpoint_s,
            "live_s": self.live_s,
            "stop_requests": self.stop_requests,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> Job:
        try:
            files = data["files"]
            env = data["runtime_env"]
            return cls(
                plan=RunPlan.from_plan_json(data["plan"], where),
                owner=str(data["owner"]),
                lease_s=float(data["lease_s"]),
                image_tag=str(data["image_tag"]),
                files=tuple((str(k), base64.b64decode(v)) for k, v in sorted(files.items())),
                runtime_env=tuple((str(k), str(v)) for k, v in sorted(env.items())),
                attempt=int(data["attempt"]),
                max_output_bytes=int(data["max_output_bytes"]),
                checkpoint_s=float(data["checkpoint_s"]),
                live_s=float(data["live_s"]),
                stop_requests=bool(data["stop_requests"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CorruptRecord(f"{where}: not a job ({type(exc).__name__}: {exc})") from None

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

    @property
    def heartbeat_s(self) -> float:
        """How often the run's holder renews its claim: several beats per lease, so a
        missed beat or two does not let the claim go stale."""
        return self.lease_s / 6
