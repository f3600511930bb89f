"""Detached sweeps: the sweep's driver itself runs on the cluster, as a Ray Job.

:func:`submit_detached` uploads the project directory (:mod:`.workdir`) with a job whose
entry point is ``python -m orchestrator.api.detached REQUEST``: REQUEST is the
:class:`~orchestrator.store.request.SweepRequest` as one JSON argument, and the request's id is
the job's submission id. The driver runs on the head node; it builds the images on the
head's Docker daemon with the head's store credentials, runs every point as a Ray task
like an attached sweep, and writes the sweep's outcome to the store
(``requests/<job_id>.json``). :func:`detached_status` combines Ray's view of the job
(pending, running, ended) with that outcome: nothing is read from the job's logs.
"""

from __future__ import annotations

import dataclasses
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import BackendError, NotFound, UsageError
from ...store.interface import Store
from ...store.request import SweepOutcome, SweepRequest, check_request_id, read_outcome
from ..node import shared_store_uri
from .cluster import check_reachable, import_ray, one_line
from .workdir import zip_project

#: The module a detached sweep's job runs (``python -m``) on the head node.
ENTRY_POINT = "orchestrator.api.detached"
_ENDED = ("SUCCEEDED", "FAILED", "STOPPED")


@dataclass(frozen=True)
class DetachedSweep:
    """Where a detached sweep is: Ray's job status, and the sweep's outcome once it ended."""

    job_id: str
    status: str  # PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED
    message: str
    #: What the sweep's driver wrote to the store when it ended (None before, or if it
    #: died without writing it).
    outcome: SweepOutcome | None = None

    @property
    def done(self) -> bool:
        return self.status in _ENDED

    @property
    def result(self) -> dict[str, Any] | None:
        """The ``orch sweep --json`` object of the finished sweep, None if it did not run."""
        return self.outcome.sweep_json() if self.outcome is not None else None


def _job_client(address: str) -> Any:
    import_ray()
    check_reachable(address)
    try:
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(address)
    except Exception as exc:  # noqa: BLE001 - translated at the boundary
        raise BackendError(
            f"cannot reach the Ray Jobs API of the cluster at {address}: {one_line(exc)} "
            f"(the head node must run the dashboard: ray start --head --include-dashboard=true)"
        ) from exc


def entrypoint(request: SweepRequest) -> str:
    """The job's shell command: the request travels as one quoted JSON argument."""
    return shlex.join(["python", "-m", ENTRY_POINT, request.encode()])


def submit_detached(address: str, project_dir: Path, request: SweepRequest) -> str:
    """Submit ``request``'s sweep of ``project_dir`` to the cluster; returns the job id.

    The store must be one the head and every node can reach; this machine may disconnect
    as soon as this returns.
    """
    uri = shared_store_uri(request.store_uri, "ray")
    if uri.startswith("file://") and not Path(uri[len("file://") :]).is_absolute():
        raise UsageError(f"--store {request.store_uri}: a detached sweep needs an absolute path")
    request = dataclasses.replace(request, store_uri=uri)
    job_id = check_request_id(request.request_id)
    client = _job_client(address)
    with tempfile.TemporaryDirectory(prefix="orch-detach-") as tmp:
        package = zip_project(project_dir, Path(tmp) / "project.zip")
        try:
            # Ray uploads the zip during this call, so it may go with the directory after.
            client.submit_job(
                entrypoint=entrypoint(request),
                submission_id=job_id,
                runtime_env={"working_dir": str(package)},
                metadata={"orch": "sweep", "project_dir": str(project_dir)},
            )
        except Exception as exc:  # noqa: BLE001 - translated at the boundary
            raise BackendError(
                f"the Ray cluster at {address} refused the sweep job: {one_line(exc)}"
            ) from exc
    return job_id


def detached_status(address: str, job_id: str, store: Store) -> DetachedSweep:
    """The state of a sweep submitted with :func:`submit_detached` to ``store``.

    Ray says whether the job is pending, running or ended; once it ended, the sweep's
    outcome is read from ``store`` (the one the sweep was submitted with).
    """
    check_request_id(job_id)
    client = _job_client(address)
    try:
        info = client.get_job_info(job_id)
        status = str(getattr(info.status, "value", info.status))
    except Exception as exc:  # noqa: BLE001 - translated at the boundary
        if "does not exist" in str(exc) or "404" in str(exc):
            raise NotFound(f"no sweep job {job_id!r} on the Ray cluster at {address}") from exc
        raise BackendError(
            f"cannot read job {job_id} from the Ray cluster at {address}: {one_line(exc)}"
        ) from exc
    message = " ".join(str(info.message or "").split())
    outcome = read_outcome(store, job_id) if status in _ENDED else None
    if outcome is not None and outcome.error:
        message = outcome.error  # says why, where Ray says only "exit code 2"
    return DetachedSweep(job_id, status, message, outcome)
