"""The ``hydra_app`` section: a tiny ``@hydra.main`` application under orch against the
same application started by a bare ``docker run`` (issue #24).

The project: ``configs/config.yaml`` with a one-group defaults list (``optimizer: sgd|adam``)
and ``app.py``, a ``@hydra.main(version_base=None, config_path="configs",
config_name="config")`` task that writes ``metrics.json`` to ``$ORCH_OUTPUT`` from its
``cfg``. Its environment is ``bench/hydra/requirements.lock``, written by pip-compile from
``hydra-core==1.3.2`` (it pins the sdist-only ``antlr4-python3-runtime==4.9.3``, which orch
builds itself). orch detects the application and starts it on the config it composed
(``--config-path=/orch/hydra --config-name=config``, see orchestrator/compose/hydra_app.py).

Setup, not timed: one warm-up sweep into the section's store (the environment built,
loaded and uploaded; the code image on the daemon). Timed, interleaved:

* ``orch sweep --jobs 1`` of ``RUNS`` points, each repeat a new grid (``seed`` values no
  earlier sweep used), so every run is new: wall / ``RUNS``;
* the floor, 3 samples before the first and after each sweep: ``docker run --rm`` of
  the project's code image (orch's environment + code, the run image's parent) as the
  same user, ``--network none`` and ``--cpus 1`` (the project's ``resources.cpus``),
  the project's ``configs/`` bind-mounted read-only over the image's copy, running
  ``python3 app.py hydra.run.dir=/tmp/out`` (the application composes its own config);
* beside it, untimed by the ratio: ``docker run --rm`` of one of orch's run images as
  orch made it (its command carries ``--config-path=/orch/hydra``): how much of a run is
  the container and how much is orch's own bookkeeping around it.

``hydra_app_per_run_ratio`` = median orch per run / median floor; ``..._paired`` is the
median of each sweep against the floor samples measured right before and after it.
Last, one more sweep runs in one process with timers around its stages
(``hydra_app_trace_*``: the fixed part before the first container, each run's container,
orch's time between two containers, the tail), to say where orch's time goes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from common import ORCH, BenchError, Stat, log, paired, ratio, run_timed
from context import Ctx

HERE = Path(__file__).resolve().parent / "hydra"
LOCK = HERE / "requirements.lock"
#: Points per measured sweep (even: two optimizers x RUNS/2 seeds); the tests shrink it.
RUNS = 16
APP = """\
import json
import os

import hydra
from omegaconf import DictConfig


@hydra.main(version_base=None, config_path="configs", config_name="config")
def main(cfg: DictConfig) -> None:
    loss = cfg.optimizer.lr / (1 + cfg.seed) + (0.1 if cfg.optimizer.name == "sgd" else 0.0)
    out = os.environ["ORCH_OUTPUT"]
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump({"loss": loss, "lr": cfg.optimizer.lr, "seed": cfg.seed}, f)


if __name__ == "__main__":
    main()
