"""orch: reproducible, container-based runs for machine-learning experiments.

The public surface is re-exported here; everything else is private and may change.
"""

from __future__ import annotations

from .errors import BackendError as BackendError
from .errors import ConfigError as ConfigError
from .errors import ImageError as ImageError
from .errors import NotFound as NotFound
from .errors import OrchestratorError as OrchestratorError
from .errors import ProjectError as ProjectError
from .errors import StoreError as StoreError
from .errors import UsageError as UsageError
from .errors import VerifyMismatch as VerifyMismatch
from .project import Project as Project
from .project import load_project as load_project
from .spec import RunSpec as RunSpec
from .spec import SweepSpec as SweepSpec

__all__ = [
    "BackendError",
    "ConfigError",
    "ImageError",
    "NotFound",
    "OrchestratorError",
    "Project",
    "ProjectError",
    "RunSpec",
    "StoreError",
    "SweepSpec",
    "UsageError",
    "VerifyMismatch",
    "load_project",
]
