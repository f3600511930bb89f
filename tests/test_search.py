"""Search beyond the grid: distributions, seeded random search, Optuna trials, pruning."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.compose.config import Composer
from orchestrator.compose.space import (
    Param,
    parse_space,
    random_points,
    random_values,
    sample_value,
)
from orchestrator.drivers.search import SearchOptions, parse_objectives
from orchestrator.errors import ConfigError, UsageError

REPO = Path(__file__).resolve().parent.parent
ORCH = str(Path(sys.executable).with_name("orch"))
Orch = Callable[..., subprocess.CompletedProcess[str]]

SPACE = [
    "optimizer.lr=tag(log, interval(1e-4,1e-1))",
    "model.hidden_size=int(interval(8,64))",
    "model.dropout=interval(0,0.5)",
    "optimizer=SGD,adam",
    "training_settings.epochs=range(1,5)",
    "dataset=all",
]


@pytest.fixture(scope="module")
def demo() -> Composer:
    return Composer(REPO / "configs")


# --------------------------------------------------------------------------- parsing


def test_the_optuna_sweepers_syntax_maps_to_parameters(demo: Composer) -> None:
    space = parse_space(SPACE, demo)
    params = {p.key: p for p in space.params}
    assert params["optimizer.lr"] == Param("optimizer.lr", "float", 1e-4, 1e-1, log=True,
                                           source=SPACE[0])
    assert params["model.hidden_size"].kind == "int"
    assert (params["model.hidden_size"].low, params["model.hidden_size"].high) == (8, 64)
    assert params["model.dropout"].kind == "float" and not params["model.dropout"].log
    assert params["optimizer"].choices == ("SGD", "adam")
    # Hydra's range: the grid's values, 1..4
    assert (params["training_settings.epochs"].low, params["training_settings.epochs"].high) \
        == (1, 4)
    assert dict(space.items)["dataset"] == "dataset=all"


@pytest.mark.parametrize(
    "override, message",
    [
        ("x=interval(2,1)", "the interval is empty"),
        ("x=tag(log, interval(0,1))", "a log scale needs positive bounds"),
        ("x=tag(log, int(interval(-3,5)))", "a log scale needs positive bounds"),
        ("x=interval(1)", "bad override"),
        ("x=tag(fast, interval(0,1))", "unknown tag 'fast'"),
        ("hydra.job.name=a,b", "Hydra's own configuration"),
    ],
)
def test_bad_distributions_name_the_override(demo: Composer, override: str,
                                             message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_space([override], demo)


def test_objectives_and_options_are_checked() -> None:
    assert [o.text for o in parse_objectives("loss")] == ["loss:min"]
    assert [o.text for o in parse_objectives("accuracy")] == ["accuracy:max"]
    assert [o.text for o in parse_objectives("a:max,b:min")] == ["a:max", "b:min"]
    with pytest.raises(UsageError):
        parse_objectives("loss:up")
    with pytest.raises(UsageError, match="needs --objective"):
        SearchOptions("tpe", 5).check()
    two = parse_objectives("a:max,b:min")
    with pytest.raises(UsageError, match="one objective"):
        SearchOptions("tpe", 5, objectives=two, pruner="median").check()
    with pytest.raises(UsageError, match="nsgaii"):
        SearchOptions("cmaes", 5, objectives=two).check()
    SearchOptions("nsgaii", 5, objectives=two).check()


# --------------------------------------------------------------------------- sampling

bounds = st.tuples(
    st.floats(1e-6, 1e3, allow_nan=False), st.floats(1e-6, 1e3, allow_nan=False)
).filter(lambda b: b[0] < b[1] * 0.999)


@settings(max_examples=200, deadline=None)
@given(bounds, st.booleans(), st.integers(0, 2**31), st.integers(0, 10_000))
def test_floats_stay_within_bounds(b: tuple[float, float], log: bool, seed: int,
                                   trial: int) -> None:
    param = Param("x", "float", b[0], b[1], log=log)
    values = random_values(_one(param), seed, trial)
    assert b[0] <= values["x"] <= b[1]
    assert values == random_values(_one(param), seed, trial)  # a pure function


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 1000), st.integers(0, 1000), st.booleans(), st.floats(0, 0.999999))
def test_integers_stay_within_bounds(low: int, width: int, log: bool, u: float) -> None:
    param = Param("n", "int", low, low + width, log=log)
    value = sample_value(param, u)
    assert isinstance(value, int) and low <= value <= low + width


def test_log_scale_spreads_over_decades() -> None:
    param = Param("lr", "float", 1e-4, 1e-1, log=True)
    values = [random_values(_one(param), 7, i)["lr"] for i in range(600)]
    decades = [sum(10 ** (-4 + d) <= v < 10 ** (-3 + d) for v in values) for d in range(3)]
    assert all(150 < count < 250 for count in decades), decades  # ~200 per decade
    linear = Param("lr", "float", 1e-4, 1e-1)
    lows = sum(random_values(_one(linear), 7, i)["lr"] < 1e-3 for i in range(600))
    assert lows < 20  # uniform: ~1% below 0.001 (a third of them on a log scale)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**31), st.integers(1, 20))
def test_same_seed_same_points_and_a_prefix_of_more(seed: int, trials: int) -> None:
    space = parse_space(SPACE, Composer(REPO / "configs"))
    points = random_points(space, seed, trials)
    assert points == random_points(space, seed, trials)
    assert random_points(space, seed, trials + 5)[:trials] == points
    if trials > 3:
        assert points != random_points(space, seed + 1, trials)


def test_points_are_pinned_across_machines(demo: Composer) -> None:
    """The values come from SHA-256, not from a PRNG or hash(): fixed forever."""
    (point,) = random_points(parse_space(SPACE[:3], demo), 1, 1)
    assert point == ("optimizer.lr=0.09891277693", "model.hidden_size=37",
                     "model.dropout=1.989634241e-05")


def _one(param: Param) -> object:
    from orchestrator.compose.space import Space

    return Space(((param.key, param),))


# --------------------------------------------------------------------------- end to end

BOWL = """
import json, math, os, time
cfg = json.load(open(os.environ["ORCH_CONFIG"].replace(".yaml", ".json")))
lr, hidden, dropout = cfg["lr"], cfg["hidden"], cfg["dropout"]
target = (math.log10(lr) + 2.5) ** 2 + ((hidden - 48) / 32) ** 2 + 4 * (dropout - 0.1) ** 2
out = os.environ["ORCH_OUTPUT"]
print("bowl", lr, hidden, dropout, flush=True)
with open(os.path.join(out, "metrics.jsonl"), "a") as f:
    for step in range(1, cfg["steps"] + 1):
        loss = target + 1.0 / step
        f.write(json.dumps({"step": step, "loss": loss}) + "\\n")
        f.flush()
        time.sleep(cfg["sleep"])
