"""The sweep driver: grid -> specs -> images -> backend -> store.

It composes every point first (so every config error surfaces before anything is
built), skips the runs the store already holds, loads the rest's images in batches
while earlier batches already run, and waits for runs another submitter is running.

What it takes to start runs (inputs, images, the backend, the wait for other
submitters) is the :class:`~.launcher.Launcher`'s, shared with the search driver; the
functions here compose and plan points, which the search driver uses too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import inputs as inputsmod
from ..compose import config as configmod
from ..compose import hydra_app
from ..compose.cache import ComposeCache
from ..compose.project import Project
from ..errors import InputError, NotFound
from ..image.builder import Environment
from ..schema.record import (
    CorruptRecord,
    RunPlan,
    RunRecord,
    RunStatus,
    SweepDoc,
    SweepEntry,
    now_iso,
)
from ..schema.spec import RunSpec, SweepSpec
from ..settings import Settings
from ..store import RunStore
from .inflight import InFlight
from .launcher import Launcher, batches, default_s3_client
from .launcher import Retry as Retry

log = logging.getLogger("orchestrator.sweep")


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
    project: Project, args: Sequence[str], max_points: int = 100_000,
    cache: ComposeCache | None = None,
) -> list[tuple[tuple[str, ...], dict[str, Any]]]:
    composer = composer_for(project, cache=cache)
    points = configmod.expand_sweep([*project.overrides, *args], composer, max_points)
    composed = compose_each(composer, points)
    point_inputs(project, composed)  # an unknown input is a config error, found up front
    return composed


def _node_for_run(node: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if node is None else hydra_app.node_for_run(node)


def composer_for(
    project: Project, *, reuse: bool = False, cache: ComposeCache | None = None
) -> configmod.Composer:
    """The composer of a project's runs: its config tree, the job name its command gives,
    the environment its runs have, and the hydra node kept for a Hydra application."""
    return configmod.Composer(
        project.config_dir, project.config_name, configmod.job_name_for(project.command),
        reuse=reuse, cache=cache,
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
        _read_by(project, points), project.root, settings.cache_root, make_client=default_s3_client
    )
    inputsmod.stage(pinned, runs.blobs, settings.cache_root)
    return {name: item.digest for name, item in sorted(pinned.items())}


def _digest(digests: Mapping[str, str] | None, name: str) -> str:
    if not digests or name not in digests:
        raise InputError(f"input {name!r} has no digest yet: pin the inputs first (inputs.pin)")
    return digests[name]


def _reported_status(record: RunRecord, resubmitted: bool) -> str:
    # A pruned run is finished too: a re-submission does not run it again.
    if resubmitted and record.status in (RunStatus.SUCCEEDED, RunStatus.PRUNED):
        return "skipped"
    return record.status.value


class SweepDriver:
    """Runs a grid's points: plans them, skips what the store holds, retries what failed,
    and starts the rest through its :class:`~.launcher.Launcher` in batches of growing
    size (a run another submitter holds is waited for)."""

    def __init__(self, launcher: Launcher) -> None:
        self.launcher = launcher

    def run(
        self,
        args: Sequence[str],
        points: Sequence[tuple[tuple[str, ...], dict[str, Any]]],
        search: dict[str, Any] | None = None,
    ) -> SweepResult:
        """Run every point; ``search`` (a random search's settings) goes into the sweep's
        document, to say how the points were drawn."""
        launcher = self.launcher
        project, runs = launcher.project, launcher.runs
        env = launcher.environment(config_files(points))
        digests = launcher.pin(_read_by(project, points))
        sweep = plan(project, env, points, args, digests)
        runs.write_sweep(
            SweepDoc(
                sweep_id=sweep.sweep_id,
                project=project.name,
                created_at=now_iso(),
                args=tuple(args),
                runs=tuple(SweepEntry(s.run_id, tuple(s.overrides)) for s in sweep.runs),
                search=search,
            )
        )
        launcher.protect_environment(sweep.sweep_id, env)
        with launcher:
            done_flags = list(launcher.io.map(lambda s: runs.is_complete(s.run_id), sweep.runs))
            records: dict[str, RunRecord] = {}
            earlier: set[str] = set()
            todo: list[RunSpec] = []
            for spec, complete in zip(sweep.runs, done_flags, strict=True):
                earlier_record = self._earlier_record(spec.run_id) if complete else None
                if earlier_record is not None and launcher.retry(earlier_record):
                    earlier_record = None
                if earlier_record is not None:
                    records[spec.run_id] = earlier_record
                    earlier.add(spec.run_id)
                    launcher.progress("skipped", spec.run_id, earlier_record)
                else:
                    todo.append(spec)
                    launcher.progress("queued", spec.run_id, None)
            launcher.number_attempts(todo)
            launcher.repair(env, sweep.sweep_id, sweep.runs, records)
            if todo:
                launcher.stage(todo)
                launcher.upload_environment(env)
                records.update(self._dispatch(env, sweep.sweep_id, todo))
            launcher.wait_uploads()
        stored = [records[s.run_id] for s in sweep.runs if s.run_id in records]
        runs.write_sweep_index(sweep.sweep_id, stored)
        reported = [
            SweepRun(records[s.run_id], _reported_status(records[s.run_id], s.run_id in earlier))
            if s.run_id in records
            else SweepRun(_queued(sweep.sweep_id, s), RunStatus.QUEUED.value)
            for s in sweep.runs
        ]
        return SweepResult(sweep.sweep_id, reported, stopped=launcher.stop.draining)

    def _earlier_record(self, run_id: str) -> RunRecord | None:
        """The record a run already has, or None when it is unreadable: then it is set
        aside (kept, renamed) and the run counts as not done, so this sweep runs it again.
        None too when it is gone since the store said it was there: another submitter of
        the same sweep set it aside to retry the run, and the run's claim decides who
        runs it."""
        runs = self.launcher.runs
        try:
            return runs.read_run(run_id)
        except NotFound:
            return None
        except CorruptRecord as exc:
            aside = runs.set_aside_corrupt(run_id)
            log.warning("%s; kept as %s, running the run again", exc, aside)
            return None

    def _dispatch(self, env: Environment, sweep_id: str,
                  todo: list[RunSpec]) -> dict[str, RunRecord]:
        launcher = self.launcher
        records: dict[str, RunRecord] = {}
        flights: InFlight[str] = InFlight(launcher, poll_s=1.0)

        def collect(timeout: float | None) -> None:
            for run_id, record in flights.collect(timeout):
                if record is not None:
                    records[run_id] = record

        for batch in batches(todo, launcher.options.batch):
            if launcher.stop.draining:
                break
            # Not waited for, even where other nodes fetch the images from the store: a
            # node that shares this daemon has them now, and one that does not waits
            # (bounded) for the blobs it needs (backends/node.py ensure_run_image).
            for job in launcher.prepare(env, sweep_id, batch):
                flights.submit(job, job.run_id)
            collect(0)
        while flights:
            collect(None)
        return records
