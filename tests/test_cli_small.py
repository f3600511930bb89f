"""Small CLI behaviours a new user meets: plain progress lines where stderr is no
terminal (a CI log), and a missing optional dependency as one ``error:`` line."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import git_commit_all, hiding_env, make_wheel

from orchestrator.cli import progress as progress_module
from orchestrator.cli.progress import Progress
from orchestrator.errors import ImageError
from orchestrator.schema.record import RunRecord, RunStatus

# -- plain progress ------------------------------------------------------------------------


def _record(run_id: str, status: RunStatus, **more: Any) -> RunRecord:
    return RunRecord(run_id=run_id, sweep_id="5e" * 6, status=status, **more)


@pytest.fixture
def plain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stderr.isatty", lambda: False)


def test_plain_progress_says_each_step_and_state_change(
    plain: None, capsys: pytest.CaptureFixture[str]
) -> None:
    progress = Progress(3)
    progress.note("environment: building 2 of 2 package layers")
    for run_id in ("a1", "b2", "c3"):
        progress("queued", run_id, None)
    progress("running", "a1", None)
    progress("done", "a1", _record("a1", RunStatus.SUCCEEDED, duration_s=12.34))
    progress("running", "b2", None)
    for _ in range(3):  # polled while another submission holds it: said once
        progress("waiting", "c3", None)
    progress("done", "b2", _record("b2", RunStatus.FAILED, duration_s=1.0,
                                   reason="exit code 3\n(see orch logs b2)"))
    progress.close()
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        "environment: building 2 of 2 package layers",
        "[0/3] run a1 running",
        "[1/3] run a1 succeeded (12.3 s)",
        "[1/3] run b2 running",
        "[1/3] run c3 waiting: another submission runs it",
        "[2/3] run b2 failed (1.0 s): exit code 3 (see orch logs b2)",
    ]


def test_plain_progress_says_a_burst_of_skipped_runs_once(
    plain: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    progress = Progress(1003)
    for i in range(1000):
        progress("skipped", f"{i:04x}", _record(f"{i:04x}", RunStatus.SUCCEEDED))
    progress("retrying", "f1", _record("f1", RunStatus.FAILED, attempt=1))
    progress("queued", "f1", None)
    monkeypatch.setattr(progress_module, "SKIPPED_EVERY_S", 0.0)  # a long burst: every line
    progress("skipped", "f2", _record("f2", RunStatus.SUCCEEDED))
    progress("skipped", "f3", _record("f3", RunStatus.SUCCEEDED))
    progress.close()
    assert capsys.readouterr().err.splitlines() == [
        "[1000/1003] 1000 runs skipped: succeeded before",
        "[1000/1003] run f1 retrying its failed attempt 1",
        "[1001/1003] run f2 skipped: succeeded before",
        "[1002/1003] run f3 skipped: succeeded before",
    ]


def test_a_slow_build_is_said_while_a_failing_one_is_its_error_alone(
    plain: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    progress = Progress(1)
    progress.note("environment: downloading 4 of 4 wheels with pip")
    try:
        raise ImageError("requirements.txt is incomplete")  # found within the hold
    except ImageError:
        progress.close()
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(progress_module, "HOLD_S", 0.05)
    progress = Progress(1)
    progress.note("environment: downloading 4 of 4 wheels with pip")
    deadline = time.monotonic() + 10
    while not capsys.readouterr().err and time.monotonic() < deadline:
        time.sleep(0.01)  # a CI log sees the build while it goes on
    assert time.monotonic() < deadline, "the held line was never said"
    progress.note("environment: building 4 of 4 package layers")
    assert capsys.readouterr().err == "environment: building 4 of 4 package layers\n"
    progress.close()


def test_quiet_progress_says_nothing(plain: None, capsys: pytest.CaptureFixture[str]) -> None:
    progress = Progress(1, quiet=True)
    progress.note("environment: building 1 of 1 package layers")
    progress("running", "a1", None)
    progress("done", "a1", _record("a1", RunStatus.SUCCEEDED))
    progress.close()
    assert capsys.readouterr() == ("", "")


PROBE = """
import json, os, sys
cfg = json.load(open(os.environ["ORCH_CONFIG"].replace(".yaml", ".json")))
import tinymod
if cfg["x"] == 2:
    sys.exit(3)
with open(os.path.join(os.environ["ORCH_OUTPUT"], "metrics.json"), "w") as out:
    json.dump({"answer": tinymod.ANSWER}, out)
