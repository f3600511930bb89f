"""Following a run's output while it runs, from the Docker daemon that runs it.

The store holds a run's ``stdout.log`` and ``stderr.log`` only once it has ended; while it
runs, its container (labelled ``org.orch.run_id``) is the only source.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .errors import NotFound
from .store import RunStore

RUN_LABEL = "org.orch.run_id"


def _complete(runs: RunStore, run_id: str) -> bool:
    try:
        return runs.is_complete(runs.resolve_run_id(run_id))
    except NotFound:
        return False


def follow(
    runs: RunStore,
    connect: Callable[[], Any],
    run_id: str,
    write: Callable[[bytes], None],
    *,
    wait_s: float = 30.0,
    poll_s: float = 0.5,
) -> None:
    """Stream the output of run ``run_id`` (an id or a prefix) until its container ends.

    Returns at once if the run is already complete. ``connect()`` gives the Docker client
    (called only when there is something to follow). After the container ends, waits up
    to ``wait_s`` for the run's record, so that the stored logs are there to read.
    """
    if _complete(runs, run_id):
        return
    client = connect()
    for container in client.containers.list(filters={"label": RUN_LABEL}):
        if container.labels.get(RUN_LABEL, "").startswith(run_id):
            for chunk in container.logs(stream=True, follow=True):
                write(chunk)
            break
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if _complete(runs, run_id):
            return
        time.sleep(poll_s)
