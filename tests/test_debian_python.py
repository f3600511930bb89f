"""From the wheel alone, under Debian 12's own ``/usr/bin/python3`` (3.11.2, what a
non-root user has; tarfile's extraction filters came in 3.11.4).

The wheel is installed into a fresh venv of that interpreter (third-party packages
borrowed from the test environment, as in tests/test_install.py: they are built for
CPython 3.11's ABI), and from there: ``orch image base``, ``orch init`` in a copy of a
Hydra project without ``orch.yaml`` (tests/fixtures/hydra-app), ``orch sweep --dry-run``,
``orch sweep``, ``orch results`` and ``orch pull``; and the checkpoint-restore tests on
that interpreter against the installed package.
"""

from __future__ import annotations

import json
import shutil
import site
import subprocess
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import REPO, git_commit_all
from test_install import _build_wheel, _clean_env, _source_copy

pytestmark = [pytest.mark.docker, pytest.mark.slow]

DEBIAN_PYTHON = Path("/usr/bin/python3")
FIXTURE = REPO / "tests" / "fixtures" / "hydra-app"


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A venv of Debian's python3 with orch installed from its wheel (shared by the steps)."""
    if not DEBIAN_PYTHON.is_file():
        pytest.skip("no /usr/bin/python3 (Debian's own interpreter)")
    tmp = tmp_path_factory.mktemp("debian-python")
    wheel = _build_wheel(_source_copy(tmp / "src"), tmp / "dist")
    root = tmp / "venv"
    subprocess.run([str(DEBIAN_PYTHON), "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    purelib = Path(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True, env=_clean_env(),
    ).stdout.strip())
    borrowed = dict.fromkeys([*site.getsitepackages(), sysconfig.get_paths()["purelib"]])
    (purelib / "test-environment.pth").write_text("".join(f"{p}\n" for p in borrowed))
    proc = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed",
         "-q", str(wheel)], capture_output=True, text=True, cwd=tmp, env=_clean_env(),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    yield root


def run(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(venv / "bin" / "orch"), *args], capture_output=True, text=True,
                          cwd=cwd, env=_clean_env(), timeout=600)


def test_the_venv_is_debians_python_with_orch_from_the_wheel(venv: Path) -> None:
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import sys, orchestrator; print(sys.version.split()[0]); print(orchestrator.__file__)"],
        capture_output=True, text=True, check=True, env=_clean_env(), cwd=venv,
    ).stdout.split()
    assert out[0].startswith("3.11."), out
    assert Path(out[1]).is_relative_to(venv), out


def test_image_base_init_sweep_results_pull(venv: Path, tmp_path: Path, base_image: str) -> None:
    built = run(venv, "image", "base", cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    assert built.stdout.strip().splitlines()[-1] == base_image

    project = tmp_path / "hydra-app"
    shutil.copytree(FIXTURE, project)
    (project / "data").mkdir()
    (project / "data" / "points.txt").write_text("0.1 0.2 0.3 0.4\n")
    subprocess.run(["git", "init", "-q", "-b", "main", str(project)], check=True)
    git_commit_all(project, "a Hydra project")

    init = run(venv, "init", cwd=project)
    assert init.returncode == 0, init.stderr
    assert f"base image: {base_image} (the default base image, on the daemon)" in init.stdout
    assert "lock: requirements.lock" in init.stdout
    git_commit_all(project, "orch.yaml")

    point = ("model=small,big", "paths.data_dir=${orch.input:data}")
    dry = run(venv, "sweep", "--dry-run", *point, cwd=project)
    assert dry.returncode == 0, dry.stderr
    assert "2 point(s)" in dry.stdout + dry.stderr

    swept = run(venv, "sweep", *point, "--json", cwd=project)
    assert swept.returncode == 0, swept.stderr
    result = json.loads(swept.stdout)
    assert [r["status"] for r in result["runs"]] == ["succeeded", "succeeded"], result

    listed = run(venv, "results", result["sweep_id"], "--format", "json", cwd=project)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert sorted(row["config"]["model"]["name"] for row in rows) == ["big", "small"]
    assert all("loss" in row["metrics"] for row in rows), rows

    big = next(row for row in rows if row["config"]["model"]["name"] == "big")
    pulled = run(venv, "pull", big["run_id"], "model/*", "-o", str(tmp_path / "out"),
                 cwd=project)
    assert pulled.returncode == 0, pulled.stderr
    (weights,) = (tmp_path / "out").rglob("weights.txt")
    assert weights.read_text() == "big 0.1\n"


def test_checkpoint_restore_on_this_python(venv: Path, tmp_path: Path) -> None:
    """The restore that crashed on 3.11.2 (tarfile's filter=), run by that interpreter on
    the installed package: tests/test_checkpoint_extract.py from outside the source tree."""
    shutil.copy(REPO / "tests" / "test_checkpoint_extract.py", tmp_path)
    proc = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "--rootdir", str(tmp_path), "-c", "/dev/null", str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path, env=_clean_env(), timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " passed" in proc.stdout
