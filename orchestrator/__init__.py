"""orch: reproducible, container-based runs for machine-learning experiments.

The public surface is re-exported here; everything else is private and may change.
The functions are what the ``orch`` commands call (see :mod:`orchestrator.api`):
:func:`sweep`, :func:`search`, :func:`runs` (a pandas DataFrame, ``orch[pandas]``),
:func:`steps`, :func:`best`, :func:`show`, :func:`rerun`, :func:`pull`. The result types
of the drivers (``SweepResult``, ``SweepRun``, ``RerunResult``) are imported on first use:
``import orchestrator`` stays light for the CLI.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import api as _api
from .api import best as best
from .api import runs as runs
from .api import show as show
from .api import steps as steps
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
from .project import Project as Project
from .project import load_project as load_project
from .record import CorruptRecord as CorruptRecord
from .record import RunPlan as RunPlan
from .record import RunRecord as RunRecord
from .record import RunStatus as RunStatus
from .record import SweepDoc as SweepDoc
from .settings import Settings as Settings
from .spec import RunSpec as RunSpec
from .spec import SweepSpec as SweepSpec
from .store.artifacts import pull as pull
from .workspace import Workspace as Workspace

if TYPE_CHECKING:
    from .api import rerun as rerun
    from .api import search as search
    from .api import sweep as sweep
    from .rerun import RerunResult as RerunResult
    from .sweep import SweepResult as SweepResult
    from .sweep import SweepRun as SweepRun

_LAZY = {"RerunResult": "rerun", "SweepResult": "sweep", "SweepRun": "sweep"}


class _Entry:
    """A public function that shares its name with a module of the package.

    ``sweep``, ``search`` and ``rerun`` are the library's functions, and also the
    modules ``orchestrator/sweep.py``, ``search/`` and ``rerun.py`` (the package
    regrouping of issue #25 moves those into ``drivers/``). Until then the package's
    attribute is this: called, it is the function; any other attribute is read from
    (and written to, so ``monkeypatch`` works) the module, so ``from orchestrator import
    sweep as sweepmod; sweepmod.compose_points(...)`` keeps working.
    """

    def __init__(self, func: Callable[..., Any], module: str) -> None:
        own = {"_func": func, "_module": module, "__wrapped__": func}
        own.update({k: getattr(func, k) for k in ("__doc__", "__name__", "__qualname__")})
        for key, value in own.items():
            object.__setattr__(self, key, value)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._func(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(importlib.import_module(self._module), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(importlib.import_module(self._module), name, value)

    def __delattr__(self, name: str) -> None:
        delattr(importlib.import_module(self._module), name)

    def __repr__(self) -> str:
        return f"<function orchestrator.{self._func.__name__}>"


class _Package(types.ModuleType):
    """Importing ``orchestrator.sweep`` sets the package's ``sweep`` to the module:
    the public function keeps the name (the module stays in ``sys.modules``)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _ENTRIES and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


_ENTRIES = {"sweep": "sweep", "search": "search", "rerun": "rerun"}
for _name, _module in _ENTRIES.items():
    globals()[_name] = _Entry(getattr(_api, _name), f"{__name__}.{_module}")
sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BackendError",
    "ConfigError",
    "CorruptRecord",
    "ImageError",
    "InputError",
    "Interrupted",
    "NotFound",
    "NotReproduced",
    "OrchestratorError",
    "Project",
    "ProjectError",
    "RerunResult",
    "ResultError",
    "RunPlan",
    "RunRecord",
    "RunSpec",
    "RunStatus",
    "RunsFailed",
    "Settings",
    "StoreError",
    "SweepDoc",
    "SweepResult",
    "SweepRun",
    "SweepSpec",
    "UsageError",
    "VerifyMismatch",
    "Workspace",
    "best",
    "load_project",
    "pull",
    "rerun",
    "runs",
    "search",
    "show",
    "steps",
    "sweep",
]
