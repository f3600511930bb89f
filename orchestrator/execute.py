"""One run, start to finish, on whatever node it landed: claim, run, commit.

This is the only code that writes a run's record, whichever backend called it, so
the store commit protocol holds everywhere: outputs and logs first, ``run.json`` last.
"""

from __future__ import annotations

import json
import math
import os
import socket
import threading
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

from . import container
from .backends.base import Job
from .store import RunStore

#: A claim not renewed for LEASE_S seconds is stale and may be taken over; the holder
#: renews it every HEARTBEAT_S. ORCH_LEASE_S shortens it (fault tests, small clusters).
LEASE_S = float(os.environ.get("ORCH_LEASE_S") or 60.0)
HEARTBEAT_S = LEASE_S / 6


class ClaimHeld(Exception):
    """Another submitter holds the run; the driver waits for it instead of running it."""


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
    def __init__(self, runs: RunStore, run_id: str, owner: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, args=(runs, run_id, owner), daemon=True, name=f"claim-{run_id}"
        )

    def _beat(self, runs: RunStore, run_id: str, owner: str) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                runs.claim(run_id, owner, LEASE_S)
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
    attempt: int = 0,
    slot: AbstractContextManager[Any] | None = None,
) -> dict[str, Any]:
    """Run ``job`` and commit its record. Raises ClaimHeld when someone else has it."""
    if runs.is_complete(job.run_id):
        return runs.read_run(job.run_id)
    if not runs.claim(job.run_id, job.owner, LEASE_S):
        raise ClaimHeld(job.run_id)
    gpu_ids = list(gpu_ids or [])
    kwargs = container.create_kwargs(
        image_id=job.image_id,
        command=list(job.command),
        run_id=job.run_id,
        cpus=job.cpus,
        memory=job.memory,
        network=job.network,
        gpu_ids=gpu_ids,
        env=dict(job.runtime_env),
        name=f"orch-{job.run_id}-{job.owner[:8]}-{attempt}",
    )
    _remove_leftovers(client, job.run_id)
    with _Heartbeat(runs, job.run_id, job.owner):
        result = container.run(client, kwargs, job.timeout, slot)
    metrics_raw = result.outputs.get("metrics.json")
    metrics, metrics_error = parse_metrics(metrics_raw)
    reason = result.reason or metrics_error
    artifacts = sorted(name for name in result.outputs if name != "metrics.json")
    record = {
        **job.record,
        "schema": 1,
        "run_id": job.run_id,
        "sweep_id": job.sweep_id,
        "status": "succeeded" if reason is None else "failed",
        "reason": reason,
        "image_id": job.image_id,
        "command": list(job.command),
        "resources": {
            "cpus": job.cpus,
            "gpus": job.gpus,
            "memory": job.memory,
            "timeout": job.timeout,
        },
        "exit_code": result.exit_code,
        "started_at": iso(result.started),
        "ended_at": iso(result.ended),
        "duration_s": round(result.ended - result.started, 3),
        "host": socket.gethostname(),
        "node": node,
        "gpus": gpu_ids,
        "metrics": metrics,
        "artifacts": artifacts,
    }
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
        runs.release(job.run_id)
        raise
    return record


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
