"""What every benchmark shares: the Docker client, the base image, the throwaway orch
project, the floor measurement and the collected figures."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from common import (
    BASE_TAG,
    GIT_ENV,
    ORCH,
    REPO,
    BenchError,
    Janitor,
    Stat,
    log,
    remove_containers,
    remove_images,
    run_timed,
)

#: A run that does nothing: the per-run figures then measure orch, not the workload.
TRIVIAL_COMMAND = ["python3", "-c", "pass"]


@dataclass
class Row:
    """One line of the human table."""

    section: str
    stat: Stat
    unit: str = "s"


@dataclass
class Ctx:
    janitor: Janitor
    quick: bool
    #: The test suite's smoke (``--smoke``): the least of everything, one repeat, tiny
    #: sizes; the figures mean nothing, the point is that every section still runs.
    smoke: bool = False
    name: str = field(default_factory=lambda: f"orchbench-{os.getpid()}")
    figures: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    cache: dict[str, Any] = field(default_factory=dict)
    _client: Any = None
    _base_id: str | None = None
    _project: Path | None = None
    _warm: bool = False

    def reps(self, full: int, quick: int) -> int:
        if self.smoke:
            return min(quick, 1)
        return quick if self.quick else full

    def size(self, full: int, quick: int, smoke: int) -> int:
        """A section's workload size (runs, files, bytes) at this run's setting."""
        return smoke if self.smoke else quick if self.quick else full

    def row(self, section: str, stat: Stat, unit: str = "s") -> Stat:
        self.rows.append(Row(section, stat, unit))
        return stat

    # -- Docker -------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        if self._client is None:
            sys.path.insert(0, str(REPO))
            from orchestrator.daemon.client import connect

            self._client = connect()
        return self._client

    @property
    def base_id(self) -> str:
        """The ID of the shared base image (built by ``make setup``; never removed here)."""
        if self._base_id is None:
            proc = subprocess.run(
                ["docker", "image", "inspect", BASE_TAG, "--format", "{{.Id}}"],
                capture_output=True,
                text=True,
                check=False,
            )
            image_id = proc.stdout.strip()
            if proc.returncode != 0 or not image_id.startswith("sha256:"):
                log(f"{BASE_TAG} is missing: building it with images/build_base.py")
                built = subprocess.run(
                    [sys.executable, str(REPO / "images" / "build_base.py")],
                    capture_output=True,
                    text=True,
                    check=False,
                    cwd=REPO,
                )
                lines = built.stdout.strip().splitlines()
                if built.returncode != 0 or not lines or not lines[-1].startswith("sha256:"):
                    raise BenchError(
                        f"no base image: images/build_base.py failed: {built.stderr[-500:]}"
                    )
                image_id = lines[-1]
            self._base_id = image_id
        return self._base_id

    # -- the throwaway project ----------------------------------------------------------

    def project(self) -> Path:
        """A committed copy of the demo project whose command is trivial; made once."""
        if self._project is None:
            root = self.janitor.tempdir("project-") / self.name
            shutil.copytree(REPO / "configs", root / "configs")
            shutil.copy(REPO / "train.py", root / "train.py")
            subprocess.run(
                [sys.executable, str(REPO / "scripts" / "demo-data.py"), str(root / "data")],
                check=True, capture_output=True,
            )
            data = {
                "name": self.name,
                "base_image": self.base_id,
                "command": TRIVIAL_COMMAND,
                "resources": {"cpus": 1, "gpus": 0},
                "network": "none",
                "inputs": yaml.safe_load((REPO / "orch.yaml").read_text())["inputs"],
            }
            (root / "orch.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
            (root / ".gitignore").write_text(".orch/\ndata/\n")
            env = {**os.environ, **GIT_ENV}
            subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True, env=env)
            subprocess.run(["git", "-C", str(root), "add", "-A"], check=True, env=env)
            subprocess.run(
                ["git", "-C", str(root), "commit", "-q", "-m", "bench"], check=True, env=env
            )
            # Every image orch makes for this project carries its name as a label, and so
            # does every container made from them: that is how the janitor finds them all.
            label = f"label=org.orch.project={self.name}"
            self.janitor.add(f"remove images of {self.name}", lambda: remove_images(label))
            self.janitor.add(f"remove containers of {self.name}", lambda: remove_containers(label))
            self._project = root
        return self._project

    def script_project(self, name: str, script: str, config: str) -> Path:
        """A committed project whose command is ``python3 run.py`` (``script``) over a one-file
        config tree; its images and containers are removed at cleanup (they carry the
        project's name as a label)."""
        root = self.janitor.tempdir("script-") / name
        (root / "configs").mkdir(parents=True)
        (root / "configs" / "config.yaml").write_text(config)
        (root / "run.py").write_text(script)
        data = {"name": name, "base_image": self.base_id, "command": ["python3", "run.py"]}
        return self.commit_project(root, data)

    def commit_project(self, root: Path, data: dict[str, Any]) -> Path:
        """Write ``data`` as ``root``'s orch.yaml and commit the project in a new git
        repository; its images and containers are removed at cleanup (they carry the
        project's name as a label)."""
        name = data["name"]
        (root / "orch.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
        (root / ".gitignore").write_text(".orch/\n")
        env = {**os.environ, **GIT_ENV}
        for argv in (["git", "init", "-q", "-b", "main", str(root)],
                     ["git", "-C", str(root), "add", "-A"],
                     ["git", "-C", str(root), "commit", "-q", "-m", "bench"]):
            subprocess.run(argv, check=True, env=env, capture_output=True)
        label = f"label=org.orch.project={name}"
        self.janitor.add(f"remove images of {name}", lambda: remove_images(label))
        self.janitor.add(f"remove containers of {name}", lambda: remove_containers(label))
        return root

    def s3_server(self, tmp: Path) -> contextlib.AbstractContextManager[str]:
        """A SeaweedFS server for a section, as a context giving its S3 endpoint: the one
        named by ``ORCH_BENCH_S3_ENDPOINT`` when set (the test suite's shared server; a
        section takes fresh buckets on it), else one of its own in ``tmp``."""
        shared = os.environ.get("ORCH_BENCH_S3_ENDPOINT")
        if shared:
            return contextlib.nullcontext(shared)
        sys.path.insert(0, str(REPO / "tests"))
        import seaweed  # tests/seaweed.py: a real SeaweedFS server on free loopback ports

        return seaweed.seaweed_server(tmp)

    def store(self, what: str) -> Path:
        """A fresh, empty directory store."""
        return self.janitor.tempdir(f"store-{what}-") / "store"

    def sweep(
        self,
        overrides: list[str],
        *,
        jobs: int = 1,
        store: Path | None = None,
        timeout: float = 600,
        env: dict[str, str] | None = None,
    ) -> tuple[float, dict[str, Any]]:
        """``orch sweep`` as a user runs it (``env`` added to the environment); (wall
        seconds, its --json output)."""
        store = store or self.store("sweep")
        argv = [
            ORCH,
            "sweep",
            "-p",
            str(self.project()),
            "--store",
            str(store),
            "--jobs",
            str(jobs),
            "--json",
            *overrides,
        ]
        timed = run_timed(self.janitor, argv, timeout=timeout, check=False, env=env)
        if timed.returncode != 0:
            raise BenchError(
                f"orch sweep {' '.join(overrides)} exited {timed.returncode}: "
                f"{timed.stderr.strip().splitlines()[-1:] or ''}"
            )
        result = json.loads(timed.stdout)
        bad = [r for r in result["runs"] if r["status"] != "succeeded"]
        if bad:
            raise BenchError(f"orch sweep: {len(bad)} run(s) did not succeed: {bad[0]}")
        return timed.seconds, result

    def warm(self) -> None:
        """One small sweep so the environment and code images exist (the cached case)."""
        if not self._warm:
            log("warm-up sweep (environment and code images)")
            self.sweep(["optimizer=SGD,adam", "training_settings.seed=0"])
            self._warm = True

    # -- the floor ----------------------------------------------------------------------

    def floor_label(self) -> list[str]:
        """A label on the floor's containers, so an interrupted run leaves none behind."""
        if "floor_label" not in self.cache:
            label = f"org.orch.bench={self.name}"
            self.janitor.add("remove floor containers", lambda: remove_containers(f"label={label}"))
            self.cache["floor_label"] = ["--label", label]
        return list(self.cache["floor_label"])

    def floor(self, count: int, into: Stat | None = None) -> Stat:
        """``docker run --rm BASE true`` ``count`` times; samples go to the shared floor
        statistic and to ``into`` (the section's own, measured interleaved with it)."""
        shared = self.cache.setdefault("floor", Stat("floor: docker run --rm BASE true"))
        for _ in range(count):
            timed = run_timed(
                self.janitor, ["docker", "run", "--rm", *self.floor_label(), self.base_id, "true"]
            )
            shared.add(timed.seconds)
            if into is not None:
                into.add(timed.seconds)
        return shared
