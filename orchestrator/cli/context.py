"""What a command works on: the project, the store, the Docker daemon and the settings.

:func:`with_context` gives a command the ``-p/--project``, ``--store`` and
``--s3-endpoint`` options and hands it one :class:`Context` in their place: the
library's :class:`~orchestrator.api.workspace.Workspace`, which resolves everything lazily
and once (a command that needs no project never looks for one, and ``orch --help``
imports none of the heavy modules).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

import click

from ..api.workspace import Workspace, check_id, read_run

if TYPE_CHECKING:
    from ..store import RunStore

__all__ = ["Context", "check_id", "complete_run_ids", "complete_sweep_ids", "read_run",
           "with_context"]

P = ParamSpec("P")
R = TypeVar("R")


class Context(Workspace):
    """A command's :class:`~orchestrator.api.workspace.Workspace` (made from its options)."""


def with_context(
    *, store: bool = True
) -> Callable[[Callable[Concatenate[Context, P], R]], Callable[..., R]]:
    """Add ``-p/--project`` (and, with ``store``, ``--store``/``--s3-endpoint``) to a
    command and pass it a :class:`Context` of them as its first argument."""

    def decorate(func: Callable[Concatenate[Context, P], R]) -> Callable[..., R]:
        @functools.wraps(func)
        def command(
            *args: Any,
            project_dir: str | None = None,
            store_uri: str | None = None,
            s3_endpoint: str | None = None,
            **kwargs: Any,
        ) -> R:
            context = Context(project_dir, store_uri, s3_endpoint)
            click.get_current_context().call_on_close(context.close)
            return func(context, *args, **kwargs)

        options = [
            click.option(
                "-p",
                "--project",
                "project_dir",
                default=None,
                help="Project directory holding orch.yaml (default: the current one or a parent).",
            )
        ]
        if store:
            options += [
                click.option(
                    "--store",
                    "store_uri",
                    default=None,
                    help="Store URI: a path, file://PATH or s3://bucket/prefix (default: "
                    ".orch/ in the project).",
                ),
                click.option(
                    "--s3-endpoint", default=None, help="S3 endpoint URL (else AWS_ENDPOINT_URL)."
                ),
            ]
        decorated: Callable[..., R] = command
        for option in reversed(options):  # listed in --help in this order
            decorated = option(decorated)
        return decorated

    return decorate


# --------------------------------------------------------------------------- completion


def _completion_runs(ctx: click.Context) -> RunStore:
    params = ctx.params
    return Context(
        params.get("project_dir"), params.get("store_uri"), params.get("s3_endpoint")
    ).runs()


def complete_run_ids(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    try:
        keys = _completion_runs(ctx).store.list("runs/")
        return [
            key.split("/")[1]
            for key in keys
            if key.endswith("/run.json") and key.split("/")[1].startswith(incomplete)
        ]
    except Exception:  # noqa: BLE001 - completion must never fail loudly
        return []


def complete_sweep_ids(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    try:
        sweeps = _completion_runs(ctx).list_sweeps()
        return [s.sweep_id for s in sweeps if s.sweep_id.startswith(incomplete)]
    except Exception:  # noqa: BLE001 - completion must never fail loudly
        return []
