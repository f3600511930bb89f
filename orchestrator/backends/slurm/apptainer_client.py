"""``engine: apptainer``: the part of a Docker client that
:func:`orchestrator.runner.execute.execute` uses, over ``apptainer exec`` processes.

``execute`` claims the run, builds the container's arguments (``create_kwargs``), starts,
waits, stops, copies the logs and commits, the same for every engine; this adapter turns
``containers.create(**kwargs)`` into the run's :func:`~.apptainer.exec_invocation` (the same
bind mounts, environment and command) and runs it as a child process of the task, in a
session of its own so a stop reaches the whole container. Logs go to files beside the
run's work directory; a wait past the run's timeout raises what Docker's client raises, so
the timeout path is the same too.

Not run here: Apptainer is not packaged for Debian 12. ``tests/test_apptainer.py`` drives
this adapter through ``execute`` with a stand-in ``apptainer`` that runs the same argv's
bind mounts, environment and command with Docker, which checks everything up to the
``apptainer exec`` process itself.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ...errors import BackendError
from ...runner.container import CHECKPOINT_DIR, OUTPUT_DIR, RunDirs
from ...schema.record import Enforced, RunPlan
from .apptainer import SifImage, exec_invocation, process_env

_CHUNK = 1 << 20


class ApptainerClient:
    """The Docker-client surface ``execute`` needs, for one run on this node."""

    def __init__(self, plan: RunPlan, sif: SifImage, gpu_ids: Sequence[str] = (),
                 environ: Mapping[str, str] | None = None,
                 cgroup_root: Path = Path("/sys/fs/cgroup")) -> None:
        self.containers = _Containers(plan, sif, list(gpu_ids),
                                      dict(os.environ if environ is None else environ))
        self.api = _Api(self.containers)
        self._cgroup_root = cgroup_root

    def ping(self) -> bool:
        return True

    def enforced_limits(self) -> Enforced:
        """What ``apptainer exec`` is really held to: it sets no process, memory or CPU
        limit of its own and no size-limited /tmp, so the limits are those of the cgroup
        this task runs in (SLURM's, when it confines tasks), read from the kernel."""
        pids, memory, cpus = cgroup_limits(Path("/proc/self/cgroup"), self._cgroup_root)
        return Enforced(
            engine="Apptainer", pids=pids, memory=memory, cpus=cpus, tmpfs={},
            read_only_root=True,
            note="apptainer exec sets no limits of its own: processes, memory and CPUs "
                 "are bounded only by the task's cgroup (SLURM's); /tmp and /var/tmp "
                 "are a host directory (--workdir), bounded by its filesystem",
        )


def cgroup_limits(self_cgroup: Path, root: Path) -> tuple[int | None, int | None, float | None]:
    """(processes, memory bytes, CPUs) that the cgroup named in ``self_cgroup`` (a
    ``/proc/<pid>/cgroup``) and its ancestors under ``root`` hold it to: the tightest of
    each along the path; None where nothing limits it or the kernel does not say."""
    try:
        lines = self_cgroup.read_text().splitlines()
    except OSError:
        return None, None, None
    v2 = [line.split(":", 2)[2] for line in lines if line.startswith("0::")]
    pids: list[int] = []
    memory: list[int] = []
    cpus: list[float] = []
    if v2 and (root / "cgroup.controllers").exists():
        for directory in _ancestors(root, v2[0]):
            pids += _ints(directory / "pids.max")
            memory += _ints(directory / "memory.max")
            words = _words(directory / "cpu.max")
            if len(words) == 2 and words[0].isdigit() and words[1].isdigit():
                cpus.append(int(words[0]) / int(words[1]))
    else:
        paths = {}
        for line in lines:
            _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
            for controller in controllers.split(","):
                paths[controller] = path
        for directory in _ancestors(root / "pids", paths.get("pids")):
            pids += _ints(directory / "pids.max")
        for directory in _ancestors(root / "memory", paths.get("memory")):
            # v1 says "no limit" as a page-rounded 2**63-1
            memory += [n for n in _ints(directory / "memory.limit_in_bytes") if n < 1 << 62]
        for directory in _ancestors(root / "cpu", paths.get("cpu")):
            quota, period = _ints(directory / "cpu.cfs_quota_us"), _ints(
                directory / "cpu.cfs_period_us")
            if quota and period and quota[0] > 0:
                cpus.append(quota[0] / period[0])
    return (min(pids, default=None), min(memory, default=None),
            round(min(cpus), 6) if cpus else None)


def _ancestors(root: Path, path: str | None) -> list[Path]:
    if path is None:
        return []
    parts = [part for part in path.split("/") if part and part != ".."]
    return [root.joinpath(*parts[:n]) for n in range(len(parts), 0, -1)]


def _words(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except OSError:
        return []


def _ints(path: Path) -> list[int]:
    """The number in a cgroup file; none for ``max``, a missing file or anything else."""
    words = _words(path)
    return [int(words[0])] if words and words[0].isdigit() else []


class _Api:
    def __init__(self, containers: _Containers) -> None:
        self._containers = containers

    def containers(self, all: bool = False, filters: Mapping[str, Any] | None = None,
                   ) -> list[dict[str, Any]]:
        """This task's processes that still run (a run's leftovers are its children)."""
        return [{"Id": p.id} for p in self._containers.made if p.alive]

    def remove_container(self, container_id: str, force: bool = False) -> None:
        for made in self._containers.made:
            if made.id == container_id:
                made.remove(force=force)

    def inspect_container(self, container_id: str) -> dict[str, Any]:
        # Memory limits are SLURM's (the task's cgroup): an OOM kill is the task's end.
        return {"State": {"OOMKilled": False}}


class _Containers:
    def __init__(self, plan: RunPlan, sif: SifImage, gpu_ids: list[str],
                 environ: dict[str, str]) -> None:
        self._plan = plan
        self._sif = sif
        self._gpu_ids = gpu_ids
        self._environ = environ
        self.made: list[ApptainerProcess] = []

    def create(self, **kwargs: Any) -> ApptainerProcess:
        mounts = kwargs.get("mounts") or []
        output = next((m["Source"] for m in mounts if m["Target"] == OUTPUT_DIR), None)
        if output is None:
            raise BackendError("engine apptainer: a run needs its output directory")
        dirs = RunDirs(Path(output).parent)
        inputs = [(m["Target"], m["Source"]) for m in mounts
                  if m["Target"] not in (OUTPUT_DIR, CHECKPOINT_DIR)]
        env = {k: v for k, v in (kwargs.get("environment") or {}).items()
               if k != "ORCH_CHECKPOINT"}
        invocation = exec_invocation(self._plan, self._sif, dirs, env=env, mounts=inputs,
                                     gpu_ids=self._gpu_ids)
        made = ApptainerProcess(str(kwargs.get("name") or self._plan.run_id), invocation.argv,
                                dirs, process_env(self._environ), invocation.prepare)
        self.made.append(made)
        return made


class ApptainerProcess:
    """One run's ``apptainer exec``, shaped as a Docker container."""

    def __init__(self, name: str, argv: Sequence[str], dirs: RunDirs, env: dict[str, str],
                 prepare: Any) -> None:
        self.id = name
        self._argv = list(argv)
        self._env = env
        self._prepare = prepare
        self._stdout = dirs.root / "apptainer.stdout"
        self._stderr = dirs.root / "apptainer.stderr"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        self._prepare()
        with self._stdout.open("wb") as out, self._stderr.open("wb") as err:
            try:
                self._proc = subprocess.Popen(self._argv, stdout=out, stderr=err,
                                              stdin=subprocess.DEVNULL, env=self._env,
                                              start_new_session=True)
            except OSError as exc:
                raise BackendError(f"cannot start {self._argv[0]}: {exc.strerror or exc} "
                                   "(engine: apptainer needs Apptainer on every node)") from exc

    def wait(self, timeout: float | None = None) -> dict[str, int]:
        import requests.exceptions

        assert self._proc is not None
        try:
            code = self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            # What the Docker client raises when a wait outlasts its timeout.
            raise requests.exceptions.ReadTimeout(f"{self.id} still running") from None
        return {"StatusCode": 128 - code if code < 0 else code}

    def _signal(self, signum: int) -> None:
        if self.alive:
            assert self._proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signum)

    def stop(self, timeout: float = 10) -> None:
        self._signal(signal.SIGTERM)
        if self._proc is not None:
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        self._signal(signal.SIGKILL)
        if self._proc is not None:
            self._proc.wait()

    def remove(self, force: bool = False) -> None:
        if force:
            self.kill()

    def logs(self, stdout: bool = True, stderr: bool = False, stream: bool = True,
             follow: bool = False) -> Iterator[bytes]:
        path = self._stdout if stdout else self._stderr
        with contextlib.suppress(FileNotFoundError), path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                yield chunk
