"""Corrupt records, as a power cut or a bad copy leaves them: one bad object never breaks a
whole command, and a re-submission repairs what it can.

Readers of many records skip a bad one with one ``warning:`` line naming it; a sweep
re-submitted over an unreadable ``run.json`` keeps the bad bytes (``run.json.corrupt``)
and runs that run again.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = [pytest.mark.faults, pytest.mark.docker]

Orch = Callable[..., subprocess.CompletedProcess[str]]


@pytest.mark.parametrize("damage", [b"", b'{"run_id": "x"', b'{"run_id": 1, "status": []}'])
def test_a_corrupt_run_json_is_skipped_then_rerun(
    make_project: Callable[..., Path], orch: Orch, damage: bytes,
    record_property: Callable[[str, object], None],
) -> None:
    root = make_project(f"corrupt{len(damage)}")
    first = orch("sweep", "-p", str(root), "optimizer=SGD,adam", "--json")
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    bad, good = (run["run_id"] for run in result["runs"])
    run_json = root / ".orch" / "runs" / bad / "run.json"
    run_json.write_bytes(damage)
    sweep_doc = root / ".orch" / "sweeps" / f"{result['sweep_id']}.index.json"
    sweep_doc.unlink()  # the index would answer for the run; make readers meet run.json

    listing = orch("results", result["sweep_id"], "-p", str(root), "--format", "json")
    assert listing.returncode == 0, listing.stderr
    assert [row["run_id"] for row in json.loads(listing.stdout)] == [good]
    warnings = [line for line in listing.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and f"runs/{bad}/run.json" in warnings[0]
    assert orch("runs", "-p", str(root)).returncode == 0

    again = orch("sweep", "-p", str(root), "optimizer=SGD,adam", "--json")
    assert again.returncode == 0, again.stderr
    statuses = {r["run_id"]: r["status"] for r in json.loads(again.stdout)["runs"]}
    assert statuses == {bad: "succeeded", good: "skipped"}
    assert json.loads(run_json.read_text())["status"] == "succeeded"
    assert (run_json.parent / "run.json.corrupt").read_bytes() == damage
    record_property("faults_survived", 1)


def test_a_truncated_sweep_record_leaves_the_others_listed(
    make_project: Callable[..., Path], orch: Orch,
    record_property: Callable[[str, object], None],
) -> None:
    root = make_project("truncsweep")
    one = json.loads(orch("sweep", "-p", str(root), "optimizer=SGD", "--json").stdout)
    two = json.loads(orch("sweep", "-p", str(root), "optimizer=adam", "--json").stdout)
    path = root / ".orch" / "sweeps" / f"{one['sweep_id']}.json"
    path.write_bytes(path.read_bytes()[:20])
    # the finished sweep's index keeps a copy of its document: it is still listed
    listed = orch("runs", "-p", str(root))
    assert listed.returncode == 0, listed.stderr
    assert one["sweep_id"] in listed.stdout and two["sweep_id"] in listed.stdout
    # without that copy, it is skipped and named
    (root / ".orch" / "sweeps" / f"{one['sweep_id']}.index.json").unlink()
    proc = orch("runs", "-p", str(root))
    assert proc.returncode == 0, proc.stderr
    assert two["sweep_id"] in proc.stdout and one["sweep_id"] not in proc.stdout
    assert any(line.startswith("warning:") and one["sweep_id"] in line
               for line in proc.stderr.splitlines())
    record_property("faults_survived", 1)


def test_a_directory_where_a_claim_belongs_is_named_not_waited_for(
    make_project: Callable[..., Path], orch: Orch,
    record_property: Callable[[str, object], None],
) -> None:
    root = make_project("claimdir")
    planned = json.loads(orch("sweep", "-p", str(root), "optimizer=SGD", "--dry-run",
                              "--json").stdout)
    assert planned["points"]
    first = orch("sweep", "-p", str(root), "optimizer=SGD", "--json", "--retry", "none")
    run_id = json.loads(first.stdout)["runs"][0]["run_id"]
    run_json = root / ".orch" / "runs" / run_id / "run.json"
    run_json.unlink()  # as if never finished, and a claim.json that is a directory
    (run_json.parent / "claim.json").mkdir()
    again = orch("sweep", "-p", str(root), "optimizer=SGD", "--json", timeout=60)
    assert again.returncode == 2, again.stderr
    last = again.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "claim.json is a directory" in last
    record_property("faults_survived", 1)
