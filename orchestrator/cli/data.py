"""``orch inputs``: the project's data inputs and where their bytes are."""

from __future__ import annotations

import json
from typing import Any

import click

from .context import Context, with_context


@click.command("inputs")
@with_context()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
def inputs_command(context: Context, as_json: bool) -> None:
    """The project's data inputs: digest, files, size, whether cached here and uploaded."""
    from ..inputs import describe, render_status

    project = context.project(allow_unpinned=True)
    if not project.inputs:
        click.echo("no inputs declared (add inputs: to orch.yaml)", err=True)
        if as_json:
            click.echo("[]")
        return
    runs = context.runs()

    def s3_client(endpoint: str | None) -> Any:
        from ..store.s3 import make_client

        return make_client(endpoint)

    rows = describe(
        project.inputs, project.root, runs.blobs, context.settings.cache_root,
        make_client=s3_client,
    )
    if as_json:
        click.echo(json.dumps([row.to_json() for row in rows], indent=2))
    else:
        click.echo(render_status(rows))
