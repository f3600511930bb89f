"""``orch status``: where a sweep submitted with ``--detach`` is, read from the cluster and the
store."""

from __future__ import annotations

import json

import click

from ..errors import RunsFailed, UsageError
from .context import Context, with_context
from .sweeping import counts_text


@click.command()
@click.argument("job_id")
@with_context()
@click.option(
    "--ray-address",
    envvar="RAY_ADDRESS",
    required=True,
    help="The cluster the sweep was submitted to (or RAY_ADDRESS).",
)
@click.option("--json", "as_json", is_flag=True)
def status(context: Context, job_id: str, ray_address: str, as_json: bool) -> None:
    """Follow a sweep submitted with --detach: its job state, then its runs."""
    from ..backends.ray import detached_status

    if not context.store_uri:
        raise UsageError("orch status needs --store: the store the sweep was submitted with")
    state = detached_status(ray_address, job_id, context.runs().store)
    runs = state.result.get("runs", []) if state.result else []
    if as_json:
        body = {
            "job_id": job_id,
            "status": state.status,
            "message": state.message,
            "result": state.result,
        }
        click.echo(json.dumps(body, indent=2, sort_keys=True))
    else:
        shown = state.message and state.status != "SUCCEEDED"
        click.echo(f"{job_id}: {state.status}" + (f" ({state.message})" if shown else ""))
        if state.result:
            text = counts_text([r["status"] for r in runs])
            click.echo(f"sweep {state.result['sweep_id']}: {text}")
    failed = sum(r["status"] == "failed" for r in runs)
    if state.status in ("FAILED", "STOPPED"):
        raise RunsFailed(f"job {job_id} ended {state.status}")
    if failed:
        raise RunsFailed(f"job {job_id}: {failed} run(s) failed")
