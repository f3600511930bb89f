"""A run's Ray task, on whichever node Ray placed it.

:func:`run_on_node`

1. reopens the store from its URI; credentials come from the node's own environment
   (boto3's chain), never from the task's arguments;
2. talks to the node's Docker daemon (``DOCKER_HOST`` of the node, else the local socket);
3. gets the run image onto that daemon by digest: already there, else the registry the
   sweep pushed to, else the store's blobs (only the layers the daemon lacks);
4. calls :func:`orchestrator.runner.execute.execute`, the only code that writes run records,
   with the GPU ids Ray assigned (``ray.get_gpu_ids()``) and the Ray node id.

Exactly-once records come from the store's claim, not from Ray: a task retried after its
node died claims the run again with the same owner, which the store allows; a run held by
another submitter raises :class:`~orchestrator.runner.execute.ClaimHeld`, which reaches the
driver as that type.
"""

from __future__ import annotations

import contextlib
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..._util.stopping import Stop
from ...errors import NotFound
from ...schema.job import Job
from ...schema.record import RunRecord
from ...store import RunStore
from ..gpusim import SimulatedGpuClient, simulates_gpus
from ..node import docker_host, ensure_run_image

#: How often a task's main thread wakes to see whether Ray cancelled it.
_INTERRUPT_POLL_S = 0.2
#: Per worker process: Ray reuses workers, so each opens the store and Docker once.
_STORES: dict[tuple[str, str], RunStore] = {}
_DOCKER: dict[str, Any] = {}


def _node_runs(store_uri: str, s3_endpoint: str | None) -> RunStore:
    key = (store_uri, s3_endpoint or "")
    if key not in _STORES:
        from ...store import open_store

        _STORES[key] = RunStore(
            open_store(store_uri, project_dir=Path("."), s3_endpoint=s3_endpoint)
        )
    return _STORES[key]


def _node_docker() -> Any:
    host = docker_host()
    if host not in _DOCKER:
        from ...daemon.client import connect

        _DOCKER[host] = connect(host or None)
    return _DOCKER[host]


def warm_worker(store_uri: str, s3_endpoint: str | None) -> None:
    """A worker's start-up, done before its first run: imports, the store, Docker.
    Whatever fails here fails again, and is reported, in the run that needs it."""
    try:
        from ...image import transport  # noqa: F401
        from ...runner import execute  # noqa: F401 - the import is the work

        _node_runs(store_uri, s3_endpoint)
        _node_docker()
    except Exception:  # noqa: BLE001 - see the docstring
        pass


def _take_interrupts() -> None:
    """Ray's cancel reaches a task through ``_thread.interrupt_main``, which does nothing
    while SIGINT is ignored, and a node whose ``ray start`` ran in the background of a
    script (``&``) passes SIGINT on ignored to every worker: a cancelled run would go on
    to its end. The task takes SIGINT as Python's KeyboardInterrupt again."""
    with contextlib.suppress(ValueError):  # not the main thread: Ray's cancel cannot work
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            signal.signal(signal.SIGINT, signal.default_int_handler)


def run_on_node(job: Job, store_uri: str, s3_endpoint: str | None) -> RunRecord:
    """The body of a run's Ray task: image onto this node's daemon, then execute."""
    import ray

    from ...runner.execute import execute

    runs = _node_runs(store_uri, s3_endpoint)
    if runs.is_complete(job.run_id):  # a retry of an attempt that did commit
        with contextlib.suppress(NotFound):  # else set aside meanwhile: execute decides
            return runs.read_run(job.run_id)
    client = _node_docker()
    ensure_run_image(client, runs, job)
    gpu_ids = [str(g) for g in ray.get_gpu_ids()]
    simulated = bool(gpu_ids) and simulates_gpus()
    if simulated:
        client = SimulatedGpuClient(client, gpu_ids)
    node = ray.get_runtime_context().get_node_id()
    _take_interrupts()
    stop = Stop()
    # The run goes on in a thread so that Ray's cancel (KeyboardInterrupt in this, the
    # task's main thread) becomes an orderly stop: container stopped, record committed.
    # Ray raises it with ``_thread.interrupt_main``, a flag the interpreter looks at only
    # between bytecodes, not a signal: a wait without a timeout would sleep through it
    # until the run ended on its own.
    with ThreadPoolExecutor(1, thread_name_prefix="orch-node-run") as pool:
        attempt = pool.submit(
            execute, job, client, runs, gpu_ids=gpu_ids, node=node, gpus_simulated=simulated,
            stop=stop,
        )
        while True:
            try:
                return attempt.result(timeout=_INTERRUPT_POLL_S)
            except TimeoutError:
                continue
            except KeyboardInterrupt:
                stop.cancel()
