"""One attempt of one run, start to finish, on whatever node it landed: claim, run, commit.

This is the only code that writes a run's record, whichever backend called it, so the
store commit protocol holds everywhere: outputs and logs first, ``run.json`` last.

The claim is taken only once the backend has a slot for the container, so a run that
merely waits for its turn holds no claim. While the container runs, its claim is renewed,
its step metrics are published (``live.json``), its checkpoint is saved at an interval,
and a cancel of the sweep stops it; however it ends, what it left is committed and its
host directories are removed.

Why one module of this size: it is the commit protocol of one attempt; the claim's renewal,
the live publisher, the pending work kept across a store outage and the commit itself
share the attempt's state and its order, which is what the protocol guarantees.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path
from typing import Any

from .. import inputs as inputsmod
from .._util.stopping import Stop
from ..compose import hydra_app
from ..daemon.client import DockerClient, remove_containers
from ..errors import NotFound, StoreError
from ..schema.job import Job
from ..schema.record import RunRecord, RunStatus, iso, now_iso
from ..settings import Settings
from ..store import RunStore
from . import checkpoint, container
from . import outputs as run_outputs
from .container import RUN_UID, RunDirs, Running
from .live import MAX_KEYS, RunMetrics, StepMetrics, number
from .outputs import Outputs

log = logging.getLogger("orchestrator.runner.execute")

#: A metrics.json larger than this is not read (it is kept as an artifact).
MAX_METRICS_BYTES = 16 << 20


class ClaimHeld(Exception):
    """Another submitter holds the run; the driver waits for it instead of running it."""


class ClaimLost(ClaimHeld):
    """The claim was taken over while the run ran (its submitter was paused past the
    lease): the run is left to its new owner, nothing of this attempt is committed."""


class NotStarted(Exception):
    """The sweep was stopped before this run got a container: it stays queued."""


def parse_metrics(raw: bytes | None) -> tuple[dict[str, float], str | None]:
    """metrics.json must be a flat JSON object of finite numbers, at most MAX_KEYS."""
    if raw is None:
        return {}, None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        return {}, f"metrics.json is not valid JSON: {exc}"
    if not isinstance(data, dict):
        return {}, "metrics.json must be a JSON object of numbers"
    if len(data) > MAX_KEYS:
        return {}, f"metrics.json has {len(data)} keys, over the limit of {MAX_KEYS}"
    metrics: dict[str, float] = {}
    for key, value in sorted(data.items()):
        checked = number(value)
        if checked is None:
            return {}, f"metrics.json: {key!r} is not a finite number"
        metrics[key] = checked
    return metrics, None


class _Heartbeat:
    """Renews the claim several times per lease; stops the run if the claim was lost."""

    def __init__(self, runs: RunStore, job: Job, running: Running) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, args=(runs, job, running), daemon=True, name=f"claim-{job.run_id}"
        )

    def _beat(self, runs: RunStore, job: Job, running: Running) -> None:
        while not self._stop.wait(job.heartbeat_s):
            try:
                held = runs.claims.claim(job.run_id, job.owner, job.lease_s)
            except Exception:  # noqa: BLE001 - a missed beat only shortens the lease
                continue
            if not held and not runs.is_complete(job.run_id):
                running.stop(lost=True)
                return

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()


class _Renewer:
    """Renews the claim while a finished attempt is committed: an upload slower than the
    lease must not let another submitter take the run over and run it again. ``lost``
    is set when a renewal finds the claim someone else's."""

    def __init__(self, runs: RunStore, job: Job) -> None:
        self.lost = threading.Event()
        self._runs, self._job = runs, job
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True,
                                        name=f"commit-claim-{job.run_id}")

    def _beat(self) -> None:
        job = self._job
        while not self._stop.wait(job.heartbeat_s):
            try:
                held = self._runs.claims.claim(job.run_id, job.owner, job.lease_s)
            except Exception:  # noqa: BLE001 - a missed beat only shortens the lease
                continue
            if not held:
                self.lost.set()
                return

    def __enter__(self) -> _Renewer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


#: How long a commit waits for the blobs its record names (the driver uploads them
#: beside the runs) before it gives up; the run's files stay on disk (PENDING).
BLOB_WAIT_S = 600.0


