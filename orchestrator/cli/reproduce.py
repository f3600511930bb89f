"""``orch rerun`` and ``orch image verify|ls|prune``: reproducing runs, and their images."""

from __future__ import annotations

import json

import click

from ..errors import NotReproduced, VerifyMismatch
from .context import Context, complete_run_ids, read_run, with_context


@click.command()
@click.argument("target", shell_complete=complete_run_ids)
@with_context()
@click.option("--json", "as_json", is_flag=True)
def rerun(context: Context, target: str, as_json: bool) -> None:
    """Run a recorded run again by RUN_ID, sha256:IMAGE_ID or REPO@sha256:DIGEST."""
    from ..api.running import rerun_in

    result = rerun_in(context, target)
    record = result.record
    if as_json:
        click.echo(json.dumps(result.as_json(), indent=2, sort_keys=True))
    else:
        click.echo(
            f"rerun {record.run_id} of {result.original.run_id}: "
            f"{record.status.value}, image {record.image_id}"
        )
        if result.identical and result.up_to_step is not None:
            click.echo(f"step metrics identical up to step {result.up_to_step:g}, where the "
                       "original was pruned")
        elif result.identical:
            click.echo("metrics identical")
        else:
            click.echo("metrics NOT identical:")
            for line in result.differences or [f"status {record.status.value}"]:
                click.echo(f"  {line}")
    if not result.identical:
        what = "metrics differ" if result.differences else f"the rerun {record.status.value}"
        raise NotReproduced(
            f"rerun {record.run_id} did not reproduce {result.original.run_id}: {what}"
        )


@click.group()
def image() -> None:
    """Run images: verify, ls, prune."""


@image.command("verify")
@click.argument("run_id", shell_complete=complete_run_ids)
@with_context()
def image_verify(context: Context, run_id: str) -> None:
    """Rebuild a run's image from its recorded inputs; exit 0 only when the ID is identical."""
    from ..image.verify import verify

    record = read_run(context.runs(), run_id)
    result = verify(context.docker(), context.project_root(), record, context.runs())
    if result.identical and not result.missing_blobs:
        click.echo(f"identical: {result.rebuilt}")
        return
    if result.identical:
        click.echo(f"identical: {result.rebuilt}")
        for digest in result.missing_blobs:
            click.echo(f"missing from the store: {digest}")
        raise VerifyMismatch(
            f"run {run_id}: {len(result.missing_blobs)} blob(s) of its image are not in the "
            f"store (first: {result.missing_blobs[0]}): re-submit its sweep to upload them"
        )
    click.echo(f"DIFFERENT: recorded {result.recorded}, rebuilt {result.rebuilt}")
    click.echo(f"first difference: {result.first_difference}")
    raise VerifyMismatch(
        f"run {run_id}: the rebuilt image {result.rebuilt} is not the recorded one"
    )


@image.command("ls")
@with_context(store=False)
@click.option(
    "--all", "all_projects", is_flag=True, help="Every project's images, not only this one's."
)
def image_ls(context: Context, all_projects: bool) -> None:
    """orch images on the local daemon: the project's (or every project's, with --all)."""
    from ..image.on_daemon import list_images

    project = None if all_projects else context.project(allow_unpinned=True).name
    for item in list_images(context.docker(), project):
        for tag in item.tags or ("<none>",):
            click.echo(f"{tag:50s} {item.image_id} {item.size / 1e6:8.1f} MB")


@image.command("prune")
@with_context()
@click.option("--dry-run", is_flag=True)
@click.option(
    "--foreign", is_flag=True, help="Also remove images of runs this store does not know."
)
def image_prune(context: Context, dry_run: bool, foreign: bool) -> None:
    """Remove run images of the store's projects that no stored run references.

    Only images of projects that have runs in this store are considered, so other
    projects' images on the same daemon are never touched; images a container or a
    running sweep needs are spared, and so are other stores' runs unless --foreign. The
    untagged prefix images a killed environment build left go too, when a longer image
    of the project holds their layers.
    """
    from ..image.on_daemon import prune_plan, remove_image

    runs = context.runs()
    client = context.docker()
    plan = prune_plan(client, runs, context.settings.lease_s, foreign=foreign)
    for item in plan.remove:
        click.echo(f"{'would remove' if dry_run else 'removing'} {item.image_id}")
        if not dry_run:
            remove_image(client, item.image_id)
    for image_id, why in sorted(plan.spared.items()):
        click.echo(f"sparing {image_id}: {why}", err=True)
    verb = "to remove" if dry_run else "removed"
    click.echo(
        f"{len(plan.remove)} image(s) {verb}; {len(plan.referenced)} referenced kept, "
        f"{len(plan.spared)} spared",
        err=True,
    )
