"""The search issue's "done when", reduced: a TPE search with the median pruner over the
demo tree, two trials at a time, killed (SIGKILL), interrupted (Ctrl-C as a terminal sends
it) and re-submitted, repeats no trial and ends with every trial; each trial then reruns by
its image digest with identical metrics (a pruned one: the same curve up to where it was
stopped). ``scripts/search_resume.py`` is the scenario; ``--trials 30`` is the full run."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import search_resume  # noqa: E402

pytestmark = pytest.mark.docker


def test_a_killed_and_interrupted_search_repeats_nothing_and_every_trial_reruns(
    make_project: Callable[..., Path], tmp_path: Path,
) -> None:
    root = make_project("resume")
    store = tmp_path / "store"
    figures = search_resume.check(root, store, trials=7, jobs=2, seed=3, timeout=400)
    assert figures["killed_exit"] == -9
    assert figures["ctrl_c_exit"] == 130  # drained: the runs in flight finished first
    assert figures["final_exit"] == 0, figures
    assert 0 < figures["trials_after_kill"] <= figures["trials_after_ctrl_c"] < 7
    assert figures["trials"] == 7 and figures["numbers_ok"]
    assert figures["repeats"] == 0, figures
    assert sum(figures["statuses"].values()) == 7
    assert set(figures["statuses"]) <= {"succeeded", "pruned"}
    assert figures["reruns"] == 7
    assert figures["reruns_identical"] == 7, figures["rerun_failures"]

    # The results know the search: its trials in trial order with the best so far, then
    # the reruns; the table adds the search block, the report its chart.
    (doc,) = [p for p in (store / "sweeps").glob("*.json") if not p.name.endswith(".index.json")]
    sweep_id = doc.stem
    trials = json.loads(doc.read_text())["search"]["trials"]
    listed = json.loads(_orch("results", sweep_id, "--store", str(store), "-p", str(root),
                              "--format", "json"))
    assert [r["run_id"] for r in listed[:7]] == [t["run_id"] for t in trials]
    assert [r.get("trial") for r in listed] == [*range(7), *[None] * 7]  # 7 reruns after
    values = [r["metrics"]["test_accuracy"] if r["status"] == "succeeded" else None
              for r in listed[:7]]
    assert listed[6]["best_so_far"] == max(v for v in values if v is not None)
    table = _orch("results", sweep_id, "--store", str(store), "-p", str(root))
    assert "objective test_accuracy:max" in table and "best so far" in table
    _orch("report", sweep_id, "--store", str(store), "-p", str(root), "-o",
          str(tmp_path / "report.html"))
    html = (tmp_path / "report.html").read_text()
    assert 'class="best-so-far"' in html and "test_accuracy:max by trial" in html


def _orch(*args: str) -> str:
    proc = subprocess.run([search_resume.ORCH, *args], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout
