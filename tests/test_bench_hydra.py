"""The ``hydra_app`` bench section (``bench/hydra_bench.py``) still runs: a smoke of it at
its ``--quick`` size (a 2-run warm-up and one 4-run sweep of the tiny ``@hydra.main``
application, against 6 bare ``docker run``s), through ``bench/run.py`` as ``make bench``
starts it. No timing goal here: only that the section is registered, measures, and puts
its key and raw seconds in the final JSON line.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import REPO

pytestmark = [pytest.mark.docker]


def test_the_section_runs_and_reports_its_ratio(base_image: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--only", "hydra_app", "--quick"],
        capture_output=True, text=True, timeout=1200, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "hydra_app_per_run_ratio" not in result["notes"], result["notes"]
    ratio = result["hydra_app_per_run_ratio"]
    assert isinstance(ratio, float) and ratio > 0
    orch_s, floor_s = result["hydra_app_orch_per_run_s"], result["hydra_app_floor_s"]
    assert orch_s > 0 and floor_s > 0
    assert ratio == pytest.approx(orch_s / floor_s, rel=1e-3)
    assert result["hydra_app_run_image_s"] > 0
    assert result["hydra_app_runs_per_sweep"] == 4
