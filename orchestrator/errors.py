"""The exception tree of orch.

Every error the library raises derives from :class:`OrchestratorError`; third-party
errors (docker, botocore, ray, yaml, hydra) are translated where they are caught::

    OrchestratorError
     +-- UsageError          bad command-line input (option values, ids, URIs)
     +-- ProjectError        orch.yaml missing or invalid
     +-- ConfigError         config tree, override or sweep syntax
     +-- ImageError          base image, wheels, layers, loading into the daemon
     |    +-- VerifyMismatch rebuilt image differs from the recorded one
     +-- InputError          a declared data input missing, unreadable, changed or lost
     +-- BackendError        Docker daemon or Ray cluster unreachable or refusing
     +-- MissingDependency   an optional package (optuna, mlflow, ray) is not installed
     +-- StoreError          store unreachable, refused, corrupt
     |    +-- NotFound       a key/run/sweep that does not exist
     +-- Interrupted         stopped by Ctrl-C, SIGTERM or SIGHUP (exit 130)
     +-- ResultError         the command worked and its answer is "no" (exit 1)
          +-- RunsFailed     a sweep has failed runs
          +-- NotReproduced  a rerun's metrics differ from the original's

Each class carries its ``exit_code`` the way click's exceptions do; the CLI maps an
error to one ``error:`` line and that code (2 for every error, 1 for a result that is
"no"), so no command decides exit codes by itself.

An optional package is imported where it is used, through :func:`require`: its absence
is then a :class:`MissingDependency` naming what needs it and the extra that installs it.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class OrchestratorError(Exception):
    """Root of all errors raised by orch. The message is one line meant for the user."""

    exit_code = 2


class UsageError(OrchestratorError):
    """A command-line value is malformed (an id, a URI, an option)."""


class ProjectError(OrchestratorError):
    """orch.yaml is missing or does not validate."""


class ConfigError(OrchestratorError):
    """The config tree, an override or the sweep syntax is wrong."""


class ImageError(OrchestratorError):
    """An image could not be resolved, built or loaded."""


class VerifyMismatch(ImageError):
    """A rebuilt image does not have the recorded ID: not reproduced, a result."""

    exit_code = 1


class InputError(OrchestratorError):
    """A data input (orch.yaml ``inputs:``) is missing, malformed, changed while read,
    or cannot be had exactly (not in the cache nor in the store)."""


class BackendError(OrchestratorError):
    """The execution backend (Docker daemon, Ray cluster) is unreachable or refused."""


class MissingDependency(OrchestratorError):
    """An optional package is not installed: ``--sampler tpe needs optuna: pip install
    'orch[search]'``. An environment error, the user's to fix by installing."""

    exit_code = 2

    def __init__(self, needs: str, install: str) -> None:
        super().__init__(f"{needs}: pip install {install}")


def require(module: str, what: str, install: str) -> ModuleType:
    """``import module`` for ``what`` (an option or a command), or MissingDependency
    saying ``pip install <install>``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = module.partition(".")[0]
        needs = f"{what} needs {package}"
        if exc.name and exc.name.partition(".")[0] != package:
            needs += f" (installed, but it cannot import {exc.name})"  # a broken install
        raise MissingDependency(needs, install) from exc


class StoreError(OrchestratorError):
    """The result store is unreachable, refused an operation or holds corrupt data."""


class NotFound(StoreError):
    """A key, run or sweep does not exist in the store."""


class ResultError(OrchestratorError):
    """The command ran and its answer is "no": a run failed, a rerun did not reproduce."""

    exit_code = 1


class RunsFailed(ResultError):
    """A sweep has runs that failed (now or in an earlier submission)."""


class NotReproduced(ResultError):
    """A rerun's metrics differ from the original run's."""


class Interrupted(OrchestratorError):
    """The user stopped the command (Ctrl-C, SIGTERM, SIGHUP); what finished is kept."""

    exit_code = 130


class BuildCancelled(Interrupted):
    """The environment build was cancelled (Ctrl-C twice, SIGTERM); what it finished is cached."""

    def __init__(self, what: str = "the layers it finished are cached") -> None:
        super().__init__(f"environment build cancelled: {what}, a re-submission builds the rest")