def _ready_to_record(runs: RunStore, job: Job, renewer: _Renewer,
                     blob_wait_s: float = BLOB_WAIT_S) -> Callable[[RunRecord], None]:
    """The last check before ``run.json``: every blob the record names is stored (waiting
    for the driver's uploads), and the claim is still this attempt's."""

    def check(record: RunRecord) -> None:
        deadline = time.monotonic() + blob_wait_s
        delay = 0.2
        while missing := runs.missing_blobs(record):
            if renewer.lost.is_set():
                break
            if time.monotonic() > deadline:
                raise StoreError(
                    f"run {record.run_id}: {len(missing)} blob(s) its record names are not in "
                    f"store {runs.store.uri} (first: {missing[0]}): not committed; re-submit "
                    "the sweep to upload them and commit the run"
                )
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
        if renewer.lost.is_set() or not runs.claims.claim(job.run_id, job.owner, job.lease_s):
            raise ClaimLost(job.run_id)

    return check


ShouldStop = Callable[[StepMetrics], "str | None"]
"""Asked after each poll of a run's step metrics: a reason to stop the run (it is then
recorded ``pruned`` with that reason), or None to let it go on."""


class _LivePublisher:
    """Follows ``metrics.jsonl`` and publishes the run's latest state at a bounded rate;
    ``should_stop`` (a search's pruner) is asked after each poll."""

    def __init__(self, runs: RunStore, job: Job, steps: StepMetrics, started: float,
                 node: str | None, should_stop: ShouldStop | None = None,
                 on_stop: Callable[[str], None] | None = None) -> None:
        self._runs, self._job, self._steps = runs, job, steps
        self._should_stop, self._on_stop = should_stop, on_stop
        self._base = {
            "run_id": job.run_id,
            "sweep_id": job.sweep_id,
            "status": RunStatus.RUNNING.value,
            "attempt": job.attempt,
            "started_at": iso(started),
            "host": socket.gethostname(),
            "node": node,
        }
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name=f"live-{job.run_id}")

    def publish(self) -> None:
        live = {
            **self._base,
            "updated_at": now_iso(),
            "step": self._steps.step,
            "lines": self._steps.lines,
            "metrics": dict(self._steps.latest),
        }
        try:
            self._runs.write_live(self._job.run_id, live)
        except Exception:  # noqa: BLE001 - live state is best effort; the record is not
            pass

    def _loop(self) -> None:
        while not self._stop.wait(self._job.live_s):
            if self._steps.poll():
                self.publish()
            if self._should_stop is not None and self._on_stop is not None:
                try:
                    reason = self._should_stop(self._steps)
                except Exception:  # noqa: BLE001 - a failed check must not end the run
                    reason = None
                if reason:
                    self._on_stop(reason)
                    return

    def __enter__(self) -> _LivePublisher:
        self.publish()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def execute(
    job: Job,
    client: DockerClient,
    runs: RunStore,
    *,
    gpu_ids: list[str] | None = None,
    node: str | None = None,
    gpus_simulated: bool = False,
    slot: AbstractContextManager[Any] | None = None,
    stop: Stop | None = None,
    work_root: Path | None = None,
    on_start: Callable[[], None] | None = None,
    cache_root: Path | None = None,
    verify_inputs: bool = False,
    should_stop: ShouldStop | None = None,
    stop_grace_s: int = container.STOP_GRACE_S,
) -> RunRecord:
    """Run one attempt of ``job`` and commit its record.

    Raises ClaimHeld when someone else has the run, NotStarted when the sweep stopped
    before the run got its container. The run's data inputs are materialized first, on
    this node, from ``runs``' blobs into the host cache at ``cache_root`` (default:
    ``$ORCH_CACHE`` or the XDG cache): an input that cannot be had exactly raises
    InputError before anything is claimed.

    ``should_stop`` (and, for a job with ``stop_requests``, a stop request in the store)
    is checked while the container runs; a reason stops it (grace period, then kill) and
    the run is recorded ``pruned`` with that reason, its logs and last metrics.
    """
    work_root = work_root or Settings().work_root
    pending = _pending_dir(work_root, job.run_id)
    if runs.is_complete(job.run_id):
        try:
            record = runs.read_run(job.run_id)
        except NotFound:  # set aside meanwhile by a submitter retrying it: its claim decides
            pass
        else:
            if pending.exists():  # committed by another submitter meanwhile
                shutil.rmtree(pending, ignore_errors=True)
            return record
    stop = stop or Stop()
    if stop.draining:
        raise NotStarted(job.run_id)
    if (pending / PENDING).is_file():
        return _commit_pending(job, runs, pending)
    plan = job.plan
    mounts = _input_mounts(job, runs, cache_root, verify_inputs)
    gpu_ids = list(gpu_ids or [])
    dirs = RunDirs.create(work_root, f"orch-{job.run_id}-{job.attempt}")
    resumed: list[int | None] = [None]
    claimed = [False]
    pruned: list[str | None] = [None]
    check = _stop_check(job, runs, should_stop)
    kept = False
    try:
        kwargs = container.create_kwargs(
            image_id=plan.image_id,
            command=list(plan.command),
            run_id=job.run_id,
            cpus=plan.resources.cpus,
            memory=plan.resources.memory,
            network=plan.network,
            gpu_ids=gpu_ids,
            env={**_passed(plan.pass_env), **dict(job.runtime_env),
                 **_input_env(plan.inputs), "ORCH_ATTEMPT": str(job.attempt)},
            name=f"orch-{job.run_id}-{job.owner[:8]}-{job.attempt}",
            dirs=dirs,
            mounts=mounts,
            pids=plan.resources.pids,
            tmp=plan.resources.tmp,
        )
        # metrics.jsonl, else a metrics.csv or event files a framework wrote anywhere in the
        # outputs; the steps of the latter end up as the stored metrics.jsonl
        steps = RunMetrics(dirs.output, step_log=dirs.root / "steps.jsonl")

        def before_start() -> None:
            if stop.draining:
                raise NotStarted(job.run_id)
            if not runs.claims.claim(job.run_id, job.owner, job.lease_s):
                raise ClaimHeld(job.run_id)
            claimed[0] = True
            # Containers of this run left by a submitter that died (it holds no live
            # claim, or we could not have claimed the run): they must not write or
            # block a name. A daemon that does not answer: create reports it.
            remove_containers(client, {"org.orch.run_id": job.run_id})
            resumed[0] = checkpoint.restore(runs, job.run_id, dirs.checkpoint, RUN_UID)
            if on_start is not None:
                on_start()

        @contextmanager
        def while_running(running: Running) -> Iterator[None]:
            def prune(reason: str) -> None:
                pruned[0] = reason
                running.stop(cancelled=True)

            with ExitStack() as stack:
                stack.enter_context(stop.on_cancel(lambda: running.stop(cancelled=True)))
                stack.enter_context(_Heartbeat(runs, job, running))
                stack.enter_context(_LivePublisher(runs, job, steps, running.started, node,
                                                   check, prune))
                stack.enter_context(
                    checkpoint.Saver(runs, job.run_id, dirs.checkpoint, job.attempt,
                                     job.checkpoint_s, job.max_output_bytes)
                )
                yield

        try:
            result = container.run(
                client, kwargs, plan.resources.timeout, dirs, slot,
                before_start=before_start, while_running=while_running,
                stop_grace_s=stop_grace_s,
            )
        except BaseException:
            if claimed[0]:  # ours, and nothing to commit: free it for a re-submission now
                _release(runs, job)
            raise
        outcome: Outcome | None = None
        try:
            if result.lost:
                raise ClaimLost(job.run_id)
            with _Renewer(runs, job) as renewer:  # reading 300k outputs takes time too
                outcome = _outcome(job, result, dirs, steps, node, gpu_ids, gpus_simulated,
                                   resumed[0], pruned[0])
                # Still ours? A submitter paused past its lease (Ctrl-Z) finds its run taken
                # over, perhaps finished by the new owner: it must not commit over that.
                if not runs.claims.claim(job.run_id, job.owner, job.lease_s):
                    raise ClaimLost(job.run_id)
                record = runs.commit_run(outcome[0], outcome[1], outputs=outcome[2],
                                         owner=job.owner,
                                         before_record=_ready_to_record(runs, job, renewer))
        except ClaimLost:
            log.warning(
                "run %s: another submitter took its claim over (was this one paused past "
                "the lease?); leaving the run to it", job.run_id,
            )
            raise
        except Exception:
            # A finished attempt whose commit failed (a store outage past the retry
            # budget) is kept on disk and committed by the next submission, not run again.
            if outcome is not None:
                kept = _keep_pending(dirs, pending, *outcome)
            _release(runs, job)
            raise
        except BaseException:
            _release(runs, job)
            raise
        try:
            runs.delete_live(job.run_id)
            if job.stop_requests:
                runs.delete_stop_request(job.run_id)
        except Exception:  # noqa: BLE001 - a stale live.json is ignored once run.json exists
            pass
        return record
    finally:
        if not kept:
            dirs.remove()


