"""Running from Python: :func:`sweep`, :func:`search` and :func:`rerun`.

``orch sweep`` and :func:`sweep` share everything past their arguments: the search's
options (:func:`search_options`), the checks a dry run makes (:func:`check_options`),
the points (:func:`plan`), and the backend, the launcher, the driver and Ctrl-C handling
(:func:`launch`). The command adds only what a terminal has: a progress bar, the
results table, ``--dry-run``'s listing, ``--detach`` and its exit code. A detached
sweep's driver (:mod:`orchestrator.api.detached`) builds its launcher here too
(:func:`make_launcher`).

Why one module of this size: each step above is called both by ``orch sweep`` and by
:func:`sweep`/:func:`search`, in this order; kept together, the command and the library
cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import MissingDependency, UsageError
from .workspace import Workspace

if TYPE_CHECKING:
    from .._util.stopping import Stop
    from ..backends.backend import Backend
    from ..compose.project import Project
    from ..compose.space import Space
    from ..daemon.client import DockerClient
    from ..drivers.grid import Retry, SweepResult
    from ..drivers.launcher import Launcher
    from ..drivers.rerun import RerunResult
    from ..drivers.search import SearchOptions
    from ..schema.record import RunRecord, SweepDoc
    from ..settings import Settings
    from ..store import RunStore

Point = tuple[tuple[str, ...], dict[str, Any]]


class Display(Protocol):
    """What shows a sweep as it goes (the CLI's progress bar is one): the driver's
    progress events, lines for the user, and how many runs run (for Ctrl-C's message)."""

    def __call__(self, event: str, run_id: str, record: RunRecord | None) -> None: ...

    def say(self, message: str) -> None: ...

    def note(self, message: str) -> None: ...

    def running(self) -> int: ...

    def close(self) -> None: ...


class Quiet:
    """The display of a sweep started from Python: nothing but what Ctrl-C does (on
    stderr), and the count of running runs that message needs."""

    def __init__(self, total: int = 0) -> None:
        self.total = total
        self._running = 0

    def __call__(self, event: str, run_id: str, record: RunRecord | None) -> None:
        if event == "running":
            self._running += 1
        elif event == "done":
            self._running = max(0, self._running - 1)

    def say(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    def note(self, message: str) -> None:
        pass  # an environment build's steps: shown by orch sweep, not here

    def running(self) -> int:
        return self._running

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------- options


def search_options(
    sampler: str, trials: int | None, seed: int, objective: str | None, pruner: str | None,
    jobs: int | None,
) -> SearchOptions | None:
    """The search the options ask for (None: a grid), checked."""
    from ..drivers.search import SearchOptions, parse_objectives

    if sampler == "grid":
        given = [name for name, value in (("--trials", trials), ("--pruner", pruner))
                 if value is not None]
        if given:
            raise UsageError(f"{' and '.join(given)}: only for a search: add --sampler "
                             "random or --sampler tpe (a grid runs every point)")
        return None
    if trials is None:
        raise UsageError(f"--sampler {sampler} needs --trials N: how many trials to run")
    options = SearchOptions(
        sampler=sampler,
        trials=trials,
        seed=seed,
        objectives=parse_objectives(objective) if objective else (),
        pruner=pruner,
        jobs=jobs or 1,
    )
    options.check()
    return options


def check_options(
    ws: Workspace, backend: str, ray_address: str | None, registry: str | None, detach: bool
) -> None:
    """Every option that can be checked without building or running: a dry run says
    now what the real run would refuse later."""
    if registry is not None and not re.match(
        r"^[a-zA-Z0-9.-]+(:[0-9]+)?/[a-z0-9._/-]+\Z", registry
    ):
        raise UsageError(
            f"--registry {registry!r}: expected HOST[:PORT]/REPO, e.g. 127.0.0.1:5000/orch"
        )
    if backend not in ("local", "ray", "slurm"):
        raise UsageError(f"backend {backend!r}: expected local, ray or slurm")
    if backend == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise MissingDependency("--backend ray needs ray", "'orch[ray]'")
    if detach and backend == "slurm":
        return  # the tasks commit to the store on their own; any store the nodes see
    if detach:
        if backend != "ray" or not ray_address:
            raise UsageError("--detach needs --backend slurm, or --backend ray and "
                             "--ray-address of a running cluster")
        if not ws.store_uri:
            raise UsageError("--detach needs --store that every node of the cluster can reach")


def check_labels(name: str | None, tags: Sequence[str]) -> None:
    from ..store.labels import check_label

    for value, what in [(name, "--name"), *((t, "--tag") for t in tags)]:
        if value is not None:
            check_label(value, what)


def with_slurm(project: Project, **given: Any) -> Project:
    """``project`` with ``orch sweep``'s SLURM options over its ``slurm:`` (None: kept);
    checked as orch.yaml's are."""
    from ..compose.project import parse_slurm

    chosen = {key: value for key, value in given.items() if value not in (None, ())}
    if not chosen:
        return project
    merged = {**dataclasses.asdict(project.slurm), **chosen}
    merged["sbatch"] = [*project.slurm.sbatch, *given.get("sbatch", ())]
    return dataclasses.replace(project, slurm=parse_slurm(merged, "orch sweep options"))


def with_base_image(project: Project, ref: str | None, allow_unpinned: bool) -> Project:
    """``project`` with another base image (``--base-image``), pinned unless allowed."""
    from ..compose.project import is_pinned

    if ref is None:
        return project
    if not ref or (not is_pinned(ref) and not allow_unpinned):
        raise UsageError(
            f"--base-image {ref!r} is not pinned: pass an image ID (sha256:...) or "
            f"name@sha256:<digest>, or add --allow-unpinned"
        )
    return dataclasses.replace(project, base_image=ref)


def hydra_note(project: Project) -> str | None:
    """The line that says the project is a Hydra application, or None."""
    if project.hydra_app is None:
        return None
    how = ("hydra_app: true in orch.yaml" if project.hydra_app == "orch.yaml"
           else f"@hydra.main in {project.hydra_app}")
    return (f"a Hydra application ({how}): each run starts it on its composed "
            "config (--config-path=/orch/hydra)")


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class Plan:
    """The points of a sweep, composed: every grid point, a random search's draws, or
    none for an adaptive search (its trials come as results do); ``space`` for a search."""

    points: list[Point]
    space: Space | None = None

    @property
    def total(self) -> int:
        return len(self.points)


def plan(
    project: Project, overrides: Sequence[str], search: SearchOptions | None,
    settings: Settings,
) -> Plan:
    """Compose the sweep (at most ``settings.max_points`` grid points)."""
    if search is not None and search.adaptive:
        from ..drivers.search import compose_space

        _, space = compose_space(project, overrides)
        return Plan([], space)
    if search is not None:
        from ..drivers.search import random_search_points

        space, points = random_search_points(project, overrides, search)
        return Plan(points, space)
    from ..compose.cache import ComposeCache
    from ..drivers.grid import compose_points

    cache = ComposeCache.under(settings.cache_root)
    return Plan(compose_points(project, overrides, settings.max_points, cache))


# --------------------------------------------------------------------------- running


def make_backend(
    ws: Workspace,
    kind: str,
    client: DockerClient,
    *,
    jobs: int | None,
    gpu_ids: Sequence[str] = (),
    ray_address: str | None = None,
    stop: Stop | None = None,
    project: Project | None = None,
    detach: bool = False,
) -> Backend:
    """The backend of ``kind`` (``local``, ``ray`` or ``slurm``: then with ``project``'s
    ``slurm:``) over the workspace's store."""
    if kind == "slurm":
        from ..backends.slurm import SlurmBackend
        from ..compose.project import SlurmOptions

        options = project.slurm if project is not None else SlurmOptions()
        log_dir = (Path(options.log_dir).expanduser() if options.log_dir
                   else ws.settings.cache_root / "slurm")
        return SlurmBackend(
            ws.runs(), options, log_dir=log_dir.absolute(),
            python=options.python or sys.executable, jobs=jobs, s3_endpoint=ws.s3_endpoint,
            stop=stop, detach=detach,
        )
    if kind == "ray":
        from ..backends.ray import RayBackend

        return RayBackend(
            ws.runs(), address=ray_address, max_in_flight=jobs, s3_endpoint=ws.s3_endpoint
        )
    from ..backends.local import LocalBackend

    return LocalBackend(
        client, ws.runs(), jobs=jobs or 1, gpu_ids=list(gpu_ids), stop=stop,
        work_root=ws.settings.work_root,
    )


def make_launcher(
    project: Project,
    client: DockerClient,
    runs: RunStore,
    engine: Backend,
    *,
    settings: Settings,
    jobs: int | None = None,
    registry: str | None = None,
    allow_dirty: bool = False,
    display: Display | None = None,
    stop: Stop | None = None,
    retry: Retry = "failed",
    staged_inputs: Mapping[str, str] | None = None,
    batch: int | None = None,
) -> Launcher:
    """What starts the runs of a sweep or search (either driver takes it): one batch of
    images is prepared ahead of about twice the runs in parallel (``batch``: another
    size)."""
    from ..drivers.imaging import DockerImages
    from ..drivers.launcher import DriverOptions, Launcher

    options = DriverOptions(
        registry=registry,
        allow_dirty=allow_dirty,
        batch=batch or max(8, 2 * (jobs or 1)),
        retry=retry,
        settings=settings,
        staged_inputs=staged_inputs or {},
    )
    return Launcher(project, runs, engine, DockerImages(client), options, progress=display,
                    say=display.note if display is not None else None, stop=stop)


def labeller(
    runs: RunStore, name: str | None, tags: Sequence[str], note: str | None
) -> Callable[[SweepDoc], None]:
    """Labels the sweep as soon as its document exists (its name then works at once)."""

    def label(sweep: SweepDoc) -> None:
        from ..store.labels import change, read_target

        current = read_target(runs.store, "sweep", sweep.sweep_id)
        change(
            runs.store,
            "sweep",
            sweep.sweep_id,
            add=[t for t in tags if t not in current.tags],
            name=name if name and name != current.name else None,
            note=note if note is not None and note != current.note else None,
        )

    return label


def launch(
    ws: Workspace,
    project: Project,
    client: DockerClient,
    overrides: Sequence[str],
    planned: Plan,
    search: SearchOptions | None,
    *,
    backend: str = "local",
    ray_address: str | None = None,
    registry: str | None = None,
    jobs: int | None = None,
    gpu_ids: Sequence[str] = (),
    allow_dirty: bool = False,
    retry: Retry = "failed",
    display: Callable[[int], Display] = Quiet,
    detach: bool = False,
) -> SweepResult:
    """Run a planned sweep or search to its end, or until Ctrl-C, SIGTERM or SIGHUP
    stop it (then ``result.stopped``: finished runs are committed). ``display`` makes
    what shows it, given the number of runs. ``detach`` (SLURM): return once the runs
    are submitted (``result.backend_jobs``); their records reach the store later."""
    from .._util.stopping import Stop, terminal_signals

    runs = ws.runs()
    stop = Stop()
    engine = make_backend(ws, backend, client, jobs=jobs, gpu_ids=gpu_ids,
                          ray_address=ray_address, stop=stop, project=project, detach=detach)
    shown = display(search.trials if search is not None else planned.total)
    try:
        # A scheduler takes the whole sweep at once (one job array, throttled there): the
        # driver's first batch (a quarter of ``batch``) is then every run.
        batch = 4 * max(1, planned.total) if backend == "slurm" else None
        launcher = make_launcher(project, client, runs, engine, settings=ws.settings,
                                 jobs=jobs, registry=registry, allow_dirty=allow_dirty,
                                 display=shown, stop=stop, retry=retry, batch=batch)
        with terminal_signals(stop, shown.say, shown.running), stop.on_cancel(engine.cancel):
            if search is not None and search.adaptive:
                from ..drivers.search import SearchDriver

                assert planned.space is not None
                return SearchDriver(launcher).search(overrides, planned.space, search)
            from ..drivers.grid import SweepDriver

            described = search.to_json() if search is not None else None
            if described is not None and planned.space is not None:
                described["space"] = planned.space.to_json()
            result = SweepDriver(launcher).run(overrides, planned.points, search=described)
            result.backend_jobs = list(getattr(engine, "submitted", []))
            return result
    finally:
        shown.close()
        engine.close()


def sweep(
    overrides: Sequence[str] = (),
    *,
    project: str | Path = ".",
    store: str | None = None,
    jobs: int = 1,
    backend: str = "local",
    ray_address: str | None = None,
    registry: str | None = None,
    gpu_ids: Sequence[str] = (),
    allow_dirty: bool = False,
    allow_unpinned: bool = False,
    base_image: str | None = None,
    retry: Retry = "failed",
    name: str | None = None,
    tags: Sequence[str] = (),
    note: str | None = None,
    s3_endpoint: str | None = None,
    display: Callable[[int], Display] = Quiet,
) -> SweepResult:
    """Expand ``overrides`` (Hydra sweep syntax: ``["optimizer.lr=0.1,0.01"]``) to a grid;
    build, run and store every point, as ``orch sweep`` does.

    Returns the sweep's outcome (``sweep_id``, ``runs``: each a record and its status in
    this submission, ``succeeded``/``failed``/``skipped``...; ``as_json()`` is what ``orch
    sweep --json`` prints). A failed run does not raise: ``result.failed`` says so, and
    ``result.stopped`` that Ctrl-C stopped the sweep (re-submit to run what is left).
    """
    return _run(overrides, None, project=project, store=store, jobs=jobs, backend=backend,
                ray_address=ray_address, registry=registry, gpu_ids=gpu_ids,
                allow_dirty=allow_dirty, allow_unpinned=allow_unpinned, base_image=base_image,
                retry=retry, name=name, tags=tags, note=note, s3_endpoint=s3_endpoint,
                display=display)


def search(
    overrides: Sequence[str] = (),
    *,
    sampler: str = "random",
    trials: int,
    objective: str | None = None,
    seed: int = 0,
    pruner: str | None = None,
    project: str | Path = ".",
    store: str | None = None,
    jobs: int = 1,
    backend: str = "local",
    ray_address: str | None = None,
    registry: str | None = None,
    gpu_ids: Sequence[str] = (),
    allow_dirty: bool = False,
    allow_unpinned: bool = False,
    base_image: str | None = None,
    retry: Retry = "failed",
    name: str | None = None,
    tags: Sequence[str] = (),
    note: str | None = None,
    s3_endpoint: str | None = None,
    display: Callable[[int], Display] = Quiet,
) -> SweepResult:
    """Search ``overrides`` (``interval(0.001,0.1)``, ``choice(a,b)``, ...) as ``orch sweep
    --sampler``: ``random`` draws ``trials`` points; ``tpe``, ``cmaes``, ``gp``, ``nsgaii``,
    ``qmc`` pick each trial from the results so far and need ``objective``
    (``METRIC[:max|min]``, comma-separated for several). Returns as :func:`sweep`."""
    options = search_options(sampler, trials, seed, objective, pruner, jobs)
    if options is None:
        raise UsageError("search(sampler='grid'): a grid runs every point, use sweep()")
    return _run(overrides, options, project=project, store=store, jobs=jobs, backend=backend,
                ray_address=ray_address, registry=registry, gpu_ids=gpu_ids,
                allow_dirty=allow_dirty, allow_unpinned=allow_unpinned, base_image=base_image,
                retry=retry, name=name, tags=tags, note=note, s3_endpoint=s3_endpoint,
                display=display)


def _run(
    overrides: Sequence[str],
    options: SearchOptions | None,
    *,
    project: str | Path,
    store: str | None,
    jobs: int,
    backend: str,
    ray_address: str | None,
    registry: str | None,
    gpu_ids: Sequence[str],
    allow_dirty: bool,
    allow_unpinned: bool,
    base_image: str | None,
    retry: Retry,
    name: str | None,
    tags: Sequence[str],
    note: str | None,
    s3_endpoint: str | None,
    display: Callable[[int], Display],
) -> SweepResult:
    if isinstance(overrides, str):
        raise UsageError(f"overrides: a list of overrides, not one string ({overrides!r})")
    if isinstance(tags, str):
        tags = (tags,)
    if retry not in ("failed", "none"):
        raise UsageError(f"retry {retry!r}: expected 'failed' or 'none'")
    if jobs < 1:
        raise UsageError(f"jobs {jobs}: expected 1 or more")
    check_labels(name, tags)
    with Workspace(project, store, s3_endpoint, store_label="store") as ws:
        loaded = with_base_image(ws.project(allow_unpinned=allow_unpinned), base_image,
                                 allow_unpinned)
        check_options(ws, backend, ray_address, registry, detach=False)
        planned = plan(loaded, overrides, options, ws.settings)
        runs = ws.runs()
        if name or tags or note:
            runs.after_write_sweep.append(labeller(runs, name, tags, note))
        return launch(ws, loaded, ws.docker(), tuple(overrides), planned, options,
                      backend=backend, ray_address=ray_address, registry=registry, jobs=jobs,
                      gpu_ids=gpu_ids, allow_dirty=allow_dirty, retry=retry, display=display)


# --------------------------------------------------------------------------- rerun


def rerun(
    target: str, *, store: str | None = None, project: str | Path | None = None
) -> RerunResult:
    """Run a recorded run again (by run id, ``sha256:IMAGE_ID`` or ``REPO@sha256:DIGEST``)
    from its recorded image, command and inputs, as ``orch rerun`` does. The result says
    whether the metrics are ``identical`` (a rerun that differs does not raise)."""
    with Workspace(project, store, store_label="store") as ws:
        return rerun_in(ws, target)


def rerun_in(ws: Workspace, target: str) -> RerunResult:
    """:func:`rerun` in a workspace."""
    from ..drivers.rerun import rerun as do_rerun

    return do_rerun(ws.docker(), ws.runs(), target, settings=ws.settings)
