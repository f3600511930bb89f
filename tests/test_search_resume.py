"""The search issue's "done when", reduced: a TPE search with the median pruner over the
demo tree, two trials at a time, killed (SIGKILL), interrupted (Ctrl-C as a terminal sends
it) and re-submitted, repeats no trial and ends with every trial; each trial then reruns by
its image digest with identical metrics (a pruned one: the same curve up to where it was
stopped). ``scripts/search_resume.py`` is the scenario; ``--trials 30`` is the full run."""

from __future__ import annotations

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
    figures = search_resume.check(root, tmp_path / "store", trials=7, jobs=2, seed=3,
                                  timeout=400)
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
