"""The public surface is deliberate: a change to it must change this test."""

from __future__ import annotations

import orchestrator


def test_all_is_pinned() -> None:
    assert orchestrator.__all__ == [
        "BackendError", "ConfigError", "CorruptRecord", "ImageError", "InputError",
        "Interrupted", "NotFound", "NotReproduced", "OrchestratorError", "Project",
        "ProjectError", "RerunResult", "ResultError", "RunPlan", "RunRecord", "RunSpec",
        "RunStatus", "RunsFailed", "Settings", "StoreError", "SweepDoc", "SweepResult",
        "SweepRun", "SweepSpec", "UsageError", "VerifyMismatch", "Workspace",
        # the library the CLI calls (orchestrator.api)
        "best", "load_project", "pull", "rerun", "runs", "search", "show", "steps", "sweep",
    ]
    for name in orchestrator.__all__:
        assert getattr(orchestrator, name) is not None


def test_every_error_derives_from_the_root() -> None:
    for name in orchestrator.__all__:
        obj = getattr(orchestrator, name)
        if isinstance(obj, type) and name.endswith(
            ("Error", "Mismatch", "NotFound", "Record", "Failed", "Reproduced", "Interrupted")
        ) and name not in ("RunRecord",):
            assert issubclass(obj, orchestrator.OrchestratorError), name


def test_the_package_type_checks_strictly() -> None:
    """mypy --strict over the package: the Docker client Protocol and the typed records
    keep it meaningful (no Any-typed seams left to hide a wrong call)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(orchestrator.__file__).parent
    proc = subprocess.run([sys.executable, "-m", "mypy", "--strict", str(root)],
                          capture_output=True, text=True, cwd=root.parent)
    assert proc.returncode == 0, proc.stdout[-3000:]
