"""The ``orch`` command line. The only place that prints for the user or exits.

Every OrchestratorError becomes one ``error:`` line on stderr and exit code 2; a failed
run or a rerun that does not reproduce is a result, exit code 1.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from .errors import OrchestratorError, UsageError

if TYPE_CHECKING:
    from .record import RunRecord
    from .sweep import SweepRun

EXIT_FAILED = 1
EXIT_ERROR = 2
#: For start-up work that may overlap (reaching the Docker daemon while composing).
_background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="orch-cli")


class Context:
    """Resolved lazily: a command that needs no project never looks for one."""

    def __init__(self, project_dir: str | None, store_uri: str | None, s3_endpoint: str | None):
        self.project_dir = project_dir
        self.store_uri = store_uri
        self.s3_endpoint = s3_endpoint

    def project_root(self) -> Path:
        from .project import find_project

        return find_project(Path(self.project_dir or "."))

    def project(self, allow_unpinned: bool = False) -> Any:
        from .project import load_project

        return load_project(self.project_root(), allow_unpinned=allow_unpinned)

    def runs(self) -> Any:
        from .store import RunStore, open_store

        if self.store_uri:
            root = Path(self.project_dir or ".")
        else:
            root = self.project_root()
        try:
            store = open_store(self.store_uri, project_dir=root, s3_endpoint=self.s3_endpoint)
        except UsageError as exc:
            raise UsageError(f"--store: {exc}") from exc
        return RunStore(store)

    def docker(self) -> Any:
        from .docker_api import connect

        return connect()


def _store_options(func: Any) -> Any:
    func = click.option(
        "--s3-endpoint", default=None, help="S3 endpoint URL (else AWS_ENDPOINT_URL)."
    )(func)
    func = click.option(
        "--store",
        "store_uri",
        default=None,
        help="Store URI: a path, file://PATH or s3://bucket/prefix (default: .orch/ in the "
        "project).",
    )(func)
    func = click.option(
        "-p",
        "--project",
        "project_dir",
        default=None,
        help="Project directory holding orch.yaml (default: the current one or a parent).",
    )(func)
    return func


def _ctx(project_dir: str | None, store_uri: str | None, s3_endpoint: str | None) -> Context:
    return Context(project_dir, store_uri, s3_endpoint)


def _completion_runs(ctx: click.Context) -> Any:
    params = ctx.params
    return _ctx(
        params.get("project_dir"), params.get("store_uri"), params.get("s3_endpoint")
    ).runs()


def _complete_run_ids(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    try:
        keys = _completion_runs(ctx).store.list("runs/")
        return [
            key.split("/")[1]
            for key in keys
            if key.endswith("/run.json") and key.split("/")[1].startswith(incomplete)
        ]
    except Exception:  # noqa: BLE001 - completion must never fail loudly
        return []


def _complete_sweep_ids(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    try:
        sweeps = _completion_runs(ctx).list_sweeps()
        return [s.sweep_id for s in sweeps if s.sweep_id.startswith(incomplete)]
    except Exception:  # noqa: BLE001 - completion must never fail loudly
        return []


def _warnings_to_stderr() -> None:
    """orch's library warnings (a corrupt record skipped, ...) as ``warning:`` lines."""
    import logging

    logger = logging.getLogger("orchestrator")
    if any(getattr(h, "_orch", False) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("warning: %(message)s"))
    handler._orch = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False


