"""One task of a sweep's job array, on its SLURM node:
``python -m orchestrator.backends.slurm.task STORE_URI BATCH --stop-grace SECONDS
[--s3-endpoint URL] [--engine docker|apptainer]``.

1. reads its run from the store (``slurm/<batch>/<SLURM_ARRAY_TASK_ID>/job.json``); a
   store without it is not the driver's (exit :data:`~.protocol.EXIT_STORE_UNSEEN`);
2. puts the run's image on the node's daemon by digest (store blobs or registry, only
   the layers it lacks), as a Ray node does;
3. runs it with :func:`orchestrator.runner.execute.execute`, the only code that writes run
   records, with the GPUs SLURM gave the task (``SLURM_JOB_GPUS``: the node's device
   ids, what the container is given) and the node's name;
4. writes how it ended to ``outcome.json`` and exits.

Exactly one record per run comes from the store's claim. Each execution of a task claims
with an owner of its own (the submission's, plus the SLURM job id and restart count), so
a task requeued after its node was lost does not share a claim with the orphaned first
copy still running there: it waits while that copy's claim is live, returns when that
copy commits, and takes the run over (resuming from its checkpoint) when the claim goes
stale. A run held by another *submission* is reported as held; the driver waits for it.

SIGTERM (``scancel``, a time limit) stops the container (SIGTERM, then SIGKILL after
``--stop-grace``, which fits in the cluster's ``KillWait``) and commits the run as
``cancelled``. Whatever happens, the task removes its containers before it exits (they
carry the labels ``slurm_job_id=<id>`` and ``slurm_cluster=<name>``, so a node epilog can
remove them after a SIGKILL too).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from ..._util.stopping import Stop
from ...errors import NotFound, OrchestratorError
from ...schema.job import Job
from ...schema.record import RunRecord
from ...store import RunStore
from .protocol import (
    COMMITTED,
    ERROR,
    EXIT_STORE_UNSEEN,
    HELD,
    NOT_STARTED,
    TaskOutcome,
    job_key,
    outcome_key,
)

log = logging.getLogger("orchestrator.slurm.task")

#: The labels each container of a task carries (what a node epilog filters on): job ids
#: are per cluster, and two clusters may share a machine's daemon (test clusters do).
JOB_LABEL = "slurm_job_id"
CLUSTER_LABEL = "slurm_cluster"


class _LabelledContainers:
    def __init__(self, containers: Any, labels: dict[str, str]) -> None:
        self._containers = containers
        self._labels = labels

    def create(self, **kwargs: Any) -> Any:
        kwargs["labels"] = {**(kwargs.get("labels") or {}), **self._labels}
        return self._containers.create(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._containers, name)


class LabelledClient:
    """A Docker client whose containers carry ``labels`` besides orch's own."""

    def __init__(self, client: Any, labels: dict[str, str]) -> None:
        self._client = client
        self.containers = _LabelledContainers(client.containers, labels)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def slurm_gpu_ids(environ: dict[str, str] | os._Environ[str]) -> list[str]:
    """The node's ids of the GPUs SLURM gave this task (``SLURM_JOB_GPUS``; inside the
    task ``CUDA_VISIBLE_DEVICES`` renumbers them from 0, which a container started by a
    daemon outside the task's cgroup must not use)."""
    for name in ("SLURM_JOB_GPUS", "SLURM_STEP_GPUS"):
        value = environ.get(name, "")
        if value:
            return [g.strip() for g in value.split(",") if g.strip()]
    return []


