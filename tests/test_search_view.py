"""What results and reports show for a search: trial order, best so far, importances; and
the pieces a resumed search relies on (the stored space, stop requests per attempt, the
rerun of a pruned trial)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.compose.config import Composer
from orchestrator.compose.space import Space, parse_space
from orchestrator.drivers.rerun import compare_curves
from orchestrator.drivers.search.view import MIN_IMPORTANCE_TRIALS, SearchView
from orchestrator.results import render
from orchestrator.store import MemoryStore, RunStore

REPO = Path(__file__).resolve().parent.parent
SPACE = ["optimizer.lr=tag(log, interval(1e-4,1e-1))", "model.hidden_size=int(interval(8,64))",
         "optimizer=SGD,adam", "dataset=all"]


def _search(n: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A search document's ``search`` and its runs' records: accuracy grows with
    hidden_size; every fourth trial pruned; records listed newest first."""
    space = parse_space(SPACE, Composer(REPO / "configs"))
    trials, records = [], []
    for number in range(n):
        params = {"optimizer.lr": 10 ** (-4 + 3 * ((number * 7) % n) / n),
                  "model.hidden_size": 8 + (number * 5) % 57,
                  "optimizer": ("SGD", "adam")[number % 2]}
        run_id = f"run{number:09d}"
        trials.append({"number": number, "run_id": run_id, "params": params})
        pruned = number % 4 == 3
        records.append({"run_id": run_id, "status": "pruned" if pruned else "succeeded",
                        "metrics": {"accuracy": params["model.hidden_size"] / 100}})
    search = {"sampler": "tpe", "objective": ["accuracy:max"], "space": space.to_json(),
              "trials": trials}
    return search, records[::-1]


def test_trials_in_order_with_the_best_so_far() -> None:
    search, records = _search(8)
    view = SearchView.build(search, records, importances=False)
    assert [row.number for row in view.trials] == list(range(8))
    values = [row.value for row in view.trials]
    assert values[3] is None and values[7] is None  # pruned: no final value
    best, running = [], None
    for value in values:
        running = value if running is None or (value is not None and value > running) else running
        best.append(running)
    assert [row.best for row in view.trials] == best
    ordered = view.ordered([*records, {"run_id": "rerun0000001", "status": "succeeded"}])
    assert [r.get("trial") for r in ordered] == [*range(8), None]
    listed = render(ordered, "json")
    assert '"trial": 0' in listed and '"best_so_far": 0.08' in listed
    text = view.text()
    assert "search: tpe, 8 trials (2 pruned, 6 succeeded), objective accuracy:max" in text
    assert "importances" not in text


def test_importances_only_with_enough_finished_trials() -> None:
    few, records = _search(MIN_IMPORTANCE_TRIALS)  # one of them pruned: too few
    assert SearchView.build(few, records).importances == ()
    search, records = _search(24)
    importances = dict(SearchView.build(search, records).importances)
    assert set(importances) == {"optimizer.lr", "model.hidden_size", "optimizer"}
    assert abs(sum(importances.values()) - 1) < 1e-6
    assert max(importances, key=importances.__getitem__) == "model.hidden_size"
    assert "parameter importances (Optuna): model.hidden_size" in SearchView.build(
        search, records).text()


def test_the_stored_space_reads_back() -> None:
    space = parse_space(SPACE, Composer(REPO / "configs"))
    assert Space.from_json(space.to_json()).to_json() == space.to_json()
    assert Space.from_json([{"key": "x", "kind": "float"}, "junk"]).items == ()


def test_a_stop_request_is_for_the_attempt_it_names() -> None:
    runs = RunStore(MemoryStore())
    runs.request_stop("abc123def456", "pruned at step 3", owner="driver-a")
    assert runs.read_stop_request("abc123def456", "driver-a") == "pruned at step 3"
    # A later submission's attempt is not stopped by a dead driver's request.
    assert runs.read_stop_request("abc123def456", "driver-b") is None
    runs.request_stop("abc123def456", "pruned at step 1")  # no owner: any attempt
    assert runs.read_stop_request("abc123def456", "driver-b") == "pruned at step 1"


def test_a_pruned_trial_reproduces_when_its_curve_does() -> None:
    original = [{"step": 1, "loss": 0.9}, {"step": 2, "loss": 0.7}]
    assert compare_curves(original, [*original, {"step": 3, "loss": 0.6}]) == []
    assert compare_curves(original, original[:1])[0].startswith("step line 2:")
    changed = compare_curves(original, [original[0], {"step": 2, "loss": 0.71}])
    assert changed == ["step line 2: loss: 0.7 -> 0.71"]
    assert compare_curves([], original) != []


def test_the_report_of_a_search_has_its_chart_importances_and_pruned_count() -> None:
    from orchestrator.results.report import render_report

    search, records = _search(12)
    for record in records:
        number = int(str(record["run_id"])[3:])
        record["config"] = {"model": {"hidden_size": search["trials"][number]["params"][
            "model.hidden_size"]}}
    view = SearchView.build(search, records)
    html = render_report({"sweep_id": "s1", "runs": []}, view.ordered(records), "-accuracy",
                         search=view.to_json())
    assert 'class="best-so-far"' in html and "accuracy:max by trial" in html
    assert "Parameter importances" in html and "model.hidden_size" in html
    assert "<b>3</b><span>pruned</span>" in html and "<b>0</b><span>failed</span>" in html
