"""Fast tests of what drives runs, without Docker: a fake backend and a fake image builder.

As click ships ``CliRunner`` and httpx ``MockTransport``, orch ships the pieces that let
a sweep or a search run in this process, against a real store, in milliseconds:

* :class:`FakeBackend` runs each job by calling a function you give it with a
  :class:`FakeRun` (the run's config, overrides, attempt). The function returns the run's
  metrics (it succeeded), raises :class:`RunFailed` (it failed, with a reason and an
  exit code), raises anything else (the backend fails: the sweep raises it), takes time
  (``run.sleep``, which a cancel cuts short: the run is then recorded ``cancelled``), or
  reports step metrics (``run.step``, which a search's pruner sees). The backend claims
  each run and commits its record as a node does, so skips, retries, attempts and the
  wait for another submitter's run behave as they do over Docker.
* :class:`FakeImages` is the launcher's image builder without a daemon: a fixed base, no
  environment layers, a code layer made of ``code`` (change it to change every run id).
* :class:`~orchestrator.store.memory.MemoryStore`, an in-memory store.

A sweep in a test::

    from orchestrator.drivers.grid import SweepDriver, compose_points
    from orchestrator.drivers.launcher import DriverOptions, Launcher
    from orchestrator.store import RunStore, open_store
    from orchestrator.testing import FakeBackend, FakeImages

    runs = RunStore(open_store(str(tmp_path / "store")))
    backend = FakeBackend(runs, lambda run: {"loss": run.config["lr"]})
    launcher = Launcher(project, runs, backend, FakeImages(), DriverOptions())
    result = SweepDriver(launcher).run(["lr=0.1,0.2"], compose_points(project, ["lr=0.1,0.2"]))

This module sits with the drivers (it imports the launcher's types); nothing in the
library imports it.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ._util.stopping import Stop
from .compose.project import Project
from .errors import StoreError
from .image.builder import CONFIG_PATH, OUTPUT_DIR, BaseInfo, Environment, ImageSettings, RunImage
from .image.code import CodeSnapshot
from .image.imageconfig import make_config
from .image.tarball import Entry, layer_bytes
from .runner.execute import ClaimHeld, NotStarted
from .schema.job import Job
from .schema.record import RunRecord, RunStatus, iso
from .store import RunStore
from .store.memory import MemoryStore as MemoryStore

__all__ = ["FakeBackend", "FakeImages", "FakeRun", "MemoryStore", "RunFailed", "succeed"]


class RunFailed(Exception):  # noqa: N818 - what the run did, as the CLI reports it
    """Raised by a fake run's function: the run is recorded ``failed`` with ``reason``."""

    def __init__(self, reason: str = "exit code 1", exit_code: int = 1) -> None:
        super().__init__(reason)
        self.reason = reason
        self.exit_code = exit_code


class _Pruned(Exception):  # noqa: N818 - a control-flow signal, not an error
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FakeRun:
    """One attempt of one run as the function of a :class:`FakeBackend` sees it."""

    def __init__(self, job: Job, runs: RunStore, cancelled: Callable[[], bool]) -> None:
        self.job = job
        self._runs = runs
        self._cancelled = cancelled
        #: Step metrics reported so far, in order (``metrics.jsonl``).
        self.steps: list[dict[str, float]] = []
        #: Files the run leaves in its output directory (name -> bytes).
        self.outputs: dict[str, bytes] = {}

    @property
    def run_id(self) -> str:
        return self.job.run_id

    @property
    def config(self) -> dict[str, Any]:
        """The run's composed config."""
        return dict(self.job.plan.config)

    @property
    def overrides(self) -> tuple[str, ...]:
        return tuple(self.job.plan.overrides)

    @property
    def attempt(self) -> int:
        return self.job.attempt

    @property
    def cancelled(self) -> bool:
        """The sweep was cancelled while the run ran: it is recorded ``cancelled``."""
        return self._cancelled()

    def sleep(self, seconds: float) -> None:
        """Take time (the claim is renewed meanwhile); a cancel ends it early."""
        deadline = time.monotonic() + seconds
        while not self.cancelled and time.monotonic() < deadline:
            time.sleep(min(0.01, max(0.0, deadline - time.monotonic())))
        self._runs.claims.claim(self.run_id, self.job.owner, self.job.lease_s)

    def step(self, step: int, **metrics: float) -> None:
        """Report step metrics, as a training loop appends to ``metrics.jsonl``. For a
        search that prunes, a stop request the driver wrote ends the run ``pruned``."""
        self.steps.append({"step": step, **metrics})
        self._runs.write_live(self.run_id, {
            "run_id": self.run_id, "sweep_id": self.job.sweep_id,
            "status": RunStatus.RUNNING.value, "attempt": self.attempt, "step": step,
            "metrics": dict(metrics),
        })
        if self.job.stop_requests:
            reason = self._runs.read_stop_request(self.run_id, self.job.owner)
            if reason:
                raise _Pruned(reason)


