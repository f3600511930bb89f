"""Counting a sweep's runs by state, as ``orch runs`` shows them."""

from __future__ import annotations

from orchestrator.record import RunRecord, SweepDoc
from orchestrator.store import MemoryStore, RunStore
from orchestrator.tally import tally_sweep, tally_sweeps

SWEEP = SweepDoc.from_json({
    "sweep_id": "5eed5eed5eed", "project": "proj", "created_at": "2026-01-01T00:00:00.000Z",
    "runs": [{"run_id": run_id, "overrides": []} for run_id in ("a1", "b2", "c3", "d4", "e5")],
})


def record(run_id: str, status: str) -> RunRecord:
    return RunRecord.from_json({"run_id": run_id, "sweep_id": SWEEP.sweep_id, "status": status})


def test_finished_runs_by_status_live_claims_running_the_rest_queued() -> None:
    store = MemoryStore()
    runs = RunStore(store)
    runs.write_sweep(SWEEP)
    runs.commit_run(record("a1", "succeeded"), {})
    runs.commit_run(record("b2", "failed"), {})
    assert runs.claims.claim("c3", "someone", lease_s=60)
    assert runs.claims.claim("d4", "someone else", lease_s=60)
    store.touch("runs/d4/claim.json", 120)  # its holder stopped renewing it
    assert tally_sweep(runs, SWEEP, lease_s=60) == {
        "succeeded": 1, "failed": 1, "running": 1, "queued": 2,
    }


def test_the_sweep_index_answers_for_completed_runs() -> None:
    runs = RunStore(MemoryStore())
    runs.write_sweep(SWEEP)
    runs.write_sweep_index(SWEEP.sweep_id, [record(r, "succeeded") for r in SWEEP.run_ids])
    assert tally_sweeps(runs, [SWEEP], lease_s=60) == {SWEEP.sweep_id: {"succeeded": 5}}
