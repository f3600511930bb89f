"""What the driver and a SLURM task say to each other, through the store.

``slurm/<batch>/<index>/job.json``
    the run a task of the batch's array runs (a :class:`~orchestrator.schema.job.Job`), written
    before the array is submitted;
``slurm/<batch>/<index>/outcome.json``
    how the task ended (:class:`TaskOutcome`), written before it exits: the driver lists
    one prefix per poll instead of asking for each run.

A task that finds no ``job.json`` exits with :data:`EXIT_STORE_UNSEEN`: the store the
driver wrote to is not the one the node sees (a directory that is not shared).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from ...schema.record import CorruptRecord

PREFIX = "slurm/"
#: The exit status of a task whose node does not see the sweep's store.
EXIT_STORE_UNSEEN = 3

#: Outcomes: the run's record is in the store; another submitter holds the run; the sweep
#: stopped before the run started; the task failed with an orch error (``message``).
COMMITTED, HELD, NOT_STARTED, ERROR = "committed", "held", "not-started", "error"


def batch_prefix(batch: str) -> str:
    return f"{PREFIX}{batch}/"


def job_key(batch: str, index: int) -> str:
    return f"{PREFIX}{batch}/{index}/job.json"


def outcome_key(batch: str, index: int) -> str:
    return f"{PREFIX}{batch}/{index}/outcome.json"


def index_of_outcome(key: str, batch: str) -> int | None:
    """The task index of an ``outcome.json`` key of ``batch``, else None."""
    rest = key[len(batch_prefix(batch)):] if key.startswith(batch_prefix(batch)) else ""
    index, _, name = rest.partition("/")
    return int(index) if index.isdigit() and name == "outcome.json" else None


@dataclass(frozen=True)
class TaskOutcome:
    outcome: str
    run_id: str
    message: str = ""
    #: The exit code orch's error carries (2: input or environment, 1: a result).
    exit_code: int = 0
    slurm_job_id: str = ""
    node: str = ""

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes, where: str) -> TaskOutcome:
        try:
            raw: Any = json.loads(data)
            return cls(
                outcome=str(raw["outcome"]), run_id=str(raw["run_id"]),
                message=str(raw.get("message", "")), exit_code=int(raw.get("exit_code", 0)),
                slurm_job_id=str(raw.get("slurm_job_id", "")), node=str(raw.get("node", "")),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptRecord(f"{where}: not a task outcome ({exc})") from None
