"""``podman_per_run_ratio``: orch's cost per run on rootful Podman, through its
Docker-compatible socket, against a bare ``podman run --rm BASE true`` on the same storage.

The section starts a Podman service of its own (``tests/podman.py``: its own storage on a
tmpfs, its own socket, removed at the end) and gives it the shared base image. A warm-up
sweep builds the environment and code images there; then 16-run sweeps (``--jobs 1``, a
fresh store and new points each time, so every run image is new) alternate with groups of
bare ``podman run``s, as ``per_run`` does on Docker.
"""

from __future__ import annotations

import json
import shutil
import sys
from typing import Any

from common import ORCH, REPO, BenchError, BenchSkipped, Stat, log, paired, ratio, run_timed
from context import Ctx


def podman(ctx: Ctx) -> dict[str, Any]:
    if shutil.which("podman") is None:
        raise BenchSkipped("podman is not installed (make setup installs it)")
    sys.path.insert(0, str(REPO / "tests"))
    from podman import copy_base_image, podman_service  # tests/podman.py

    with podman_service(ctx.janitor.tempdir("podman-")) as service:
        log("podman: the base image onto a Podman service of the section's own")
        copy_base_image(service, ctx.base_id)
        env = {"DOCKER_HOST": service.docker_host}
        cli_env = dict(service.env)
        project = ctx.project()
        sweeps = iter(range(1_000_000))

        def sweep(count: int) -> float:
            # A new seed each time: new run ids and run images, nothing skipped.
            points = [f"optimizer.lr=range(0,{count})"] if count > 1 else []
            argv = [ORCH, "sweep", "-p", str(project), "--store",
                    str(ctx.store("podman")), "--jobs", "1", "--json", *points,
                    f"training_settings.seed={5000 + next(sweeps)}"]
            timed = run_timed(ctx.janitor, argv, env=env, timeout=600, check=False)
            if timed.returncode != 0:
                raise BenchError(f"orch sweep on Podman exited {timed.returncode}: "
                                 f"{timed.stderr.strip().splitlines()[-1:]}")
            runs = json.loads(timed.stdout)["runs"]
            if {r["status"] for r in runs} != {"succeeded"}:
                raise BenchError(f"orch sweep on Podman: a run did not succeed: {runs[0]}")
            return timed.seconds

        floor = ctx.row("podman", Stat("floor: podman run --rm BASE true (interleaved)"))
        n = ctx.size(16, 16, 4)
        per = ctx.row("podman", Stat(f"orch sweep on Podman, {n} runs, --jobs 1: wall / {n}"))

        def floor_group(count: int) -> list[float]:
            samples = []
            for _ in range(count):
                timed = run_timed(ctx.janitor, service.cli("run", "--rm", ctx.base_id, "true"),
                                  env=cli_env, timeout=120)
                floor.add(timed.seconds)
                samples.append(timed.seconds)
            return samples

        log("podman: warm-up sweep (environment and code images on Podman)")
        sweep(2)
        groups = [floor_group(2)]
        reps = ctx.reps(4, 2)
        for rep in range(reps):
            wall = sweep(n)
            per.add(wall / n)
            log(f"podman {rep + 1}/{reps}: {wall:.2f}s for {n} runs ({wall / n:.3f}s/run)")
            groups.append(floor_group(ctx.size(3, 3, 1)))
    return {
        "floor_podman_run_s": floor.median,
        "orch_podman_per_run_s": per.median,
        "podman_per_run_ratio": ratio(per.median, floor.median),
        "podman_per_run_ratio_paired": paired(per.samples, groups),
    }
