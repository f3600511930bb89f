"""What a command works on: the project, the store, the Docker daemon and the settings.

:func:`with_context` gives a command the ``-p/--project``, ``--store`` and
``--s3-endpoint`` options and hands it one :class:`Context` in their place. The context
resolves everything lazily and once: a command that needs no project never looks for
one, and ``orch --help`` imports none of the heavy modules.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

import click

from ..errors import UsageError

if TYPE_CHECKING:
    from ..project import Project
    from ..record import RunRecord
    from ..settings import Settings
    from ..store import RunStore

P = ParamSpec("P")
R = TypeVar("R")


class Context:
    """The resolved inputs of one command, each made on first use and then kept."""

    def __init__(
        self,
        project_dir: str | None = None,
        store_uri: str | None = None,
        s3_endpoint: str | None = None,
    ) -> None:
        self.project_dir = project_dir
        self.store_uri = store_uri
        self.s3_endpoint = s3_endpoint
        self._settings: Settings | None = None
        self._root: Path | None = None
        self._projects: dict[bool, Project] = {}
        self._runs: RunStore | None = None
        self._docker: Any = None
        self._docker_lock = threading.Lock()  # sweep connects on a background thread

    @property
    def settings(self) -> Settings:
        """``ORCH_*`` from the environment, read (and validated) once per command."""
        if self._settings is None:
            from ..settings import Settings

            self._settings = Settings.from_env()
        return self._settings

    def project_root(self) -> Path:
        if self._root is None:
            from ..project import find_project

            self._root = find_project(Path(self.project_dir or "."))
        return self._root

    def project(self, allow_unpinned: bool = False) -> Project:
        if allow_unpinned not in self._projects:
            from ..project import load_project

            self._projects[allow_unpinned] = load_project(
                self.project_root(), allow_unpinned=allow_unpinned
            )
        return self._projects[allow_unpinned]

    def runs(self) -> RunStore:
        """The store: ``--store``, else ``.orch/`` in the project."""
        if self._runs is None:
            from ..store import RunStore, open_store

            # An explicit store needs no project (results can be read anywhere).
            root = Path(self.project_dir or ".") if self.store_uri else self.project_root()
            try:
                store = open_store(self.store_uri, project_dir=root, s3_endpoint=self.s3_endpoint)
            except UsageError as exc:
                raise UsageError(f"--store: {exc}") from exc
            self._runs = RunStore(store)
        return self._runs

    def docker(self) -> Any:
        """The Docker client (``DOCKER_HOST`` or the local socket); BackendError if none."""
        with self._docker_lock:
            if self._docker is None:
                from ..docker_api import connect

                self._docker = connect()
            return self._docker

    def close(self) -> None:
        with self._docker_lock:
            client, self._docker = self._docker, None
        if client is not None:
            client.close()


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


# --------------------------------------------------------------------------- ids


def check_id(value: str, what: str) -> None:
    if not re.match(r"^[0-9a-f]{1,64}\Z", value):
        raise UsageError(
            f"{value!r} is not a valid {what}: expected hex characters (see orch runs)"
        )


def read_run(runs: RunStore, run_id: str) -> RunRecord:
    """The record of a run named by its id or a unique prefix of it."""
    check_id(run_id, "run id")
    return runs.read_run(runs.resolve_run_id(run_id))


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