def task_owner(job: Job, environ: dict[str, str] | os._Environ[str]) -> str:
    """This execution's claim owner: the submission's, then which SLURM job and restart."""
    job_id = environ.get("SLURM_JOB_ID", "0")
    restarts = environ.get("SLURM_RESTART_COUNT", "0")
    return f"{job.owner}.{job_id}.{restarts}"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--finish"]:
        return finish(args[1:])
    s3_endpoint = _take(args, "--s3-endpoint") or None
    engine = _take(args, "--engine") or "docker"
    grace = _take(args, "--stop-grace")
    in_array = "SLURM_ARRAY_TASK_ID" in os.environ
    if len(args) != 2 or not grace.isdigit() or not in_array or engine not in ("docker",
                                                                              "apptainer"):
        print("usage: python -m orchestrator.backends.slurm.task STORE_URI BATCH "
              "--stop-grace SECONDS [--s3-endpoint URL] [--engine docker|apptainer] (in a "
              "task of a SLURM job array)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s orch task: %(message)s",
                        stream=sys.stderr)
    store_uri, batch = args
    index = int(os.environ["SLURM_ARRAY_TASK_ID"])
    environ = os.environ
    node = environ.get("SLURMD_NODENAME") or socket.gethostname()
    slurm_job = environ.get("SLURM_JOB_ID", "")
    try:
        from ...store import open_store

        runs = RunStore(open_store(store_uri, project_dir=Path.cwd(), s3_endpoint=s3_endpoint))
        raw = runs.store.get(job_key(batch, index))
    except NotFound:
        print(f"error: node {node} does not see the sweep's store {store_uri}: no "
              f"{job_key(batch, index)} there", file=sys.stderr)
        return EXIT_STORE_UNSEEN
    except OrchestratorError as exc:
        print(f"error: node {node}: store {store_uri}: {exc}", file=sys.stderr)
        return exc.exit_code
    try:
        job = Job.from_json(json.loads(raw), runs.where(job_key(batch, index)))
    except (OrchestratorError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop = Stop()
    _handle_signals(stop)
    outcome = _run(job, runs, stop, node=node, slurm_job=slurm_job, environ=environ,
                   engine=engine, stop_grace_s=int(grace))
    outcome = dataclasses.replace(outcome, slurm_job_id=slurm_job, node=node)
    try:
        runs.store.put(outcome_key(batch, index), outcome.encode())
    except OrchestratorError as exc:  # the record, if any, is in; the driver finds it
        print(f"error: cannot write the task's outcome: {exc}", file=sys.stderr)
    if outcome.outcome == ERROR:
        print(f"error: {outcome.message}", file=sys.stderr)
        return outcome.exit_code or 2
    return 0


def _take(args: list[str], flag: str) -> str:
    """The value of ``flag VALUE`` in ``args``, both removed; "" when absent."""
    if flag not in args:
        return ""
    at = args.index(flag)
    value = args[at + 1] if at + 1 < len(args) else ""
    del args[at : at + 2]
    return value


def finish(args: list[str]) -> int:
    """``--finish STORE_URI SWEEP_ID MARKER BATCH...``: the last job of a detached sweep
    (after its arrays): the arrays' job objects go, then the sweep's index is written from
    its records and its open marker removed."""
    s3_endpoint = _take(args, "--s3-endpoint") or None
    if len(args) < 3:
        print("usage: python -m orchestrator.backends.slurm.task --finish STORE_URI SWEEP_ID "
              "MARKER BATCH... [--s3-endpoint URL]", file=sys.stderr)
        return 2
    store_uri, sweep_id, marker, *batches = args
    from ...store import open_store
    from .protocol import batch_prefix

    try:
        runs = RunStore(open_store(store_uri, project_dir=Path.cwd(), s3_endpoint=s3_endpoint))
        # The job objects go first: a sweep seen closed (``orch watch`` returned, the
        # marker gone) has nothing of its arrays left in the store.
        for batch in batches:
            for key in list(runs.store.list(batch_prefix(batch))):
                runs.store.delete(key)
        runs.close_handed_over(sweep_id, marker)
    except OrchestratorError as exc:
        print(f"error: sweep {sweep_id}: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"sweep {sweep_id}: index written, closed", file=sys.stderr)
    return 0


def _handle_signals(stop: Stop) -> None:
    """SIGTERM (scancel, the time limit, a preemption) and SIGINT cancel the run: its
    container is stopped and the run committed as ``cancelled``."""

    def cancel(signum: int) -> None:
        log.info("%s: stopping the run", signal.Signals(signum).name)
        stop.cancel()

    def handler(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=cancel, args=(signum,), name="orch-cancel", daemon=True).start()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _run(
    job: Job, runs: RunStore, stop: Stop, *, node: str, slurm_job: str,
    environ: dict[str, str] | os._Environ[str], engine: str = "docker",
    stop_grace_s: int,
) -> TaskOutcome:
    from ...runner.execute import ClaimHeld, NotStarted, execute
    from ..gpusim import SimulatedGpuClient, simulates_gpus

    run_id = job.run_id
    mine = dataclasses.replace(job, owner=task_owner(job, environ))
    client: Any = None
    try:
        if runs.is_complete(run_id):  # a requeued task whose first copy did commit
            return TaskOutcome(COMMITTED, run_id)
        gpu_ids = slurm_gpu_ids(environ)
        simulated = bool(gpu_ids) and simulates_gpus()
        labelled: Any
        if engine == "apptainer":
            labelled = _apptainer_client(job, runs, [] if simulated else gpu_ids)
        else:
            from ...daemon.client import connect
            from ..node import docker_host, ensure_run_image

            client = connect(docker_host() or None)
            ensure_run_image(client, runs, job)
            labelled = LabelledClient(client, _labels(slurm_job, environ))
            if simulated:
                labelled = SimulatedGpuClient(labelled, gpu_ids)
        while True:
            try:
                record: RunRecord = execute(
                    mine, labelled, runs, gpu_ids=gpu_ids, node=node,
                    gpus_simulated=simulated, stop=stop, stop_grace_s=stop_grace_s,
                )
                log.info("run %s %s", run_id, record.status.value)
                return TaskOutcome(COMMITTED, run_id)
            except ClaimHeld:
                if runs.is_complete(run_id):
                    return TaskOutcome(COMMITTED, run_id)
                if not _held_by_this_submission(runs, job):
                    return TaskOutcome(HELD, run_id)
                if stop.cancelled:
                    return TaskOutcome(NOT_STARTED, run_id)
                # An earlier copy of this very task (its node lost, the task requeued)
                # still holds the run: wait for it to commit or for its claim to go stale.
                log.info("run %s: an earlier copy of this task holds it; waiting", run_id)
                time.sleep(min(5.0, max(0.5, job.heartbeat_s)))
    except NotStarted:
        return TaskOutcome(NOT_STARTED, run_id)
    except OrchestratorError as exc:
        return TaskOutcome(ERROR, run_id, message=str(exc), exit_code=exc.exit_code)
    finally:
        if client is not None and slurm_job:
            # Nothing of the task outlives it: a container a failure left is removed.
            from ...daemon.client import remove_containers

            remove_containers(client, _labels(slurm_job, environ))


def _apptainer_client(job: Job, runs: RunStore, gpu_ids: list[str]) -> Any:
    """The run's image as a SIF in the node's cache (built once per node), and a client
    that runs it with ``apptainer exec``."""
    from ...settings import Settings
    from ..node import once_uploaded
    from .apptainer import ensure_sif
    from .apptainer_client import ApptainerClient

    cache = Settings.from_env().cache_root / "sif"
    sif = once_uploaded(
        lambda: ensure_sif(runs.blobs, job.image_id, cache, repo_digest=job.plan.repo_digest),
        job,
    )
    log.info("run %s: %s (sha256 %s, from %s)", job.run_id, sif.path, sif.sha256, sif.source)
    return ApptainerClient(job.plan, sif, gpu_ids)


def _held_by_this_submission(runs: RunStore, job: Job) -> bool:
    owner = runs.claims.holder(job.run_id)
    return owner is not None and owner.split(".", 1)[0] == job.owner


def _labels(slurm_job: str, environ: Mapping[str, str]) -> dict[str, str]:
    if not slurm_job:
        return {}
    return {JOB_LABEL: slurm_job, CLUSTER_LABEL: environ.get("SLURM_CLUSTER_NAME", "")}


if __name__ == "__main__":
    sys.exit(main())