def succeed(run: FakeRun) -> Mapping[str, float]:
    """The default run function: succeeds at once with no metrics."""
    return {}


RunFunction = Callable[[FakeRun], "Mapping[str, float] | None"]


class FakeBackend:
    """A backend that runs jobs in this process by calling ``run`` (at most ``jobs`` at a
    time), claiming and committing each run in ``runs`` as a node does.

    ``ran`` is what ran: each attempt's :class:`FakeRun`, in the order they started.
    ``stop`` is the sweep's, as the local backend takes it: once it drains, queued jobs
    end not started; once it is cancelled (or :meth:`cancel` is called), running ones
    are recorded ``cancelled``.
    """

    name = "fake"

    def __init__(self, runs: RunStore, run: RunFunction = succeed, *, jobs: int = 1,
                 stop: Stop | None = None, shares_daemon: bool = True,
                 blob_wait_s: float = 30.0) -> None:
        self.store = runs
        self.function = run
        self.shares_daemon = shares_daemon
        self.stop = stop or Stop()
        self.ran: list[FakeRun] = []
        self._blob_wait_s = blob_wait_s
        self._cancelled = threading.Event()
        self._pool = ThreadPoolExecutor(max(1, jobs), thread_name_prefix="orch-fake")

    def submit(self, job: Job, on_start: Callable[[], None] | None = None) -> Future[RunRecord]:
        return self._pool.submit(self._run, job, on_start)

    def cancel(self) -> None:
        self._cancelled.set()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _is_cancelled(self) -> bool:
        return self._cancelled.is_set() or self.stop.cancelled

    def _run(self, job: Job, on_start: Callable[[], None] | None) -> RunRecord:
        runs = self.store
        if runs.is_complete(job.run_id):
            return runs.read_run(job.run_id)
        if self.stop.draining or self._is_cancelled():
            raise NotStarted(job.run_id)
        if not runs.claims.claim(job.run_id, job.owner, job.lease_s):
            raise ClaimHeld(job.run_id)
        try:
            if on_start is not None:
                on_start()
            run = FakeRun(job, runs, self._is_cancelled)
            self.ran.append(run)
            record, files = self._attempt(run)
            record = runs.commit_run(record, files, owner=job.owner,
                                     before_record=self._blobs_stored)
        except BaseException:
            runs.claims.release(job.run_id, job.owner)
            raise
        runs.delete_live(job.run_id)
        if job.stop_requests:
            runs.delete_stop_request(job.run_id)
        return record

    def _attempt(self, run: FakeRun) -> tuple[RunRecord, dict[str, bytes | Path]]:
        started = time.time()
        status, reason, exit_code = RunStatus.SUCCEEDED, None, 0
        metrics: dict[str, float] = {}
        try:
            returned = self.function(run)
            if returned is not None:
                metrics = {key: float(value) for key, value in returned.items()}
        except RunFailed as exc:
            status, reason, exit_code = RunStatus.FAILED, exc.reason, exc.exit_code
        except _Pruned as exc:
            status, reason = RunStatus.PRUNED, exc.reason
        if run.cancelled and status is not RunStatus.PRUNED:
            status, reason, exit_code = RunStatus.CANCELLED, "cancelled", 137
        if not metrics and run.steps:  # the last value of each step metric
            for line in run.steps:
                metrics.update({k: v for k, v in line.items() if k != "step"})
        ended = time.time()
        files: dict[str, bytes | Path] = dict(run.job.files)
        files["stdout.log"] = b""
        files["stderr.log"] = b""
        files["metrics.json"] = json.dumps(metrics, sort_keys=True).encode() + b"\n"
        if run.steps:
            files["metrics.jsonl"] = b"".join(
                json.dumps(line, sort_keys=True).encode() + b"\n" for line in run.steps)
        files.update({f"output/{name}": data for name, data in run.outputs.items()})
        record = RunRecord.finish(
            run.job.plan, status=status, reason=reason, exit_code=exit_code,
            started_at=iso(started), ended_at=iso(ended),
            duration_s=round(ended - started, 3), host=socket.gethostname(), node="fake",
            metrics=metrics, artifacts=tuple(sorted(run.outputs)), attempt=run.attempt,
        )
        return record, files

    def _blobs_stored(self, record: RunRecord) -> None:
        """As a node: a record is committed only once every blob it names is stored
        (the launcher uploads them beside the runs)."""
        deadline = time.monotonic() + self._blob_wait_s
        while missing := self.store.missing_blobs(record):
            if time.monotonic() > deadline:
                raise StoreError(f"run {record.run_id}: blob {missing[0]} never stored")
            time.sleep(0.02)


