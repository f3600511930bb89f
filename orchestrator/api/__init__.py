"""The library under the CLI: what ``orch`` does, as functions that return values.

Each ``orch`` command that maps onto one of these calls it and only prints; a notebook
calls them directly (re-exported from :mod:`orchestrator`)::

    from orchestrator import runs, sweep

    result = sweep(["optimizer.lr=0.1,0.01"], project="path/to/project")
    frame = runs(result.sweep_id, project="path/to/project")   # a pandas DataFrame

``reading`` reads the store (:func:`runs`, :func:`steps`, :func:`best`, :func:`show`);
``running`` starts containers (:func:`sweep`, :func:`search`, :func:`rerun`). Both work
in a :class:`~orchestrator.api.workspace.Workspace` (the store and the project an operation
works on) and raise :class:`~orchestrator.errors.OrchestratorError`; they never print
(except what Ctrl-C does to a sweep) and never exit. This package sits with the drivers
and the results (layer 6 of ``tests/test_layers.py``): it may import them, and nothing
below it imports it; the CLI is above it.
"""

from __future__ import annotations

from .reading import best as best
from .reading import runs as runs
from .reading import show as show
from .reading import steps as steps
from .running import rerun as rerun
from .running import search as search
from .running import sweep as sweep

__all__ = ["best", "rerun", "runs", "search", "show", "steps", "sweep"]
