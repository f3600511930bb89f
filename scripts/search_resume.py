"""The search issue's "done when", for real: a TPE search with ``--pruner median`` over the
demo tree (``configs/`` + ``train.py``), ``--jobs 2``, interrupted twice - SIGKILL of the
submitter mid-search, then Ctrl-C as a terminal sends it (SIGINT to the process group) -
and re-submitted until done; then every trial rerun by digest.

What it checks, and prints as one JSON object on the last line of stdout:

- ``repeats``: trials that finished twice (a record with ``attempt`` > 1, or a run id
  listed for two trials, or a trial whose parameters changed between submissions): 0;
- ``trials``: the search ends with exactly ``--trials`` trials numbered 0..N-1;
- ``reruns_identical``: ``orch rerun <image digest>`` of every trial exits 0 (identical
  metrics; a pruned trial's rerun passes through the same curve up to where it stopped).

    .venv/bin/python scripts/search_resume.py --trials 30      # the issue's figures
    .venv/bin/python scripts/search_resume.py --trials 7 --store /tmp/s

``tests/test_search_resume.py`` runs the same check with fewer trials.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
ORCH = str(Path(sys.executable).with_name("orch"))

#: The demo's search space; epoch_sleep spreads the 20 epochs over a few seconds, so the
#: pruner sees a curve while the container still runs (train.py reads it).
SPACE = (
    "optimizer.lr=tag(log, interval(1e-3,3e-1))",
    "model.hidden_size=int(interval(4,32))",
    "optimizer=SGD,adam",
    "+training_settings.epoch_sleep=0.1",
)

#: Restores SIGINT's default before exec: a background job of a non-interactive shell
#: has it ignored, and a terminal's Ctrl-C is what this must send.
_WITH_SIGINT = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                "os.execvp(sys.argv[1], sys.argv[1:])")


def sweep_args(project: Path, store: Path, trials: int, jobs: int, seed: int) -> list[str]:
    return ["sweep", "-p", str(project), "--store", str(store), "--sampler", "tpe",
            "--trials", str(trials), "--jobs", str(jobs), "--seed", str(seed),
            "--objective", "test_accuracy:max", "--pruner", "median", *SPACE, "--json"]


def _done(store: Path) -> int:
    return len(list((store / "runs").glob("*/run.json")))


def _trials(store: Path) -> list[dict[str, Any]]:
    docs = [p for p in (store / "sweeps").glob("*.json")
            if not p.name.endswith(".index.json")]
    if not docs:
        return []
    (doc,) = docs
    trials: list[dict[str, Any]] = json.loads(doc.read_text())["search"]["trials"]
    return trials


def _interrupted(argv: Sequence[str], env: dict[str, str], store: Path, until: int,
                 how: signal.Signals, timeout: float) -> tuple[int, float]:
    """Run the submitter until ``until`` runs are complete, then send it ``how``: SIGKILL to
    the process, SIGINT to its process group (a terminal's Ctrl-C). Its exit code, wall."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", _WITH_SIGINT, *argv], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while _done(store) < until:
            if proc.poll() is not None:
                raise RuntimeError(f"the search ended before it was interrupted: "
                                   f"{proc.stderr.read() if proc.stderr else ''}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"fewer than {until} trials done in {timeout:.0f} s")
            time.sleep(0.1)
        if how is signal.SIGKILL:
            proc.kill()
        else:
            os.killpg(proc.pid, how)
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, time.perf_counter() - start


def check(project: Path, store: Path, trials: int = 30, jobs: int = 2, seed: int = 1,
          timeout: float = 1500) -> dict[str, Any]:
    """Run the whole scenario on the demo tree at ``project`` against ``store``; the
    figures (see the module doc)."""
    argv = [ORCH, *sweep_args(project, store, trials, jobs, seed)]
    # A killed submitter's claims go stale after the lease; a short lease lets the next
    # submission take its in-flight trials over in seconds instead of a minute.
    env = {**os.environ, "ORCH_LEASE_S": "6", "ORCH_LIVE_S": "0.25"}
    figures: dict[str, Any] = {"trials_asked": trials, "jobs": jobs}
    start = time.perf_counter()
    killed_rc, _ = _interrupted(argv, env, store, max(2, trials // 3), signal.SIGKILL, timeout)
    after_kill = _trials(store)
    interrupted_rc, _ = _interrupted(argv, env, store, max(4, 2 * trials // 3), signal.SIGINT,
                                     timeout)
    after_int = _trials(store)
    final = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout,
                           check=False)
    figures["search_wall_s"] = time.perf_counter() - start
    figures.update(killed_exit=killed_rc, ctrl_c_exit=interrupted_rc,
                   final_exit=final.returncode)
    if final.returncode not in (0, 1):
        raise RuntimeError(f"the last submission exited {final.returncode}: {final.stderr}")
    result = json.loads(final.stdout)
    listed = _trials(store)
    records = {r["run_id"]: json.loads((store / "runs" / r["run_id"] / "run.json").read_text())
               for r in result["runs"]}
    # A trial keeps its number, parameters and run id across submissions: each earlier
    # list is a prefix of the later one (a trial dropped from the list counts too).
    changed = sum(sum(a != b for a, b in zip(earlier, listed, strict=False))
                  + max(0, len(earlier) - len(listed)) for earlier in (after_kill, after_int))
    run_ids = [t["run_id"] for t in listed]
    figures.update(
        trials=len(listed),
        numbers_ok=[t["number"] for t in listed] == list(range(trials)),
        statuses={s: sum(r["status"] == s for r in records.values())
                  for s in sorted({r["status"] for r in records.values()})},
        pruned=sum(r["status"] == "pruned" for r in records.values()),
        trials_after_kill=len(after_kill),
        trials_after_ctrl_c=len(after_int),
        repeats=(changed + (len(run_ids) - len(set(run_ids)))
                 + sum(r.get("attempt", 1) > 1 for r in records.values())),
        best_test_accuracy=max((r["metrics"].get("test_accuracy", 0.0)
                                for r in records.values() if r["status"] == "succeeded"),
                               default=None),
    )
    rerun_start = time.perf_counter()
    identical, failures = 0, []
    for run_id in run_ids:
        target = records[run_id]["image_id"]  # by digest: the image ID is its content address
        proc = subprocess.run([ORCH, "rerun", target, "--store", str(store), "-p", str(project),
                               "--json"], env=env, capture_output=True, text=True,
                              timeout=timeout, check=False)
        if proc.returncode == 0 and json.loads(proc.stdout)["identical"]:
            identical += 1
        else:
            failures.append(f"{run_id}: exit {proc.returncode} {proc.stdout[-400:]} "
                            f"{proc.stderr[-400:]}")
    figures.update(reruns=len(run_ids), reruns_identical=identical,
                   rerun_failures=failures, rerun_wall_s=time.perf_counter() - rerun_start)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--store", type=Path, default=None, help="default: a temporary one")
    parser.add_argument("--project", type=Path, default=REPO, help="default: this repository")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="orch-search-resume-") as tmp:
        store = options.store or Path(tmp) / "store"
        figures = check(options.project, store, options.trials, options.jobs, options.seed)
    ok = (figures["repeats"] == 0 and figures["trials"] == options.trials
          and figures["reruns_identical"] == figures["reruns"])
    print(json.dumps(figures, sort_keys=True))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