class OrchGroup(click.Group):
    """Runs click in non-standalone mode so every error, ours or click's, is one line."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        _warnings_to_stderr()
        try:
            return super().main(
                args=args,
                prog_name=prog_name or "orch",
                complete_var=complete_var,
                standalone_mode=False,
                **extra,
            )
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            _fail("aborted")
        except click.exceptions.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            _fail(f"{exc.format_message()}{hint}")
        except click.exceptions.ClickException as exc:
            _fail(exc.format_message())
        except OrchestratorError as exc:
            _fail(str(exc) or type(exc).__name__)
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            sys.exit(130)
        except BrokenPipeError:
            sys.exit(0)
        except Exception as exc:  # noqa: BLE001 - last resort: a bug, still no traceback
            if os.environ.get("ORCH_DEBUG"):
                raise
            _fail(f"internal error ({type(exc).__name__}: {exc}); rerun with ORCH_DEBUG=1")


@click.group(cls=OrchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="orch")
def cli() -> None:
    """orch: sweep Hydra configs into pinned containers; store, compare and rerun results."""


@cli.command()
@click.argument("overrides", nargs=-1)
@click.option("-p", "--project", "project_dir", default=None, help="Project directory.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of YAML.")
def compose(overrides: tuple[str, ...], project_dir: str | None, as_json: bool) -> None:
    """Print the composed config of one point."""
    from . import config as configmod

    project = _ctx(project_dir, None, None).project(allow_unpinned=True)
    composer = configmod.Composer(project.config_dir, project.config_name)
    cfg = composer.compose(list(overrides))
    click.echo(configmod.to_json(cfg) if as_json else configmod.to_yaml(cfg), nl=False)


class _Progress:
    """Live progress on stderr: a bar on a terminal, plain lines otherwise."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.total = total
        self.counts = {"queued": 0, "running": 0, "succeeded": 0, "failed": 0, "skipped": 0}
        self.quiet = quiet
        self.start = time.monotonic()
        self.tty = sys.stderr.isatty() and not quiet
        self._live: Any = None
        if self.tty:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self._live = Progress(
                TextColumn("[bold]sweep"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TextColumn("{task.fields[counts]}"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._task = self._live.add_task("sweep", total=total, counts="")
            self._live.start()

    def __call__(self, event: str, run_id: str, record: RunRecord | None) -> None:
        if event == "queued":
            self.counts["queued"] += 1
        elif event == "running":
            self.counts["queued"] -= 1
            self.counts["running"] += 1
        elif event == "skipped":
            self.counts["skipped"] += 1
        elif event == "done" and record is not None:
            self.counts["running"] = max(0, self.counts["running"] - 1)
            self.counts[record.status.value] = self.counts.get(record.status.value, 0) + 1
        finished = self.counts["succeeded"] + self.counts["failed"] + self.counts["skipped"]
        text = " ".join(f"{k} {v}" for k, v in self.counts.items() if v)
        if self._live is not None:
            self._live.update(self._task, completed=finished, counts=text)
        elif not self.quiet and event in ("done", "skipped", "waiting"):
            status = record.status.value if record and event == "done" else event
            reason = f" ({record.reason})" if record and record.reason else ""
            click.echo(f"[{finished}/{self.total}] {run_id} {status}{reason}", err=True)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()


@cli.command()
@click.argument("overrides", nargs=-1)
@_store_options
@click.option("--backend", type=click.Choice(["local", "ray"]), default="local", show_default=True)
@click.option(
    "--ray-address", default=None, help="Ray cluster address (default: start a local Ray)."
)
@click.option("--registry", default=None, help="Also push run images to HOST[:PORT]/REPO.")
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(min=1),
    default=None,
    help="Runs in parallel (local: default 1; ray: runs in flight, default the cluster's CPUs).",
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
    "--dry-run", is_flag=True, help="Compose every point and list them; build and run nothing."
)
@click.option(
    "--detach",
    is_flag=True,
    help="Submit the sweep's driver to the Ray cluster (Ray Jobs), print its job id, return.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the runs.")
def sweep(
    overrides: tuple[str, ...],
    project_dir: str | None,
    store_uri: str | None,
    s3_endpoint: str | None,
    backend: str,
    ray_address: str | None,
    registry: str | None,
    jobs: int | None,
    gpu_ids: str | None,
    allow_dirty: bool,
    allow_unpinned: bool,
    base_image: str | None,
    dry_run: bool,
    detach: bool,
    as_json: bool,
) -> None:
    """Expand OVERRIDES (Hydra sweep syntax) to a grid; build, run and store every point."""
    from . import sweep as sweepmod

    context = _ctx(project_dir, store_uri, s3_endpoint)
    project = context.project(allow_unpinned=allow_unpinned)
    if base_image is not None:
        project = with_base_image(project, base_image, allow_unpinned)
    # Reaching the daemon overlaps with composing; a config error still comes first.
    # (Only for a local socket: a remote host that hangs would hold up the exit.)
    local = os.environ.get("DOCKER_HOST", "unix://").startswith("unix://")
    connecting = _background.submit(context.docker) if local and not (dry_run or detach) else None
    points = sweepmod.compose_points(project, overrides)
    if dry_run:
        listing = [{"overrides": list(point)} for point, _ in points]
        if as_json:
            click.echo(json.dumps({"points": listing}, indent=2))
        else:
            for index, (point, _) in enumerate(points, 1):
                click.echo(f"{index:4d}  {' '.join(point) or '(defaults)'}")
            click.echo(f"{len(points)} point(s); nothing built or run (--dry-run)", err=True)
        return
    if registry is not None:
        _check_registry(registry)
    if detach:
        flags = {
            "--jobs": jobs,
            "--registry": registry,
            "--base-image": base_image,
            "--s3-endpoint": s3_endpoint,
        }
        args = [*overrides, *(f"{k}={v}" for k, v in flags.items() if v is not None)]
        args += [
            f
            for f, on in (("--allow-dirty", allow_dirty), ("--allow-unpinned", allow_unpinned))
            if on
        ]
        job_id = _submit_detached(backend, ray_address, store_uri, context, args)
        click.echo(json.dumps({"job_id": job_id}) if as_json else job_id)
        return
    runs = context.runs()
    client = connecting.result() if connecting is not None else context.docker()
    ids = [g for g in (gpu_ids or "").split(",") if g.strip()]
    engine = _backend(backend, client, runs, jobs, ids, ray_address, context)
    progress = _Progress(len(points), quiet=False)
    try:
        driver = sweepmod.SweepDriver(
            project,
            client,
            runs,
            engine,
            registry=registry,
            allow_dirty=allow_dirty,
            progress=progress,
            batch=max(8, 2 * (jobs or 1)),
        )
        result = driver.run(overrides, points)
    finally:
        progress.close()
        engine.close()
    if as_json:
        click.echo(json.dumps(result.as_json(), indent=2, sort_keys=True))
    else:
        from .results import default_sort, render

        records = [r.to_json() for r in runs.read_sweep_runs(result.sweep_id)]
        click.echo(render(records, "table", sort=default_sort(records)))
        click.echo(f"sweep {result.sweep_id}: {_counts(result.runs)}")
    if result.failed:
        sys.exit(EXIT_FAILED)


def with_base_image(project: Any, ref: str, allow_unpinned: bool) -> Any:
    import dataclasses

    from .project import is_pinned

    if not ref or (not is_pinned(ref) and not allow_unpinned):
        raise UsageError(
            f"--base-image {ref!r} is not pinned: pass an image ID (sha256:...) or "
            f"name@sha256:<digest>, or add --allow-unpinned"
        )
    return dataclasses.replace(project, base_image=ref)


def _submit_detached(
    backend: str, ray_address: str | None, store_uri: str | None, context: Context, args: list[str]
) -> str:
    if backend != "ray" or not ray_address:
        raise UsageError("--detach needs --backend ray and --ray-address of a running cluster")
    if not store_uri:
        raise UsageError("--detach needs --store that every node of the cluster can reach")
    from .backends.ray import submit_detached

    return submit_detached(ray_address, context.project_root(), args, store_uri)


def _counts(runs: Sequence[SweepRun]) -> str:
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.status] = counts.get(run.status, 0) + 1
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))


