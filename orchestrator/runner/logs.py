"""Following a run's output while it runs, from the Docker daemon that runs it.

The store holds a run's ``stdout.log`` and ``stderr.log`` only once it has ended; while it
runs, its container (labelled ``org.orch.run_id``) is the only source. The stored logs are
the container's two streams copied byte for byte, so a follower that counted what it
printed of each stream prints only the rest from the store once the run is committed:
every line once, whether the container's stream ended early or the run was elsewhere.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..daemon.client import DockerClient
from ..errors import NotFound
from ..store import RunStore

RUN_LABEL = "org.orch.run_id"


@dataclass
class Printed:
    """How many bytes of each stream a follower has written so far."""

    stdout: int = 0
    stderr: int = 0


def _complete(runs: RunStore, run_id: str) -> bool:
    try:
        return runs.is_complete(runs.resolve_run_id(run_id))
    except NotFound:
        return False


def _container(client: DockerClient, run_id: str) -> Any:
    import docker.errors

    for summary in client.api.containers(filters={"label": RUN_LABEL}):
        if (summary.get("Labels") or {}).get(RUN_LABEL, "").startswith(run_id):
            try:
                return client.containers.get(summary["Id"])
            except docker.errors.NotFound:
                return None  # it ended in between: the record has its logs
    return None


def _stream(container: Any, stdout: bool, write: Callable[[bytes], None], printed: Printed,
            errors: list[BaseException]) -> None:
    import docker.errors

    try:
        for chunk in container.logs(stdout=stdout, stderr=not stdout, stream=True, follow=True):
            write(chunk)
            if stdout:
                printed.stdout += len(chunk)
            else:
                printed.stderr += len(chunk)
    except docker.errors.APIError:
        pass  # the container went away: the store has the rest
    except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
        errors.append(exc)


def follow(
    runs: RunStore,
    connect: Callable[[], Any],
    run_id: str,
    write_out: Callable[[bytes], None],
    write_err: Callable[[bytes], None] | None = None,
    *,
    lease_s: float = 60.0,
    wait_s: float = 30.0,
    poll_s: float = 0.5,
    check_s: float = 5.0,
) -> Printed:
    """Stream the output of run ``run_id`` (an id or a prefix) until its container ends;
    how much of each stream was written.

    Returns at once if the run is already complete. A run not started yet (queued), or
    running on another machine, is waited for as long as a live submission will run it
    (see :func:`_in_flight`, checked every ``check_s``); then its container is followed
    from the start. ``connect()`` gives the Docker client (called only when there is
    something to follow); ``write_err`` None leaves stderr out. After the container
    ends, waits up to ``wait_s`` for the run's record, so that the stored logs are there
    to read.
    """
    printed = Printed()
    client: Any = None
    recheck = 0.0
    while not _complete(runs, run_id):
        client = client if client is not None else connect()
        container = _container(client, run_id)
        if container is not None:
            _follow_container(container, printed, write_out, write_err)
            _await_record(runs, run_id, wait_s, poll_s)
            break
        if time.monotonic() >= recheck:
            if not _in_flight(runs, run_id, lease_s):
                break  # nobody will run it: what the store has is all there is
            recheck = time.monotonic() + check_s
        time.sleep(poll_s)
    return printed


def _follow_container(
    container: Any,
    printed: Printed,
    write_out: Callable[[bytes], None],
    write_err: Callable[[bytes], None] | None,
) -> None:
    errors: list[BaseException] = []
    streams = [(True, write_out)] + ([(False, write_err)] if write_err is not None else [])
    threads = [
        threading.Thread(target=_stream, args=(container, out, write, printed, errors),
                         daemon=True, name=f"logs-{'out' if out else 'err'}")
        for out, write in streams
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():  # join with a timeout, so Ctrl-C gets through
            thread.join(0.2)
    if errors:
        raise errors[0]


def _await_record(runs: RunStore, run_id: str, wait_s: float, poll_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if _complete(runs, run_id):
            return
        time.sleep(poll_s)


def _in_flight(runs: RunStore, prefix: str, lease_s: float) -> bool:
    """Whether a live submission holds the run ``prefix`` or will still start it.

    Held: a claim renewed within the lease (its container may be on another node). Still
    to start: it is in an open sweep (``sweeps/<id>.open-*``) whose submission is alive,
    by the rule :mod:`orchestrator.db.gc` uses: the marker is younger than the lease, or
    one of the sweep's runs is claimed.
    """
    store = runs.store
    for key in store.list("sweeps/"):
        name = key[len("sweeps/") :]
        if "/" in name or ".open-" not in name:
            continue
        try:
            sweep = runs.read_sweep(name.rsplit(".open-", 1)[0])
        except NotFound:
            continue
        if not any(run_id.startswith(prefix) for run_id in sweep.run_ids):
            continue
        age = store.age(key)
        if age is not None and age <= lease_s:
            return True
        if any(runs.claims.is_live(run_id, lease_s) for run_id in sweep.run_ids):
            return True
    try:
        return runs.claims.is_live(runs.resolve_run_id(prefix), lease_s)
    except NotFound:
        return False
