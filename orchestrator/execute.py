"""One run, start to finish, on whatever node it landed: claim, run, commit.

This is the only code that writes a run's record, whichever backend called it, so
the store commit protocol holds everywhere: outputs and logs first, ``run.json`` last.
"""

from __future__ import annotations

import json
import math
import socket
import threading
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from . import container
from . import inputs as inputsmod
from .job import Job
from .record import RunRecord, RunStatus, iso
from .store import RunStore


class ClaimHeld(Exception):
    """Another submitter holds the run; the driver waits for it instead of running it."""


def parse_metrics(raw: bytes | None) -> tuple[dict[str, float], str | None]:
    """metrics.json must be a flat JSON object of numbers."""
    if raw is None:
        return {}, None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        return {}, f"metrics.json is not valid JSON: {exc}"
    if not isinstance(data, dict):
        return {}, "metrics.json must be a JSON object of numbers"
    metrics: dict[str, float] = {}
    for key, value in sorted(data.items()):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (isinstance(value, float) and not math.isfinite(value))
        ):
            return {}, f"metrics.json: {key!r} is not a finite number"
        metrics[key] = value
    return metrics, None


class _Heartbeat:
    """Renews a run's claim several times per lease while its container lives."""

    def __init__(self, runs: RunStore, job: Job) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, args=(runs, job), daemon=True, name=f"claim-{job.run_id}"
        )

    def _beat(self, runs: RunStore, job: Job) -> None:
        while not self._stop.wait(job.lease_s / 6):
            try:
                runs.claims.claim(job.run_id, job.owner, job.lease_s)
            except Exception:  # noqa: BLE001 - a missed beat only shortens the lease
                pass

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()


def execute(
    job: Job,
    client: Any,
    runs: RunStore,
    *,
    gpu_ids: list[str] | None = None,
    node: str | None = None,
    gpus_simulated: bool = False,
    attempt: int = 0,
    slot: AbstractContextManager[Any] | None = None,
    cache_root: Path | None = None,
    verify_inputs: bool = False,
) -> RunRecord:
    """Run ``job`` and commit its record. Raises ClaimHeld when someone else has it.

    The run's data inputs are materialized first, on this node, from ``runs``' blobs
    into the host cache at ``cache_root`` (default: ``$ORCH_CACHE`` or the XDG cache):
    an input that cannot be had exactly raises InputError before anything is claimed.
    """
    if runs.is_complete(job.run_id):
        return runs.read_run(job.run_id)
    plan = job.plan
    mounts = _input_mounts(job, runs, cache_root, verify_inputs)
    if not runs.claims.claim(job.run_id, job.owner, job.lease_s):
        raise ClaimHeld(job.run_id)
    gpu_ids = list(gpu_ids or [])
    kwargs = container.create_kwargs(
        image_id=plan.image_id,
        command=list(plan.command),
        run_id=job.run_id,
        cpus=plan.resources.cpus,
        memory=plan.resources.memory,
        network=plan.network,
        gpu_ids=gpu_ids,
        env={**dict(job.runtime_env), **_input_env(plan.inputs)},
        name=f"orch-{job.run_id}-{job.owner[:8]}-{attempt}",
        mounts=mounts,
    )
    _remove_leftovers(client, job.run_id)
    with _Heartbeat(runs, job):
        result = container.run(client, kwargs, plan.resources.timeout, slot)
    metrics_raw = result.outputs.get("metrics.json")
    metrics, metrics_error = parse_metrics(metrics_raw)
    reason = result.reason or metrics_error
    artifacts = tuple(sorted(name for name in result.outputs if name != "metrics.json"))
    record = RunRecord.finish(
        plan,
        status=RunStatus.SUCCEEDED if reason is None else RunStatus.FAILED,
        reason=reason,
        exit_code=result.exit_code,
        started_at=iso(result.started),
        ended_at=iso(result.ended),
        duration_s=round(result.ended - result.started, 3),
        host=socket.gethostname(),
        node=node,
        gpus=tuple(gpu_ids),
        gpus_simulated=gpus_simulated,
        metrics=metrics,
        artifacts=artifacts,
    )
    files: dict[str, bytes] = {
        **dict(job.files),
        "stdout.log": result.stdout,
        "stderr.log": result.stderr,
        "metrics.json": json.dumps(metrics, sort_keys=True, indent=2).encode() + b"\n",
    }
    files.update(
        {f"output/{name}": data for name, data in result.outputs.items() if name != "metrics.json"}
    )
    try:
        runs.commit_run(record, files)
    except BaseException:
        # Let a re-submission run it at once rather than wait out the lease.
        runs.claims.release(job.run_id)
        raise
    return record


def _input_mounts(
    job: Job, runs: RunStore, cache_root: Path | None, verify: bool
) -> list[tuple[str, str]]:
    """(container path, host path) of each input, read-only bind mounts of the host cache."""
    if not job.plan.inputs:
        return []
    from .settings import default_cache_root

    root = cache_root if cache_root is not None else default_cache_root()
    paths = inputsmod.materialize(runs.blobs, job.plan.inputs, root, verify=verify)
    return [(inputsmod.mount_path(name), str(path)) for name, path in sorted(paths.items())]


def _input_env(refs: Any) -> dict[str, str]:
    return {inputsmod.env_name(name): inputsmod.mount_path(name) for name in sorted(refs)}


def _remove_leftovers(client: Any, run_id: str) -> None:
    """Containers of this run left by a submitter that died (it holds no live claim, or we
    could not have claimed the run): remove them so they cannot write or block a name."""
    import docker.errors

    try:
        for leftover in client.containers.list(
            all=True, filters={"label": f"org.orch.run_id={run_id}"}
        ):
            leftover.remove(force=True)
    except docker.errors.APIError:
        pass  # create will report the real problem
