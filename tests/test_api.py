"""The library under the CLI (:mod:`orchestrator.api`): a notebook's view of a real store.

A real sweep of the demo project, started from Python, then read back from Python and
compared with what the ``orch`` commands print for the same store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import hiding_env

pytestmark = pytest.mark.docker

GRID = ["optimizer.lr=0.1,0.01"]


def test_a_sweep_from_python_reads_back_as_the_cli_sees_it(
    make_project: Callable[..., Path], orch: Callable[..., Any]
) -> None:
    import pandas as pd

    from orchestrator import SweepResult, best, rerun, runs, show, steps, sweep
    from orchestrator.results.curves import parse_curve

    root = make_project()
    result = sweep(GRID, project=root, jobs=2)
    assert isinstance(result, SweepResult)
    assert [run.status for run in result.runs] == ["succeeded", "succeeded"]
    assert not result.failed and not result.stopped
    ids = [run.record.run_id for run in result.runs]

    # The command line submits the same sweep: same id, same runs, nothing to run again.
    proc = orch("sweep", "-p", str(root), *GRID, "--json")
    assert proc.returncode == 0, proc.stderr
    cli = json.loads(proc.stdout)
    assert cli["sweep_id"] == result.sweep_id
    assert [run["run_id"] for run in cli["runs"]] == ids
    assert [run["status"] for run in cli["runs"]] == ["skipped", "skipped"]
    assert result.as_json()["runs"][0]["metrics"] == cli["runs"][0]["metrics"]

    # runs(): one row per run, orch query's column names.
    frame = runs(project=root)
    assert isinstance(frame, pd.DataFrame)
    assert sorted(frame["run_id"]) == sorted(ids)
    assert {"run_id", "sweep_id", "sweep_name", "tags", "status", "image_id", "started_at",
            "config.optimizer.lr", "config.optimizer.name", "metrics.loss"} <= set(frame.columns)
    assert sorted(frame["config.optimizer.lr"]) == [0.01, 0.1]
    assert set(frame["status"]) == {"succeeded"}
    by_id = {run.record.run_id: run.record for run in result.runs}
    for row in frame.to_dict("records"):
        record = by_id[row["run_id"]]
        assert row["metrics.loss"] == pytest.approx(record.metrics["loss"])
        assert row["config.optimizer.lr"] == record.config["optimizer"]["lr"]
        assert row["sweep_id"] == result.sweep_id

    # The selection and filters of orch results; a store named by its URI alone.
    low = runs(result.sweep_id, project=root, where="optimizer.lr<0.05")
    assert list(low["config.optimizer.lr"]) == [0.01]
    assert runs(project=root, status="failed").empty
    assert len(runs(project=root, limit=1)) == 1
    elsewhere = runs(store=str(root / ".orch"), project=root.parent)
    assert sorted(elsewhere["run_id"]) == sorted(ids)

    # steps(): every run's metrics.jsonl in long format.
    long = steps(result.sweep_id, project=root)
    assert list(long.columns) == ["run_id", "step", "metric", "value"]
    assert set(long["run_id"]) == set(ids)
    assert {"train_loss", "test_accuracy"} <= set(long["metric"])
    one = steps(ids[0], project=root)
    assert set(one["run_id"]) == {ids[0]}
    stored = root / ".orch" / "runs" / ids[0] / "metrics.jsonl"
    curves = parse_curve(stored.read_bytes())
    assert len(one) == sum(len(xs) for xs, _ in curves.values())
    xs, ys = curves["train_loss"]
    loss = one[one["metric"] == "train_loss"]
    assert list(loss["step"]) == list(xs) and list(loss["value"]) == list(ys)
    assert len(steps(list(frame["run_id"]), project=root)) == len(long)

    # best() is orch best --json; show() is orch show --json's record.
    answer = best("loss", project=root)
    proc = orch("best", "loss", "-p", str(root), "--json")
    assert proc.returncode == 0, proc.stderr
    assert answer == json.loads(proc.stdout)
    assert answer["run_id"] in ids

    record = show(ids[0][:8], project=root)
    proc = orch("show", ids[0], "-p", str(root), "--json")
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    assert shown.pop("attempts") == []
    assert json.loads(json.dumps(record.to_json())) == shown

    # rerun(): the result, not an exit code.
    again = rerun(ids[0], project=root)
    assert again.identical, again.differences
    assert again.original.run_id == ids[0] and again.record.rerun_of == ids[0]


def test_a_notebook_reads_the_project_it_runs_in(
    make_project: Callable[..., Path], orch: Callable[..., Any]
) -> None:
    """The kernel's working directory is the project: no argument names it."""
    root = make_project()
    proc = orch("sweep", "-p", str(root), "optimizer=SGD,adam", "--json")
    assert proc.returncode == 0, proc.stderr
    code = ("from orchestrator import runs, steps\n"
            "frame = runs()\n"
            "print(frame.shape[0], 'config.optimizer.name' in frame, "
            "sorted(frame['config.optimizer.name']))\n"
            "print(steps()['run_id'].nunique())\n")
    nb = subprocess.run([sys.executable, "-c", code], cwd=root / "configs",
                        capture_output=True, text=True, timeout=120)
    assert nb.returncode == 0, nb.stderr
    assert nb.stdout.splitlines() == ["2 True ['SGD', 'adam']", "2"]


def test_search_from_python_draws_what_the_cli_would(make_project: Callable[..., Path],
                                                   orch: Callable[..., Any]) -> None:
    from orchestrator import search

    root = make_project()
    args = ["optimizer.lr=interval(0.001,0.1)"]
    dry = orch("sweep", "-p", str(root), *args, "--sampler", "random", "--trials", "2",
               "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    result = search(args, sampler="random", trials=2, project=root)
    assert [list(run.record.overrides) for run in result.runs] == [
        point["overrides"] for point in json.loads(dry.stdout)["points"]]
    assert {run.status for run in result.runs} == {"succeeded"}


@pytest.mark.parametrize("call", ["runs()", "steps()"])
def test_without_pandas_one_error_names_the_extra(tmp_path: Path, call: str) -> None:
    code = ("import orchestrator\n"
            "try:\n"
            f"    orchestrator.{call}\n"
            "except orchestrator.errors.MissingDependency as exc:\n"
            "    print(exc)\n")
    env = {**os.environ, **hiding_env(tmp_path, "pandas")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    name = call.removesuffix("()")
    assert proc.stdout.splitlines() == [
        f"orchestrator.{name}() needs pandas: pip install 'orch[pandas]'"]


def test_the_public_functions_are_functions_after_the_drivers_load() -> None:
    """``sweep``, ``search`` and ``rerun`` are the library's functions; the drivers they
    call live in ``orchestrator.drivers`` (importing them changes nothing of the API)."""
    import importlib

    import orchestrator
    from orchestrator import rerun, search, sweep

    for module in ("orchestrator.drivers.grid", "orchestrator.drivers.search.view",
                   "orchestrator.drivers.rerun"):
        importlib.import_module(module)
    assert orchestrator.sweep is sweep and callable(sweep) and callable(search)
    assert callable(rerun) and "Run a recorded run again" in (rerun.__doc__ or "")


def test_the_readme_example_runs_as_written(make_project: Callable[..., Path]) -> None:
    """README's "From Python (notebooks)" block, run in a copy of the demo project."""
    from helpers import REPO

    text = (REPO / "README.md").read_text()
    section = text.split("## From Python (notebooks)", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    root = make_project()
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "config.optimizer.name" in proc.stdout and "metrics.loss" in proc.stdout
