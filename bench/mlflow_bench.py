"""MLflow Projects with ``docker_env`` and ``--build-image``: the per-run wall of a trivial
entry point on the same base image, in mlflow's own venv (cached, installed here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from common import (
    BASE_TAG,
    BENCH_CACHE,
    BenchError,
    Stat,
    log,
    ratio,
    remove_containers,
    remove_images,
    run_timed,
)
from context import Ctx

MLFLOW_REQUIREMENT = "mlflow>=2.10,<4"

_MLPROJECT = """\
name: {name}
docker_env:
  image: {image}
entry_points:
  main:
    command: "python3 -c pass"
"""


def mlflow_venv(ctx: Ctx) -> Path:
    """``<cache>/mlflow-venv`` with mlflow (which brings docker and matplotlib); the smoke
    takes the harness's own venv when it has mlflow (the test suite's does), since
    installing mlflow takes minutes."""
    own = Path(sys.executable).parent.parent
    if ctx.smoke and (own / "bin" / "mlflow").exists():
        return own
    venv = BENCH_CACHE / "mlflow-venv"
    marker = venv / ".orch-bench-ready"
    python = venv / "bin" / "python"
    if marker.is_file() and python.exists():
        return venv
    log(f"installing {MLFLOW_REQUIREMENT} into {venv} (once; cached)")
    venv.parent.mkdir(parents=True, exist_ok=True)
    if not python.exists():
        run_timed(ctx.janitor, [sys.executable, "-m", "venv", "--clear", str(venv)], timeout=120)
    run_timed(
        ctx.janitor, [str(python), "-m", "pip", "install", "-q", MLFLOW_REQUIREMENT], timeout=900
    )
    run_timed(ctx.janitor, [str(python), "-c", "import mlflow.projects, docker, matplotlib"])
    marker.write_text("ok\n")
    return venv


def mlflow(ctx: Ctx) -> dict[str, Any]:
    """One untimed warm-up (it builds the image layer once), then timed runs one at a time."""
    venv = mlflow_venv(ctx)
    version = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import mlflow; print(mlflow.__version__)"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    root = ctx.janitor.tempdir("mlflow-")
    name = f"{ctx.name}-mlflow"  # mlflow tags its image <project name>:latest (no git here)
    project = root / "project"
    project.mkdir()
    (project / "MLproject").write_text(_MLPROJECT.format(name=name, image=BASE_TAG))
    tmp = root / "tmp"  # mlflow leaves temporary directories behind: keep them in ours
    tmp.mkdir()
    ctx.janitor.add("remove mlflow containers", lambda: remove_containers(f"ancestor={name}"))
    ctx.janitor.add("remove mlflow images", lambda: remove_images(f"reference={name}"))
    env = {
        "MLFLOW_TRACKING_URI": (root / "mlruns").as_uri(),
        "MLFLOW_ALLOW_FILE_STORE": "true",
        "TMPDIR": str(tmp),
        "GIT_PYTHON_REFRESH": "quiet",
        "PYTHONWARNINGS": "ignore",
    }
    argv = [str(venv / "bin" / "mlflow"), "run", str(project), "--build-image", "-e", "main"]
    reps = ctx.reps(4, 2)
    stat = ctx.row("mlflow", Stat(f"mlflow {version} run --build-image (docker_env): per run"))
    warm = 0 if ctx.smoke else 1  # the smoke times the run that builds the image too
    for rep in range(reps + warm):
        timed = run_timed(ctx.janitor, argv, env=env, cwd=root, timeout=300, check=False)
        if timed.returncode != 0 or "succeeded" not in timed.stderr:
            tail = " ".join(timed.stderr.strip().splitlines()[-2:])
            raise BenchError(f"mlflow run failed (exit {timed.returncode}): {tail[-400:]}")
        if rep or not warm:
            stat.add(timed.seconds)
        log(f"mlflow run {'warm-up' if rep == 0 else rep}: {timed.seconds:.2f}s")
    figures: dict[str, Any] = {}
    orch = ctx.cache.get("curve16")
    if orch is None:  # --only mlflow: measure the denominator too
        from orch_bench import per_run

        figures.update(per_run(ctx))
        orch = ctx.cache["curve16"]
    runs = stat.samples
    return {
        **figures,
        "mlflow_version": version,
        "mlflow_per_run_s": stat.median,
        "mlflow_per_run_1_s": stat.median,
        "mlflow_per_run_4_s": sum(runs[:4]) / len(runs[:4]) if len(runs) >= 4 else None,
        "mlflow_speedup": ratio(stat.median, orch.median),
    }
