"""orch: reproducible, container-based runs for machine-learning experiments.

The public surface is re-exported here; everything else is private and may change.
The functions are what the ``orch`` commands call (see :mod:`orchestrator.api`):
:func:`sweep`, :func:`search`, :func:`runs` (a pandas DataFrame, ``orch[pandas]``),
:func:`steps`, :func:`best`, :func:`show`, :func:`rerun`, :func:`pull`. Every name is
imported on first use: ``import orchestrator`` costs nothing, so the ``orch`` entry point
(:mod:`orchestrator.resident`), which lives in the package, starts in milliseconds.
"""

from __future__ import annotations

import importlib

#: Not ``typing.TYPE_CHECKING``: importing typing is 2 ms of every ``orch`` command's start
#: (mypy takes any variable of this name as true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .api import best as best
    from .api import rerun as rerun
    from .api import runs as runs
    from .api import search as search
    from .api import show as show
    from .api import steps as steps
    from .api import sweep as sweep
    from .api.workspace import Workspace as Workspace
    from .compose.project import Project as Project
    from .compose.project import load_project as load_project
    from .drivers.grid import SweepResult as SweepResult
    from .drivers.grid import SweepRun as SweepRun
    from .drivers.rerun import RerunResult as RerunResult
    from .errors import BackendError as BackendError
    from .errors import ConfigError as ConfigError
    from .errors import ImageError as ImageError
    from .errors import InputError as InputError
    from .errors import Interrupted as Interrupted
    from .errors import NotFound as NotFound
    from .errors import NotReproduced as NotReproduced
    from .errors import OrchestratorError as OrchestratorError
    from .errors import ProjectError as ProjectError
    from .errors import ResultError as ResultError
    from .errors import RunsFailed as RunsFailed
    from .errors import StoreError as StoreError
    from .errors import UsageError as UsageError
    from .errors import VerifyMismatch as VerifyMismatch
    from .schema.record import CorruptRecord as CorruptRecord
    from .schema.record import RunPlan as RunPlan
    from .schema.record import RunRecord as RunRecord
    from .schema.record import RunStatus as RunStatus
    from .schema.record import SweepDoc as SweepDoc
    from .schema.spec import RunSpec as RunSpec
    from .schema.spec import SweepSpec as SweepSpec
    from .settings import Settings as Settings
    from .store.artifacts import pull as pull

#: Each public name and the module it lives in.
_PUBLIC = {
    "best": "api",
    "rerun": "api",
    "runs": "api",
    "search": "api",
    "show": "api",
    "steps": "api",
    "sweep": "api",
    "Workspace": "api.workspace",
    "Project": "compose.project",
    "load_project": "compose.project",
    "SweepResult": "drivers.grid",
    "SweepRun": "drivers.grid",
    "RerunResult": "drivers.rerun",
    "BackendError": "errors",
    "ConfigError": "errors",
    "ImageError": "errors",
    "InputError": "errors",
    "Interrupted": "errors",
    "NotFound": "errors",
    "NotReproduced": "errors",
    "OrchestratorError": "errors",
    "ProjectError": "errors",
    "ResultError": "errors",
    "RunsFailed": "errors",
    "StoreError": "errors",
    "UsageError": "errors",
    "VerifyMismatch": "errors",
    "CorruptRecord": "schema.record",
    "RunPlan": "schema.record",
    "RunRecord": "schema.record",
    "RunStatus": "schema.record",
    "SweepDoc": "schema.record",
    "RunSpec": "schema.spec",
    "SweepSpec": "schema.spec",
    "Settings": "settings",
    "pull": "store.artifacts",
}


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    globals()[name] = value  # the next access is a plain attribute
    return value


__all__ = sorted(_PUBLIC)
