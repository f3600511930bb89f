"""The launcher both drivers share: stage inputs, prepare batches of run images, submit
jobs to the backend, collect their outcomes.

A driver decides *which* runs to start and when (every point of a grid; a search's
trials as results arrive); the :class:`Launcher` does what starting them takes, the same
way for both: pin and stage the inputs the runs read, number each run's attempt (a failed
run set aside is retried as the next attempt), build each run's image and load it where
it runs (through an :class:`~.imaging.ImageBuilder`: Docker's, or
:class:`orchestrator.testing.FakeImages` in tests), upload what a record will name, and
hand :class:`~orchestrator.schema.job.Job` s to the backend. :class:`~.inflight.InFlight`
follows the jobs handed over: a run another submitter holds is waited for (and taken
over when its claim goes stale). What a submission may tune is one frozen
:class:`DriverOptions`.
"""

from __future__ import annotations

import enum
import logging
import types
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from .. import inputs as inputsmod
from .._util.stopping import Stop
from ..backends.backend import Backend
from ..compose import config as configmod
from ..compose.project import Project
from ..image import builder
from ..image.builder import Environment, RunImage
from ..image.transport import store_layer
from ..runner.execute import ClaimHeld, NotStarted
from ..schema.job import Job
from ..schema.record import (
    InputRef,
    Layers,
    PrefixImages,
    RunPlan,
    RunRecord,
    RunResources,
    RunStatus,
)
from ..schema.spec import RunSpec
from ..settings import Settings
from ..store import RunStore
from .imaging import ImageBuilder

log = logging.getLogger("orchestrator.sweep")

Retry = Literal["failed", "none"]

Progress = Callable[[str, str, RunRecord | None], None]
"""progress(event, run_id, record): event is queued, skipped, retrying, running, waiting,
done or not started."""

T = TypeVar("T")


@dataclass(frozen=True)
class DriverOptions:
    """What one submission of a sweep or search may tune (everything else is the
    project's, the store's or the backend's)."""

    #: Push each run image to this registry (``HOST[:PORT]/REPO``) and record its digest.
    registry: str | None = None
    #: Run uncommitted code (its diff is stored beside each run).
    allow_dirty: bool = False
    #: Run images loaded per batch: the first batch is a quarter of it (the first
    #: container starts at once), each next one twice the last, up to ``batch``.
    batch: int = 8
    #: ``failed``: a failed or cancelled run is run again as its next attempt.
    retry: Retry = "failed"
    settings: Settings = field(default_factory=Settings)
    #: Inputs the submitter already pinned and put in the store (name -> digest): a
    #: detached sweep's driver runs where the project's data is not.
    staged_inputs: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "staged_inputs",
                           types.MappingProxyType(dict(self.staged_inputs)))


