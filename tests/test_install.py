"""orch installed from its wheel, not editable: what ships in the package is all it reads.

The wheel is built from a copy of the source tree (setuptools writes build/ and
*.egg-info next to the sources) and installed into a fresh venv. The fresh venv borrows
the test environment's third-party packages through a ``.pth`` file: ``.pth`` files
found in a directory a ``.pth`` file adds are not run, so the test environment's
editable finder stays out and ``orchestrator`` can only come from the wheel. Every
command runs from outside the repository, without ``PYTHONPATH``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import site
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from helpers import REPO

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def _source_copy(dest: Path) -> Path:
    """The files git would ship (tracked plus untracked, not ignored) copied to ``dest``."""
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True, check=True,
    ).stdout.decode().split("\0")
    for rel in filter(None, listed):
        source = REPO / rel
        if source.is_file():  # a file deleted but not yet committed is still listed
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
            target.chmod(source.stat().st_mode)
    return dest


def _build_wheel(source: Path, out: Path) -> Path:
    # --no-build-isolation: the test environment's setuptools builds it, nothing is fetched.
    assert importlib.util.find_spec("setuptools.command.bdist_wheel") is not None, (
        "building the wheel needs setuptools>=70.1 in the test environment (the dev extra); "
        "run make setup"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "-q", "-w", str(out), str(source)],
        capture_output=True, text=True, cwd=out.parent,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = out.glob("orch-*.whl")
    return wheel


def _fresh_venv(root: Path) -> tuple[Path, Path]:
    """A venv whose only orch is the wheel's; returns its python and its site-packages."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    purelib = Path(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True, env=_clean_env(),
    ).stdout.strip())
    borrowed = dict.fromkeys([*site.getsitepackages(), sysconfig.get_paths()["purelib"]])
    (purelib / "test-environment.pth").write_text("".join(f"{p}\n" for p in borrowed))
    return python, purelib


def _clean_env() -> dict[str, str]:
    # PYTHONPATH would put a source tree ahead of the installed package.
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def test_installed_wheel_composes_sweeps_and_reports(
    tmp_path: Path, make_project: Callable[..., Path]
) -> None:
    wheel = _build_wheel(_source_copy(tmp_path / "src"), tmp_path / "dist")
    names = subprocess.run(
        [sys.executable, "-m", "zipfile", "-l", str(wheel)], capture_output=True, text=True,
        check=True,
    ).stdout
    assert "orchestrator/templates/report.html.j2" in names

    python, purelib = _fresh_venv(tmp_path / "venv")
    env = _clean_env()
    work = tmp_path / "work"  # outside the repository: no source tree on the path
    work.mkdir()
    proc = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed",
         "-q", str(wheel)],
        capture_output=True, text=True, cwd=work, env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    where = subprocess.run(
        [str(python), "-c", "import orchestrator; print(orchestrator.__file__)"],
        capture_output=True, text=True, check=True, cwd=work, env=env,
    ).stdout.strip()
    assert Path(where).is_relative_to(purelib), where

    exe = tmp_path / "venv" / "bin" / "orch"
    project = make_project("installed")

    def orch(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(exe), *args, "-p", str(project)], capture_output=True,
                              text=True, cwd=work, env=env, timeout=300)

    composed = orch("compose", "optimizer=adam")
    assert composed.returncode == 0, composed.stderr
    assert yaml.safe_load(composed.stdout)["optimizer"]["name"] == "adam"

    swept = orch("sweep", "optimizer=adam", "--json")
    assert swept.returncode == 0, swept.stderr
    result = json.loads(swept.stdout)
    (run,) = result["runs"]
    assert run["status"] == "succeeded", run
    assert run["metrics"]

    listed = orch("results", result["sweep_id"], "--format", "json")
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert row["run_id"] == run["run_id"]
    assert row["config"]["optimizer"]["name"] == "adam"

    out = work / "report.html"
    reported = orch("report", result["sweep_id"], "-o", str(out))
    assert reported.returncode == 0, reported.stderr
    html = out.read_text(encoding="utf-8")
    assert "<table" in html and run["run_id"] in html
    for metric in run["metrics"]:
        assert metric in html