def _check_registry(registry: str) -> None:
    import re

    if not re.match(r"^[a-zA-Z0-9.-]+(:[0-9]+)?/[a-z0-9._/-]+\Z", registry):
        raise UsageError(
            f"--registry {registry!r}: expected HOST[:PORT]/REPO, e.g. 127.0.0.1:5000/orch"
        )


def _backend(
    kind: str,
    client: Any,
    runs: Any,
    jobs: int | None,
    gpu_ids: list[str],
    ray_address: str | None,
    context: Context,
) -> Any:
    if kind == "ray":
        from .backends.ray import RayBackend

        return RayBackend(
            runs, address=ray_address, max_in_flight=jobs, s3_endpoint=context.s3_endpoint
        )
    from .backends.local import LocalBackend

    return LocalBackend(client, runs, jobs=jobs or 1, gpu_ids=gpu_ids)


@cli.command()
@click.argument("job_id")
@click.option(
    "--ray-address",
    envvar="RAY_ADDRESS",
    required=True,
    help="The cluster the sweep was submitted to (or RAY_ADDRESS).",
)
@click.option("--json", "as_json", is_flag=True)
def status(job_id: str, ray_address: str, as_json: bool) -> None:
    """Follow a sweep submitted with --detach: its job state, then its runs."""
    from .backends.ray import detached_status

    state = detached_status(ray_address, job_id)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "job_id": job_id,
                    "status": state.status,
                    "message": state.message,
                    "result": state.result,
                },
                indent=2,
                sort_keys=True,
            )
        )
    else:
        click.echo(
            f"{job_id}: {state.status}"
            + (f" ({state.message})" if state.message and state.status != "SUCCEEDED" else "")
        )
        if state.result:
            click.echo(f"sweep {state.result['sweep_id']}: {_counts(state.result['runs'])}")
    failed = state.result is not None and any(
        r["status"] == "failed" for r in state.result.get("runs", [])
    )
    if state.status in ("FAILED", "STOPPED") or failed:
        sys.exit(EXIT_FAILED)


