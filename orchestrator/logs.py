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

from .docker_api import DockerClient
from .errors import NotFound
from .store import RunStore

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
    for container in client.containers.list(filters={"label": RUN_LABEL}):
        if container.labels.get(RUN_LABEL, "").startswith(run_id):
            return container
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
    wait_s: float = 30.0,
    poll_s: float = 0.5,
) -> Printed:
    """Stream the output of run ``run_id`` (an id or a prefix) until its container ends;
    how much of each stream was written.

    Returns at once if the run is already complete. ``connect()`` gives the Docker client
    (called only when there is something to follow); ``write_err`` None leaves stderr
    out. After the container ends, waits up to ``wait_s`` for the run's record, so that
    the stored logs are there to read.
    """
    printed = Printed()
    if _complete(runs, run_id):
        return printed
    container = _container(connect(), run_id)
    if container is not None:
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
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if _complete(runs, run_id):
            break
        time.sleep(poll_s)
    return printed