def batches(items: Sequence[T], batch: int) -> Iterator[Sequence[T]]:
    """``items`` in batches of growing size: a quarter of ``batch`` first (the first
    container starts at once), doubling up to ``batch`` (loading each later, larger batch
    overlaps with the runs of the earlier ones)."""
    start, size = 0, max(1, batch // 4)
    while start < len(items):
        yield items[start : start + size]
        start, size = start + size, min(2 * size, max(1, batch))


def default_s3_client(endpoint: str | None) -> Any:
    """An S3 client for an input's source (``endpoint``: another than AWS's)."""
    from ..store.s3 import make_client

    return make_client(endpoint)


class Unfinished(enum.Enum):
    """A job's outcome when it left no record of this submission's."""

    #: The sweep was stopped before the run got a container: it stays queued.
    NOT_STARTED = "not started"
    #: Another submitter holds the run: wait for its record.
    HELD = "held"


class Launcher:
    """Starts the runs of one submission (a sweep's or a search's): its owner id is the
    claim of every run it starts, its attempts and pinned inputs are this submission's.

    Use it as a context manager: its I/O threads (uploads to the store) live in the block.
    """

    def __init__(
        self,
        project: Project,
        runs: RunStore,
        backend: Backend,
        images: ImageBuilder,
        options: DriverOptions | None = None,
        *,
        progress: Progress | None = None,
        say: Callable[[str], None] | None = None,
        stop: Stop | None = None,
        s3_client: inputsmod.S3ClientFactory | None = None,
    ) -> None:
        self.project = project
        self.runs = runs
        self.backend = backend
        self.images = images
        self.options = options or DriverOptions()
        self.progress: Progress = progress or (lambda event, run_id, record: None)
        #: Lines for the user: what an environment build downloads and builds.
        self.say = say or (lambda line: None)
        self.stop = stop or Stop()
        self.owner = uuid.uuid4().hex
        #: Jobs look for stop requests in the store (a search that prunes sets it).
        self.stop_requests = False
        self.pinned: dict[str, inputsmod.Pinned] = {}
        self._s3_client = s3_client or default_s3_client
        #: The attempt each run of this submission makes (1 unless retried).
        self._attempts: dict[str, int] = {}
        self._io: ThreadPoolExecutor | None = None
        self._uploads: list[Future[Any]] = []

    @property
    def settings(self) -> Settings:
        return self.options.settings

    # -- the submission's I/O threads ------------------------------------------------------

    def __enter__(self) -> Launcher:
        self._io = ThreadPoolExecutor(8, thread_name_prefix="orch-io")
        self._uploads = []
        return self

    def __exit__(self, *exc: object) -> None:
        if self._io is not None:
            self._io.shutdown(wait=True)
        self._io = None

    @property
    def io(self) -> ThreadPoolExecutor:
        """The submission's I/O threads (store reads and uploads beside the runs)."""
        if self._io is None:
            raise RuntimeError("the launcher is used outside its with block")
        return self._io

    def wait_uploads(self) -> None:
        """Every upload started so far is done (raises what one raised)."""
        for upload in self._uploads:
            upload.result()

    # -- the environment and the inputs ----------------------------------------------------

    def environment(self, config_files: Sequence[Path]) -> Environment:
        """The project's environment, built if it must be: a cancel stops the build
        (``config_files``: what the runs' composition read; untracked ones make it dirty)."""
        return self.images.environment(self.project, allow_dirty=self.options.allow_dirty,
                                       stop=self.stop, say=self.say, config_files=config_files)

    def protect_environment(self, sweep_id: str, env: Environment) -> None:
        """Before anything relies on finding a blob in the store: gc keeps what the open
        sweep's marker names, however old the stored blob is."""
        self.runs.protect_blobs(sweep_id, [*env.base.diff_ids, *env.env_diff_ids,
                                           env.code.diff_id, env.env_image.image_id,
                                           env.code_image.image_id])

    def pin(self, decls: Sequence[inputsmod.InputDecl]) -> dict[str, str]:
        """Digest these inputs (unchanged ones from the stat cache, in milliseconds; staged
        ones from the store's manifests); their digests (name -> digest) go into run ids."""
        staged = self.options.staged_inputs
        here = [decl for decl in decls if decl.name not in staged]
        pinned = inputsmod.pin(here, self.project.root, self.settings.cache_root,
                               make_client=self._s3_client)
        for decl in decls:
            if decl.name in staged:
                pinned[decl.name] = inputsmod.from_store(
                    decl, staged[decl.name], self.runs.blobs, self.settings.cache_root)
        self.pinned = pinned
        return {name: item.digest for name, item in pinned.items()}

    def stage(self, specs: Sequence[RunSpec]) -> None:
        """The inputs of the runs about to start: into the host cache and the store, before
        any run starts, so every record names data the store holds."""
        names = {name for spec in specs for name, _ in spec.inputs}
        staged = {name: item for name, item in self.pinned.items() if name in names}
        if staged:
            inputsmod.stage(staged, self.runs.blobs, self.settings.cache_root)

    # -- attempts ---------------------------------------------------------------------------

    def retry(self, record: RunRecord) -> bool:
        """Set a failed or cancelled run's record aside to run it again as its next
        attempt (unless ``retry`` is ``none``): True if it is to run again."""
        if self.options.retry == "none" or record.status not in (RunStatus.FAILED,
                                                                 RunStatus.CANCELLED):
            return False
        # Idempotent: of concurrent submitters, all finish one set-aside, and then claims
        # decide who runs the next attempt (numbered by what the store keeps).
        self.runs.set_aside_attempt(record)
        self._attempts[record.run_id] = record.attempt + 1
        self.progress("retrying", record.run_id, record)
        return True

    def number_attempts(self, specs: Sequence[RunSpec]) -> None:
        """Number runs not complete (new, set aside, or left by a set-aside another
        submitter did) after every attempt the store keeps of them."""
        numbers = self.io.map(self.runs.next_attempt, [spec.run_id for spec in specs])
        for spec, number in zip(specs, numbers, strict=True):
            if number > 1:
                self._attempts[spec.run_id] = number

    # -- images and uploads -----------------------------------------------------------------

    def upload_environment(self, env: Environment) -> None:
        """Start uploading the environment's layers and configs to the store."""
        self._uploads.append(self.io.submit(self.store_environment, env))

    def store_environment(self, env: Environment) -> None:
        layers: dict[str, bytes | Path] = dict(self.images.base_layers(env))
        layers.update({layer.diff_id: layer.path for layer in env.env_layers})
        layers[env.code.diff_id] = env.code.layer
        for diff_id, source in layers.items():
            store_layer(self.runs.blobs, diff_id, source)
        # Configs last: a node that finds an image's config finds its layers.
        self.runs.blobs.put(env.env_image.image_id, env.env_image.raw)
        self.runs.blobs.put(env.code_image.image_id, env.code_image.raw)

    def store_run_image(self, image: RunImage) -> None:
        store_layer(self.runs.blobs, image.diff_id, image.layer)
        self.runs.blobs.put(image.image_id, image.config.raw)

    def repair(self, env: Environment, sweep_id: str, specs: Sequence[RunSpec],
               records: Mapping[str, RunRecord]) -> None:
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
        by_id = {spec.run_id: spec for spec in specs}
        again = [by_id[record.run_id] for record in broken if record.run_id in by_id]
        self.stage(again)
        self.upload_environment(env)
        for spec in again:
            image = self._run_image(env, spec)
            self.runs.protect_blobs(sweep_id, [image.diff_id, image.image_id])
            self._uploads.append(self.io.submit(self.store_run_image, image))

    def prepare(self, env: Environment, sweep_id: str, specs: Sequence[RunSpec]) -> list[Job]:
        """Build and load the images of a batch of runs (their uploads to the store start
        beside the runs); their jobs."""
        images = [self._run_image(env, spec) for spec in specs]
        self.images.load(env, images)
        self.runs.protect_blobs(
            sweep_id, [d for image in images for d in (image.diff_id, image.image_id)])
        jobs = []
        for spec, image in zip(specs, images, strict=True):
            digest = None
            if self.options.registry:
                digest = self.images.push(image, self.options.registry, spec.run_id)
            self._uploads.append(self.io.submit(self.store_run_image, image))
            jobs.append(self._job(env, sweep_id, spec, image, digest))
        # After the uploads: a node fetching a run image waits for its blobs, not its name.
        self._uploads.append(self.io.submit(self.images.name, images))
        return jobs

    @staticmethod
    def _run_image(env: Environment, spec: RunSpec) -> RunImage:
        return builder.run_image(
            env, spec.run_id, spec.overrides, spec.config, command=spec.command,
            deferred=spec.deferred, hydra=spec.hydra_node,
        )

    def _job(self, env: Environment, sweep_id: str, spec: RunSpec, image: RunImage,
             repo_digest: str | None) -> Job:
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
                pids=project.resources.pids,
                tmp=project.resources.tmp,
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

    # -- submitting and collecting ----------------------------------------------------------

    def submit(self, job: Job) -> Future[RunRecord]:
        """Hand ``job`` to the backend (progress says ``running`` when it starts)."""
        run_id = job.run_id
        return self.backend.submit(job, lambda: self.progress("running", run_id, None))

    def outcome(self, future: Future[RunRecord], run_id: str) -> RunRecord | Unfinished:
        """What a finished job left: its committed record, or why there is none."""
        try:
            return future.result()
        except (NotStarted, CancelledError):
            self.progress("not started", run_id, None)
            return Unfinished.NOT_STARTED
        except ClaimHeld:
            self.progress("waiting", run_id, None)
            return Unfinished.HELD
