"""The sweep driver: grid -> specs -> images -> backend -> store.

It composes every point first (so every config error surfaces before anything is
built), skips the runs the store already holds, loads the rest's images in batches
while earlier batches already run, and waits for runs another submitter is running.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from . import config as configmod
from .backends.base import Backend, Job
from .execute import LEASE_S, ClaimHeld, iso
from .image import builder
from .image.builder import Environment, RunImage
from .image.transport import base_layer_files, push_to_registry
from .project import Project
from .spec import RunSpec, SweepSpec
from .store import RunStore

Progress = Callable[[str, str, dict[str, Any] | None], None]
"""progress(event, run_id, record): event is queued, skipped, running, done, waiting."""


@dataclass(frozen=True)
class PlannedRun:
    spec: RunSpec
    overrides: tuple[str, ...]
    config: dict[str, Any]

    @property
    def run_id(self) -> str:
        return self.spec.run_id


@dataclass
class SweepResult:
    sweep_id: str
    runs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(run["status"] == "failed" for run in self.runs)

    def as_json(self) -> dict[str, Any]:
        return {"sweep_id": self.sweep_id, "runs": self.runs}


def compose_points(
    project: Project, args: Sequence[str], max_points: int | None = None
) -> list[tuple[tuple[str, ...], dict[str, Any]]]:
    if max_points is None:  # until the CLI passes its Settings: ORCH_MAX_POINTS as before
        from .settings import Settings

        max_points = Settings.from_env().max_points
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


def summary(record: dict[str, Any], status: str | None = None) -> dict[str, Any]:
    """The run object of ``orch sweep --json``."""
    return {
        "run_id": record["run_id"],
        "status": status or record["status"],
        "overrides": list(record.get("overrides", [])),
        "image_id": record.get("image_id"),
        "metrics": record.get("metrics", {}),
    }


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
    ) -> None:
        self.project = project
        self.client = client
        self.runs = runs
        self.backend = backend
        self.registry = registry
        self.allow_dirty = allow_dirty
        self.progress = progress or (lambda event, run_id, record: None)
        self.batch = batch
        self.owner = uuid.uuid4().hex

    def run(
        self, args: Sequence[str], points: Sequence[tuple[tuple[str, ...], dict[str, Any]]]
    ) -> SweepResult:
        env = builder.prepare(self.client, self.project, allow_dirty=self.allow_dirty)
        sweep = plan(self.project, env, points, args)
        self.runs.write_sweep(
            {
                "schema": 1,
                "sweep_id": sweep.sweep_id,
                "project": self.project.name,
                "created_at": iso(time.time()),
                "args": list(args),
                "runs": [{"run_id": s.run_id, "overrides": list(s.overrides)} for s in sweep.runs],
            }
        )
        with ThreadPoolExecutor(8, thread_name_prefix="orch-io") as io:
            done_flags = list(io.map(lambda s: self.runs.is_complete(s.run_id), sweep.runs))
            records: dict[str, dict[str, Any]] = {}
            statuses: dict[str, str] = {}
            todo: list[RunSpec] = []
            for spec, complete in zip(sweep.runs, done_flags, strict=True):
                if complete:
                    records[spec.run_id] = self.runs.read_run(spec.run_id)
                    statuses[spec.run_id] = "skipped"
                    self.progress("skipped", spec.run_id, records[spec.run_id])
                else:
                    todo.append(spec)
                    self.progress("queued", spec.run_id, None)
            uploads: list[Future[Any]] = []
            if todo:
                uploads.append(io.submit(self._upload_environment, env))
                records.update(self._dispatch(env, sweep, todo, io, uploads))
            for upload in uploads:
                upload.result()
        ordered = [records[s.run_id] for s in sweep.runs]
        self.runs.write_sweep_index(sweep.sweep_id, ordered)
        return SweepResult(sweep.sweep_id, [summary(r, statuses.get(r["run_id"])) for r in ordered])

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
        record = {
            "project": project.name,
            "overrides": list(spec.overrides),
            "config": cfg,
            "repo_digest": repo_digest,
            "base_image": env.base.image_id,
            "base_ref": env.base.ref,
            "pinned": project.pinned,
            "layers": {
                "base": list(env.base.diff_ids),
                "env": env.env_diff_id,
                "code": env.code.diff_id,
                "config": image.diff_id,
            },
            "images": {
                "base": env.base.image_id,
                "env": env.env_image.image_id,
                "code": env.code_image.image_id,
            },
            "env_key": env.env_key,
            "code_key": env.code_key,
            "env": {**env.image_env, "ORCH_RUN_ID": spec.run_id},
            "network": project.network,
            "git_commit": env.code.git_commit,
            "git_tree": env.code.git_tree,
            "dirty": env.code.dirty,
        }
        return Job(
            run_id=spec.run_id,
            sweep_id=sweep.sweep_id,
            image_id=image.image_id,
            image_tag=image.tag,
            command=project.command,
            cpus=project.resources.cpus,
            gpus=project.resources.gpus,
            memory=project.resources.memory,
            timeout=project.timeout,
            network=project.network,
            owner=self.owner,
            record=record,
            files=tuple(sorted(files.items())),
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
        builder.thin_archive(self.client, env, images).load(self.client)
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
    ) -> dict[str, dict[str, Any]]:
        records: dict[str, dict[str, Any]] = {}
        pending: dict[Future[dict[str, Any]], Job] = {}
        held: dict[str, Job] = {}
        start, size = 0, max(1, self.batch // 4)
        while start < len(todo):
            # A small first batch gets the first container going at once; loading each
            # later, larger batch overlaps with the runs of the previous ones.
            batch, start, size = todo[start : start + size], start + size, min(2 * size, self.batch)
            jobs = self._prepare_batch(env, sweep, batch, io, uploads)
            if not self.backend.shares_daemon:
                for upload in uploads:  # other nodes fetch the images from the store
                    upload.result()
            for job in jobs:
                pending[self.backend.submit(job)] = job
                self.progress("running", job.run_id, None)
            self._collect(pending, records, held, block=False)
        while pending or held:
            self._collect(pending, records, held, block=True)
            for run_id, job in list(held.items()):
                if self.runs.is_complete(run_id):
                    records[run_id] = self.runs.read_run(run_id)
                    self.progress("done", run_id, records[run_id])
                    del held[run_id]
                elif self.runs.claim_is_stale(run_id, LEASE_S):
                    del held[run_id]
                    pending[self.backend.submit(job)] = job
            if held and not pending:
                time.sleep(1.0)
        return records

    def _collect(
        self,
        pending: dict[Future[dict[str, Any]], Job],
        records: dict[str, dict[str, Any]],
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
            self.runs.put_blob(digest, source)

    def _upload_run_image(self, image: RunImage) -> None:
        self.runs.put_blob(image.diff_id, image.layer)
        self.runs.put_blob(image.image_id, image.config.raw)
