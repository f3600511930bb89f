"""``orch compose`` and ``orch sweep`` (grids and searches)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from ..errors import Interrupted, RunsFailed, UsageError
from .context import Context, with_context
from .progress import Progress

if TYPE_CHECKING:
    from ..compose.space import Space
    from ..drivers.grid import Retry
    from ..drivers.search import SearchOptions

Point = tuple[tuple[str, ...], dict[str, Any]]


@click.command()
@click.argument("overrides", nargs=-1)
@with_context(store=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of YAML.")
def compose(context: Context, overrides: tuple[str, ...], as_json: bool) -> None:
    """Print the composed config of one point."""
    from ..compose import config as configmod
    from ..drivers.grid import compose_each, composer_for

    project = context.project(allow_unpinned=True)
    ((_, cfg),) = compose_each(composer_for(project), [overrides], project.overrides)
    deferred = getattr(cfg, "deferred", ())
    text = configmod.to_json(cfg) if as_json else configmod.to_yaml(cfg, deferred=deferred)
    click.echo(text, nl=False)


@click.command()
@click.argument("overrides", nargs=-1)
@with_context()
@click.option("--backend", type=click.Choice(["local", "ray", "slurm"]), default="local",
              show_default=True)
@click.option(
    "--ray-address", default=None, help="Ray cluster address (default: start a local Ray)."
)
@click.option("--partition", default=None, help="SLURM partition (over orch.yaml's slurm:).")
@click.option("--account", default=None, help="SLURM account to charge.")
@click.option("--qos", default=None, help="SLURM quality of service.")
@click.option("--time-limit", "time_limit", default=None,
              help="SLURM time limit of each run's task (30, 2:00:00, 1-00:00:00).")
@click.option("--sbatch", "sbatch_options", multiple=True,
              help="One more sbatch option, e.g. --sbatch=--constraint=a100 (repeatable).")
@click.option("--registry", default=None, help="Also push run images to HOST[:PORT]/REPO.")
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(min=1),
    default=None,
    help="Runs in parallel (local: default 1; ray: runs in flight, default the cluster's "
    "CPUs; slurm: the array's %N throttle, default none).",
)
@click.option(
    "--gpu-ids", default=None, help="GPU device ids to hand out, e.g. 0,1 (local backend)."
)
@click.option("--allow-dirty", is_flag=True, help="Bake uncommitted changes (recorded as dirty).")
@click.option(
    "--allow-unpinned",
    is_flag=True,
    help="Accept a base image given by tag (recorded as unpinned).",
)
@click.option(
    "--base-image", default=None, help="Use this base instead of orch.yaml's (same pinning rules)."
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Compose every point, check every option, list the points; build and run nothing.",
)
@click.option(
    "--detach",
    is_flag=True,
    help="slurm: return once the runs are submitted (follow with orch watch); ray: submit "
    "the sweep's driver to the cluster (Ray Jobs), print its job id, return.",
)
@click.option(
    "--retry",
    type=click.Choice(["failed", "none"]),
    default="failed",
    show_default=True,
    help="Run failed and cancelled runs again (as a new attempt), or keep their records.",
)
@click.option(
    "--sampler",
    type=click.Choice(["grid", "random", "tpe", "cmaes", "gp", "nsgaii", "qmc"]),
    default="grid",
    show_default=True,
    help="grid: every point; random: --trials seeded draws; tpe, ...: Optuna picks each "
    "trial from the results so far (needs --objective).",
)
@click.option("--trials", type=click.IntRange(min=1), default=None,
              help="How many trials a search runs in all (re-submit with more to continue).")
@click.option("--seed", type=int, default=0, show_default=True, help="The search's seed.")
@click.option("--objective", default=None,
              help="METRIC[:max|min] the search improves (comma-separated: several).")
@click.option("--pruner", type=click.Choice(["percentile", "median", "hyperband", "asha"]),
              default=None,
              help="Stop trials early on their step metrics (adaptive samplers).")
@click.option("--name", "sweep_name", default=None, help="Name the sweep (usable as its id).")
@click.option("--tag", "tags", multiple=True, help="Tag the sweep (repeatable).")
@click.option("--note", default=None, help="A note on the sweep, shown by results and query.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the runs.")
def sweep(
    context: Context,
    overrides: tuple[str, ...],
    backend: str,
    ray_address: str | None,
    partition: str | None,
    account: str | None,
    qos: str | None,
    time_limit: str | None,
    sbatch_options: tuple[str, ...],
    registry: str | None,
    jobs: int | None,
    gpu_ids: str | None,
    allow_dirty: bool,
    allow_unpinned: bool,
    base_image: str | None,
    dry_run: bool,
    detach: bool,
    retry: Retry,
    sampler: str,
    trials: int | None,
    seed: int,
    objective: str | None,
    pruner: str | None,
    sweep_name: str | None,
    tags: tuple[str, ...],
    note: str | None,
    as_json: bool,
) -> None:
    """Expand OVERRIDES (Hydra sweep syntax) to a grid, or search them (--sampler); build,
    run and store every point."""
    from ..api import running as api

    settings = context.settings
    search = api.search_options(sampler, trials, seed, objective, pruner, jobs)
    if search is not None and detach:
        raise UsageError("--detach runs grids only for now: run the search's driver here "
                         "(its trials still run on the cluster with --backend ray)")
    api.check_labels(sweep_name, tags)
    if detach and (sweep_name or tags or note):
        raise UsageError("--name, --tag and --note do not go with --detach yet: label the "
                         "sweep afterwards (orch name / orch tag / orch note)")
    project = api.with_base_image(context.project(allow_unpinned=allow_unpinned), base_image,
                                  allow_unpinned)
    slurm_given = {"partition": partition, "account": account, "qos": qos, "time": time_limit,
                   "sbatch": sbatch_options}
    if backend != "slurm" and any(v for v in slurm_given.values()):
        raise UsageError("--partition, --account, --qos, --time-limit and --sbatch are for "
                         "--backend slurm")
    project = api.with_slurm(project, **slurm_given)
    slurm_detach = detach and backend == "slurm"
    if slurm_detach:
        detach = False  # the SLURM driver submits here and returns: no Ray job
    api.check_options(context, backend, ray_address, registry, detach)
    with _background() as background:
        # Reaching the daemon overlaps with composing; a config error still comes first.
        # (Only for a local socket: a remote host that hangs would hold up the exit.)
        local = os.environ.get("DOCKER_HOST", "unix://").startswith("unix://")
        connecting: Future[Any] | None = None
        if local and not (dry_run or detach):
            connecting = background.submit(context.docker)
        planned = api.plan(project, overrides, search, settings)
        points, space = planned.points, planned.space
        hydra = api.hydra_note(project)
        if hydra is not None:
            click.echo(hydra, err=True)
        if dry_run:
            if not detach:
                context.runs()  # a store URI that cannot be opened fails here, as it would
            _print_points(points, as_json, space, search)
            return
        if detach:
            from ..backends.ray import submit_detached
            from ..drivers.grid import stage_inputs
            from ..store.request import SweepRequest

            assert ray_address is not None and context.store_uri is not None  # check_options
            # The job carries git's view of the project, not its (gitignored) data: the
            # inputs go to the store from here, and the driver reads them from there.
            staged = stage_inputs(project, points, context.runs(), settings)
            request = SweepRequest.new(
                overrides,
                context.store_uri,
                s3_endpoint=context.s3_endpoint,
                registry=registry,
                jobs=jobs,
                allow_dirty=allow_dirty,
                allow_unpinned=allow_unpinned,
                base_image=base_image,
                inputs=tuple(staged.items()),
            )
            job_id = submit_detached(ray_address, context.project_root(), request)
            click.echo(json.dumps({"job_id": job_id}) if as_json else job_id)
            return
        runs = context.runs()
        if sweep_name or tags or note:
            runs.after_write_sweep.append(api.labeller(runs, sweep_name, tags, note))
        client = connecting.result() if connecting is not None else context.docker()
    ids = [g for g in (gpu_ids or "").split(",") if g.strip()]
    result = api.launch(
        context, project, client, overrides, planned, search, backend=backend,
        ray_address=ray_address, registry=registry, jobs=jobs, gpu_ids=ids,
        allow_dirty=allow_dirty, retry=retry, display=Progress, detach=slurm_detach,
    )
    if slurm_detach:
        _print_detached(result, as_json)
        return
    if as_json:
        click.echo(json.dumps(result.as_json(), indent=2, sort_keys=True))
    else:
        from ..results import default_sort, render

        records = [r.to_json() for r in runs.read_sweep_runs(result.sweep_id)]
        click.echo(render(records, "table", sort=default_sort(records)))
        click.echo(f"sweep {result.sweep_id}: {counts_text(r.status for r in result.runs)}")
    if result.stopped:
        left = sum(run.status == "queued" for run in result.runs)
        raise Interrupted(
            f"sweep {result.sweep_id} stopped: finished runs are committed, {left} not started; "
            "re-submit the same sweep to run what is left"
        )
    if result.failed:
        failed = sum(run.status == "failed" for run in result.runs)
        raise RunsFailed(
            f"sweep {result.sweep_id}: {failed} of {len(result.runs)} run(s) failed "
            f"(orch results {result.sweep_id} --where status=failed; orch logs RUN_ID)"
        )
    unfinished = sum(run.status in ("cancelled", "queued") for run in result.runs)
    if unfinished:
        # Not by this process's Ctrl-C (that is result.stopped): a scheduler's scancel.
        raise RunsFailed(
            f"sweep {result.sweep_id}: {unfinished} run(s) cancelled or never started "
            "(cancelled outside orch?); re-submit the same sweep to run them"
        )


def _print_detached(result: Any, as_json: bool) -> None:
    """What ``--detach`` on SLURM submitted: the job arrays, and how to follow them."""
    jobs = ", ".join(result.backend_jobs) or "none (every run had finished)"
    if as_json:
        body = {**result.as_json(), "slurm_jobs": list(result.backend_jobs)}
        click.echo(json.dumps(body, indent=2, sort_keys=True))
        return
    submitted = sum(run.status == "queued" for run in result.runs)
    others = counts_text([r.status for r in result.runs if r.status != "queued"])
    click.echo(f"sweep {result.sweep_id}: {submitted} run(s) submitted to SLURM (job {jobs})"
               + (f"; {others}" if others else ""))
    click.echo(f"follow it with: orch watch {result.sweep_id}", err=True)


@contextmanager
def _background() -> Iterator[ThreadPoolExecutor]:
    """A worker for start-up work that may overlap (reaching the daemon while composing).
    Not waited for on the way out: after an error its result is of no use."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="orch-cli")
    try:
        yield pool
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _print_points(
    points: Sequence[Point], as_json: bool, space: Space | None = None,
    search: SearchOptions | None = None,
) -> None:
    if as_json:
        body: dict[str, Any] = {"points": [{"overrides": list(p)} for p, _ in points]}
        if space is not None and search is not None:
            body["search"] = {**search.to_json(), "space": space.to_json()}
        click.echo(json.dumps(body, indent=2))
        return
    if space is not None and search is not None:
        click.echo(f"search: {search.sampler}, {search.trials} trial(s), seed {search.seed}"
                   + (f", objective {', '.join(o.text for o in search.objectives)}"
                      if search.objectives else "")
                   + (f", pruner {search.pruner}" if search.pruner else ""))
        for line in space.describe():
            click.echo(f"  {line}")
        if search.adaptive:
            click.echo("trials are chosen as results come in; nothing built or run (--dry-run)",
                       err=True)
            return
    for index, (point, _) in enumerate(points, 1):
        click.echo(f"{index:4d}  {' '.join(point) or '(defaults)'}")
    click.echo(f"{len(points)} point(s); nothing built or run (--dry-run)", err=True)


def counts_text(statuses: Iterator[str] | Sequence[str]) -> str:
    counts: dict[str, int] = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