json.dump({"loss": loss}, open(os.path.join(out, "metrics.json"), "w"))
"""
BOWL_CONFIG = "lr: 0.01\nhidden: 32\ndropout: 0.0\nsteps: 3\nsleep: 0\n"
BOWL_SPACE = ["lr=tag(log, interval(1e-4,1e-1))", "hidden=int(interval(8,64))",
              "dropout=interval(0,0.5)"]


@pytest.fixture
def bowl(make_project: Callable[..., Path]) -> Path:
    return make_project("bowl", files={"bowl.py": BOWL, "configs/config.yaml": BOWL_CONFIG},
                        command=["python3", "bowl.py"])


def _runs(proc: subprocess.CompletedProcess[str]) -> list[dict[str, object]]:
    assert proc.returncode == 0, proc.stderr
    runs: list[dict[str, object]] = json.loads(proc.stdout)["runs"]
    return runs


@pytest.mark.docker
def test_a_random_search_resubmitted_is_all_skipped(bowl: Path, orch: Orch) -> None:
    args = ["sweep", "-p", str(bowl), "--sampler", "random", "--trials", "6", "--seed", "3",
            *BOWL_SPACE, "--jobs", "3", "--json"]
    first = _runs(orch(*args))
    assert len(first) == 6 and {r["status"] for r in first} == {"succeeded"}
    again = _runs(orch(*args))
    assert [r["run_id"] for r in again] == [r["run_id"] for r in first]
    assert {r["status"] for r in again} == {"skipped"}
    sweep = json.loads(orch(*args[:-1], "--dry-run", "--json").stdout)
    assert [p["overrides"] for p in sweep["points"]] == [r["overrides"] for r in first]
    assert sweep["search"]["sampler"] == "random"


@pytest.mark.docker
def test_a_killed_tpe_search_continues_without_repeating_a_trial(bowl: Path,
                                                                 orch: Orch) -> None:
    args = ["sweep", "-p", str(bowl), "--sampler", "tpe", "--trials", "6", "--seed", "5",
            "--objective", "loss:min", *BOWL_SPACE, "steps=4", "sleep=0.3", "--json"]
    env = {**os.environ, "ORCH_LEASE_S": "3"}
    proc = subprocess.Popen([ORCH, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    runs_dir = bowl / ".orch" / "runs"
    try:
        deadline = time.monotonic() + 180
        while len(list(runs_dir.glob("*/run.json"))) < 2:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no trial finished"
            time.sleep(0.2)
        time.sleep(0.5)  # the next trial is in its container
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    done_before = {p.parent.name for p in runs_dir.glob("*/run.json")}
    assert 2 <= len(done_before) < 6
    again = orch(*args, env={"ORCH_LEASE_S": "3"})
    runs = _runs(again)
    assert len(runs) == 6
    assert {r["run_id"] for r in runs if r["status"] == "skipped"} == done_before
    assert all(r["status"] in ("skipped", "succeeded") for r in runs)
    records = [json.loads((runs_dir / str(r["run_id"]) / "run.json").read_text())
               for r in runs]
    assert all(rec["attempt"] == 1 for rec in records)  # nothing ran twice
    sweep_id = json.loads(again.stdout)["sweep_id"]
    doc = json.loads((bowl / ".orch" / "sweeps" / f"{sweep_id}.json").read_text())
    assert [t["number"] for t in doc["search"]["trials"]] == list(range(6))
    listed = json.loads(orch("results", sweep_id, "-p", str(bowl), "--format", "json").stdout)
    assert len(listed) == 6
    # all done: a third submission runs nothing
    third = _runs(orch(*args))
    assert {r["status"] for r in third} == {"skipped"}


@pytest.mark.docker
def test_a_pruned_trial_is_recorded_pruned_and_not_rerun(bowl: Path, orch: Orch) -> None:
    args = ["sweep", "-p", str(bowl), "--sampler", "tpe", "--trials", "8", "--seed", "1",
            "--objective", "loss", "--pruner", "median", *BOWL_SPACE, "steps=8",
            "sleep=0.4", "--json"]
    runs = _runs(orch(*args, env={"ORCH_LIVE_S": "0.2"}))
    pruned = [r for r in runs if r["status"] == "pruned"]
    assert pruned, [r["status"] for r in runs]
    run_dir = bowl / ".orch" / "runs" / str(pruned[0]["run_id"])
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "pruned"
    assert record["reason"].startswith("pruned by the median pruner at step ")
    assert "bowl" in (run_dir / "stdout.log").read_text()
    steps = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert 1 <= len(steps) < 8  # stopped before its last step
    assert "loss" in record["metrics"]
    assert not (run_dir / "stop.json").exists()
    again = _runs(orch(*args))
    assert {r["status"] for r in again} == {"skipped"}
    assert json.loads((run_dir / "run.json").read_text())["attempt"] == 1


@pytest.mark.docker
def test_two_concurrent_submitters_of_one_search_lose_no_trial(bowl: Path, orch: Orch) -> None:
    """Both ask trials of the same study at once: each trial number goes to one of them,
    the document ends listing every trial, and no run is outside it or ran twice."""
    args = [ORCH, "sweep", "-p", str(bowl), "--sampler", "tpe", "--trials", "10", "--seed", "2",
            "--objective", "loss:min", *BOWL_SPACE, "steps=3", "sleep=0.2", "--jobs", "2",
            "--json"]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    try:
        outs = [proc.communicate(timeout=400) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    assert [proc.returncode for proc in procs] == [0, 0], [err for _, err in outs]
    (sweep_id,) = {json.loads(out)["sweep_id"] for out, _ in outs}
    doc = json.loads((bowl / ".orch" / "sweeps" / f"{sweep_id}.json").read_text())
    trials = doc["search"]["trials"]
    assert [t["number"] for t in trials] == list(range(10))
    run_ids = {t["run_id"] for t in trials}
    assert len(run_ids) == 10  # same seed, same start: still ten different points
    assert {entry["run_id"] for entry in doc["runs"]} == run_ids
    runs_dir = bowl / ".orch" / "runs"
    complete = {p.parent.name for p in runs_dir.glob("*/run.json")}
    assert complete == run_ids  # every run that ran is a trial of the document
    records = [json.loads((runs_dir / run_id / "run.json").read_text()) for run_id in run_ids]
    assert all(record["attempt"] == 1 for record in records)  # none ran twice
    listed = json.loads(orch("results", sweep_id, "-p", str(bowl), "--format", "json").stdout)
    assert [r["run_id"] for r in listed] == [t["run_id"] for t in trials]
    assert {r["status"] for r in listed} == {"succeeded"}


def test_a_reusing_composer_composes_each_trial_as_a_fresh_one(demo: Composer) -> None:
    """The search's composer keeps the defaults-list compositions across its one-point
    calls; every trial's config is still exactly what a fresh composer gives."""
    reusing = Composer(REPO / "configs", reuse=True)
    space = parse_space(SPACE, demo)
    for point in [*random_points(space, 4, 6), ("optimizer=adam", "model=lstm")]:
        (kept,) = reusing.compose_many([point])
        (fresh,) = Composer(REPO / "configs").compose_many([point])
        assert kept == fresh, point