def _stop_check(job: Job, runs: RunStore, should_stop: ShouldStop | None) -> ShouldStop | None:
    """The caller's check, then (for a pruned search's job) the store's stop request, which
    is how a driver on another machine reaches a container on this node."""
    if not job.stop_requests:
        return should_stop

    def check(steps: StepMetrics) -> str | None:
        reason = should_stop(steps) if should_stop is not None else None
        return reason or runs.read_stop_request(job.run_id, job.owner)

    return check


def _passed(names: tuple[str, ...]) -> dict[str, str]:
    """orch.yaml's pass_env: values from this process's (the node's) environment, read
    here at run time, so they reach the container and nothing else."""
    return {name: os.environ[name] for name in names if name in os.environ}


#: Where an attempt's output names are listed, in its work directory.
OUTPUTS_LIST = "outputs.list"
#: What an attempt leaves to commit: its record, its run files, its outputs.
Outcome = tuple[RunRecord, dict[str, "bytes | Path"], Outputs]

#: A finished attempt whose commit failed: its record and files, kept on the host under
#: ``<work root>/pending/<run_id>/`` (outside the work directories that are reaped) and
#: committed by the next attempt of the run on this host instead of running it again.
PENDING = "pending.json"


def _pending_dir(work_root: Path, run_id: str) -> Path:
    return work_root / "pending" / run_id


