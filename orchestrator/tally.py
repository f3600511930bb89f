"""How far along each sweep is: its runs counted by state (what ``orch runs`` shows).

A run with ``run.json`` counts under its recorded status. A run without one is either
``running`` (someone holds a live claim on it: renewed within the lease) or ``queued``
(nobody does: not started yet, or its holder died and a re-submission will redo it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from .record import SweepDoc
from .store import RunStore


def tally_sweep(
    runs: RunStore, sweep: SweepDoc, lease_s: float, workers: int = 16
) -> dict[str, int]:
    """The sweep's runs by state: recorded statuses, then ``running`` and ``queued``."""
    run_ids = sweep.run_ids
    # The sweep's index answers for every completed run in one read; only runs missing
    # from it are read one by one (in parallel) - never the sweep document again.
    records = runs.read_runs(run_ids, workers, sweep_id=sweep.sweep_id)
    counts: Counter[str] = Counter(r.status.value for r in records if r is not None)
    incomplete = [run_id for run_id, r in zip(run_ids, records, strict=True) if r is None]
    if incomplete:
        with ThreadPoolExecutor(max_workers=min(workers, len(incomplete))) as pool:
            live = list(pool.map(lambda run_id: runs.claims.is_live(run_id, lease_s), incomplete))
        counts["running"] += sum(live)
        counts["queued"] += len(live) - sum(live)
    return {state: n for state, n in counts.items() if n}


def tally_sweeps(
    runs: RunStore, sweeps: Sequence[SweepDoc], lease_s: float
) -> dict[str, dict[str, int]]:
    """:func:`tally_sweep` of each sweep, by sweep id."""
    return {sweep.sweep_id: tally_sweep(runs, sweep, lease_s) for sweep in sweeps}
