"""What an operation works on: the project, the store, the Docker daemon and the settings.

One :class:`Workspace` is made per operation, by the library's functions (from their
``store=``/``project=`` arguments) and by each CLI command (from ``-p``, ``--store``,
``--s3-endpoint``). It resolves everything lazily and once: an operation that needs no
project never looks for one, and one that needs no daemon never connects.

It sits below the commands and the library alike (it imports neither), so both open
stores and find projects the same way.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._util.ids import RUN_ID
from ..errors import UsageError

if TYPE_CHECKING:
    from ..compose.project import Project
    from ..schema.record import RunRecord
    from ..settings import Settings
    from ..store import RunStore


class Workspace:
    """The resolved inputs of one operation, each made on first use and then kept.

    ``project_dir``: the project's directory, or one inside it (None: the current
    directory); ``store_uri``: a path, ``file://PATH`` or ``s3://bucket/prefix`` (None:
    ``.orch/`` in the project). ``store_label`` names the store argument in errors
    (``--store`` on the command line).
    """

    def __init__(
        self,
        project_dir: str | Path | None = None,
        store_uri: str | None = None,
        s3_endpoint: str | None = None,
        *,
        settings: Settings | None = None,
        store_label: str = "--store",
    ) -> None:
        self.project_dir = None if project_dir is None else str(project_dir)
        self.store_uri = store_uri
        self.s3_endpoint = s3_endpoint
        self.store_label = store_label
        self._settings: Settings | None = settings
        self._root: Path | None = None
        self._projects: dict[bool, Project] = {}
        self._runs: RunStore | None = None
        self._docker: Any = None
        self._docker_lock = threading.Lock()  # sweep connects on a background thread

    @property
    def settings(self) -> Settings:
        """``ORCH_*`` from the environment, read (and validated) once per operation."""
        if self._settings is None:
            from ..settings import Settings

            self._settings = Settings.from_env()
        return self._settings

    def project_root(self) -> Path:
        if self._root is None:
            from ..compose.project import find_project

            self._root = find_project(Path(self.project_dir or "."))
        return self._root

    def project(self, allow_unpinned: bool = False) -> Project:
        if allow_unpinned not in self._projects:
            from ..compose.project import load_project

            self._projects[allow_unpinned] = load_project(
                self.project_root(), allow_unpinned=allow_unpinned
            )
        return self._projects[allow_unpinned]

    def project_name(self) -> str | None:
        """The name in the project's ``orch.yaml``, or None outside a project."""
        import yaml

        from ..errors import OrchestratorError

        try:
            root = self.project_root()
            data = yaml.safe_load((root / "orch.yaml").read_text())
        except (OrchestratorError, OSError, yaml.YAMLError):
            return None
        name = data.get("name") if isinstance(data, dict) else None
        return name if isinstance(name, str) else None

    def runs(self) -> RunStore:
        """The store: ``store_uri``, else ``.orch/`` in the project."""
        if self._runs is None:
            from ..store import RunStore, open_store

            # An explicit store needs no project (results can be read anywhere).
            root = Path(self.project_dir or ".") if self.store_uri else self.project_root()
            try:
                store = open_store(self.store_uri, project_dir=root, s3_endpoint=self.s3_endpoint,
                                   retry_budget_s=self.settings.s3_retry_s)
            except UsageError as exc:
                raise UsageError(f"{self.store_label}: {exc}") from exc
            self._runs = RunStore(store)
        return self._runs

    def docker(self) -> Any:
        """The Docker client (``DOCKER_HOST`` or the local socket); BackendError if none."""
        with self._docker_lock:
            if self._docker is None:
                from ..daemon.client import connect

                self._docker = connect()
            return self._docker

    def close(self) -> None:
        with self._docker_lock:
            client, self._docker = self._docker, None
        if client is not None:
            client.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- ids


def check_id(value: str, what: str) -> None:
    if not RUN_ID.match(value):
        raise UsageError(
            f"{value!r} is not a valid {what}: expected hex characters (see orch runs)"
        )


def read_run(runs: RunStore, run_id: str) -> RunRecord:
    """The record of a run named by its id or a unique prefix of it."""
    check_id(run_id, "run id")
    return runs.read_run(runs.resolve_run_id(run_id))
