"""The sweep driver: grid -> specs -> images -> backend -> store.

It composes every point first (so every config error surfaces before anything is
built), skips the runs the store already holds, loads the rest's images in batches
while earlier batches already run, and waits for runs another submitter is running.

Why one module of this size: planning, batched image loading, dispatch, retries and the
wait for other submitters are one loop over one sweep's state; inputs and images are
delegated to their modules.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, CancelledError, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .. import config as configmod
from .. import hydra_app
from .. import inputs as inputsmod
from ..backends.base import Backend
from ..docker_api import DockerClient
from ..errors import InputError
from ..execute import ClaimHeld, NotStarted
from ..image import builder
from ..image.builder import Environment, RunImage
from ..image.transport import base_layer_files, push_to_registry, store_layer
from ..job import Job
from ..project import Project
from ..record import (
    CorruptRecord,
    InputRef,
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
from ..settings import Settings
from ..spec import RunSpec, SweepSpec
from ..stopping import Stop
from ..store import RunStore

log = logging.getLogger("orchestrator.sweep")

Retry = Literal["failed", "none"]

Progress = Callable[[str, str, RunRecord | None], None]
"""progress(event, run_id, record): event is queued, skipped, running, done, waiting."""


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
    #: The scheduler's ids of what the sweep submitted (SLURM job arrays), if any.
    backend_jobs: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(run.status == RunStatus.FAILED for run in self.runs)

    def as_json(self) -> dict[str, Any]:
        return {"sweep_id": self.sweep_id, "runs": [run.to_json() for run in self.runs]}


def compose_points(
    project: Project, args: Sequence[str], max_points: int = 100_000
) -> list[tuple[tuple[str, ...], dict[str, Any]]]:
    composer = composer_for(project)
    points = configmod.expand_sweep([*project.overrides, *args], composer, max_points)
    composed = compose_each(composer, points)
    point_inputs(project, composed)  # an unknown input is a config error, found up front
    return composed


def _node_for_run(node: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if node is None else hydra_app.node_for_run(node)


def composer_for(project: Project, *, reuse: bool = False) -> configmod.Composer:
    """The composer of a project's runs: its config tree, the job name its command gives,
    the environment its runs have, and the hydra node kept for a Hydra application."""
    return configmod.Composer(
        project.config_dir, project.config_name, configmod.job_name_for(project.command),
        reuse=reuse,
        env=configmod.run_env(dict(project.env), [decl.name for decl in project.inputs]),
        keep_hydra=project.hydra_app is not None,
    )


def compose_each(
    composer: configmod.Composer, points: Sequence[Sequence[str]], prefix: Sequence[str] = ()
) -> list[tuple[tuple[str, ...], dict[str, Any]]]:
    """Each point (after ``prefix``: orch.yaml's ``overrides``) with its composed config."""
    full = [(*prefix, *point) for point in points]
    composed = composer.compose_points(full)
    files = composer.files_read()
    return [
        (point, configmod.PointConfig.of(result, files))
        for point, result in zip(full, composed, strict=True)
    ]


def config_files(points: Sequence[tuple[tuple[str, ...], dict[str, Any]]]) -> tuple[Path, ...]:
    """The config files the composition of ``points`` read."""
    return tuple(sorted({path for _, cfg in points for path in getattr(cfg, "files", ())}))


def point_inputs(
    project: Project, points: Sequence[tuple[tuple[str, ...], dict[str, Any]]]
) -> list[tuple[str, ...]]:
    """The data inputs each point's run depends on (see ``inputs.run_inputs``)."""
    if not project.inputs and not any(inputsmod.names_in_config(cfg) for _, cfg in points):
        return [() for _ in points]
    in_tree = inputsmod.names_in_tree(project.config_dir)
    found = []
    for overrides, cfg in points:
        try:
            found.append(inputsmod.run_inputs(project.inputs, cfg, in_tree))
        except ValueError as exc:
            where = " ".join(overrides) or "(defaults)"
            raise InputError(f"{where}: {exc}") from None
    return found


def plan(
    project: Project,
    env: Environment,
    points: Sequence[tuple[tuple[str, ...], dict[str, Any]]],
    args: Sequence[str],
    digests: Mapping[str, str] | None = None,
) -> SweepSpec:
    """The sweep's run specs; ``digests`` (input name -> digest) pins the inputs they read."""
    specs: dict[str, RunSpec] = {}
    uses = point_inputs(project, points)
    for (overrides, cfg), names in zip(points, uses, strict=True):
        spec = RunSpec.create(
            project=project.name,
            overrides=overrides,
            config=cfg,
            env_key=env.env_key,
            code_key=env.code_key,
            command=project.run_command,
            gpus=project.resources.gpus,
            env=project.env,
            inputs=tuple((name, _digest(digests, name)) for name in names),
            deferred=getattr(cfg, "deferred", ()),
            hydra=_node_for_run(getattr(cfg, "node", None)),
        )
        specs.setdefault(spec.run_id, spec)  # two spellings of one config are one run
    return SweepSpec(project.name, tuple(args), tuple(specs.values()))


def _queued(sweep_id: str, spec: RunSpec) -> RunRecord:
    """What the sweep reports of a run it never started (nothing of it is stored)."""
    plan = RunPlan(run_id=spec.run_id, sweep_id=sweep_id, project=spec.project,
                   overrides=tuple(spec.overrides), config=spec.config)
    return RunRecord.finish(plan, status=RunStatus.QUEUED)


def _read_by(
    project: Project, points: Sequence[tuple[tuple[str, ...], dict[str, Any]]]
) -> list[inputsmod.InputDecl]:
    """The declared inputs some of these points read."""
    needed = set().union(*point_inputs(project, points)) if points else set()
    return [decl for decl in project.inputs if decl.name in needed]


def stage_inputs(
    project: Project,
    points: Sequence[tuple[tuple[str, ...], dict[str, Any]]],
    runs: RunStore,
    settings: Settings,
) -> dict[str, str]:
    """Pin the inputs these points read and put them in the store, here and now; their
    digests (name -> digest) let a driver elsewhere run the points (``staged_inputs``)."""
    pinned = inputsmod.pin(
        _read_by(project, points), project.root, settings.cache_root, make_client=_s3_client
    )
    inputsmod.stage(pinned, runs.blobs, settings.cache_root)
    return {name: item.digest for name, item in sorted(pinned.items())}


def _digest(digests: Mapping[str, str] | None, name: str) -> str:
    if not digests or name not in digests:
        raise InputError(f"input {name!r} has no digest yet: pin the inputs first (inputs.pin)")
    return digests[name]


def _s3_client(endpoint: str | None) -> Any:
    from ..store.s3 import make_client

    return make_client(endpoint)


def _reported_status(record: RunRecord, resubmitted: bool) -> str:
    # A pruned run is finished too: a re-submission does not run it again.
    if resubmitted and record.status in (RunStatus.SUCCEEDED, RunStatus.PRUNED):
        return "skipped"
    return record.status.value


class SweepDriver:
    def __init__(
        self,
        project: Project,
        client: DockerClient,
        runs: RunStore,
        backend: Backend,
        *,
        registry: str | None = None,
        allow_dirty: bool = False,
        progress: Progress | None = None,
        say: Callable[[str], None] | None = None,
        batch: int = 8,
        settings: Settings | None = None,
        stop: Stop | None = None,
        retry: Retry = "failed",
        s3_client: inputsmod.S3ClientFactory | None = None,
        staged_inputs: Mapping[str, str] | None = None,
    ) -> None:
        self.project = project
        self.client = client
        self.runs = runs
        self.backend = backend
        self.registry = registry
        self.allow_dirty = allow_dirty
        self.progress = progress or (lambda event, run_id, record: None)
        #: Lines for the user: what an environment build downloads and builds.
        self.say = say or (lambda line: None)
        self.batch = batch
        self.settings = settings or Settings()
        self.stop = stop or Stop()
        self.retry = retry
        self.owner = uuid.uuid4().hex
        #: The attempt each run of this submission makes (1 unless retried).
        self._attempts: dict[str, int] = {}
        self.s3_client = s3_client or _s3_client
        #: Inputs the submitter already pinned and put in the store (name -> digest): a
        #: detached sweep's driver runs where the project's data is not.
        self.staged_inputs = dict(staged_inputs or {})
        self.pinned: dict[str, inputsmod.Pinned] = {}
        #: Jobs look for stop requests in the store (a search that prunes sets it).
        self.stop_requests = False
        #: The config files the points' composition read (untracked ones make it dirty).
        self.config_files: tuple[Path, ...] = ()

    def run(
        self,
        args: Sequence[str],
        points: Sequence[tuple[tuple[str, ...], dict[str, Any]]],
        search: dict[str, Any] | None = None,
    ) -> SweepResult:
        """Run every point; ``search`` (a random search's settings) goes into the sweep's
        document, to say how the points were drawn."""
        self.config_files = config_files(points)
        env = self._environment()
        self.pinned = self._pin_inputs(points)
        digests = {name: item.digest for name, item in self.pinned.items()}
        sweep = plan(self.project, env, points, args, digests)
        self.runs.write_sweep(
            SweepDoc(
                sweep_id=sweep.sweep_id,
                project=self.project.name,
                created_at=now_iso(),
                args=tuple(args),
                runs=tuple(SweepEntry(s.run_id, tuple(s.overrides)) for s in sweep.runs),
                search=search,
            )
        )
        # Before anything relies on finding a blob in the store: gc keeps what the open
        # sweep's marker names, however old the stored blob is.
        self.runs.protect_blobs(sweep.sweep_id, self._environment_blobs(env))
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
            # Runs not complete (new, set aside, or left by a set-aside another submitter
            # did) are numbered after every attempt the store keeps of them.
            for spec, number in zip(todo, io.map(self.runs.next_attempt,
                                                 [s.run_id for s in todo]), strict=True):
                if number > 1:
                    self._attempts[spec.run_id] = number
            self._repair_blobs(env, sweep, records, io, uploads)
            if todo:
                self._stage_inputs(todo)
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
        # Idempotent: of concurrent submitters, all finish one set-aside, and then claims
        # decide who runs the next attempt (numbered by what the store keeps).
        self.runs.set_aside_attempt(record)
        return True

    def _environment_blobs(self, env: Environment) -> list[str]:
        return [*env.base.diff_ids, *env.env_diff_ids, env.code.diff_id,
                env.env_image.image_id, env.code_image.image_id]

    def _repair_blobs(self, env: Environment, sweep: SweepSpec, records: Mapping[str, RunRecord],
                      io: ThreadPoolExecutor, uploads: list[Future[Any]]) -> None:
        """Upload again the blobs that runs already recorded name and the store lacks (a
        submitter killed while uploading, a full disk, a blob removed by hand): a record
        in the store must be runnable from the store."""
        if not records:
            return
        present = set(self.runs.blobs.digests())
        broken = [record for record in records.values()
                  if any(d not in present for d in self.runs.record_blobs(record))]
        if not broken:
            return
        log.warning("%d recorded run(s) name blobs the store lacks: uploading them again",
                    len(broken))
        by_id = {spec.run_id: spec for spec in sweep.runs}
        specs = [by_id[record.run_id] for record in broken if record.run_id in by_id]
        self._stage_inputs(specs)
        uploads.append(io.submit(self._upload_environment, env))
        for spec in specs:
            image = builder.run_image(
                env, spec.run_id, spec.overrides, spec.config, command=spec.command,
                deferred=spec.deferred, hydra=spec.hydra_node,
            )
            self.runs.protect_blobs(sweep.sweep_id, [image.diff_id, image.image_id])
            uploads.append(io.submit(self._upload_run_image, image))

    def _pin_inputs(
        self, points: Sequence[tuple[tuple[str, ...], dict[str, Any]]]
    ) -> dict[str, inputsmod.Pinned]:
        """Digest the inputs some point of this sweep reads (unchanged ones from the stat
        cache, in milliseconds); their digests go into the run ids."""
        decls = _read_by(self.project, points)
        here = [decl for decl in decls if decl.name not in self.staged_inputs]
        pinned = inputsmod.pin(
            here, self.project.root, self.settings.cache_root, make_client=self.s3_client
        )
        for decl in decls:
            if decl.name in self.staged_inputs:
                pinned[decl.name] = inputsmod.from_store(
                    decl, self.staged_inputs[decl.name], self.runs.blobs, self.settings.cache_root
                )
        return pinned

    def _stage_inputs(self, todo: Sequence[RunSpec]) -> None:
        """The inputs of the runs about to start: into the host cache and the store, before
        any run starts, so every record names data the store holds."""
        names = {name for spec in todo for name, _ in spec.inputs}
        staged = {name: item for name, item in self.pinned.items() if name in names}
        if staged:
            inputsmod.stage(staged, self.runs.blobs, self.settings.cache_root)

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
        sweep_id: str,
        spec: RunSpec,
        image: RunImage,
        repo_digest: str | None,
    ) -> Job:
        cfg = spec.config
        files = {"config.yaml": configmod.to_yaml(cfg, deferred=spec.deferred).encode()}
        if env.code.dirty and env.code.diff:
            files["dirty.diff"] = env.code.diff
        project = self.project
        plan = RunPlan(
            run_id=spec.run_id,
            sweep_id=sweep_id,
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
                env=env.env_diff_ids,
                code=env.code.diff_id,
                config=image.diff_id,
            ),
            env_key=env.env_key,
            code_key=env.code_key,
            command=spec.command,
            env={**env.image_env, **builder.run_image_env(env, spec.run_id, bool(spec.hydra))},
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
            inputs=self._input_refs(spec),
            deferred=spec.deferred,
            hydra=spec.hydra_node,
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
            stop_requests=self.stop_requests,
        )

    def _input_refs(self, spec: RunSpec) -> dict[str, InputRef]:
        return {name: self.pinned[name].ref for name, _ in spec.inputs}

    def _environment(self) -> Environment:
        """The project's environment, built if it must be: a cancel stops the build."""
        return builder.prepare(
            self.client, self.project, allow_dirty=self.allow_dirty, stop=self.stop, say=self.say,
            config_files=self.config_files,
        )

    def _prepare_batch(
        self,
        env: Environment,
        sweep_id: str,
        batch: list[RunSpec],
        io: ThreadPoolExecutor,
        uploads: list[Future[Any]],
    ) -> list[Job]:
        images = [
            builder.run_image(
                env, spec.run_id, spec.overrides, spec.config, command=spec.command,
                deferred=spec.deferred, hydra=spec.hydra_node,
            )
            for spec in batch
        ]
        builder.load_run_images(self.client, env, images)
        self.runs.protect_blobs(
            sweep_id, [d for image in images for d in (image.diff_id, image.image_id)])
        jobs = []
        for spec, image in zip(batch, images, strict=True):
            digest = None
            if self.registry:
                digest = push_to_registry(self.client, image.image_id, self.registry, spec.run_id)
            uploads.append(io.submit(self._upload_run_image, image))
            jobs.append(self._job(env, sweep_id, spec, image, digest))
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
            jobs = self._prepare_batch(env, sweep.sweep_id, batch, io, uploads)
            # Not waited for, even where other nodes fetch the images from the store: a
            # node that shares this daemon has them now, and one that does not waits
            # (bounded) for the blobs it needs (backends/node.py ensure_run_image).
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
        layers: dict[str, bytes | Path] = dict(
            base_layer_files(self.client, env.base.image_id, env.base.diff_ids)
        )
        layers.update({layer.diff_id: layer.path for layer in env.env_layers})
        layers[env.code.diff_id] = env.code.layer
        for diff_id, source in layers.items():
            store_layer(self.runs.blobs, diff_id, source)
        # Configs last: a node that finds an image's config finds its layers.
        self.runs.blobs.put(env.env_image.image_id, env.env_image.raw)
        self.runs.blobs.put(env.code_image.image_id, env.code_image.raw)

    def _upload_run_image(self, image: RunImage) -> None:
        store_layer(self.runs.blobs, image.diff_id, image.layer)
        self.runs.blobs.put(image.image_id, image.config.raw)
