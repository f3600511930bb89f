"""orch: reproducible, container-based runs for machine-learning experiments.

The public surface is re-exported here; everything else is private and may change.
"""

from __future__ import annotations

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
    "ResultError",
    "RunPlan",
    "RunRecord",
    "RunSpec",
    "RunStatus",
    "RunsFailed",
    "Settings",
    "StoreError",
    "SweepDoc",
    "SweepSpec",
    "UsageError",
    "VerifyMismatch",
    "load_project",
    "pull",
]
