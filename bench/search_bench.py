"""Search: how many trials TPE needs against random search, what pruning saves, and what
an adaptive search costs per trial against orch's own per-run floor.

- ``tpe_trials_ratio``: a deterministic noisy bowl over ``optimizer.lr`` (log scale),
  ``model.hidden_size`` and ``model.dropout`` with its optimum at 1.0; per seed, the
  trials until the best value is within 5% of it (<= 1.05), TPE (orch's ``make_study``:
  the sampler ``orch sweep --sampler tpe`` drives) against orch's seeded random search
  (``space.random_values``, the points ``--sampler random`` runs), both over the space
  parsed by ``space.parse_space`` from the same Hydra overrides. Median over 5 seeds.
  In-process (the objective is a function, not a container), so thousands of trials
  cost seconds; the sampler code is exactly what the CLI runs.
- ``pruning_compute_ratio``: the same TPE search (12 trials, fixed seed) of a bowl script
  run as real containers that writes a decreasing loss curve (20 steps, 0.25 s apart;
  ``ORCH_LIVE_S=0.25`` on both sides), with ``--pruner percentile`` (the short-search
  policy) against without: the sum of the runs' ``duration_s`` (container seconds); the
  best values of both are kept beside it.
- ``optuna_per_trial_ratio``: a 16-trial TPE search of the bowl with no sleep, ``--jobs 1``,
  wall / 16, against orch's per-run floor as the ``per_run`` section measures it (a 16-run
  grid sweep, wall / 16), each search alternating with such a sweep (three of each): the
  floor under the same load as the search, not the one of minutes earlier.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from common import ORCH, BenchError, Stat, log, paired, ratio
from context import Ctx

SEEDS = (1, 2, 3, 4, 5)
SPACE = [
    "optimizer.lr=tag(log, interval(1e-5,1))",
    "model.hidden_size=int(interval(8,512))",
    "model.dropout=interval(0,0.9)",
]

BOWL = """
import json, math, os, time
cfg = json.load(open(os.environ["ORCH_CONFIG"].replace(".yaml", ".json")))
lr, hidden, dropout = cfg["lr"], cfg["hidden"], cfg["dropout"]
target = 1 + (math.log10(lr) + 2.5) ** 2 + ((hidden - 48) / 32) ** 2 + 4 * (dropout - 0.1) ** 2
out = os.environ["ORCH_OUTPUT"]
with open(os.path.join(out, "metrics.jsonl"), "a") as f:
    for step in range(1, cfg["steps"] + 1):
        loss = target + 2.0 / step
        f.write(json.dumps({"step": step, "loss": loss}) + "\\n")
        f.flush()
        time.sleep(cfg["sleep"])