"""


@pytest.mark.docker
def test_a_cold_build_and_its_runs_show_in_a_ci_log(
    make_project: Callable[..., Path], orch: Callable[..., Any], tmp_path: Path
) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    tiny = make_wheel(wheels, "tinymod", {"tinymod/__init__.py": (b"ANSWER = 42\n", 0o644)})
    digest = hashlib.sha256(tiny.read_bytes()).hexdigest()
    lock = f"--no-index\n--find-links wheels\ntinymod==1.0 --hash=sha256:{digest}\n"
    root = make_project("ci-log", files={"requirements.txt": lock, "probe.py": PROBE,
                                         "configs/config.yaml": "x: 1\n"},
                        requirements="requirements.txt", command=["python3", "probe.py"])
    shutil.copytree(wheels, root / "wheels")
    git_commit_all(root, "wheels")
    env = {"ORCH_CACHE": str(tmp_path / "cache")}  # cold: nothing built yet
    proc = orch("sweep", "-p", str(root), "x=1,2", "--json", env=env)
    assert proc.returncode == 1, proc.stderr
    runs = {r["overrides"][0]: r["run_id"] for r in json.loads(proc.stdout)["runs"]}
    lines = proc.stderr.splitlines()
    assert any(line.startswith("environment: building ") for line in lines), lines
    assert any(re.fullmatch(r"environment: \d+ layers \(\d+ MB\) built in [\d.]+ s", line)
               for line in lines), lines
    ok, bad = runs["x=1"], runs["x=2"]
    assert any(re.fullmatch(rf"\[\d/2\] run {ok} running", line) for line in lines), lines
    assert any(re.fullmatch(rf"\[\d/2\] run {ok} succeeded \([\d.]+ s\)", line)
               for line in lines), lines
    assert any(re.fullmatch(rf"\[\d/2\] run {bad} failed \([\d.]+ s\): exit code 3", line)
               for line in lines), lines
    assert lines[-1].startswith("error: sweep ") and "1 of 2 run(s) failed" in lines[-1], lines
    assert len(lines) <= 12, lines  # steps and state changes, nothing per file
    again = orch("sweep", "-p", str(root), "x=1", "--json", env=env)
    assert again.returncode == 0, again.stderr
    assert again.stderr.splitlines() == [f"[1/1] run {ok} skipped: succeeded before"]


# -- a missing optional dependency ---------------------------------------------------------

SEARCH = ["sweep", "--sampler", "tpe", "optimizer.lr=interval(0.001,0.1)", "--trials", "2",
          "--objective", "loss"]


@pytest.mark.parametrize(("hide", "args", "line"), [
    ("optuna", SEARCH, "error: --sampler tpe needs optuna: pip install 'orch[search]'"),
    ("optuna", [*SEARCH, "--dry-run"],
     "error: --sampler tpe needs optuna: pip install 'orch[search]'"),
    ("optuna", ["sweep", "--sampler", "qmc", "optimizer.lr=interval(0.001,0.1)", "--trials",
                "2", "--objective", "loss", "--pruner", "median"],
     "error: --sampler qmc needs optuna: pip install 'orch[search]'"),
    ("ray", ["sweep", "--backend", "ray"],
     "error: --backend ray needs ray: pip install 'orch[ray]'"),
    ("ray", ["sweep", "--backend", "ray", "--dry-run"],
     "error: --backend ray needs ray: pip install 'orch[ray]'"),
    ("mlflow", ["export", "mlflow", "--tracking-uri", "http://127.0.0.1:1"],
     "error: orch export mlflow needs mlflow: pip install 'orch[mlflow]'"),
    ("duckdb", ["results"],
     "error: reading runs into a table (orch results, query) needs duckdb: pip install duckdb"),
])
def test_a_missing_optional_package_is_one_error_line_naming_the_extra(
    tmp_path: Path, orch: Callable[..., Any], hide: str, args: list[str], line: str
) -> None:
    root = tmp_path / "proj"
    (root / "configs").mkdir(parents=True)
    (root / "orch.yaml").write_text(
        "name: proj\nbase_image: sha256:" + "0" * 64 + '\ncommand: ["python3", "train.py"]\n')
    (root / "configs" / "config.yaml").write_text("optimizer:\n  lr: 0.01\n")
    (root / "train.py").write_text("print('never run')\n")
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    git_commit_all(root, "initial")
    proc = orch(*args, "-p", str(root), cwd=root,
                env=hiding_env(tmp_path, hide))
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stderr.splitlines() == [line], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


# -- what a run names reaches the terminal escaped -------------------------------------------


def test_control_sequences_in_names_are_escaped_in_best_and_watch() -> None:
    """A metric named with an escape sequence (a run writes its own names) is shown, not
    obeyed, as in results and show."""
    from orchestrator.cli.watch import plain_line
    from orchestrator.db.sweepstate import RunView
    from orchestrator.results.best import render_best

    text = render_best({
        "metric": "acc\x1b[2J", "direction": "max", "value": 1.0, "run_id": "abc",
        "candidates": 1, "sweeps": 1, "sweep_id": "s", "overrides": ["x=1\n2"],
        "metrics": {"acc\x1b[2J": 1.0, "b\x07": 2.0},
    })
    assert "\x1b" not in text and "\x07" not in text and "acc\\x1b[2J" in text
    assert len(text.splitlines()) == 6  # the newline in an override stays on its line
    line = plain_line(RunView("abc", ("x=\x1b]0;t\x07",), "running",
                              metrics={"m\x1b[31m": 1.0}), ["m\x1b[31m"])
    assert line.isprintable() and "m\\x1b[31m=1" in line
