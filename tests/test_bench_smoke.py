"""Every section of ``make bench`` still runs on the current code (issue #28): one
``bench/run.py --smoke`` over all of them, the opt-in diagnostics included, and per
section a test that it produced its figures.

``--smoke`` is the least of everything (one repeat, sweeps of a few runs, a few MB where
the bench moves a GB, the environment sections on a two-wheel lock): no figure means
anything and none is compared with a goal. The point is that a renamed function, a new
required field or a changed output breaks a test here, not a figure of the next full run.

The sections come from the harness itself (``bench/run.py --list``): a section registered
there, with the keys it produces, is smoked here without a change to this file. The
S3 sections share the test session's SeaweedFS server (``ORCH_BENCH_S3_ENDPOINT``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
from helpers import REPO
from seaweed import shared_seaweed

pytestmark = [pytest.mark.docker, pytest.mark.s3, pytest.mark.ray, pytest.mark.slow]

RUN = REPO / "bench" / "run.py"


def _listing() -> dict[str, Any]:
    proc = subprocess.run([sys.executable, str(RUN), "--list"], capture_output=True,
                          text=True, check=True, cwd=REPO, timeout=120)
    listing: dict[str, Any] = json.loads(proc.stdout)
    return listing


LISTING = _listing()
SECTIONS: list[str] = LISTING["sections"]


@pytest.fixture(scope="session")
def smoke(base_image: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The final JSON line of one smoke run of every section, and its stderr; the wall
    time of each section is in the JSON (``section_s``), kept as bench-smoke.json in the
    session's base temporary directory."""
    endpoint = shared_seaweed(tmp_path_factory.getbasetemp())
    env = {**os.environ, "ORCH_BENCH_S3_ENDPOINT": endpoint}
    proc = subprocess.run(
        [sys.executable, str(RUN), "--smoke", "--only", ",".join(SECTIONS)],
        capture_output=True, text=True, timeout=1800, cwd=REPO, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    # kept for reading (section_s: each section's wall), never compared with anything
    (tmp_path_factory.getbasetemp() / "bench-smoke.json").write_text(json.dumps(result))
    return {"result": result, "stderr": proc.stderr}


def test_every_goal_has_a_section_that_produces_it() -> None:
    produced = {key for keys in LISTING["produces"].values() for key in keys}
    assert set(LISTING["goals"]) <= produced, sorted(set(LISTING["goals"]) - produced)
    assert set(LISTING["produces"]) <= set(SECTIONS)


@pytest.mark.parametrize("section", SECTIONS)
def test_the_section_runs_and_produces_its_keys(smoke: dict[str, Any], section: str) -> None:
    result = smoke["result"]
    assert result["smoke"] is True
    if section in result["skipped"]:  # a service it needs is absent (common.BenchSkipped)
        pytest.skip(f"{section}: {result['skipped'][section]}")
    keys = LISTING["produces"].get(section)
    assert keys, f"bench/run.py registers no keys for section {section} (PRODUCES)"
    for key in keys:
        assert key not in result["notes"], f"{key}: {result['notes'][key]}"
        value = result[key]
        assert isinstance(value, (int, float)) and value > 0, (key, value)
    assert section in result["section_s"]


def test_no_section_left_a_note(smoke: dict[str, Any]) -> None:
    """A note is a figure not measured or a diagnostic (a per-stage trace) that failed;
    only a skipped section's keys (a service absent, reason stated) may have one."""
    result = smoke["result"]
    excused = {key for name in result["skipped"] for key in LISTING["produces"].get(name, [])}
    assert {k: v for k, v in result["notes"].items() if k not in excused} == {}
    assert "Traceback" not in smoke["stderr"], smoke["stderr"][-3000:]


def test_raw_figures_beside_the_ratios(smoke: dict[str, Any]) -> None:
    """Each ratio keeps its numerator and denominator (spot checks, exact arithmetic)."""
    result = smoke["result"]
    pairs = {
        "hydra_app_per_run_ratio": ("hydra_app_orch_per_run_s", "hydra_app_floor_s"),
        "project_cold_build_ratio": ("project_cold_build_s", "project_docker_build_s"),
        "project_per_run_ratio": ("project_per_run_s", "project_pip_image_run_s"),
        "torch_cold_build_ratio": ("torch_cold_build_s", "torch_docker_build_s"),
        "per_run_overhead_ratio": ("orch_per_run_s", "floor_docker_run_s"),
    }
    for key, (num, den) in pairs.items():
        assert result[num] > 0 and result[den] > 0, key
        assert result[key] == pytest.approx(result[num] / result[den], rel=2e-3), key
    assert result["hydra_app_run_image_s"] > 0
    assert result["hydra_app_runs_per_sweep"] == 2
    # the cold build's per-stage trace is there: a renamed stage would have failed it
    assert result["project_cold_stage_compile_bytecode_container_s"] > 0
    assert result["project_cold_stage_docker_loads"] >= 1