json.dump({"loss": target}, open(os.path.join(out, "metrics.json"), "w"))
"""
BOWL_SPACE = ["lr=tag(log, interval(1e-4,1e-1))", "hidden=int(interval(8,128))",
              "dropout=interval(0,0.5)"]


def bowl(lr: float, hidden: int, dropout: float) -> float:
    """Optimum 1.0 at lr=10^-2.5, hidden=64, dropout=0.1, plus a small deterministic
    'noise' (a function of the point, so re-evaluating a point gives the same value)."""
    noise = 0.004 * math.sin(1e3 * lr + 7 * hidden + 31 * dropout)
    return (1.0 + 0.5 * (math.log10(lr) + 2.5) ** 2 + ((hidden - 64) / 128) ** 2
            + 2 * (dropout - 0.1) ** 2 + noise + 0.004)


def _trials_to_reach(values: Any, target: float, cap: int) -> int:
    for number, value in enumerate(values, 1):
        if value <= target:
            return number
        if number >= cap:
            break
    return cap


def tpe_vs_random(seed: int, target: float, cap: int) -> tuple[int, int]:
    from orchestrator.compose.config import Composer
    from orchestrator.compose.space import optuna_distributions, parse_space, random_values
    from orchestrator.drivers.search import SearchOptions, parse_objectives
    from orchestrator.drivers.search.study import make_study

    space = parse_space(SPACE, Composer(Path(__file__).resolve().parent.parent / "configs"))

    def score(values: dict[str, Any]) -> float:
        return bowl(values["optimizer.lr"], values["model.hidden_size"], values["model.dropout"])

    random_needed = _trials_to_reach(
        (score(random_values(space, seed, i)) for i in range(cap)), target, cap
    )
    options = SearchOptions("tpe", cap, seed=seed, objectives=parse_objectives("loss:min"))
    study = make_study(options)
    distributions = optuna_distributions(space)

    def tpe_values() -> Any:
        for _ in range(cap):
            trial = study.ask(distributions)
            value = score(trial.params)
            study.tell(trial, value)
            yield value

    return _trials_to_reach(tpe_values(), target, cap), random_needed


def _bowl_project(ctx: Ctx) -> Path:
    if "bowl_project" in ctx.cache:
        return Path(ctx.cache["bowl_project"])
    root = ctx.script_project(
        f"{ctx.name}-bowl", BOWL, "lr: 0.01\nhidden: 32\ndropout: 0.0\nsteps: 10\nsleep: 0.3\n"
    )
    ctx.cache["bowl_project"] = str(root)
    return root


def _search(ctx: Ctx, args: list[str], store: Path,
            env: dict[str, str] | None = None) -> tuple[float, dict[str, Any]]:
    argv = [ORCH, "sweep", "-p", str(_bowl_project(ctx)), "--store", str(store), "--json",
            *args]
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=1800, check=False,
                          env={**os.environ, **(env or {})})
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise BenchError(f"orch sweep {' '.join(args)} exited {proc.returncode}: "
                         f"{proc.stderr.strip().splitlines()[-1:]}")
    return wall, json.loads(proc.stdout)


def _container_seconds(store: Path, result: dict[str, Any]) -> tuple[float, float]:
    total, best = 0.0, math.inf
    for run in result["runs"]:
        record = json.loads((store / "runs" / run["run_id"] / "run.json").read_text())
        total += float(record.get("duration_s") or 0.0)
        if record["status"] == "succeeded":
            best = min(best, float(record["metrics"]["loss"]))
    return total, best


def search(ctx: Ctx) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    # 1. TPE against random search, in-process
    cap = ctx.size(2000, 2000, 100)
    needed = [tpe_vs_random(seed, 1.05, cap) for seed in SEEDS[: ctx.size(5, 5, 1)]]
    tpe = [n[0] for n in needed]
    rnd = [n[1] for n in needed]
    log(f"search: trials to within 5% of the optimum, TPE {tpe}, random {rnd}")
    ctx.row("search", Stat("TPE trials to within 5% of the optimum (5 seeds)",
                           [float(n) for n in tpe]), unit="n")
    ctx.row("search", Stat("random search trials to within 5% (5 seeds)",
                           [float(n) for n in rnd]), unit="n")
    figures["tpe_trials_median"] = statistics.median(tpe)
    figures["random_trials_median"] = statistics.median(rnd)
    figures["tpe_trials_ratio"] = ratio(statistics.median(tpe), statistics.median(rnd))

    # 2. container-seconds with and without the percentile pruner, real runs
    searched = ctx.size(12, 12, 3)
    common = ["--sampler", "tpe", "--trials", str(searched), "--seed", "7",
              "--objective", "loss:min", *BOWL_SPACE, f"steps={ctx.size(20, 20, 4)}",
              "sleep=0.05" if ctx.smoke else "sleep=0.25"]
    plain_store, pruned_store = ctx.store("unpruned"), ctx.store("pruned")
    # Step metrics published 4x a second on both sides (ORCH_LIVE_S): the pruner's
    # decision reaches a container within about half a second instead of two.
    fast = {"ORCH_LIVE_S": "0.25"}
    plain_wall, plain = _search(ctx, common, plain_store, fast)
    pruned_wall, pruned = _search(ctx, [*common, "--pruner", "percentile"], pruned_store, fast)
    plain_s, plain_best = _container_seconds(plain_store, plain)
    pruned_s, pruned_best = _container_seconds(pruned_store, pruned)
    count = sum(r["status"] == "pruned" for r in pruned["runs"])
    log(f"search: container-seconds unpruned {plain_s:.1f} s (best {plain_best:.4f}), "
        f"pruned {pruned_s:.1f} s (best {pruned_best:.4f}, {count} pruned)")
    ctx.row("search", Stat(f"container-seconds, {searched}-trial TPE search, unpruned",
                           [plain_s]))
    ctx.row("search", Stat("container-seconds, the same with --pruner percentile", [pruned_s]))
    figures.update(
        unpruned_container_s=plain_s, pruned_container_s=pruned_s,
        unpruned_best=plain_best, pruned_best=pruned_best, pruned_trials=count,
        unpruned_wall_s=plain_wall, pruned_wall_s=pruned_wall,
        pruning_compute_ratio=ratio(pruned_s, plain_s),
    )

    # 3. per-trial wall of an adaptive search against orch's per-run floor (the per_run
    # section's 16-run grid sweep), the two alternating: the same load on both sides.
    import orch_bench

    trials = ctx.size(16, 16, 3)
    ctx.warm()
    per_trial = ctx.row("search", Stat(f"orch TPE search, {trials} trials, --jobs 1: "
                                       f"wall / {trials}"))
    beside = ctx.row("search", Stat(f"floor: per_run's {trials}-run grid sweep, beside: "
                                    f"wall / {trials}"))
    for rep in range(ctx.reps(3, 1)):
        # a new seed each time: new trials, so new run images to build and load
        wall, _ = _search(ctx, ["--sampler", "tpe", "--trials", str(trials),
                                "--seed", str(11 + rep), "--objective", "loss:min",
                                *BOWL_SPACE, "steps=1", "sleep=0"],
                          ctx.store(f"per-trial-{rep}"))
        per_trial.add(wall / trials)
        grid, _ = ctx.sweep([*orch_bench.lr_sweep(trials),
                             f"training_settings.seed={orch_bench.new_seed()}"])
        beside.add(grid / trials)
        log(f"search per trial {rep + 1}: {wall / trials:.3f}s, grid per run beside "
            f"{grid / trials:.3f}s")
    figures.update(optuna_per_trial_s=per_trial.median,
                   optuna_per_trial_floor_s=beside.median,
                   optuna_per_trial_ratio=ratio(per_trial.median, beside.median),
                   optuna_per_trial_ratio_paired=paired(per_trial.samples,
                                                        [[], *([g] for g in beside.samples)]))
    if "curve16" in ctx.cache:  # the per_run section's own figure, minutes earlier
        figures["optuna_per_trial_ratio_vs_per_run_section"] = ratio(
            per_trial.median, ctx.cache["curve16"].median)
    return figures
