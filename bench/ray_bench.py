"""Ray backend overhead: the same sweep of trivial runs on a two-node Ray cluster and on
the local backend, with the same total parallelism (2 nodes x 2 CPUs vs ``--jobs 4``).

    .venv/bin/python bench/ray_bench.py          # 100 runs each; prints the ratio
    main() -> {"ray_s": ..., "local_s": ..., "ray_overhead_ratio": ...}

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
    (root / "conf" / "config.yaml").write_text("i: 0\n")
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


def main(quick: bool = False) -> dict[str, Any]:
    from raycluster import ray_cluster
    from services import copy_image, second_daemon

    runs = 32 if quick else 100
    work = Path(tempfile.mkdtemp(prefix="orch-raybench-"))
    run_ids: set[str] = set()
    try:
        with sigterm_as_exit():
            image = base_image()
            project = make_project(work / PROJECT, image)
            log(f"local backend: {runs} runs, --jobs {PARALLELISM}")
            local_s, result = sweep(project, work / "store-local", runs)
            run_ids = {run["run_id"] for run in result["runs"]}
            log(f"local: {local_s:.1f}s; starting a second daemon and a two-node Ray cluster")
            remove_run_images(run_ids)  # the Ray sweep builds and loads them again, as local did
            with second_daemon(work) as second_host:
                copy_image(os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock",
                           second_host, image)
                with ray_cluster(work, worker_env={"DOCKER_HOST": second_host},
                                 cpus=2, gpus=0) as cluster:
                    log(f"ray backend: {runs} runs on {cluster.address}")
                    ray_s, result = sweep(project, work / "store-ray", runs, "--backend", "ray",
                                          "--ray-address", cluster.address)
            nodes = {
                json.loads((work / "store-ray" / "runs" / r["run_id"] / "run.json")
                           .read_text())["node"]
                for r in result["runs"]
            }
            figures = {
                "ray_s": round(ray_s, 2),
                "local_s": round(local_s, 2),
                "ray_overhead_ratio": round(ray_s / local_s, 3),
                "ray_runs": runs,
                "ray_nodes_used": len(nodes),
            }
            log(f"ray: {ray_s:.1f}s on {len(nodes)} node(s); "
                f"ratio {figures['ray_overhead_ratio']:.2f}")
            return figures
    finally:
        with contextlib.suppress(Exception):
            remove_run_images(run_ids)
        with contextlib.suppress(Exception):
            remove_project_images()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    outcome = main(quick="--quick" in sys.argv[1:])
    print(f"ray_overhead_ratio {outcome['ray_overhead_ratio']:.3f} "
          f"(ray {outcome['ray_s']:.1f}s / local {outcome['local_s']:.1f}s, "
          f"{outcome['ray_runs']} runs, parallelism {PARALLELISM})")
    print(json.dumps(outcome))