@cli.command()
@click.argument("sweep_id", shell_complete=_complete_sweep_ids)
@_store_options
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json", "csv", "markdown"]), default="table"
)
@click.option("--sort", default=None, help="Metric to sort by; prefix with - for descending.")
@click.option("--where", multiple=True, help="Filter, e.g. 'optimizer.name=adam' or 'loss<0.5'.")
def results(
    sweep_id: str,
    project_dir: str | None,
    store_uri: str | None,
    s3_endpoint: str | None,
    fmt: str,
    sort: str | None,
    where: tuple[str, ...],
) -> None:
    """The runs of a sweep: swept parameters and metrics."""
    from .results import render

    runs = _ctx(project_dir, store_uri, s3_endpoint).runs()
    _check_id(sweep_id, "sweep id")
    records = [r.to_json() for r in runs.read_sweep_runs(sweep_id)]
    click.echo(
        render(records, fmt, sort=sort, where=where, color=sys.stdout.isatty()), nl=fmt != "csv"
    )


@cli.command("runs")
@_store_options
def list_runs(project_dir: str | None, store_uri: str | None, s3_endpoint: str | None) -> None:
    """Sweeps in the store, newest first, with their runs' status counts."""
    from .results import runs_table

    runs = _ctx(project_dir, store_uri, s3_endpoint).runs()
    sweeps = runs.list_sweeps()
    counts = {}
    for sweep_doc in sweeps:
        records = runs.read_sweep_runs(sweep_doc.sweep_id)
        tally: dict[str, int] = {}
        for record in records:
            tally[record.status.value] = tally.get(record.status.value, 0) + 1
        missing = len(sweep_doc.runs) - len(records)
        if missing:
            tally["incomplete"] = missing
        counts[sweep_doc.sweep_id] = tally
    click.echo(runs_table([s.to_json() for s in sweeps], counts))


def _read_run(runs: Any, run_id: str) -> RunRecord:
    """The record of a run named by its id or a unique prefix of it."""
    _check_id(run_id, "run id")
    record: RunRecord = runs.read_run(runs.resolve_run_id(run_id))
    return record


def _check_id(value: str, what: str) -> None:
    import re

    if not re.match(r"^[0-9a-f]{1,64}\Z", value):
        raise UsageError(
            f"{value!r} is not a valid {what}: expected hex characters (see orch runs)"
        )


@cli.command()
@click.argument("run_id", shell_complete=_complete_run_ids)
@_store_options
@click.option("--json", "as_json", is_flag=True)
def show(
    run_id: str,
    project_dir: str | None,
    store_uri: str | None,
    s3_endpoint: str | None,
    as_json: bool,
) -> None:
    """The whole record of a run."""
    runs = _ctx(project_dir, store_uri, s3_endpoint).runs()
    record = _read_run(runs, run_id).to_json()
    if as_json:
        click.echo(json.dumps(record, indent=2, sort_keys=True))
        return
    import yaml

    click.echo(yaml.safe_dump(record, sort_keys=False, default_flow_style=False), nl=False)


