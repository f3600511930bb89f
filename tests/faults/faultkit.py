"""Helpers of the fault tests: tiny projects, the real `orch` in a subprocess, store checks.

Every fault test follows the same shape: set up a project and a store, start `orch`,
inject one fault, let the sweep (re)complete, then check the store against the sweep's
plan: every run recorded exactly once, every recorded run complete.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

ORCH = str(Path(sys.executable).with_name("orch"))

#: What every complete run directory holds besides its artifacts.
RUN_FILES = {"run.json", "config.yaml", "metrics.json", "stdout.log", "stderr.log"}

#: A run that sleeps, says so on stdout and reports its x as a metric.
SLEEPER = """\
import json, os, time
cfg = json.load(open("/orch/config.json"))
print("run", cfg["x"], "started", flush=True)
time.sleep(cfg["sleep"])
json.dump({"x": cfg["x"]}, open(os.path.join(os.environ["ORCH_OUTPUT"], "metrics.json"), "w"))
print("run", cfg["x"], "done", flush=True)
"""


def make_project(root: Path, name: str, base_image: str, *, job: str = SLEEPER,
                 config: str = "x: 0\nsleep: 1\n", **settings: Any) -> Path:
    """A committed git project: configs/config.yaml, job.py, orch.yaml.

    The name gets a random suffix: run ids hash the project name, so two sessions of this
    suite on one daemon (make test and make faults at once) never share a run id, and
    counting or removing containers by run id only ever touches this test's.
    """
    name = f"{name}-{secrets.token_hex(4)}"
    (root / "configs").mkdir(parents=True)
    (root / "configs" / "config.yaml").write_text(config)
    (root / "job.py").write_text(job)
    data = {"name": name, "base_image": base_image, "command": ["python3", "job.py"]}
    data.update(settings)
    (root / "orch.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    (root / ".gitignore").write_text(".orch/\n")
    git = ["git", "-C", str(root)]
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "fault test"], check=True)
    return root


def orch_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "ORCH_DEBUG"}
    env.update(extra)
    return env


def run_orch(args: list[str], env: dict[str, str], timeout: float,
             cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ORCH, *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=cwd)


def start_orch(args: list[str], env: dict[str, str], log_dir: Path,
               tag: str) -> subprocess.Popen[bytes]:
    """`orch` in the background; stdout/stderr go to files (no pipe to fill up)."""
    out = (log_dir / f"{tag}.out").open("wb")
    err = (log_dir / f"{tag}.err").open("wb")
    try:
        return subprocess.Popen([ORCH, *args], stdout=out, stderr=err, env=env,
                                stdin=subprocess.DEVNULL)
    finally:
        out.close()
        err.close()


def wait_for(predicate: Callable[[], bool], timeout: float, what: str,
             interval: float = 0.2) -> float:
    """Poll until ``predicate()``; returns the seconds waited."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - start


def one_error_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


# --------------------------------------------------------------------------- store views