def _keep_pending(dirs: RunDirs, pending: Path, record: RunRecord,
                  files: dict[str, bytes | Path], outputs: Outputs) -> bool:
    """Move the attempt's directory to ``pending`` with what its commit needs: True if
    it was kept there. Its outputs stay where they are, listed in their listing."""
    if pending.exists():
        return False  # an older pending attempt of the run: that one is committed first
    try:
        saved = dirs.root / "pending-files"
        saved.mkdir(exist_ok=True)
        names: dict[str, str] = {}
        for i, (name, source) in enumerate(sorted(files.items())):
            if isinstance(source, bytes | bytearray | memoryview):
                path = saved / str(i)
                path.write_bytes(bytes(source))
            else:
                path = Path(source)
            names[name] = path.relative_to(dirs.root).as_posix()
        kept = {"root": outputs.root.relative_to(dirs.root).as_posix(),
                "listing": outputs.listing.relative_to(dirs.root).as_posix(),
                "count": outputs.count}
        (dirs.root / PENDING).write_text(json.dumps(
            {"record": record.to_json(), "files": names, "outputs": kept}, sort_keys=True))
        pending.parent.mkdir(parents=True, exist_ok=True)
        os.rename(dirs.root, pending)
    except (OSError, ValueError) as exc:  # a path outside the directory, a full disk
        log.warning("run %s: could not keep its finished work for a later commit: %s",
                    record.run_id, exc)
        return False
    log.warning("run %s: not committed; its finished work is kept in %s and committed by "
                "the next submission", record.run_id, pending)
    return True


def _commit_pending(job: Job, runs: RunStore, pending: Path) -> RunRecord:
    """Commit the finished attempt kept in ``pending`` (whose commit failed before)."""
    if not runs.claims.claim(job.run_id, job.owner, job.lease_s):
        raise ClaimHeld(job.run_id)
    try:
        saved = json.loads((pending / PENDING).read_text())
        record = RunRecord.from_json(saved["record"], str(pending / PENDING))
        files: dict[str, bytes | Path] = {
            name: pending / relative for name, relative in saved["files"].items()}
        kept = saved.get("outputs")
        outputs = None
        if isinstance(kept, dict):
            outputs = Outputs(pending / kept["root"], pending / kept["listing"],
                              count=int(kept["count"]))
        with _Renewer(runs, job) as renewer:
            record = runs.commit_run(record, files, outputs=outputs, owner=job.owner,
                                     before_record=_ready_to_record(runs, job, renewer))
    except ClaimLost:
        raise
    except BaseException:
        _release(runs, job)
        raise
    shutil.rmtree(pending, ignore_errors=True)
    with contextlib.suppress(Exception):
        runs.delete_live(job.run_id)
    return record


