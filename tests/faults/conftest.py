"""The fault suite's summary: what ``make faults`` prints last.

Tests report counters as pytest user properties (``record_property``), never through
globals, so the numbers also add up under xdist and from tests outside this directory
(tests/test_bad_input.py reports ``bad_inputs_tried``):

    bad_inputs_tried   malformed inputs refused by the CLI (tests/test_bad_input.py)
    faults_survived    injected faults after which nothing was lost or duplicated
    runs_lost          runs of a sweep with no run.json after the sweep (re)completed
    runs_duplicated    runs executed again after being recorded, or twice at once
    peak_rss_mb        the largest peak RSS of `orch sweep` in the big-output cases
                       (a maximum, not a sum: reported as ``peak_rss_mb_<case>``)

At the end of the session they are summed over every test, written as JSON to
``$ORCH_FAULTS_SUMMARY`` (else ``<basetemp>/faults-summary.json``, which
scripts/faults-summary.py finds by itself) and printed as the last lines of the output.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

COUNTERS = {
    "bad_inputs_tried": "bad inputs tried",
    "faults_survived": "faults survived",
    "runs_lost": "runs lost",
    "runs_duplicated": "runs duplicated",
    "peak_rss_mb": "peak RSS of orch sweep under big outputs (MB)",
}
SUMMARY_ENV = "ORCH_FAULTS_SUMMARY"
SUMMARY_NAME = "faults-summary.json"

_totals_key = pytest.StashKey[dict[str, int]]()


def summary_path(config: pytest.Config) -> Path:
    explicit = os.environ.get(SUMMARY_ENV)
    if explicit:
        return Path(explicit)
    return Path(config._tmp_path_factory.getbasetemp()) / SUMMARY_NAME  # type: ignore[attr-defined]


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Add the counters up (the teardown report carries every property of its test)."""
    totals = dict.fromkeys(COUNTERS, 0)
    seen = False
    for reports in terminalreporter.stats.values():
        for report in reports:
            if getattr(report, "when", None) != "teardown":
                continue
            for name, value in getattr(report, "user_properties", ()):
                if name.startswith("peak_rss_mb"):
                    totals["peak_rss_mb"] = max(totals["peak_rss_mb"], int(value))
                elif name in totals:
                    totals[name] += int(value)
                    seen = True
    if not seen:
        return
    config.stash[_totals_key] = totals
    path = summary_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(totals, indent=2, sort_keys=True) + "\n")


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Printed after pytest's own last line, so the summary really ends the output."""
    totals = config.stash.get(_totals_key, None)
    reporter = config.pluginmanager.getplugin("terminalreporter")
    if totals is None or reporter is None:
        return
    reporter.write_sep("=", "faults summary")
    for name, label in COUNTERS.items():
        reporter.write_line(f"{label}: {totals[name]}")


# tests/ is not a package, so this file and tests/conftest.py are both imported as the
# module "conftest", and whichever pytest imported last is what `from conftest import
# git_commit_all` in a test module finds. Collection imports this one before the
# test_*.py files next to tests/conftest.py ('faults' sorts first), so fall back to
# tests/conftest.py for every name not defined here.
_root: ModuleType | None = None


def __getattr__(name: str) -> Any:
    global _root
    if name.startswith("__"):
        raise AttributeError(name)
    if _root is None:
        path = Path(__file__).resolve().parent.parent / "conftest.py"
        spec = importlib.util.spec_from_file_location("_orch_tests_root_conftest", path)
        assert spec is not None and spec.loader is not None
        _root = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(_root)
    return getattr(_root, name)
