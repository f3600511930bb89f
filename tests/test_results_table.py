"""Results tables: --where, --sort, the best run and every output format."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest

from orchestrator.errors import UsageError
from orchestrator.results.render import render, runs_table
from orchestrator.results.table import best_run, default_sort, sort_records, varying_keys
from orchestrator.results.where import select


def run(
    run_id: str,
    config: dict[str, Any],
    metrics: dict[str, Any] | None = None,
    status: str = "succeeded",
    **extra: Any,
) -> dict[str, Any]:
    record = {
        "schema": 1,
        "run_id": run_id,
        "sweep_id": "9b1c0e2d4f6a",
        "project": "demo",
        "status": status,
        "reason": None,
        "overrides": [],
        "config": config,
        "image_id": "sha256:" + "ab" * 32,
        "metrics": metrics if metrics is not None else {},
        "duration_s": 12.5,
    }
    record.update(extra)
    return record


@pytest.fixture
def records() -> list[dict[str, Any]]:
    """Four runs over optimizer x lr (one failed), plus a constant seed."""
    return [
        run(
            "aaaaaaaaaaaa",
            {"optimizer": {"name": "SGD", "lr": 0.1}, "seed": 0},
            {"loss": 0.40, "accuracy": 0.80},
            overrides=["optimizer=SGD", "optimizer.lr=0.1"],
        ),
        run(
            "bbbbbbbbbbbb",
            {"optimizer": {"name": "SGD", "lr": 0.001}, "seed": 0},
            {"loss": 0.30, "accuracy": 0.85},
            overrides=["optimizer=SGD", "optimizer.lr=0.001"],
        ),
        run(
            "cccccccccccc",
            {"optimizer": {"name": "adam", "lr": 0.1}, "seed": 0},
            {"loss": 0.20, "accuracy": 0.90},
            overrides=["optimizer=adam", "optimizer.lr=0.1"],
            duration_s=125.0,
        ),
        run(
            "dddddddddddd",
            {"optimizer": {"name": "adam", "lr": 0.001}, "seed": 0},
            {},
            status="failed",
            reason="exit code 3",
            overrides=["optimizer=adam", "optimizer.lr=0.001"],
        ),
    ]


def ids(records: list[dict[str, Any]]) -> list[str]:
    return [record["run_id"] for record in records]


# --------------------------------------------------------------------------- varying_keys


def test_varying_keys_are_dotted_sorted_and_skip_constants(records: list[dict[str, Any]]) -> None:
    assert varying_keys(records) == ["optimizer.lr", "optimizer.name"]


def test_varying_keys_treat_lists_as_values_and_absence_as_a_value() -> None:
    recs = [
        run("a" * 12, {"model": {"layers": [64, 64], "name": "mlp"}}),
        run("b" * 12, {"model": {"layers": [64, 32], "name": "mlp", "dropout": 0.2}}),
    ]
    assert varying_keys(recs) == ["model.dropout", "model.layers"]


def test_varying_keys_tell_int_from_float_and_bool() -> None:
    recs = [run("a" * 12, {"x": 1, "y": 1}), run("b" * 12, {"x": 1.0, "y": True})]
    assert varying_keys(recs) == ["x", "y"]


def test_varying_keys_of_one_or_no_run() -> None:
    assert varying_keys([]) == []
    assert varying_keys([run("a" * 12, {"x": 1})]) == []


# --------------------------------------------------------------------------- select


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("optimizer.name=adam", ["cccccccccccc", "dddddddddddd"]),
        ("optimizer.name==adam", ["cccccccccccc", "dddddddddddd"]),
        ("optimizer.name!=adam", ["aaaaaaaaaaaa", "bbbbbbbbbbbb"]),
        ("optimizer.lr=1e-3", ["bbbbbbbbbbbb", "dddddddddddd"]),
        ("optimizer.lr<0.01", ["bbbbbbbbbbbb", "dddddddddddd"]),
        ("optimizer.lr>=0.1", ["aaaaaaaaaaaa", "cccccccccccc"]),
        ("loss<0.35", ["bbbbbbbbbbbb", "cccccccccccc"]),
        ("loss<=0.3", ["bbbbbbbbbbbb", "cccccccccccc"]),
        ("metrics.accuracy>0.85", ["cccccccccccc"]),
        ("accuracy >= 0.85", ["bbbbbbbbbbbb", "cccccccccccc"]),
        ("optimizer.name='SGD'", ["aaaaaaaaaaaa", "bbbbbbbbbbbb"]),
        # A Hydra group choice is matched against the run's overrides.
        ("optimizer=adam", ["cccccccccccc", "dddddddddddd"]),
    ],
)
def test_select(records: list[dict[str, Any]], expression: str, expected: list[str]) -> None:
    assert ids(select(records, [expression])) == expected


def test_select_combines_expressions_with_and(records: list[dict[str, Any]]) -> None:
    assert ids(select(records, ["optimizer.name=SGD", "loss<0.35"])) == ["bbbbbbbbbbbb"]


def test_select_runs_without_the_metric_never_match_a_comparison(
    records: list[dict[str, Any]],
) -> None:
    assert "dddddddddddd" not in ids(select(records, ["loss>0"]))
    assert "dddddddddddd" in ids(select(records, ["loss!=0.4"]))


def test_select_bools_nulls_and_lists() -> None:
    recs = [
        run("a" * 12, {"aug": True, "ckpt": None, "layers": [1, 2]}),
        run("b" * 12, {"aug": False, "ckpt": "x", "layers": [3]}),
    ]
    assert ids(select(recs, ["aug=true"])) == ["a" * 12]
    assert ids(select(recs, ["aug=False"])) == ["b" * 12]
    assert ids(select(recs, ["ckpt=null"])) == ["a" * 12]
    assert ids(select(recs, ["layers=[1,2]"])) == ["a" * 12]


def test_select_without_expressions_keeps_everything(records: list[dict[str, Any]]) -> None:
    assert ids(select(records, [])) == ids(records)


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ("optimizer.name", "expected KEY=VALUE"),
        ("=adam", "expected KEY=VALUE"),
        ("optimizer.lr<small", "'<' needs a number"),
        ("nosuch.key=1", "unknown key 'nosuch.key'"),
        ("metrics.f1>0.5", "unknown key 'metrics.f1'"),
    ],
)
def test_select_rejects_bad_expressions(
    records: list[dict[str, Any]], expression: str, fragment: str
) -> None:
    with pytest.raises(UsageError) as info:
        select(records, [expression])
    message = str(info.value)
    assert fragment in message
    assert repr(expression) in message
    assert "\n" not in message


def test_select_unknown_key_lists_the_known_ones(records: list[dict[str, Any]]) -> None:
    with pytest.raises(UsageError, match=r"config keys: optimizer.lr, optimizer.name, seed"):
        select(records, ["lr=0.1"])


# --------------------------------------------------------------------------- sort / best


def test_sort_ascending_puts_runs_without_the_metric_last(records: list[dict[str, Any]]) -> None:
    assert ids(sort_records(records, "loss")) == [
        "cccccccccccc",
        "bbbbbbbbbbbb",
        "aaaaaaaaaaaa",
        "dddddddddddd",
    ]


def test_sort_descending_also_puts_missing_last(records: list[dict[str, Any]]) -> None:
    assert ids(sort_records(records, "-accuracy")) == [
        "cccccccccccc",
        "bbbbbbbbbbbb",
        "aaaaaaaaaaaa",
        "dddddddddddd",
    ]


def test_sort_accepts_plus_and_metrics_prefix(records: list[dict[str, Any]]) -> None:
    assert ids(sort_records(records, "+metrics.loss")) == ids(sort_records(records, "loss"))


def test_sort_none_keeps_the_given_order(records: list[dict[str, Any]]) -> None:
    assert ids(sort_records(records, None)) == ids(records)


def test_sort_is_stable_on_ties() -> None:
    recs = [run(c * 12, {"x": i}, {"loss": 1.0}) for i, c in enumerate("abc")]
    assert ids(sort_records(recs, "loss")) == ["a" * 12, "b" * 12, "c" * 12]
    assert ids(sort_records(recs, "-loss")) == ["a" * 12, "b" * 12, "c" * 12]


def test_sort_unknown_metric_lists_the_known_ones(records: list[dict[str, Any]]) -> None:
    with pytest.raises(
        UsageError, match=r"^unknown metric 'f1' for --sort \(known: accuracy, loss\)$"
    ):
        sort_records(records, "-f1")


def test_sort_without_any_metrics_is_not_an_error() -> None:
    recs = [run("a" * 12, {}, status="failed"), run("b" * 12, {}, status="failed")]
    assert ids(sort_records(recs, "loss")) == ["a" * 12, "b" * 12]


def test_sort_rejects_an_empty_name(records: list[dict[str, Any]]) -> None:
    with pytest.raises(UsageError, match="bad --sort"):
        sort_records(records, "-")


def test_best_run(records: list[dict[str, Any]]) -> None:
    assert best_run(records, "loss") == "cccccccccccc"
    assert best_run(records, "-accuracy") == "cccccccccccc"
    assert best_run(records, "accuracy") == "aaaaaaaaaaaa"
    assert best_run(records, None) is None


def test_best_run_only_considers_succeeded_runs() -> None:
    recs = [
        run("a" * 12, {}, {"loss": 0.5}),
        run("b" * 12, {}, {"loss": 0.1}, status="failed", reason="timeout after 60s"),
    ]
    assert best_run(recs, "loss") == "a" * 12
    assert best_run([recs[1]], "loss") is None


def test_best_run_unknown_metric(records: list[dict[str, Any]]) -> None:
    with pytest.raises(UsageError, match="unknown metric"):
        best_run(records, "f1")


@pytest.mark.parametrize(
    ("metrics", "expected"),
    [
        ({"loss": 1, "accuracy": 1}, "loss"),
        ({"train_loss": 1, "val_loss": 1}, "val_loss"),
        ({"accuracy": 1}, "-accuracy"),
        ({"mystery": 1}, None),
        ({}, None),
    ],
)
def test_default_sort_guesses_the_objective(metrics: dict[str, Any], expected: str | None) -> None:
    assert default_sort([run("a" * 12, {}, metrics)]) == expected


# --------------------------------------------------------------------------- render: table


def test_table_has_the_documented_columns(records: list[dict[str, Any]]) -> None:
    text = render(records)
    header = text.splitlines()[0].split()
    assert header == [
        "run_id",
        "status",
        "optimizer.lr",
        "optimizer.name",
        "accuracy",
        "loss",
        "duration",
    ]
    assert "seed" not in text  # constant across the runs
    assert "failed: exit code 3" in text
    assert "2m05s" in text and "12.5s" in text
    assert "\x1b[" not in text


def test_table_marks_the_best_run(records: list[dict[str, Any]]) -> None:
    lines = render(records, sort="loss").splitlines()
    best_lines = [line for line in lines if "★" in line]
    assert len(best_lines) == 1
    assert "cccccccccccc" in best_lines[0]
    rows = [line for line in lines if "succeeded" in line or "failed" in line]
    assert rows[0].split()[0] == "★"
    assert "dddddddddddd" in rows[-1]  # no loss: last


def test_table_has_no_marker_column_without_sort(records: list[dict[str, Any]]) -> None:
    assert "★" not in render(records)


def test_table_in_colour(records: list[dict[str, Any]]) -> None:
    text = render(records, sort="loss", color=True)
    assert "\x1b[" in text
    assert "cccccccccccc" in text


def test_table_is_never_wrapped_or_truncated() -> None:
    long_value = "x" * 150
    recs = [run("a" * 12, {"path": long_value}), run("b" * 12, {"path": "short"})]
    assert long_value in render(recs)


def test_table_where_and_empty_results(records: list[dict[str, Any]]) -> None:
    text = render(records, where=["optimizer.name=SGD"])
    assert "aaaaaaaaaaaa" in text and "cccccccccccc" not in text
    assert render(records, where=["loss>5"]) == "no runs match --where"
    assert render([]) == "no runs"


def test_table_shows_floats_as_floats() -> None:
    recs = [run("a" * 12, {"lr": 1.0}), run("b" * 12, {"lr": 2})]
    rows = render(recs).splitlines()[2:]
    assert rows[0].split()[2] == "1.0"
    assert rows[1].split()[2] == "2"


# --------------------------------------------------------------------------- render: json


def test_json_is_the_contract_run_object_plus_config(records: list[dict[str, Any]]) -> None:
    text = render(records, fmt="json", sort="loss")
    runs = json.loads(text)
    assert [r["run_id"] for r in runs] == ids(sort_records(records, "loss"))
    for run_object in runs:
        assert set(run_object) == {"run_id", "status", "overrides", "image_id", "metrics", "config"}
    assert runs[0]["config"] == {"optimizer": {"name": "adam", "lr": 0.1}, "seed": 0}
    assert text == json.dumps(runs, indent=2, sort_keys=True, ensure_ascii=False)


def test_json_of_nothing_is_an_empty_list() -> None:
    assert json.loads(render([], fmt="json")) == []


# --------------------------------------------------------------------------- render: csv


def test_csv(records: list[dict[str, Any]]) -> None:
    text = render(records, fmt="csv", sort="-accuracy")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["run_id", "status", "optimizer.lr", "optimizer.name", "accuracy", "loss"]
    assert rows[1] == ["cccccccccccc", "succeeded", "0.1", "adam", "0.9", "0.2"]
    assert rows[-1] == ["dddddddddddd", "failed", "0.001", "adam", "", ""]
    assert len(rows) == 5


def test_csv_keeps_full_precision_and_quotes_commas() -> None:
    recs = [
        run("a" * 12, {"name": "a,b"}, {"loss": 0.123456789123}),
        run("b" * 12, {"name": "c"}, {"loss": 1}),
    ]
    rows = list(csv.reader(io.StringIO(render(recs, fmt="csv"))))
    assert rows[1] == ["a" * 12, "succeeded", "a,b", "0.123456789123"]


def test_csv_of_nothing_is_just_the_header() -> None:
    assert render([], fmt="csv") == "run_id,status\n"


def test_csv_records_all_end_with_a_newline(records: list[dict[str, Any]]) -> None:
    text = render(records, fmt="csv")
    assert text.endswith("\n") and not text.endswith("\n\n")
    assert "\r" not in text


# --------------------------------------------------------------------------- render: markdown


def test_markdown(records: list[dict[str, Any]]) -> None:
    lines = render(records, fmt="markdown", sort="loss").splitlines()
    assert lines[0] == (
        "|  | run_id | status | optimizer.lr | optimizer.name | accuracy | loss | duration |"
    )
    assert lines[1] == "| --- | --- | --- | --- | --- | ---: | ---: | ---: |"
    assert lines[2] == "| ★ | cccccccccccc | succeeded | 0.1 | adam | 0.9 | 0.2 | 2m05s |"
    assert lines[-1] == "|  | dddddddddddd | failed: exit code 3 | 0.001 | adam | - | - | 12.5s |"


def test_markdown_escapes_pipes() -> None:
    recs = [run("a" * 12, {"expr": "a|b"}), run("b" * 12, {"expr": "c"})]
    assert "a\\|b" in render(recs, fmt="markdown")


# --------------------------------------------------------------------------- render: errors


def test_unknown_format_lists_the_valid_ones(records: list[dict[str, Any]]) -> None:
    with pytest.raises(
        UsageError, match=r"^unknown format 'xml' \(valid: table, json, csv, markdown\)$"
    ):
        render(records, fmt="xml")


@pytest.mark.parametrize("fmt", ["table", "json", "csv", "markdown"])
def test_every_format_validates_sort_and_where(records: list[dict[str, Any]], fmt: str) -> None:
    with pytest.raises(UsageError, match="unknown metric"):
        render(records, fmt=fmt, sort="f1")
    with pytest.raises(UsageError, match="bad --where"):
        render(records, fmt=fmt, where=["bogus"])


def test_sort_is_checked_against_all_runs_not_just_the_selected_ones(
    records: list[dict[str, Any]],
) -> None:
    # Only the failed run remains: --sort loss is still a known metric of the sweep.
    text = render(
        records, fmt="csv", sort="loss", where=["optimizer.lr<0.01", "optimizer.name=adam"]
    )
    assert text.splitlines()[1].startswith("dddddddddddd,failed")


# --------------------------------------------------------------------------- runs_table


def test_runs_table_lists_sweeps_newest_first() -> None:
    sweeps = [
        {
            "sweep_id": "111111111111",
            "created_at": "2026-11-27T10:00:00.000Z",
            "project": "demo",
            "args": ["optimizer=SGD,adam"],
        },
        {
            "sweep_id": "222222222222",
            "created_at": "2026-11-28T09:30:00.000Z",
            "project": "seedproj",
            "args": ["lr=0.1,0.01", "seed=1,2"],
        },
    ]
    counts = {"111111111111": {"succeeded": 3, "failed": 1, "running": 0}}
    lines = runs_table(sweeps, counts).splitlines()
    assert lines[0].split() == ["SWEEP", "CREATED", "PROJECT", "OK", "FAILED", "RUNNING", "ARGS"]
    assert lines[1].split() == [
        "222222222222",
        "2026-11-28",
        "09:30:00",
        "seedproj",
        "0",
        "0",
        "0",
        "lr=0.1,0.01",
        "seed=1,2",
    ]
    assert lines[2].split() == [
        "111111111111",
        "2026-11-27",
        "10:00:00",
        "demo",
        "3",
        "1",
        "0",
        "optimizer=SGD,adam",
    ]
    assert len(lines) == 3


def test_runs_table_without_sweeps() -> None:
    assert runs_table([], {}) == "no sweeps"


def test_public_surface_of_results() -> None:
    import orchestrator.results as results

    assert sorted(results.__all__) == [
        "Diff",
        "FORMATS",
        "MISSING",
        "best_run",
        "compare",
        "default_sort",
        "diff_to_json",
        "render",
        "render_diff",
        "render_rows",
        "runs_table",
        "select",
        "sort_records",
        "varying_keys",
        "write_report",
    ]
    for name in results.__all__:
        assert hasattr(results, name)


def test_a_metric_named_like_a_config_key_gets_its_own_column_name() -> None:
    records = [run("aaaaaaaaaaaa", {"loss": "l1"}, {"loss": 0.5}),
               run("bbbbbbbbbbbb", {"loss": "l2"}, {"loss": 0.4})]
    header = render(records, "csv").splitlines()[0].split(",")
    assert header == ["run_id", "status", "loss", "metrics.loss"]
    table_header = render(records, "table").splitlines()[0].split()
    assert "loss" in table_header and "metrics.loss" in table_header


def test_a_metric_name_with_a_newline_stays_on_the_header_line() -> None:
    records = [run("aaaaaaaaaaaa", {"x": 1}, {"bad\nname": 1.0}),
               run("bbbbbbbbbbbb", {"x": 2}, {"bad\nname": 2.0})]
    table = render(records, "table").splitlines()
    assert "bad\\nname" in table[0]
    assert len(table) == 2 + 2  # header, rule, two runs


def test_markdown_escapes_html() -> None:
    records = [run("aaaaaaaaaaaa", {"note": "<script>alert(1)</script>"}, {"m": 1.0}),
               run("bbbbbbbbbbbb", {"note": "plain"}, {"m": 2.0})]
    out = render(records, "markdown")
    assert "<script>" not in out and "&lt;script&gt;" in out