def _release(runs: RunStore, job: Job) -> None:
    """Drop the claim after a failure (only this attempt's own); if even that fails (a
    store turned read-only), the failure being raised is the one to report."""
    try:
        runs.claims.release(job.run_id, job.owner)
    except Exception as cleanup:  # noqa: BLE001 - secondary to the error raised
        log.warning("run %s: could not release its claim either: %s", job.run_id, cleanup)


def _outcome(
    job: Job,
    result: container.ContainerResult,
    dirs: RunDirs,
    steps: RunMetrics,
    node: str | None,
    gpu_ids: list[str],
    gpus_simulated: bool,
    resumed: int | None,
    pruned: str | None = None,
) -> Outcome:
    # the names go to a file as the walk finds them: 300k outputs are not 300k objects
    outputs = run_outputs.collect_outputs(dirs.output, dirs.root / OUTPUTS_LIST,
                                        apart=("metrics.json", "metrics.jsonl"))
    reason = result.reason
    files: dict[str, bytes | Path] = {"stdout.log": result.stdout, "stderr.log": result.stderr}
    files.update(dict(job.files))
    metrics_path = outputs.apart.get("metrics.json")
    jsonl = outputs.apart.get("metrics.jsonl")
    if jsonl is None:  # a framework's metrics.csv or event files, written as metrics.jsonl
        jsonl = steps.step_log()
    if outputs.total_bytes > job.max_output_bytes:
        over = (
            f"outputs total {outputs.total_bytes} bytes, over the limit of "
            f"{job.max_output_bytes} (ORCH_MAX_OUTPUT_BYTES): none were stored"
        )
        reason = reason or over
        outputs.discard()
        metrics_path = jsonl = None
    metrics, metrics_error = _metrics(metrics_path, steps)
    if metrics_error is not None and metrics_path is not None:
        outputs.add("metrics.json")  # the user's file, kept as it was
    reason = reason or metrics_error
    if reason is None and not result.cancelled and pruned is None:
        # the record is what ran: a Hydra application's own account of its config
        reason = hydra_app.check_run(dirs.output, job.plan.config, job.plan.deferred,
                                     job.plan.hydra)
    for note in steps.notes():
        log.warning("run %s: step metrics: %s", job.run_id, note)
    if jsonl is not None:
        files["metrics.jsonl"] = jsonl
    files["metrics.json"] = json.dumps(metrics, sort_keys=True, indent=2).encode() + b"\n"
    if pruned is not None:
        status, reason = RunStatus.PRUNED, pruned
    elif result.cancelled:
        status = RunStatus.CANCELLED
    else:
        status = RunStatus.SUCCEEDED if reason is None else RunStatus.FAILED
    record = RunRecord.finish(
        job.plan,
        status=status,
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
        attempt=job.attempt,
        resumed_from_attempt=resumed,
        dropped_outputs=outputs.dropped,
        enforced=result.enforced,
    )
    return record, files, outputs


def _metrics(path: Path | None, steps: StepMetrics) -> tuple[dict[str, float], str | None]:
    """metrics.json when the run wrote one, else the last value of each step metric."""
    if path is None:
        return steps.final(), None
    size = path.stat().st_size
    if size > MAX_METRICS_BYTES:
        return {}, f"metrics.json is {size} bytes, over the limit of {MAX_METRICS_BYTES}"
    return parse_metrics(path.read_bytes())


def _input_mounts(
    job: Job, runs: RunStore, cache_root: Path | None, verify: bool
) -> list[tuple[str, str]]:
    """(container path, host path) of each input, read-only bind mounts of the host cache."""
    if not job.plan.inputs:
        return []
    from ..settings import default_cache_root

    root = cache_root if cache_root is not None else default_cache_root()
    paths = inputsmod.materialize(runs.blobs, job.plan.inputs, root, verify=verify)
    return [(inputsmod.mount_path(name), str(path)) for name, path in sorted(paths.items())]


def _input_env(refs: Any) -> dict[str, str]:
    return {inputsmod.env_name(name): inputsmod.mount_path(name) for name in sorted(refs)}


