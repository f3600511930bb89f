"""What the CLI imports: heavy optional packages only where a command uses them.

Read from the interpreter's own ``-X importtime`` report (every module a process imports,
on stderr), for ``orch --help`` and for a local one-run sweep of the demo project.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ORCH = Path(sys.executable).with_name("orch")

#: Packages a local sweep has no use for: the S3 store, the Ray backend, the experiment
#: database, the adaptive searches, the library's DataFrames.
NOT_FOR_A_LOCAL_SWEEP = ("boto3", "botocore", "s3transfer", "ray", "duckdb", "optuna",
                         "pandas", "pyarrow")
#: ... and what orch --help needs none of: composition and the daemon's client.
NOT_FOR_HELP = (*NOT_FOR_A_LOCAL_SWEEP, "hydra", "omegaconf", "docker", "requests")


def imported(stderr: str) -> set[str]:
    """The modules an ``-X importtime`` report names."""
    found = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":
                found.add(name)
    return found


def top_level(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    return sorted(p for p in packages if any(m == p or m.startswith(f"{p}.") for m in modules))


def run_orch(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-X", "importtime", str(ORCH), *args],
                          capture_output=True, text=True, cwd=cwd, timeout=600)


def test_help_imports_no_heavy_package() -> None:
    proc = run_orch("--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "sweep" in proc.stdout
    modules = imported(proc.stderr)
    assert "orchestrator.cli" in modules  # the report is read
    assert top_level(modules, NOT_FOR_HELP) == []


def test_a_local_one_run_sweep_imports_no_optional_package(
    make_project: Callable[..., Path], tmp_path: Path
) -> None:
    root = make_project(command=["python3", "-c", "pass"])
    proc = run_orch("sweep", "-p", str(root), "--store", str(tmp_path / "store"), "--json",
                    "training_settings.seed=7")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '"succeeded"' in proc.stdout
    modules = imported(proc.stderr)
    assert {"orchestrator.backends.local", "docker", "hydra"} <= modules  # it did run
    assert top_level(modules, NOT_FOR_A_LOCAL_SWEEP) == []
    # nor, printing JSON, the results package (tables, reports)
    assert top_level(modules, ("orchestrator.results",)) == []


def test_a_dry_run_imports_no_docker_client(
    make_project: Callable[..., Path], tmp_path: Path
) -> None:
    root = make_project(command=["python3", "-c", "pass"])
    proc = run_orch("sweep", "-p", str(root), "--store", str(tmp_path / "store"), "--dry-run",
                    "optimizer=SGD,adam")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 point(s)" in proc.stderr
    modules = imported(proc.stderr)
    assert top_level(modules, (*NOT_FOR_A_LOCAL_SWEEP, "docker")) == []
