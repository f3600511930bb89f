"""Ray backend overhead: the same sweep of trivial runs on a two-node Ray cluster and on
the local backend, with the same total parallelism (2 nodes x 2 CPUs vs ``--jobs 4``).

    .venv/bin/python bench/ray_bench.py          # 100 runs each; prints the ratio
    main() -> {"ray_s": ..., "local_s": ..., "ray_overhead_ratio_median3": ..., ...}

Three repeats, each a local sweep then a Ray sweep of the same 100 new points (a config
value of the repeat's own), against one cluster started once: the ratio of each pair,
then their median (min and max beside it).

Both sweeps start cold in the same way: a fresh store and none of the sweep's run images
on the driver's daemon (each builds and loads them). The Ray cluster is the test suite's
(tests/raycluster.py): the head node uses this machine's daemon, the worker node a second
daemon that has only the base image (as a node where `make base-image` ran), so the Ray
figure includes fetching the environment, code and config layers by digest from the
store, as on a real cluster. Everything started here is stopped and removed,
also on an error, Ctrl-C or SIGTERM: the nodes, the second daemon, the temporary project
and stores, and the images of the benchmark's project (the shared base image stays).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

ORCH = str(Path(sys.executable).with_name("orch"))
PROJECT = "raybench"
PARALLELISM = 4  # 2 nodes x 2 CPUs; --jobs 4 locally


def log(message: str) -> None:
    print(f"[ray_bench] {message}", file=sys.stderr, flush=True)


def base_image() -> str:
    proc = subprocess.run([sys.executable, str(REPO / "images" / "build_base.py")],
                          capture_output=True, text=True, check=True, cwd=REPO)
    return proc.stdout.strip().splitlines()[-1]


def make_project(root: Path, image: str) -> Path:
    """A config-only project: the runs do nothing but start Python."""
    (root / "conf").mkdir(parents=True)
    (root / "conf" / "config.yaml").write_text("i: 0\nrep: 0\n")
    (root / "orch.yaml").write_text(json.dumps({
        "name": PROJECT, "base_image": image, "config_dir": "conf",
        "command": ["python3", "-c", "pass"], "resources": {"cpus": 1, "gpus": 0},
    }))
    env = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@orch.invalid",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@orch.invalid"}
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "bench"]):
        subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, env=env)
    return root


def sweep(project: Path, store: Path, runs: int, *extra: str) -> tuple[float, dict[str, Any]]:
    from raycluster import CLUSTER_ENV

    started = time.perf_counter()
    proc = subprocess.run(
        [ORCH, "sweep", "-p", str(project), f"i=range(0,{runs})", "--store", str(store),
         "--jobs", str(PARALLELISM), "--json", *extra],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, **CLUSTER_ENV},
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"orch sweep {' '.join(extra)} failed: {proc.stderr.strip()[-500:]}")
    result = json.loads(proc.stdout)
    statuses = {run["status"] for run in result["runs"]}
    if statuses != {"succeeded"} or len(result["runs"]) != runs:
        raise RuntimeError(f"expected {runs} succeeded runs, got {statuses}")
    return wall, result


def _docker(docker_host: str | None = None) -> Any:
    import docker

    return docker.DockerClient(base_url=docker_host or os.environ.get("DOCKER_HOST")
                               or "unix:///var/run/docker.sock")


def remove_project_images() -> None:
    """Untag this benchmark's images (``orch/raybench*``) on the driver's daemon.

    By tag, never by ID: the environment image may be shared, under other tags, with
    other projects on the same base; Docker deletes an image only with its last tag.
    """
    import docker

    client = _docker()
    try:
        # The low-level listing: no per-image inspect to race with others' removals.
        for image in client.api.images():
            for tag in image.get("RepoTags") or []:
                if tag.startswith(f"orch/{PROJECT}"):
                    with contextlib.suppress(docker.errors.APIError):
                        client.api.remove_image(tag)
    finally:
        client.close()


def remove_run_images(run_ids: set[str]) -> None:
    """The sweep's run images (their run ids are this project's alone)."""
    import docker

    client = _docker()
    try:
        for image in client.api.images(filters={"label": "org.orch.run_id"}):
            if (image.get("Labels") or {}).get("org.orch.run_id") in run_ids:
                with contextlib.suppress(docker.errors.APIError):
                    client.api.remove_image(image["Id"], force=True)
    finally:
        client.close()


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """A SIGTERM (the harness's timeout) still runs every cleanup below."""
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


REPEATS = 3


def main(quick: bool = False, smoke: bool = False) -> dict[str, Any]:
    """``REPEATS`` pairs of sweeps, local then Ray, each pair with run ids of its own
    (``smoke``: one pair of 4-run sweeps, that the section runs)."""
    import statistics

    from raycluster import ray_cluster
    from services import copy_image, second_daemon

    runs = 4 if smoke else 32 if quick else 100
    repeats = 1 if smoke else REPEATS
    work = Path(tempfile.mkdtemp(prefix="orch-raybench-"))
    run_ids: set[str] = set()
    try:
        with sigterm_as_exit():
            image = base_image()
            project = make_project(work / PROJECT, image)
            log("starting a second daemon and a two-node Ray cluster")
            with second_daemon(work) as second_host:
                copy_image(os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock",
                           second_host, image)
                with ray_cluster(work, worker_env={"DOCKER_HOST": second_host},
                                 cpus=2, gpus=0) as cluster:
                    local_s: list[float] = []
                    ray_s: list[float] = []
                    nodes: set[str] = set()
                    for rep in range(repeats):
                        point = f"rep={rep + 1}"
                        log(f"{rep + 1}/{repeats} local backend: {runs} runs, "
                            f"--jobs {PARALLELISM}")
                        wall, result = sweep(project, work / f"store-local-{rep}", runs, point)
                        local_s.append(wall)
                        ids = {run["run_id"] for run in result["runs"]}
                        run_ids |= ids
                        # the Ray sweep builds and loads them again, as local did
                        remove_run_images(ids)
                        store = work / f"store-ray-{rep}"
                        log(f"{rep + 1}/{repeats} ray backend: {runs} runs on "
                            f"{cluster.address}")
                        wall, result = sweep(project, store, runs, point, "--backend", "ray",
                                             "--ray-address", cluster.address)
                        ray_s.append(wall)
                        nodes |= {
                            json.loads((store / "runs" / r["run_id"] / "run.json")
                                       .read_text())["node"]
                            for r in result["runs"]
                        }
                        log(f"{rep + 1}/{repeats}: local {local_s[-1]:.1f}s, "
                            f"ray {ray_s[-1]:.1f}s ({ray_s[-1] / local_s[-1]:.2f}x)")
            ratios = [r / local for r, local in zip(ray_s, local_s, strict=True)]
            figures = {
                "ray_s": round(statistics.median(ray_s), 2),
                "local_s": round(statistics.median(local_s), 2),
                "ray_overhead_ratio_median3": round(statistics.median(ratios), 3),
                "ray_overhead_ratio_min": round(min(ratios), 3),
                "ray_overhead_ratio_max": round(max(ratios), 3),
                "ray_overhead_ratios": [round(r, 3) for r in ratios],
                "ray_walls_s": [round(r, 2) for r in ray_s],
                "local_walls_s": [round(r, 2) for r in local_s],
                "ray_runs": runs,
                "ray_nodes_used": len(nodes),
            }
            return figures
    finally:
        with contextlib.suppress(Exception):
            remove_run_images(run_ids)
        with contextlib.suppress(Exception):
            remove_project_images()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    outcome = main(quick="--quick" in sys.argv[1:])
    print(f"ray_overhead_ratio_median3 {outcome['ray_overhead_ratio_median3']:.3f} "
          f"(min {outcome['ray_overhead_ratio_min']:.3f}, max "
          f"{outcome['ray_overhead_ratio_max']:.3f}; medians ray {outcome['ray_s']:.1f}s / "
          f"local {outcome['local_s']:.1f}s, {outcome['ray_runs']} runs, "
          f"parallelism {PARALLELISM})")
    print(json.dumps(outcome))
