"""The sweep driver: grid -> specs -> images -> backend -> store.

It composes every point first (so every config error surfaces before anything is
built), skips the runs the store already holds, loads the rest's images in batches
while earlier batches already run, and waits for runs another submitter is running.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, CancelledError, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from . import config as configmod
from .backends.base import Backend
from .execute import ClaimHeld, NotStarted
from .image import builder
from .image.builder import Environment, RunImage
from .image.transport import base_layer_files, push_to_registry
from .job import Job
from .project import Project
from .record import (
    CorruptRecord,
    Layers,
    PrefixImages,
    RunPlan,
    RunRecord,
    RunResources,
    RunStatus,
    SweepDoc,
    SweepEntry,
    now_iso,
)
from .settings import Settings
from .spec import RunSpec, SweepSpec
from .stopping import Stop
from .store import RunStore

log = logging.getLogger("orchestrator.sweep")

Retry = Literal["failed", "none"]

Progress = Callable[[str, str, RunRecord | None], None]
"""progress(event, run_id, record): event is queued, skipped, running, done, waiting."""


@dataclass(frozen=True)
class PlannedRun:
    spec: RunSpec
    overrides: tuple[str, ...]
    config: dict[str, Any]

    @property
    def run_id(self) -> str:
        return self.spec.run_id


@dataclass(frozen=True)
class SweepRun:
    """One run as the sweep reports it: its record, and ``skipped`` when it had already
    succeeded before this submission (a failed run kept with ``--retry none`` stays
    ``failed``, so the sweep's exit code keeps saying so; a run the sweep was stopped
    before starting is ``queued``, with no record in the store)."""

    record: RunRecord
    status: str

    def to_json(self) -> dict[str, Any]:
        """The run object of ``orch sweep --json``."""
        return {
            "run_id": self.record.run_id,
            "status": self.status,
            "overrides": list(self.record.overrides),
            "image_id": self.record.image_id,
            "metrics": dict(self.record.metrics),
        }


@dataclass
class SweepResult:
    sweep_id: str
    runs: list[SweepRun] = field(default_factory=list)
    #: The sweep was stopped (Ctrl-C, SIGTERM, SIGHUP) before it finished.
    stopped: bool = False

    @property
    def failed(self) -> bool:
        return any(run.status == RunStatus.FAILED for run in self.runs)

    def as_json(self) -> dict[str, Any]:
        return {"sweep_id": self.sweep_id, "runs": [run.to_json() for run in self.runs]}


def compose_points(
    project: Project, args: Sequence[str], max_points: int = 100_000
) -> list[tuple[tuple[str, ...], dict[str, Any]]]:
    composer = configmod.Composer(
        project.config_dir, project.config_name, configmod.job_name_for(project.command)
    )
    points = configmod.expand_sweep(list(args), composer, max_points)
    configs = composer.compose_many(points)
    return [(tuple(point), cfg) for point, cfg in zip(points, configs, strict=True)]


def plan(
    project: Project,
    env: Environment,
    points: Sequence[tuple[tuple[str, ...], dict[str, Any]]],
    args: Sequence[str],
) -> SweepSpec:
    specs: dict[str, RunSpec] = {}
    for overrides, cfg in points:
        spec = RunSpec.create(
            project=project.name,
            overrides=overrides,
            config=cfg,
            env_key=env.env_key,
            code_key=env.code_key,
            command=project.command,
            gpus=project.resources.gpus,
            env=project.env,
        )
        specs.setdefault(spec.run_id, spec)  # two spellings of one config are one run
    return SweepSpec(project.name, tuple(args), tuple(specs.values()))


def _queued(sweep_id: str, spec: RunSpec) -> RunRecord:
    """What the sweep reports of a run it never started (nothing of it is stored)."""
    plan = RunPlan(run_id=spec.run_id, sweep_id=sweep_id, project=spec.project,
                   overrides=tuple(spec.overrides), config=spec.config)
    return RunRecord.finish(plan, status=RunStatus.QUEUED)


def _reported_status(record: RunRecord, resubmitted: bool) -> str:
    if resubmitted and record.succeeded:
        return "skipped"
    return record.status.value


class SweepDriver:
    def __init__(
        self,
        project: Project,
        client: Any,
        runs: RunStore,
        backend: Backend,
        *,
        registry: str | None = None,
        allow_dirty: bool = False,
        progress: Progress | None = None,
        batch: int = 8,
        settings: Settings | None = None,
        stop: Stop | None = None,
        retry: Retry = "failed",
    ) -> None:
        self.project = project
        self.client = client
        self.runs = runs
        self.backend = backend
        self.registry = registry
        self.allow_dirty = allow_dirty
        self.progress = progress or (lambda event, run_id, record: None)
        self.batch = batch
        self.settings = settings or Settings()
        self.stop = stop or Stop()
        self.retry = retry
        self.owner = uuid.uuid4().hex
        #: The attempt each run of this submission makes (1 unless retried).
        self._attempts: dict[str, int] = {}

    def run(
        self, args: Sequence[str], points: Sequence[tuple[tuple[str, ...], dict[str, Any]]]
    ) -> SweepResult:
        env = builder.prepare(self.client, self.project, allow_dirty=self.allow_dirty)
        sweep = plan(self.project, env, points, args)
        self.runs.write_sweep(
            SweepDoc(
                sweep_id=sweep.sweep_id,
                project=self.project.name,
                created_at=now_iso(),
                args=tuple(args),
                runs=tuple(SweepEntry(s.run_id, tuple(s.overrides)) for s in sweep.runs),
            )
        )
        with ThreadPoolExecutor(8, thread_name_prefix="orch-io") as io:
            done_flags = list(io.map(lambda s: self.runs.is_complete(s.run_id), sweep.runs))
            records: dict[str, RunRecord] = {}
            earlier: set[str] = set()
            todo: list[RunSpec] = []
            for spec, complete in zip(sweep.runs, done_flags, strict=True):
                earlier_record = self._earlier_record(spec.run_id) if complete else None
                if earlier_record is not None and self._retries(earlier_record):
                    self._attempts[spec.run_id] = earlier_record.attempt + 1
                    self.progress("retrying", spec.run_id, earlier_record)
                    earlier_record = None
                if earlier_record is not None:
                    records[spec.run_id] = earlier_record
                    earlier.add(spec.run_id)
                    self.progress("skipped", spec.run_id, earlier_record)
                else:
                    todo.append(spec)
                    self.progress("queued", spec.run_id, None)
            uploads: list[Future[Any]] = []
            if todo:
                uploads.append(io.submit(self._upload_environment, env))
                records.update(self._dispatch(env, sweep, todo, io, uploads))
            for upload in uploads:
                upload.result()
        stored = [records[s.run_id] for s in sweep.runs if s.run_id in records]
        self.runs.write_sweep_index(sweep.sweep_id, stored)
        reported = [
            SweepRun(records[s.run_id], _reported_status(records[s.run_id], s.run_id in earlier))
            if s.run_id in records
            else SweepRun(_queued(sweep.sweep_id, s), RunStatus.QUEUED.value)
            for s in sweep.runs
        ]
        return SweepResult(sweep.sweep_id, reported, stopped=self.stop.draining)

    def _retries(self, record: RunRecord) -> bool:
        """Set a failed or cancelled run's record aside to run it again (``--retry``)."""
        if self.retry == "none" or record.status not in (RunStatus.FAILED, RunStatus.CANCELLED):
            return False
        # False: another submitter set it aside first and runs it; this one then waits.
        self.runs.set_aside_attempt(record)
        return True

    def _earlier_record(self, run_id: str) -> RunRecord | None:
        """The record a run already has, or None when it is unreadable: then it is set
        aside (kept, renamed) and the run counts as not done, so this sweep runs it again."""
        try:
            return self.runs.read_run(run_id)
        except CorruptRecord as exc:
            aside = self.runs.set_aside_corrupt(run_id)
            log.warning("%s; kept as %s, running the run again", exc, aside)
            return None

    def _job(
        self,
        env: Environment,
        sweep: SweepSpec,
        spec: RunSpec,
        image: RunImage,
        repo_digest: str | None,
    ) -> Job:
        cfg = spec.config
        files = {"config.yaml": configmod.to_yaml(cfg).encode()}
        if env.code.dirty and env.code.diff:
            files["dirty.diff"] = env.code.diff
        project = self.project
        plan = RunPlan(
            run_id=spec.run_id,
            sweep_id=sweep.sweep_id,
            project=project.name,
            overrides=tuple(spec.overrides),
            config=cfg,
            image_id=image.image_id,
            repo_digest=repo_digest,
            base_image=env.base.image_id,
            base_ref=env.base.ref,
            pinned=project.pinned,
            images=PrefixImages(
                base=env.base.image_id,
                env=env.env_image.image_id,
                code=env.code_image.image_id,
            ),
            layers=Layers(
                base=tuple(env.base.diff_ids),
                env=env.env_diff_id,
                code=env.code.diff_id,
                config=image.diff_id,
            ),
            env_key=env.env_key,
            code_key=env.code_key,
            command=tuple(project.command),
            env={**env.image_env, "ORCH_RUN_ID": spec.run_id},
            resources=RunResources(
                cpus=project.resources.cpus,
                gpus=project.resources.gpus,
                memory=project.resources.memory,
                timeout=project.timeout,
            ),
            network=project.network,
            git_commit=env.code.git_commit,
            git_tree=env.code.git_tree,
            dirty=env.code.dirty,
            pass_env=project.pass_env,
        )
        settings = self.settings
        return Job(
            plan=plan,
            owner=self.owner,
            lease_s=settings.lease_s,
            image_tag=image.tag,
            files=tuple(sorted(files.items())),
            attempt=self._attempts.get(spec.run_id, 1),
            max_output_bytes=settings.max_output_bytes,
            checkpoint_s=settings.checkpoint_s,
            live_s=settings.live_s,
        )

    def _prepare_batch(
        self,
        env: Environment,
        sweep: SweepSpec,
        batch: list[RunSpec],
        io: ThreadPoolExecutor,
        uploads: list[Future[Any]],
    ) -> list[Job]:
        images = []
        for spec in batch:
            cfg = spec.config
            images.append(
                builder.run_image(
                    env, spec.run_id, spec.overrides, configmod.to_yaml(cfg), configmod.to_json(cfg)
                )
            )
        builder.load_run_images(self.client, env, images)
        jobs = []
        for spec, image in zip(batch, images, strict=True):
            digest = None
            if self.registry:
                digest = push_to_registry(self.client, image.image_id, self.registry, spec.run_id)
            uploads.append(io.submit(self._upload_run_image, image))
            jobs.append(self._job(env, sweep, spec, image, digest))
        return jobs

    def _dispatch(
        self,
        env: Environment,
        sweep: SweepSpec,
        todo: list[RunSpec],
        io: ThreadPoolExecutor,
        uploads: list[Future[Any]],
    ) -> dict[str, RunRecord]:
        records: dict[str, RunRecord] = {}
        pending: dict[Future[RunRecord], Job] = {}
        held: dict[str, Job] = {}
        start, size = 0, max(1, self.batch // 4)
        while start < len(todo) and not self.stop.draining:
            # A small first batch gets the first container going at once; loading each
            # later, larger batch overlaps with the runs of the previous ones.
            batch, start, size = todo[start : start + size], start + size, min(2 * size, self.batch)
            jobs = self._prepare_batch(env, sweep, batch, io, uploads)
            # Not waited for, even where other nodes fetch the images from the store: a
            # node that shares this daemon has them now, and one that does not waits
            # (bounded) for the blobs it needs (backends/ray/node.py ensure_run_image).
            for job in jobs:
                pending[self.backend.submit(job, self._started(job.run_id))] = job
            self._collect(pending, records, held, block=False)
        while pending or held:
            self._collect(pending, records, held, block=True)
            if self.stop.draining:
                held.clear()  # other submitters' runs: theirs to finish, not ours to wait for
            for run_id, job in list(held.items()):
                if self.runs.is_complete(run_id):
                    records[run_id] = self.runs.read_run(run_id)
                    self.progress("done", run_id, records[run_id])
                    del held[run_id]
                elif self.runs.claims.is_stale(run_id, self.settings.lease_s):
                    del held[run_id]
                    pending[self.backend.submit(job, self._started(run_id))] = job
            if held and not pending:
                time.sleep(1.0)
        return records

    def _started(self, run_id: str) -> Callable[[], None]:
        return lambda: self.progress("running", run_id, None)

    def _collect(
        self,
        pending: dict[Future[RunRecord], Job],
        records: dict[str, RunRecord],
        held: dict[str, Job],
        block: bool,
    ) -> None:
        if not pending:
            return
        done, _ = wait(list(pending), timeout=None if block else 0, return_when=FIRST_COMPLETED)
        for future in done:
            job = pending.pop(future)
            try:
                record = future.result()
            except (NotStarted, CancelledError):
                self.progress("not started", job.run_id, None)
                continue
            except ClaimHeld:
                held[job.run_id] = job
                self.progress("waiting", job.run_id, None)
                continue
            records[job.run_id] = record
            self.progress("done", job.run_id, record)

    def _upload_environment(self, env: Environment) -> None:
        blobs: dict[str, Any] = dict(
            base_layer_files(self.client, env.base.image_id, env.base.diff_ids)
        )
        blobs[env.env_diff_id] = env.env_layer
        blobs[env.code.diff_id] = env.code.layer
        blobs[env.env_image.image_id] = env.env_image.raw
        blobs[env.code_image.image_id] = env.code_image.raw
        for digest, source in blobs.items():
            # the layer files come from orch's caches, checked when they were written
            self.runs.blobs.put(digest, source, trusted=isinstance(source, Path))

    def _upload_run_image(self, image: RunImage) -> None:
        self.runs.blobs.put(image.diff_id, image.layer)
        self.runs.blobs.put(image.image_id, image.config.raw)
