"""The public surface is deliberate: a change to it must change this test."""

from __future__ import annotations

import orchestrator


def test_all_is_pinned() -> None:
    assert orchestrator.__all__ == [
        "BackendError", "ConfigError", "ImageError", "NotFound", "OrchestratorError",
        "Project", "ProjectError", "RunSpec", "StoreError", "SweepSpec", "UsageError",
        "VerifyMismatch", "load_project",
    ]
    for name in orchestrator.__all__:
        assert getattr(orchestrator, name) is not None


def test_every_error_derives_from_the_root() -> None:
    for name in orchestrator.__all__:
        obj = getattr(orchestrator, name)
        if isinstance(obj, type) and name.endswith(("Error", "Mismatch", "NotFound")):
            assert issubclass(obj, orchestrator.OrchestratorError), name