def _layer(name: str, data: str) -> tuple[bytes, str]:
    return layer_bytes([Entry(name, data=data.encode())])


class FakeImages:
    """The launcher's image builder without Docker: a base image made of the project's
    ``base_image`` reference, no environment layers, and a code layer made of ``code``.
    Every image ID and layer is real (content-addressed), so the store's blobs are too.

    ``loads`` lists, per load, the run ids whose images it was given (one per batch);
    ``pushed`` the run ids pushed to a registry.
    """

    def __init__(self, code: str = "") -> None:
        self.code = code
        self.loads: list[list[str]] = []
        self.pushed: list[str] = []
        self._layers: dict[str, bytes] = {}

    def environment(self, project: Project, *, allow_dirty: bool, stop: Stop,
                    say: Callable[[str], None], config_files: object) -> Environment:
        base_layer, base_diff = _layer("orch-fake-base", project.base_image)
        code_layer, code_diff = _layer("orch-fake-code", self.code)
        self._layers[base_diff] = base_layer
        base_config = make_config(architecture="amd64", os_name="linux", diff_ids=[base_diff],
                                  env=["PATH=/usr/bin:/bin"], cmd=["python3"])
        base = BaseInfo(project.base_image, base_config.image_id, (base_diff,),
                        ("PATH=/usr/bin:/bin",), "amd64", "linux")
        settings = ImageSettings(base, {"HOME": "/tmp", "ORCH_CONFIG": CONFIG_PATH,
                                        "ORCH_OUTPUT": OUTPUT_DIR, **dict(project.env)}, "")
        labels = {"org.orch.project": project.name}
        code = CodeSnapshot(layer=code_layer, diff_id=code_diff, git_commit=None,
                            git_tree=None, dirty=False, diff=b"", files=())
        env_key = "sha256:" + hashlib.sha256(f"fake-env:{base.image_id}".encode()).hexdigest()
        return Environment(
            project, settings, env_key, (), code,
            env_image=settings.config([base_diff], {}, ["python3"], labels),
            code_image=settings.config([base_diff, code_diff], {}, list(project.command),
                                       labels),
        )

    def load(self, env: Environment, images: list[RunImage]) -> None:
        self.loads.append([image.run_id for image in images])

    def name(self, images: list[RunImage]) -> None:
        pass  # no daemon: nothing to name

    def base_layers(self, env: Environment) -> Mapping[str, bytes | Path]:
        return {diff_id: self._layers[diff_id] for diff_id in env.base.diff_ids}

    def push(self, image: RunImage, registry: str, tag: str) -> str:
        self.pushed.append(image.run_id)
        return f"{registry}@sha256:{image.image_id.split(':')[1]}"
