"""``cancel_all_s``: from the second Ctrl-C to every container gone and every record
committed, with 4 runs in flight (an absolute figure: there is no floor to divide by).

A sweep of 4 long runs (``--jobs 4``) is started as a terminal starts a foreground job
(its own process group, SIGINT's default handler), and once all 4 containers run, SIGINT
is sent to the group twice. The clock stops when the sweep has exited, no container of
its runs is left and all 4 ``run.json`` say ``cancelled``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from common import ORCH, BenchError, Stat, docker_ids, log
from context import Ctx

RUNS = 4
_JOB = """\
import json, os, time
cfg = json.load(open("/orch/config.json"))
for step in range(600):
    with open(os.path.join(os.environ["ORCH_OUTPUT"], "metrics.jsonl"), "a") as f:
        f.write(json.dumps({"step": step, "x": cfg["x"]}) + "\\n")
    time.sleep(0.1)
"""
_RESTORE_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execvp(sys.argv[1], sys.argv[1:])"
)



def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise BenchError(f"cancel: timed out waiting for {what}")
        time.sleep(0.05)


def cancel(ctx: Ctx) -> dict[str, Any]:
    root = ctx.script_project(f"{ctx.name}-cancel", _JOB, "x: 0\nrepeat: 0\n")
    stat = ctx.row("cancel", Stat("second Ctrl-C -> 4 containers gone, 4 records committed"))
    for repeat in range(ctx.reps(3, 1)):
        store = ctx.store(f"cancel{repeat}")
        runs = store / "runs"
        argv = [ORCH, "sweep", "-p", str(root), "--store", str(store), "--jobs", str(RUNS),
                f"x=range(0,{RUNS})", f"repeat={repeat}", "--json"]
        proc = subprocess.Popen(["setsid", "python3", "-c", _RESTORE_SIGINT, *argv],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ctx.janitor.track(proc)
        try:
            _wait(lambda runs=runs: len(list(runs.glob("*/live.json"))) == RUNS, 120,
                  "4 runs in flight")
            os.killpg(proc.pid, signal.SIGINT)
            time.sleep(0.3)
            start = time.monotonic()
            os.killpg(proc.pid, signal.SIGINT)

            def done(proc: subprocess.Popen[bytes] = proc, runs: Path = runs) -> bool:
                if proc.poll() is None:
                    return False
                if docker_ids(["--filter", f"label=org.orch.project={ctx.name}-cancel"]):
                    return False
                records = [json.loads(p.read_text()) for p in runs.glob("*/run.json")]
                return len(records) == RUNS and all(r["status"] == "cancelled" for r in records)

            _wait(done, 120, "the cancel to complete")
            stat.add(time.monotonic() - start)
            log(f"cancel: {stat.samples[-1]:.2f}s (exit {proc.returncode})")
        finally:
            ctx.janitor.untrack(proc)
    return {"cancel_all_s": stat.median}
