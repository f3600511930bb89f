"""``orch results`` decided in SQL (orchestrator.results.sqlview) shows what the Python
view of the same runs shows, value for value, or leaves the decision to Python."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.db.frame import RunFrame
from orchestrator.results.render import render, render_view
from orchestrator.results.sqlview import frame_view
from orchestrator.results.table import build_view
from orchestrator.results.where import where_keys
from orchestrator.store.labels import Label, Labels


def run(run_id: str, config: dict[str, Any], metrics: dict[str, Any], *,
        status: str = "succeeded", overrides: list[str] | None = None,
        sweep: str = "9b1c0e2d4f6a") -> dict[str, Any]:
    return {"run_id": run_id, "sweep_id": sweep, "project": "demo", "status": status,
            "reason": None if status == "succeeded" else "exit 1",
            "overrides": overrides or [], "config": config, "metrics": metrics,
            "image_id": "sha256:" + "ab" * 32, "duration_s": 1.5}


RUNS = [
    run("a1", {"opt": {"lr": 0.1, "name": "adam"}, "n": 3, "flag": True, "kind": None,
               "dims": [1, 2], "empty": {}, "s": "10"}, {"loss": 0.5, "acc": 0.9},
        overrides=["opt=adam", "+extra=7"]),
    run("a2", {"opt": {"lr": 0.01, "name": "sgd"}, "n": 4, "flag": False, "kind": "x",
               "dims": [3], "empty": {}, "s": "abc"}, {"loss": 0.25, "acc": 0.95},
        overrides=["opt=sgd", "~extra=8", "extra=9"]),
    run("a3", {"opt": {"lr": 1, "name": "adam"}, "n": 9007199254740993, "flag": True,
               "s": "1e3", "u": " 12"}, {"loss": 0.25}, status="failed"),
    run("b1", {"opt": {"lr": 0.1, "name": "adam"}, "n": -2, "s": "-0.5"},
        {"loss": 0.75, "acc": 0.8, "metrics.loss": 2.0}, sweep="0c0ffee00000"),
    run("b2", {"opt": {"lr": 0.001}, "n": 0}, {"acc": -0.0}, sweep="0c0ffee00000",
        overrides=["opt.lr=0.001"]),
    run("b3", {}, {}, status="queued", sweep="0c0ffee00000"),
]
LABELS = Labels(sweeps={"9b1c0e2d4f6a": Label(name="first", tags={"lstm"})},
                runs={"b1": Label(tags={"keeper"})})

CASES: list[dict[str, Any]] = [
    {},
    {"sort": "loss"},
    {"sort": "-acc", "limit": 2},
    {"sort": "metrics.loss", "limit": 0},
    {"where": ["opt.lr>=0.01"], "sort": "loss", "limit": 3},
    {"where": ["opt.lr=0.1"]},
    {"where": ["opt.lr!=0.1"]},
    {"where": ["opt.name=adam", "tag=lstm"]},
    {"where": ["opt=sgd"]},
    {"where": ["extra=9"]},
    {"where": ["extra>7.5"]},
    {"where": ["n>3"]},
    {"where": ["n<=-2"]},
    {"where": ["n=9007199254740992"]},
    {"where": ["n>0.5"]},
    {"where": ["flag=true"]},
    {"where": ["flag!=TRUE"]},
    {"where": ["kind=null"]},
    {"where": ["kind=x"]},
    {"where": ["empty=7"]},
    {"where": ["dims!=7"]},
    {"where": ["s>5"]},
    {"where": ["s<0"]},
    {"where": ["s=10"]},
    {"where": ["acc=0"]},
    {"where": ["metrics.loss<0.6"], "status": ["succeeded"]},
    {"where": ["loss>=0.25"], "sort": "-loss"},
    {"where": ["name=first"]},
    {"where": ["sweep=0c0f"]},
    {"where": ["status!=failed"], "sort": "acc"},
    {"where": ["tag=keeper"]},
    {"status": ["failed", "queued"]},
]


@pytest.fixture
def frame() -> Any:
    with RunFrame() as frame:
        frame.load_runs(RUNS, LABELS)
        yield frame


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_sql_and_python_show_the_same_runs(frame: RunFrame, case: dict[str, Any]) -> None:
    where, sort = case.get("where", []), case.get("sort")
    status, limit = case.get("status", []), case.get("limit")
    keys = where_keys(where)
    metric = (sort or "").lstrip("+-").removeprefix("metrics.")
    metrics = [m for m in dict.fromkeys(
        [metric, *keys, *(k.removeprefix("metrics.") for k in keys)]) if m]
    records = frame.thin_records(keys, metrics, overrides=bool(where))
    expected = render(records, "json", sort=sort, where=where, status=status, limit=limit,
                      expand=frame.expander(records))
    view = frame_view(frame, where, status=status, sort=sort, limit=limit)
    assert view is not None
    assert render_view(view, "json") == expected
    assert view.best == build_view(records, sort, where, status=status, limit=limit).best


@pytest.mark.parametrize("where", [["dims=[1,2]"], ["empty={}"], ["u>5"], ["nosuch=1"],
                                   ["tag=nosuch"], ["bad"], ["n<abc"]])
def test_what_sql_cannot_be_sure_of_is_left_to_python(frame: RunFrame, where: list[str]) -> None:
    assert frame_view(frame, where) is None


def test_an_unknown_sort_metric_is_left_to_python(frame: RunFrame) -> None:
    assert frame_view(frame, sort="nosuch") is None