class StoreView:
    """The run directories of a store, read without orch (a dir store or an S3 prefix)."""

    def __init__(self, keys: Callable[[], Iterable[str]], read: Callable[[str], bytes]) -> None:
        self._keys = keys
        self._read = read

    @classmethod
    def directory(cls, root: Path) -> StoreView:
        def keys() -> list[str]:
            if not root.is_dir():
                return []
            return [p.relative_to(root).as_posix() for p in root.rglob("*")
                    if p.is_file() and ".tmp" not in p.relative_to(root).parts]

        return cls(keys, lambda key: (root / key).read_bytes())

    @classmethod
    def s3(cls, client: Any, bucket: str, prefix: str) -> StoreView:
        base = prefix.strip("/") + "/"

        def keys() -> list[str]:
            found: list[str] = []
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                         Prefix=base):
                found.extend(item["Key"][len(base):] for item in page.get("Contents", ()))
            return found

        def read(key: str) -> bytes:
            return bytes(client.get_object(Bucket=bucket, Key=base + key)["Body"].read())

        return cls(keys, read)

    def run_files(self) -> dict[str, set[str]]:
        """run id -> names in its directory."""
        runs: dict[str, set[str]] = {}
        for key in self._keys():
            parts = key.split("/", 2)
            if len(parts) == 3 and parts[0] == "runs":
                runs.setdefault(parts[1], set()).add(parts[2])
        return runs

    def recorded(self) -> dict[str, dict[str, Any]]:
        """run id -> its run.json, for every run that has one."""
        return {run_id: json.loads(self._read(f"runs/{run_id}/run.json"))
                for run_id, names in self.run_files().items() if "run.json" in names}

    def count_run_json(self) -> Counter[str]:
        return Counter(key.split("/")[1] for key in self._keys()
                       if key.startswith("runs/") and key.endswith("/run.json")
                       and key.count("/") == 2)

    def half_written(self) -> list[str]:
        """Runs whose run.json is visible while a file it promises is missing."""
        problems = []
        for run_id, names in self.run_files().items():
            if "run.json" not in names:
                continue
            record = json.loads(self._read(f"runs/{run_id}/run.json"))
            wanted = RUN_FILES | {f"output/{name}" for name in record.get("artifacts", [])}
            if record.get("outputs", {}).get("files"):
                manifest = record["outputs"]["manifest"]
                if manifest not in names:
                    problems.append(f"{run_id}: run.json without {manifest}")
                    continue
                wanted |= {f"output/{name}" for name in self.outputs(run_id, record)}
            missing = sorted(wanted - names)
            if missing:
                problems.append(f"{run_id}: run.json without {', '.join(missing)}")
        return problems

    def outputs(self, run_id: str, record: dict[str, Any] | None = None) -> list[str]:
        """The names a run's record says it stored: its manifest's (or, in records
        from before manifests, its inline list)."""
        record = record or json.loads(self._read(f"runs/{run_id}/run.json"))
        if "outputs" not in record:
            return list(record.get("artifacts", []))
        if not record["outputs"]["files"]:
            return []
        body = self._read(f"runs/{run_id}/{record['outputs']['manifest']}")
        return [json.loads(line)["name"] for line in body.splitlines()]

    def sweep_plan(self, sweep_id: str) -> list[str]:
        doc = json.loads(self._read(f"sweeps/{sweep_id}.json"))
        return [run["run_id"] for run in doc["runs"]]


# --------------------------------------------------------------------------- docker


class ContainerStarts:
    """Counts container starts per run id, live, while the block runs.

    The daemon keeps only its last 256 events, and other tests may add
    many, so past events (``docker events --since``) can miss some: listen from the start.
    """

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._stream: Any = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ContainerStarts:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> ContainerStarts:
        import docker

        self._client = docker.from_env()
        self._stream = self._client.events(
            decode=True, filters={"type": "container", "event": "start",
                                  "label": "org.orch.run_id"})
        self._thread = threading.Thread(target=self._listen, daemon=True, name="events")
        self._thread.start()
        return self

    def _listen(self) -> None:
        try:
            for event in self._stream:
                run_id = event.get("Actor", {}).get("Attributes", {}).get("org.orch.run_id")
                if run_id:
                    self.counts[run_id] += 1
        except Exception:  # noqa: BLE001 - the stream ends by being closed under us
            pass

    def stop(self) -> Counter[str]:
        """Stop listening (idempotent); the counts so far."""
        if self._thread is not None:
            time.sleep(0.5)  # the last start event may still be on its way
            self._stream.close()
            self._thread.join(timeout=5)
            self._thread = None
            self._client.close()
        return self.counts


def _labelled(client: Any, run_ids: set[str]) -> list[dict[str, Any]]:
    # the low-level listing: containers.list() inspects each one, and one removed in
    # between (by orch, or another test) would raise NotFound
    return [item for item in client.api.containers(all=True,
                                                  filters={"label": "org.orch.run_id"})
            if (item.get("Labels") or {}).get("org.orch.run_id") in run_ids]


def run_containers(run_ids: Iterable[str]) -> list[str]:
    """Names of the containers (running or not) of these runs."""
    import docker

    client = docker.from_env()
    try:
        return sorted(item["Names"][0].lstrip("/") for item in _labelled(client, set(run_ids)))
    finally:
        client.close()


def remove_containers(run_ids: Iterable[str]) -> None:
    import docker
    import docker.errors

    client = docker.from_env()
    try:
        for item in _labelled(client, set(run_ids)):
            try:
                client.api.remove_container(item["Id"], force=True)
            except docker.errors.APIError:
                pass
    finally:
        client.close()


def lease_is_configurable() -> bool:
    """Whether this orch reads ORCH_LEASE_S (in its settings, from the environment)."""
    import inspect

    from orchestrator import settings

    return "ORCH_LEASE_S" in inspect.getsource(settings)