@cli.command()
@click.argument("run_id", shell_complete=_complete_run_ids)
@_store_options
@click.option("-f", "--follow", is_flag=True, help="Wait for a running run and print its logs.")
@click.option("--stderr/--no-stderr", default=True, help="Include stderr.log.")
def logs(
    run_id: str,
    project_dir: str | None,
    store_uri: str | None,
    s3_endpoint: str | None,
    follow: bool,
    stderr: bool,
) -> None:
    """A run's stdout and stderr."""
    _check_id(run_id, "run id")
    runs = _ctx(project_dir, store_uri, s3_endpoint).runs()
    if follow:
        _follow(runs, run_id)
    full = runs.resolve_run_id(run_id)
    click.echo(runs.read_file(full, "stdout.log").decode(errors="replace"), nl=False)
    if stderr:
        click.echo(runs.read_file(full, "stderr.log").decode(errors="replace"), nl=False, err=True)


def _follow(runs: Any, run_id: str) -> None:
    """Stream a running container's logs from the local daemon until it ends."""
    from .errors import NotFound

    try:
        full = runs.resolve_run_id(run_id)
        if runs.is_complete(full):
            return
    except NotFound:
        full = run_id
    client = _ctx(None, None, None).docker()
    containers = client.containers.list(filters={"label": "org.orch.run_id"})
    for container in containers:
        if container.labels.get("org.orch.run_id", "").startswith(run_id):
            for chunk in container.logs(stream=True, follow=True):
                click.echo(chunk.decode(errors="replace"), nl=False)
            break
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if runs.is_complete(runs.resolve_run_id(run_id)):
                return
        except NotFound:
            pass
        time.sleep(0.5)


@cli.command()
@click.argument("target", shell_complete=_complete_run_ids)
@_store_options
@click.option("--json", "as_json", is_flag=True)
def rerun(
    target: str,
    project_dir: str | None,
    store_uri: str | None,
    s3_endpoint: str | None,
    as_json: bool,
) -> None:
    """Run a recorded run again by RUN_ID, sha256:IMAGE_ID or REPO@sha256:DIGEST."""
    from .rerun import rerun as do_rerun

    runs = _ctx(project_dir, store_uri, s3_endpoint).runs()
    client = _ctx(None, None, None).docker()
    result = do_rerun(client, runs, target)
    if as_json:
        click.echo(json.dumps(result.as_json(), indent=2, sort_keys=True))
    else:
        click.echo(
            f"rerun {result.record.run_id} of {result.original.run_id}: "
            f"{result.record.status.value}, image {result.record.image_id}"
        )
        if result.identical:
            click.echo("metrics identical")
        else:
            click.echo("metrics NOT identical:")
            for line in result.differences or [f"status {result.record.status.value}"]:
                click.echo(f"  {line}")
    if not result.identical:
        sys.exit(EXIT_FAILED)


@cli.group()
def image() -> None:
    """Run images: verify, list, prune."""


@image.command("verify")
@click.argument("run_id", shell_complete=_complete_run_ids)
@_store_options
def image_verify(
    run_id: str, project_dir: str | None, store_uri: str | None, s3_endpoint: str | None
) -> None:
    """Rebuild a run's image from its recorded inputs; exit 0 only when the ID is identical."""
    from .verify import verify

    context = _ctx(project_dir, store_uri, s3_endpoint)
    record = _read_run(context.runs(), run_id).to_json()
    result = verify(context.docker(), context.project_root(), record)
    if result.identical:
        click.echo(f"identical: {result.rebuilt}")
        return
    click.echo(f"DIFFERENT: recorded {result.recorded}, rebuilt {result.rebuilt}")
    click.echo(f"first difference: {result.first_difference}")
    sys.exit(EXIT_FAILED)


@image.command("ls")
def image_ls() -> None:
    """orch images on the local daemon."""
    client = _ctx(None, None, None).docker()
    for item in sorted(client.api.images(), key=lambda i: (i.get("RepoTags") or [""])[0]):
        tags = [t for t in item.get("RepoTags") or [] if t.startswith("orch/")]
        for tag in tags:
            click.echo(f"{tag:50s} {item['Id']} {item['Size'] / 1e6:8.1f} MB")