"""
CONFIGS = {
    "config.yaml": "defaults:\n  - optimizer: sgd\n  - _self_\n\nseed: 0\nepochs: 1\n",
    "optimizer/sgd.yaml": "name: sgd\nlr: 0.1\nmomentum: 0.9\n",
    "optimizer/adam.yaml": "name: adam\nlr: 0.001\nbetas: [0.9, 0.999]\n",
}
#: What orch gives every run and the floors take too: the run user, no network, one CPU.
RUN_FLAGS = ["--user", "65534:65534", "--network", "none", "--cpus", "1"]


def _project(ctx: Ctx, name: str) -> Path:
    root = ctx.janitor.tempdir("hydra-app-") / name
    for rel, text in CONFIGS.items():
        (root / "configs" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "configs" / rel).write_text(text)
    (root / "app.py").write_text(APP)
    shutil.copy(LOCK, root / "requirements.lock")
    data = {
        "name": name,
        "base_image": ctx.base_id,
        "command": ["python3", "app.py"],
        "requirements": "requirements.lock",
        "network": "none",
        "resources": {"cpus": 1, "gpus": 0},
    }
    return ctx.commit_project(root, data)


def _sweep(ctx: Ctx, root: Path, store: Path, overrides: list[str]) -> tuple[float, list[Any]]:
    """``orch sweep --jobs 1`` as a user runs it: (wall seconds, its runs); every run must
    have succeeded, started as a Hydra application."""
    argv = [ORCH, "sweep", "-p", str(root), "--store", str(store), "--jobs", "1", "--json",
            *overrides]
    timed = run_timed(ctx.janitor, argv, timeout=1800, check=False)
    if timed.returncode != 0:
        raise BenchError(f"orch sweep {' '.join(overrides)} exited {timed.returncode}: "
                         f"{timed.stderr.strip().splitlines()[-1:]}")
    runs = json.loads(timed.stdout)["runs"]
    bad = [r for r in runs if r["status"] != "succeeded" or "loss" not in r["metrics"]]
    if bad:
        raise BenchError(f"hydra_app sweep: {len(bad)} run(s) did not succeed: {bad[0]}")
    return timed.seconds, runs


def _grid(start: int, runs: int) -> list[str]:
    return ["optimizer=sgd,adam", f"seed=range({start},{start + runs // 2})"]


def _code_image(ctx: Ctx, name: str, run_image: str) -> str:
    """The tag orch gives the project's code image (``orch/<name>-code:<key>``), checked
    to be the parent of ``run_image`` (its layers minus the run's config layer)."""
    tags = subprocess.run(
        ["docker", "images", "--format", "{{.Repository}}:{{.Tag}}",
         "--filter", f"reference=orch/{name}-code"],
        capture_output=True, text=True, check=False,
    ).stdout.split()
    if len(tags) != 1:
        raise BenchError(f"expected one code image orch/{name}-code, found {tags}")

    def layers(ref: str) -> list[str]:
        out = subprocess.run(["docker", "image", "inspect", ref, "--format",
                              "{{json .RootFS.Layers}}"],
                             capture_output=True, text=True, check=True).stdout
        return list(json.loads(out))

    code, run = layers(tags[0]), layers(run_image)
    if run[:-1] != code:
        raise BenchError(f"{tags[0]} is not the parent of the run image {run_image[:19]}")
    return tags[0]


def _floor_argv(ctx: Ctx, image: str, configs: Path, out: str = "/tmp/out") -> list[str]:
    return ["docker", "run", "--rm", *RUN_FLAGS, *ctx.floor_label(),
            "-v", f"{configs}:/orch/code/configs:ro", "-e", f"ORCH_OUTPUT={out}",
            image, "python3", "app.py", f"hydra.run.dir={out}"]


def _check_floor(ctx: Ctx, image: str, configs: Path) -> None:
    """Once, untimed: the floor runs the application and it writes what orch's run does."""
    out = ctx.janitor.tempdir("hydra-floor-out-")
    out.chmod(0o777)
    argv = _floor_argv(ctx, image, configs, "/check")
    argv[argv.index(image):argv.index(image)] = ["-v", f"{out}:/check"]
    run_timed(ctx.janitor, argv, timeout=300)
    metrics = json.loads((out / "metrics.json").read_text())
    if metrics != {"loss": 0.2, "lr": 0.1, "seed": 0}:
        raise BenchError(f"the floor's application wrote {metrics}")
    if not (out / ".hydra" / "config.yaml").is_file():
        raise BenchError("the floor's application did not run under Hydra (no .hydra/)")


#: ``orch sweep`` in one process, with timers around its stages: where a sweep's time goes.
#: A run's critical path under ``--jobs 1`` is its container's create + start + wait and
#: what orch does between one container's end and the next one's start (the claim, ...);
#: collecting a container's logs overlaps with the next run.
_TRACE = """\
import json, sys, time, functools
T0 = time.perf_counter()
marks = {}
def timed(owner, name, label):
    original = getattr(owner, name)
    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        start = time.perf_counter() - T0
        try:
            return original(*args, **kwargs)
        finally:
            marks.setdefault(label, []).append((start, time.perf_counter() - T0))
    setattr(owner, name, wrapper)
import orchestrator.cli
from orchestrator.runner import container
from orchestrator.drivers import grid as sweep
from orchestrator.image import builder
marks["imports"] = [(0.0, time.perf_counter() - T0)]
timed(sweep, "compose_points", "compose")
timed(builder, "prepare", "prepare")
timed(builder, "load_run_images", "load")
timed(container.Running, "start", "start")
timed(container.Running, "wait", "wait")
try:
    orchestrator.cli.main(sys.argv[1:], standalone_mode=False)
except SystemExit:
    pass
marks["total"] = [(0.0, time.perf_counter() - T0)]
print(json.dumps(marks), file=sys.stderr)
"""


def _trace(ctx: Ctx, root: Path, store: Path, overrides: list[str]) -> dict[str, float]:
    """One sweep of ``overrides`` traced, in seconds: the interpreter's own start and
    exit; the fixed part (from the first line to the first container's create: imports,
    composing, the environment check, the first run images loaded); per run, the
    container (create + start + wait) and orch's own time between one container's end
    and the next one's create; the tail (the last container's end to the last line)."""
    import statistics
    import sys

    argv = [sys.executable, "-c", _TRACE, "sweep", "-p", str(root), "--store", str(store),
            "--jobs", "1", "--json", *overrides]
    timed = run_timed(ctx.janitor, argv, timeout=1800)
    marks = json.loads(timed.stderr.strip().splitlines()[-1])
    starts, waits = sorted(marks["start"]), sorted(marks["wait"])
    runs = len(starts)
    containers = [w_end - s_begin for (s_begin, _), (_, w_end) in zip(starts, waits, strict=True)]
    between = [nxt[0] - prev[1] for prev, nxt in zip(waits, starts[1:], strict=False)]
    return {
        "process_s": timed.seconds,
        "interpreter_s": timed.seconds - marks["total"][0][1],
        "imports_s": marks["imports"][0][1],
        "compose_s": sum(end - begin for begin, end in marks["compose"]),
        "prepare_s": sum(end - begin for begin, end in marks["prepare"]),
        "first_load_s": marks["load"][0][1] - marks["load"][0][0],
        "fixed_s": starts[0][0],
        "container_per_run_s": statistics.median(containers),
        "between_runs_s": statistics.median(between) if between else 0.0,
        "tail_s": marks["total"][0][1] - waits[-1][1],
        "runs": runs,
    }


def hydra_app(ctx: Ctx) -> dict[str, Any]:
    name = f"{ctx.name}-hydra"
    root = _project(ctx, name)
    store = ctx.store("hydra-app")
    runs = ctx.size(RUNS, 4, 2)
    reps = ctx.reps(4, 1)
    log("hydra_app: warm-up sweep (the environment: hydra-core, antlr4 built from its sdist)")
    _, warm_runs = _sweep(ctx, root, store, _grid(0, 2))
    shown = run_timed(ctx.janitor, [ORCH, "show", warm_runs[0]["run_id"], "--store", str(store),
                                    "--json"])
    command = json.loads(shown.stdout).get("command") or []
    if "--config-path=/orch/hydra" not in command:
        raise BenchError(f"orch did not start app.py as a Hydra application: {command}")
    run_image = warm_runs[0]["image_id"]
    code_image = _code_image(ctx, name, run_image)
    configs = root / "configs"
    _check_floor(ctx, code_image, configs)

    per = ctx.row("hydra_app", Stat(f"orch sweep, {runs} runs, --jobs 1: wall / {runs}"))
    floor = ctx.row("hydra_app", Stat("floor: docker run --rm code image, configs mounted"))
    image_run = ctx.row("hydra_app", Stat("docker run --rm orch's run image (baked config)"))

    def floor_group(count: int) -> list[float]:
        group = []
        for _ in range(count):
            group.append(run_timed(ctx.janitor, _floor_argv(ctx, code_image, configs)).seconds)
            floor.add(group[-1])
        return group

    def run_image_once() -> None:
        argv = ["docker", "run", "--rm", *RUN_FLAGS, *ctx.floor_label(), run_image]
        image_run.add(run_timed(ctx.janitor, argv).seconds)

    groups = [floor_group(3)]
    for rep in range(reps):
        wall, swept = _sweep(ctx, root, store, _grid(1000 * (rep + 1), runs))
        if len(swept) != runs:
            raise BenchError(f"hydra_app sweep: {len(swept)} runs, expected {runs}")
        per.add(wall / runs)
        run_image = swept[-1]["image_id"]
        groups.append(floor_group(3))
        run_image_once()
        log(f"hydra_app {rep + 1}/{reps}: orch {wall / runs:.3f}s/run, docker run "
            f"{groups[-1][0]:.3f}/{groups[-1][1]:.3f}/{groups[-1][2]:.3f}s, "
            f"orch's run image {image_run.samples[-1]:.3f}s")
    figures: dict[str, Any] = {}
    try:
        stages = _trace(ctx, root, store, _grid(1000 * (reps + 1), runs))
    except (BenchError, KeyError, IndexError, ValueError) as exc:
        # a diagnostic only: a renamed function inside orch must not cost the figure
        ctx.notes["hydra_app_trace"] = f"the per-stage trace failed: {exc}"
    else:
        log("hydra_app trace: " + ", ".join(f"{k} {v:.3f}" for k, v in stages.items()))
        figures = {f"hydra_app_trace_{key}": value for key, value in stages.items()}
    return {
        **figures,
        "hydra_app_orch_per_run_s": per.median,
        "hydra_app_floor_s": floor.median,
        "hydra_app_per_run_ratio": ratio(per.median, floor.median),
        "hydra_app_per_run_ratio_paired": paired(per.samples, groups),
        "hydra_app_run_image_s": image_run.median,
        "hydra_app_run_image_ratio": ratio(image_run.median, floor.median),
        "hydra_app_runs_per_sweep": runs,
    }
