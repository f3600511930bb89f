"""``slurm_overhead_ratio``: a 20-run sweep with ``--backend slurm --jobs 2`` against
``sbatch --array=0-19%2`` of the same number of bare ``docker run --rm BASE true``, on the
same two-node cluster (``tests/slurmcluster.py``: started by the section, removed at the
end).

Both sides are timed from the command to the last task's end: ``orch sweep`` waits for its
runs; the floor is ``sbatch --wait``. The sweep's runs write one metric and exit, so what
differs is orch: composing and baking 20 run images, writing each task's job to the store,
and per task the node's ``python -m orchestrator.backends.slurm.task`` (import, store,
Docker, claim, commit). A warm-up sweep builds the environment first; every timed sweep
has new points (a new seed), so nothing is skipped.
"""

from __future__ import annotations

import json
import shutil
import sys
from typing import Any

from common import ORCH, REPO, BenchError, BenchSkipped, Stat, log, paired, ratio, run_timed
from context import Ctx

SCRIPT = """\
import json, os
with open(os.path.join(os.environ["ORCH_OUTPUT"], "metrics.json"), "w") as f:
    json.dump({"one": 1}, f)
"""


def slurm(ctx: Ctx) -> dict[str, Any]:
    if shutil.which("slurmctld") is None or shutil.which("sbatch") is None:
        raise BenchSkipped("SLURM is not installed (make setup installs slurm-wlm and munge)")
    sys.path.insert(0, str(REPO / "tests"))
    from slurmcluster import slurm_cluster  # tests/slurmcluster.py

    n = ctx.size(20, 20, 4)
    project = ctx.script_project("slurmbench", SCRIPT, "seed: 0\nx: 0\n")
    store = ctx.store("slurm")
    logs = ctx.janitor.tempdir("slurm-logs-")
    with slurm_cluster() as cluster:
        env = dict(cluster.env)
        seeds = iter(range(1_000_000))

        def sweep(count: int) -> float:
            argv = [ORCH, "sweep", "-p", str(project), "--store", str(store), "--backend",
                    "slurm", "--jobs", "2", "--json", f"x=range(0,{count})",
                    f"seed={next(seeds)}"]
            timed = run_timed(ctx.janitor, argv, env=env, timeout=900, check=False)
            if timed.returncode != 0:
                raise BenchError(f"orch sweep --backend slurm exited {timed.returncode}: "
                                 f"{timed.stderr.strip().splitlines()[-1:]}")
            runs = json.loads(timed.stdout)["runs"]
            if [r["status"] for r in runs] != ["succeeded"] * count:
                raise BenchError(f"a run of the SLURM sweep did not succeed: {runs[0]}")
            return timed.seconds

        script = logs / "bare.sh"
        script.write_text(f"#!/bin/sh\nexec docker run --rm {ctx.base_id} true\n")

        def bare() -> float:
            argv = ["sbatch", "--wait", "--parsable", f"--array=0-{n - 1}%2",
                    f"--output={logs}/%A_%a.out", "--cpus-per-task=1", str(script)]
            return run_timed(ctx.janitor, argv, env=env, timeout=900).seconds

        floor = ctx.row("slurm", Stat(f"floor: sbatch --array=0-{n - 1}%2 of docker run true"))
        orch = ctx.row("slurm", Stat(f"orch sweep --backend slurm --jobs 2, {n} runs"))
        log("slurm: warm-up sweep (environment and code images)")
        sweep(2)
        groups = [[bare()]]
        for rep in range(ctx.reps(3, 1)):
            wall = sweep(n)
            orch.add(wall)
            groups.append([bare()])
            log(f"slurm {rep + 1}: orch {wall:.2f}s, bare array {groups[-1][0]:.2f}s")
        for group in groups:
            floor.add(group[0])
        cluster.cancel_all()
    return {
        "floor_slurm_array_s": floor.median,
        "orch_slurm_sweep_s": orch.median,
        "slurm_overhead_ratio": ratio(orch.median, floor.median),
        "slurm_overhead_ratio_paired": paired(orch.samples, groups),
    }