@image.command("prune")
@_store_options
@click.option("--dry-run", is_flag=True)
def image_prune(
    project_dir: str | None, store_uri: str | None, s3_endpoint: str | None, dry_run: bool
) -> None:
    """Remove run images of the store's projects that no stored run references.

    Only images of projects that have runs in this store are considered, so other
    projects' images on the same daemon are never touched.
    """
    context = _ctx(project_dir, store_uri, s3_endpoint)
    runs = context.runs()
    client = context.docker()
    keep: set[str] = set()
    projects: set[str] = set()
    for sweep_doc in runs.list_sweeps():
        projects.add(sweep_doc.project)
        for record in runs.read_sweep_runs(sweep_doc.sweep_id):
            keep.add(record.image_id)
    removed = 0
    for item in client.api.images(filters={"label": "org.orch.run_id"}):
        labels = item.get("Labels") or {}
        if item["Id"] in keep or labels.get("org.orch.project") not in projects:
            continue
        removed += 1
        click.echo(f"{'would remove' if dry_run else 'removing'} {item['Id']}")
        if not dry_run:
            client.api.remove_image(item["Id"], force=True)
    verb = "to remove" if dry_run else "removed"
    click.echo(f"{removed} image(s) {verb}; {len(keep)} referenced kept", err=True)


@cli.command()
@click.argument("run_a", shell_complete=_complete_run_ids)
@click.argument("run_b", shell_complete=_complete_run_ids)
@_store_options
@click.option("--json", "as_json", is_flag=True)
def compare(
    run_a: str,
    run_b: str,
    project_dir: str | None,
    store_uri: str | None,
    s3_endpoint: str | None,
    as_json: bool,
) -> None:
    """Only what differs between two runs: config, metrics, image layers, commit."""
    from .results import compare as do_compare
    from .results import diff_to_json, render_diff

    runs = _ctx(project_dir, store_uri, s3_endpoint).runs()
    a, b = _read_run(runs, run_a), _read_run(runs, run_b)
    diff = do_compare(a.to_json(), b.to_json())
    if as_json:
        click.echo(json.dumps(diff_to_json(diff), indent=2, sort_keys=True))
    else:
        click.echo(render_diff(diff, a.run_id, b.run_id))


@cli.command()
@click.argument("sweep_id", shell_complete=_complete_sweep_ids)
@_store_options
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False), help="HTML file to write."
)
def report(
    sweep_id: str,
    project_dir: str | None,
    store_uri: str | None,
    s3_endpoint: str | None,
    output: str,
) -> None:
    """One self-contained HTML report of a sweep: table and plots, no network."""
    from .results import write_report

    _check_id(sweep_id, "sweep id")
    runs = _ctx(project_dir, store_uri, s3_endpoint).runs()
    sweep_doc = runs.read_sweep(sweep_id)
    records = runs.read_sweep_runs(sweep_id)
    write_report(sweep_doc.to_json(), [r.to_json() for r in records], Path(output))
    click.echo(f"wrote {output} ({len(records)} runs)", err=True)


# -- data inputs (orch inputs) ---------------------------------------------------------


@cli.command("inputs")
@_store_options
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
def inputs_command(
    project_dir: str | None, store_uri: str | None, s3_endpoint: str | None, as_json: bool
) -> None:
    """The project's data inputs: digest, files, size, whether cached here and uploaded."""
    from .inputs import describe, render_status
    from .settings import Settings

    context = _ctx(project_dir, store_uri, s3_endpoint)
    project = context.project(allow_unpinned=True)
    if not project.inputs:
        click.echo("no inputs declared (add inputs: to orch.yaml)", err=True)
        if as_json:
            click.echo("[]")
        return
    runs = context.runs()

    def s3_client(endpoint: str | None) -> Any:
        from .store.s3 import make_client

        return make_client(endpoint)

    rows = describe(
        project.inputs,
        project.root,
        runs.blobs,
        Settings.from_env().cache_root,
        make_client=s3_client,
    )
    if as_json:
        click.echo(json.dumps([row.to_json() for row in rows], indent=2))
    else:
        click.echo(render_status(rows))


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {' '.join(message.split())}", err=True)
    sys.exit(EXIT_ERROR)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="orch")
