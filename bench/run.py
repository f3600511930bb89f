"""orch benchmarks: ``make bench`` (= ``.venv/bin/python bench/run.py``).

Measures, in one run on this machine, orch against its floors and peers, prints a table
(min/median/max over repeats) and, as the very last line of stdout, one JSON object of
ratios and raw medians (seconds). A figure that could not be measured is null, with the
reason under "notes". Progress goes to stderr. Everything created (temporary projects and
stores, containers, images other than the shared base, servers, processes) is removed at
the end, also on an error or Ctrl-C.

    .venv/bin/python bench/run.py                          # everything (15-25 min)
    .venv/bin/python bench/run.py --only per_run,config_image --quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

import cancel_bench  # noqa: E402
import hydra_bench  # noqa: E402
import inputs_bench  # noqa: E402
import live_bench  # noqa: E402
import mlflow_bench  # noqa: E402
import orch_bench  # noqa: E402
import podman_bench  # noqa: E402
import project_bench  # noqa: E402
import pull_bench  # noqa: E402
import ray_runner  # noqa: E402
import results_bench  # noqa: E402
import search_bench  # noqa: E402
import slurm_bench  # noqa: E402
import torch_bench  # noqa: E402
import transport_bench  # noqa: E402
from common import (  # noqa: E402
    BENCH_CACHE,
    REPO,
    BenchError,
    BenchSkipped,
    Janitor,
    _Interrupted,
    loadavg,
    log,
    run_timed,
)
from context import Ctx  # noqa: E402

#: The headline figures, exactly the keys of the benchmark contract: always in the JSON,
#: null (with a note) when not measured.
GOALS: dict[str, tuple[str, float, str]] = {
    "per_run_overhead_ratio": (
        "<=",
        1.15,
        "orch per run (16-run sweep, --jobs 1) / docker run floor",
    ),
    "sweep100_ratio_vs_parallel_floor": (
        "<=",
        1.10,
        "100 runs --jobs 2 / 100 bare docker runs 2 at a time (interleaved)",
    ),
    "sweep100_jobs4_ratio_vs_parallel_floor": (
        "<=",
        1.10,
        "100 runs --jobs 4 / 100 bare docker runs 4 at a time (interleaved)",
    ),
    "config_image_ratio_vs_load_floor": (
        "<=",
        1.10,
        "orch run image / docker load of a one-file-layer image (16 per archive)",
    ),
    "config_image_ratio": ("<=", 0.35, "orch config image / docker build FROM code + COPY config"),
    "fixed_sweep_ratio": ("<=", 1.5, "1-run sweep of a warm project / one bare docker run"),
    "ray_overhead_ratio_median3": (
        "<=",
        1.15,
        "Ray backend / local backend, same runs and parallelism, median of 3",
    ),
    "transport_store_ratio": (
        "<=",
        1.2,
        "run image from the store onto an empty daemon / parallel boto3 GET + docker load",
    ),
    "transport_registry_ratio": ("<=", 1.2, "orch registry pull / docker pull of the same image"),
    "mlflow_speedup": (">=", 10.0, "MLflow docker_env per run / orch per run"),
    "results_10k_ratio": ("<=", 2.0, "orch results 10k runs (S3) / boto3 listing of their keys"),
    "compose1k_ratio": ("<=", 0.1, "compose_many 1,000 points / 1,000 hydra compose() calls"),
    "torch_per_run_ratio": ("<=", 1.05, "tiny torch run / the same from a pip-built image"),
    "torch_cold_build_ratio": ("<=", 0.5, "orch cold build / docker build pip-installing"),
    "torch_one_package_rebuild_ratio": ("<=", 0.1, "one-package rebuild / orch cold build"),
    "torch_store_bytes_ratio": ("<=", 0.6, "stored bytes / uncompressed bytes of the layers"),
    "input_hash_throughput_ratio": (">=", 0.8, "input hashing / sha256sum, 1 GB in 1,000 files"),
    "input_unchanged_ms": ("<=", 50.0, "ms per unchanged input of 10,000 files"),
    "input_upload_ratio": ("<=", 1.2, "input upload / parallel boto3 upload"),
    "input_fetch_ratio": ("<=", 1.2, "input fetch / parallel boto3 download"),
    "live_latency_p95_s": ("<=", 2.0, "metrics.jsonl line -> visible to orch watch (S3), p95"),
    "live_follow_overhead_ratio": ("<=", 1.02, "followed run / the same run not followed"),
    "cancel_all_s": ("<=", 10.0, "second Ctrl-C -> all containers gone, records committed (4)"),
    "query_100k_ratio": ("<=", 3.0, "query over 100k runs / parallel GET of 1,000 index objects"),
    "results_100k_ratio": ("<=", 3.0, "results over 100k runs / the same GETs"),
    "tpe_trials_ratio": ("<=", 0.5, "TPE trials / random search trials to within 5%"),
    "pruning_compute_ratio": ("<=", 0.6, "container-seconds pruned / unpruned"),
    "optuna_per_trial_ratio": ("<=", 1.2, "orch+optuna per trial / orch's per-run floor"),
    "pull_ratio": ("<=", 1.2, "orch pull of 1 GB + 1,000 files (S3) / parallel boto3 download"),
    "hydra_app_per_run_ratio": (
        "<=",
        1.1,
        "tiny @hydra.main app per run (16-run sweep) / docker run, configs mounted",
    ),
    "project_cold_build_ratio": (
        "<=",
        0.5,
        "orch cold build of a real project's lock (~40 packages) / docker build, pip install",
    ),
    "project_per_run_ratio": (
        "<=",
        1.05,
        "import lightning + one step / the same from the pip-built image of that lock",
    ),
    "marginal_per_run_ratio": ("<=", 1.15, "one more run of a 16-run sweep / bare docker run"),
    "slurm_overhead_ratio": (
        "<=",
        1.2,
        "20-run sweep --backend slurm --jobs 2 / sbatch --array=0-19%2 of bare docker runs",
    ),
    "podman_per_run_ratio": (
        "<=",
        1.15,
        "orch per run on rootful Podman (16-run sweep) / podman run --rm BASE true",
    ),
}

Section = Callable[[Ctx], dict[str, Any]]

#: Run order: cheap and in-process first, the long external ones last.
SECTIONS: dict[str, Section] = {
    "compose1k": orch_bench.compose1k,
    "hydra": orch_bench.hydra_multirun,
    "per_run": orch_bench.per_run,
    "config_image": orch_bench.config_image,
    "curve": orch_bench.curve,
    "fixed_sweep": orch_bench.fixed_sweep,
    "sweep100": orch_bench.sweep100,
    "mlflow": mlflow_bench.mlflow,
    "results10k": results_bench.results10k,
    "live": live_bench.live,
    "inputs": inputs_bench.inputs,
    "results100k": results_bench.results100k,
    "search": search_bench.search,
    "ray": ray_runner.ray,
    "transport": transport_bench.transport,
    "pull": pull_bench.pull,
    "hydra_app": hydra_bench.hydra_app,
    "cancel": cancel_bench.cancel,
    "podman": podman_bench.podman,
    "slurm": slurm_bench.slurm,
    "torch": torch_bench.torch,
    "project": project_bench.project,
    "breakdown": orch_bench.breakdown,
}
#: Diagnostics run only when named in --only.
OPT_IN = {"breakdown"}
#: The ratio keys each section produces (set to null, with a note, when it fails).
PRODUCES = {
    "compose1k": ["compose1k_ratio"],
    "per_run": ["per_run_overhead_ratio"],
    "config_image": ["config_image_ratio", "config_image_ratio_vs_load_floor"],
    "fixed_sweep": ["fixed_sweep_ratio"],
    "sweep100": ["sweep100_ratio_vs_parallel_floor", "sweep100_jobs4_ratio_vs_parallel_floor"],
    "mlflow": ["mlflow_speedup"],
    "results10k": ["results_10k_ratio"],
    "inputs": [
        "input_hash_throughput_ratio",
        "input_unchanged_ms",
        "input_upload_ratio",
        "input_fetch_ratio",
    ],
    "results100k": ["query_100k_ratio", "results_100k_ratio"],
    "ray": ["ray_overhead_ratio_median3"],
    "transport": ["transport_store_ratio", "transport_registry_ratio"],
    "cancel": ["cancel_all_s"],
    "podman": ["podman_per_run_ratio"],
    "slurm": ["slurm_overhead_ratio"],
    "live": ["live_latency_p95_s", "live_follow_overhead_ratio"],
    "torch": [
        "torch_per_run_ratio",
        "torch_cold_build_ratio",
        "torch_one_package_rebuild_ratio",
        "torch_store_bytes_ratio",
    ],
    "search": ["tpe_trials_ratio", "pruning_compute_ratio", "optuna_per_trial_ratio"],
    "pull": ["pull_ratio"],
    "hydra_app": ["hydra_app_per_run_ratio"],
    "project": ["project_cold_build_ratio", "project_per_run_ratio"],
    "curve": ["marginal_per_run_ratio"],
    # sections without a goal of their own: the figures they exist for
    "hydra": ["hydra_multirun_per_job_s"],
    "breakdown": ["breakdown_container_run_s", "breakdown_load_per_image_s"],
}
ALIASES = {
    "results_10k": "results10k",
    "results_100k": "results100k",
    "query_100k": "results100k",
    "compose_1k": "compose1k",
    "sweep_100": "sweep100",
    "hydra_multirun": "hydra",
    "per_run_overhead": "per_run",
    "config": "config_image",
    "live_runs": "live",
    "data_inputs": "inputs",
    "tpe": "search",
    "pruning": "search",
    "fixed": "fixed_sweep",
    "transports": "transport",
    "hydra_app_per_run": "hydra_app",
}


def machine() -> dict[str, Any]:
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    docker = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "docker": docker or None,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def fmt(value: float | None, unit: str = "s") -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"
    return f"{value:.3g}"


def print_table(ctx: Ctx, figures: dict[str, Any]) -> None:
    setting = " (--smoke: no figure means anything)" if ctx.smoke else (
        " (--quick: fewer repeats)" if ctx.quick else "")
    print("orch benchmarks" + setting)
    print()
    head = f"{'section':<13} {'measurement':<62} {'n':>3} {'min':>9} {'median':>9} {'max':>9}"
    print(head)
    print("-" * len(head))
    for row in ctx.rows:
        s = row.stat
        print(
            f"{row.section:<13} {s.name[:62]:<62} {s.n:>3} {fmt(s.min, row.unit):>9} "
            f"{fmt(s.median, row.unit):>9} {fmt(s.max, row.unit):>9}"
        )
    print()
    head = f"{'ratio':<40} {'value':>8} {'paired':>8}  {'goal':<8} {'':<4} what"
    print(head)
    print("-" * 130)
    for key, (op, goal, what) in GOALS.items():
        value = figures.get(key)
        if value is None:
            verdict, shown = "n/a", "null"
        else:
            ok = value <= goal if op == "<=" else value >= goal
            verdict, shown = ("ok" if ok else "MISS"), f"{value:.3f}"
        other = figures.get(f"{key}_paired")
        other_shown = "-" if other is None else f"{other:.3f}"
        print(
            f"{key:<40} {shown:>8} {other_shown:>8}  {op + ' ' + format(goal, 'g'):<8} "
            f"{verdict:<4} {what}"
        )
    print("  paired: median over repeats of each repeat against the reference measured next to it")
    for key, note in ctx.notes.items():
        print(f"  note: {key}: {note}")
    loads = ctx.cache.get("section_load", {})
    if loads:
        shown = ", ".join(f"{name} {load:g}" for name, load in loads.items())
        print(f"  load average at the start of each section ({os.cpu_count()} cores): {shown}")
        if max(loads.values()) > (os.cpu_count() or 1):
            print("  note: the machine was busy with other work: expect noisy figures")
    if figures.get("compose1k_ratio") is not None:
        print("  note: compose1k: hydra side = 50 compose() calls timed, scaled x20")
    print()


def plot_python(ctx: Ctx) -> Path:
    """A Python with matplotlib: the mlflow venv's, else a small venv of the bench's own."""
    for venv in (BENCH_CACHE / "mlflow-venv", BENCH_CACHE / "plot-venv"):
        python = venv / "bin" / "python"
        if (
            python.exists()
            and subprocess.run(
                [str(python), "-c", "import matplotlib"], capture_output=True, check=False
            ).returncode
            == 0
        ):
            return python
    venv = BENCH_CACHE / "plot-venv"
    log(f"installing matplotlib into {venv} (once; cached)")
    run_timed(ctx.janitor, [sys.executable, "-m", "venv", "--clear", str(venv)], timeout=120)
    run_timed(
        ctx.janitor,
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "matplotlib"],
        timeout=600,
    )
    return venv / "bin" / "python"


def plot(ctx: Ctx, figures: dict[str, Any], out: Path) -> None:
    data = {**figures, "machine": ctx.cache.get("machine_line", "")}
    path = ctx.janitor.root / "figures.json"
    path.write_text(json.dumps(data))
    run_timed(
        ctx.janitor,
        [str(plot_python(ctx)), str(HERE / "plot.py"), str(path), str(out)],
        timeout=120,
    )
    log(f"wrote {out}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    names = ", ".join([*SECTIONS, "plot"])
    parser.add_argument(
        "--only", default=None, help=f"comma-separated subset of: {names} (default: all)"
    )
    parser.add_argument("--quick", action="store_true", help="fewer repeats (development)")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes and one repeat: that every section runs (make test), no figure "
        "means anything (implies --quick)",
    )
    parser.add_argument(
        "--list",
        action="store_true",
        help="print the sections, what each produces and the goals as JSON, and exit",
    )
    parser.add_argument(
        "--plot",
        default=None,
        type=Path,
        help="where to write the per-run plot (default: docs/bench_per_run.png "
        "on a full run; not written with --quick unless given)",
    )
    args = parser.parse_args(argv)
    if args.only:
        wanted = [ALIASES.get(n.strip(), n.strip()) for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in SECTIONS and n != "plot"]
        if unknown:
            parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {names}")
        args.sections = wanted
    else:
        args.sections = [*(n for n in SECTIONS if n not in OPT_IN), "plot"]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        listing = {
            "sections": list(SECTIONS),
            "opt_in": sorted(OPT_IN),
            "produces": PRODUCES,
            "goals": {key: [op, goal] for key, (op, goal, _) in GOALS.items()},
        }
        print(json.dumps(listing))
        return 0
    started = time.perf_counter()
    janitor = Janitor()
    janitor.install_signal_handlers()
    ctx = Ctx(janitor=janitor, quick=args.quick or args.smoke, smoke=args.smoke)
    figures: dict[str, Any] = {key: None for key in GOALS}
    info = machine()
    ctx.cache["machine_line"] = (
        f"{info['cores']} cores, {info['memory_gib']} GiB, Docker {info['docker']}, "
        f"kernel {info['kernel']}"
    )
    loads = {"start": round(loadavg(), 2)}
    interrupted = False
    try:
        for name in [n for n in SECTIONS if n in args.sections]:
            t0 = time.perf_counter()
            ctx.cache.setdefault("section_load", {})[name] = round(loadavg(), 2)
            log(f"== {name} (load average {loadavg():.1f})")
            try:
                figures.update(SECTIONS[name](ctx))
            except BenchSkipped as exc:
                for key in PRODUCES.get(name, []):
                    ctx.notes[key] = str(exc)
                ctx.cache.setdefault("skipped", {})[name] = str(exc)
                log(f"{name}: skipped: {exc}")
            except BenchError as exc:
                for key in PRODUCES.get(name, []):
                    ctx.notes[key] = str(exc)
                log(f"{name}: not measured: {exc}")
            except Exception as exc:  # noqa: BLE001 - one broken section must not stop the rest
                traceback.print_exc(file=sys.stderr)
                for key in PRODUCES.get(name, []):
                    ctx.notes[key] = f"{type(exc).__name__}: {exc}"
            ctx.cache.setdefault("section_s", {})[name] = round(time.perf_counter() - t0, 1)
            log(f"== {name} done in {time.perf_counter() - t0:.1f}s")
        out = args.plot or (None if args.quick else REPO / "docs" / "bench_per_run.png")
        if "plot" in args.sections and out is not None:
            if figures.get("orch_per_run_16_s") is None and figures.get("orch_per_run_1_s") is None:
                ctx.notes["plot"] = "no sweep-size figures (run the curve section)"
            else:
                try:
                    plot(ctx, figures, out)
                except BenchError as exc:
                    ctx.notes["plot"] = str(exc)
    except (_Interrupted, KeyboardInterrupt) as exc:
        interrupted = True
        log(f"interrupted ({exc}): cleaning up")
    finally:
        log("cleaning up")
        janitor.cleanup()
    if interrupted:
        return 130
    loads["end"] = round(loadavg(), 2)
    _note_unmeasured(ctx, figures, args.sections)
    print_table(ctx, figures)
    result = {
        **{key: _round(figures.get(key)) for key in GOALS},
        **{key: _round(value) for key, value in figures.items() if key not in GOALS},
        "notes": ctx.notes,
        "quick": ctx.quick,
        "smoke": ctx.smoke,
        "machine": info,
        "load_average": loads,
        "section_s": ctx.cache.get("section_s", {}),
        "skipped": ctx.cache.get("skipped", {}),
        "section_load_average": ctx.cache.get("section_load", {}),
        "bench_wall_s": round(time.perf_counter() - started, 1),
    }
    sys.stdout.flush()
    print(json.dumps(result, sort_keys=False))
    return 0


def _note_unmeasured(ctx: Ctx, figures: dict[str, Any], ran: list[str]) -> None:
    """Every null headline figure says why it is null."""
    producer = {key: name for name, keys in PRODUCES.items() for key in keys}
    for key in GOALS:
        if figures.get(key) is not None or key in ctx.notes:
            continue
        if key in producer:
            name = producer[key]
            ctx.notes[key] = (
                f"section {name} not run (--only)" if name not in ran else f"{name}: no figure"
            )
            continue
        ctx.notes[key] = "no section of this harness measures it"


def _round(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


if __name__ == "__main__":
    sys.exit(main())
