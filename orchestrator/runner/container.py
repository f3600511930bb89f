"""Running one run image as a container, and collecting what it leaves behind.

A run's writable directories are host directories bind-mounted into the container
(:class:`RunDirs`): ``/orch/output`` and ``/orch/checkpoint``. So outputs and logs go
from disk to the store in bounded chunks whatever their size, the driver can follow
``metrics.jsonl`` while the run writes it, and a checkpoint can be restored before the
container starts and saved while it runs. Nothing else of the host is mounted. The
directories must be on the Docker host's filesystem (the node that runs the run);
``ORCH_WORK_DIR`` moves them (e.g. to a path Docker Desktop shares).

Why one module of this size: a container's creation arguments, its start and wait under
a stop, and what the engine reports it enforced are one conversation with the daemon;
what the run left is walked in :mod:`.outputs`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..daemon.client import Container, DockerClient, describe
from ..daemon.engine import DOCKER, Engine
from ..errors import BackendError
from ..schema.record import Enforced

RUN_UID = 65534
RUN_USER = f"{RUN_UID}:{RUN_UID}"
OUTPUT_DIR = "/orch/output"
CHECKPOINT_DIR = "/orch/checkpoint"
#: Seconds a cancelled run gets to exit after SIGTERM before it is killed.
STOP_GRACE_S = 10
#: How long a run waits for a Docker daemon that went away to come back.
DAEMON_RETRY_S = 30.0
#: Logs are copied from Docker in chunks of this size: memory does not grow with a log.
_CHUNK = 1 << 20
#: Processes and threads a run may have at once (a fork bomb stops here, not at the node).
PIDS_LIMIT = 4096
#: The run's scratch space: /tmp and /var/tmp are tmpfs of this size each, and the rest of
#: the image is read-only, so a run cannot grow the container's writable layer (overlay2
#: on these hosts has no quota support: ``storage_opt size`` is refused). tmpfs pages are
#: charged to the container's memory limit when it has one.
TMP_SIZE = "1g"
TMP_MOUNTS = ("/tmp", "/var/tmp")
#: What every container is held to besides its resources, as run settings would say it
#: (orch.yaml's ``resources: {pids, tmp}`` change the first two).
ENFORCED = {"pids": PIDS_LIMIT, "tmp": TMP_SIZE, "read_only_root": True}


@dataclass(frozen=True)
class RunDirs:
    """The host side of one attempt's writable directories; removed after its commit."""

    root: Path

    @property
    def output(self) -> Path:
        return self.root / "output"

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @classmethod
    def create(cls, work_root: Path, name: str) -> RunDirs:
        work_root.mkdir(parents=True, exist_ok=True)
        _reap_orphans(work_root)
        owner = f"{_OWNER_HOST}.{os.getpid()}"
        dirs = cls(Path(tempfile.mkdtemp(prefix=f"{name}.{owner}-", dir=work_root)))
        dirs.logs.mkdir()
        for path in (dirs.output, dirs.checkpoint):
            path.mkdir()
            # The run is uid 65534, never root: its two directories are its own.
            with contextlib.suppress(PermissionError):
                os.chown(path, RUN_UID, RUN_UID)
            path.chmod(0o755)
        return dirs

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


#: A work directory is named ``<run>.<host>.<pid>-<random>``: whoever makes a new one on the
#: same host removes those whose process is gone (a submitter or Ray worker that was
#: killed), and never touches another host's (``ORCH_WORK_DIR`` may be shared).
_OWNER_HOST = socket.gethostname().replace(".", "_").replace("-", "_") or "host"
_OWNED = re.compile(r"^orch-[^.]+\.(?P<host>[^.]+)\.(?P<pid>\d+)-")


def _reap_orphans(work_root: Path) -> None:
    for entry in work_root.iterdir():
        match = _OWNED.match(entry.name)
        if match is None or match["host"] != _OWNER_HOST or not entry.is_dir():
            continue
        if not _alive(int(match["pid"])):
            shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


@dataclass
class ContainerResult:
    exit_code: int | None
    stdout: Path
    stderr: Path
    started: float = 0.0
    ended: float = 0.0
    reason: str | None = None
    cancelled: bool = False
    #: The run's claim was taken over while it ran: the attempt is not committed.
    lost: bool = False
    enforced: Enforced | None = None


def device_requests(gpu_ids: list[str]) -> list[Any]:
    """The exact GPU request sent to Docker for these device ids (nvidia runtime)."""
    if not gpu_ids:
        return []
    from docker.types import DeviceRequest

    return [DeviceRequest(driver="nvidia", device_ids=list(gpu_ids), capabilities=[["gpu"]])]


def create_kwargs(
    *,
    image_id: str,
    command: list[str],
    run_id: str,
    cpus: float,
    memory: str | None,
    network: str,
    gpu_ids: list[str],
    env: dict[str, str],
    name: str,
    dirs: RunDirs | None = None,
    mounts: Sequence[tuple[str, str]] = (),
    pids: int | None = None,
    tmp: str | None = None,
) -> dict[str, Any]:
    """Arguments of ``containers.create``: unprivileged, no capabilities, argv only.

    With ``dirs``, the run's output and checkpoint directories are bind-mounted; with
    ``mounts`` ((container path, host path) pairs), the data inputs, read-only. Nothing
    else of the host is. ``pids`` and ``tmp`` (orch.yaml's ``resources``) replace the
    defaults PIDS_LIMIT and TMP_SIZE.
    """
    pids = PIDS_LIMIT if pids is None else pids
    tmp = TMP_SIZE if tmp is None else tmp
    enforced = {**ENFORCED, "pids": pids, "tmp": tmp}
    kwargs: dict[str, Any] = {
        "image": image_id,
        "command": command,
        "user": RUN_USER,
        "network_mode": network,
        "nano_cpus": int(cpus * 1e9),
        "privileged": False,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "environment": env,
        "name": name,
        "detach": True,
        # A tiny init as PID 1 forwards SIGTERM to the run (a process that is PID 1 itself
        # ignores it, so a cancel would wait out the grace period) and reaps zombies.
        "init": True,
        "pids_limit": pids,
        "read_only": True,
        "tmpfs": {path: f"size={tmp},mode=1777" for path in TMP_MOUNTS},
        "labels": {"org.orch.run_id": run_id,
                   "org.orch.enforced": ",".join(f"{k}={v}" for k, v in enforced.items())},
    }
    if dirs is not None or mounts:
        from docker.types import Mount

        binds = [
            Mount(target, source, type="bind", read_only=True) for target, source in mounts
        ]
        if dirs is not None:
            binds += [
                Mount(OUTPUT_DIR, str(dirs.output), type="bind"),
                Mount(CHECKPOINT_DIR, str(dirs.checkpoint), type="bind"),
            ]
            kwargs["environment"] = {**env, "ORCH_CHECKPOINT": CHECKPOINT_DIR}
        kwargs["mounts"] = binds
    if memory:
        kwargs["mem_limit"] = memory
        kwargs["memswap_limit"] = memory  # no swap: over the limit means the OOM killer
    requests = device_requests(gpu_ids)
    if requests:
        kwargs["device_requests"] = requests
    return kwargs


class Running:
    """A created, started container: wait for it, stop it, collect its logs, remove it."""

    def __init__(self, client: DockerClient, container: Container, started: float,
                 stop_grace_s: int = STOP_GRACE_S) -> None:
        self._client = client
        self._container = container
        self.started = started
        self._stop_grace_s = stop_grace_s
        self.reason: str | None = None
        self.exit_code: int | None = None
        self.cancelled = False
        self.lost = False
        #: What the engine holds the container to, as it reported it once created.
        self.enforced: Enforced | None = None
        self._stopping = threading.Lock()

    @classmethod
    def start(cls, client: DockerClient, kwargs: dict[str, Any],
              stop_grace_s: int = STOP_GRACE_S) -> Running:
        import docker.errors
        import requests.exceptions

        try:
            container = client.containers.create(**kwargs)
        except requests.exceptions.ConnectionError as exc:
            raise daemon_lost(client, exc) from exc
        except docker.errors.ImageNotFound as exc:
            raise BackendError(
                f"image {kwargs['image']} is not on the daemon: {describe(exc)}"
            ) from exc
        except docker.errors.APIError as exc:
            raise BackendError(f"cannot create the container: {describe(exc)}") from exc
        running = cls(client, container, time.time(), stop_grace_s)
        running.enforced = enforced_by(client, getattr(container, "attrs", None) or {})
        try:
            container.start()
        except docker.errors.APIError as exc:
            running.reason = f"could not start: {describe(exc)}"
        except requests.exceptions.ConnectionError as exc:
            raise daemon_lost(client, exc) from exc
        return running

    def stop(self, *, cancelled: bool = False, lost: bool = False) -> None:
        """SIGTERM, a grace period, then SIGKILL; safe from any thread, more than once."""
        import docker.errors

        self.cancelled = self.cancelled or cancelled
        self.lost = self.lost or lost
        if not self._stopping.acquire(blocking=False):
            return
        with contextlib.suppress(docker.errors.APIError):
            self._container.stop(timeout=self._stop_grace_s)

    def wait(self, timeout: float | None) -> None:
        import docker.errors
        import requests.exceptions

        if self.reason is not None:
            return
        try:
            status = self._container.wait(timeout=timeout) if timeout else self._container.wait()
            self.exit_code = int(status.get("StatusCode", -1))
        except requests.exceptions.ReadTimeout:
            self._kill_after_timeout()
            self.reason = f"timeout after {timeout:g}s" if timeout else "timeout"
        except requests.exceptions.ConnectionError as exc:
            # A wait past its timeout surfaces as a connection error too: the daemon that
            # still answers a ping says which one it was.
            if timeout and self._daemon_answers():
                self._kill_after_timeout()
                self.reason = f"timeout after {timeout:g}s"
                return
            self._daemon_came_back(exc)
            self.reason = "the Docker daemon went away during the run"
            return
        except docker.errors.APIError as exc:
            self.reason = f"lost the container: {describe(exc)}"
        if self.lost and self.reason is None:
            self.reason = "its claim was taken over by another submitter"
        elif self.cancelled and self.reason is None:
            self.reason = "cancelled"
        elif self.reason is None:
            try:
                state = self._client.api.inspect_container(str(self._container.id))["State"]
            except docker.errors.APIError as exc:  # removed under us (a takeover, a prune)
                self.reason = f"lost the container: {describe(exc)}"
                return
            if state.get("OOMKilled"):
                self.reason = "killed: out of memory"
            elif self.exit_code != 0:
                self.reason = f"exit code {self.exit_code}"

    def _kill_after_timeout(self) -> None:
        import docker.errors
        import requests.exceptions

        with contextlib.suppress(docker.errors.APIError, requests.exceptions.RequestException):
            self._container.kill()
            self._container.wait()

    def _daemon_answers(self) -> bool:
        import requests.exceptions

        try:
            self._client.ping()
        except requests.exceptions.RequestException:
            return False
        return True

    def _daemon_came_back(self, exc: Exception) -> None:
        """Wait (bounded) for a daemon that went away; BackendError if it stays away."""
        import requests.exceptions

        deadline = time.monotonic() + DAEMON_RETRY_S
        while time.monotonic() < deadline:
            time.sleep(1.0)
            try:
                self._client.ping()
                return
            except requests.exceptions.RequestException:
                continue
        raise daemon_lost(self._client, exc)

    def collect(self, dirs: RunDirs) -> ContainerResult:
        """Copy the logs to files (in chunks) and remove the container, whatever happens."""
        import docker.errors
        import requests.exceptions

        ended = time.time()
        stdout, stderr = dirs.logs / "stdout.log", dirs.logs / "stderr.log"
        try:
            _copy_log(self._container, stdout, stdout=True)
            _copy_log(self._container, stderr, stdout=False)
            if self.reason is not None and self.reason.startswith("could not start"):
                with stderr.open("ab") as handle:
                    handle.write(self.reason.encode() + b"\n")
        finally:
            with contextlib.suppress(docker.errors.APIError, requests.exceptions.RequestException):
                self._container.remove(force=True)
        return ContainerResult(
            self.exit_code, stdout, stderr, self.started, ended, self.reason, self.cancelled,
            self.lost, self.enforced,
        )


def enforced_by(client: DockerClient, inspected: Mapping[str, Any]) -> Enforced | None:
    """What the engine holds a created container to, from its own inspect of it
    (``HostConfig``, as the SDK's ``containers.create`` fetched it); None when it cannot
    say. A client that is not Docker's API (the Apptainer adapter) answers through its own
    ``enforced_limits()``."""
    own = getattr(client, "enforced_limits", None)
    if callable(own):
        found = own()
        return found if isinstance(found, Enforced) else None
    host = inspected.get("HostConfig")
    if not isinstance(host, Mapping):
        return None
    return from_host_config(host, getattr(client, "engine", DOCKER))


def from_host_config(host: Mapping[str, Any], engine: Engine) -> Enforced:
    """:class:`Enforced` from an inspect's ``HostConfig`` (Docker's, or Podman's
    compatible one). Rootless Podman on cgroup v1 reports the limits it accepted and
    ignores them: those are recorded as not enforced."""
    pids = _positive(host.get("PidsLimit"))
    memory = _positive(host.get("Memory"))
    nano = _positive(host.get("NanoCpus"))
    quota, period = _positive(host.get("CpuQuota")), _positive(host.get("CpuPeriod"))
    cpus = nano / 1e9 if nano else (quota / period if quota and period else None)
    tmpfs = host.get("Tmpfs") or {}
    note = ""
    if engine.ignores_limits:
        note = (f"{engine.label} on cgroup v1 does not enforce process, memory or CPU "
                "limits (whatever its inspect says)")
        pids = memory = None
        cpus = None
    return Enforced(
        engine=engine.label or engine.name,
        pids=pids,
        memory=memory,
        cpus=round(cpus, 6) if cpus else None,
        tmpfs={str(k): str(v) for k, v in tmpfs.items()} if isinstance(tmpfs, dict) else {},
        read_only_root=bool(host.get("ReadonlyRootfs")),
        note=note,
    )


def _positive(value: Any) -> int | None:
    """An engine's limit as a number; 0, -1 and absent mean none."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _copy_log(container: Any, path: Path, *, stdout: bool) -> None:
    import docker.errors
    import requests.exceptions

    with path.open("wb") as handle:
        try:
            # The run has ended: not following (the SDK follows a stream by default) spares
            # Podman's quarter-second poll for more, twice a run.
            logs = container.logs(stdout=stdout, stderr=not stdout, stream=True, follow=False)
            for chunk in logs:
                handle.write(chunk)
        except (docker.errors.APIError, requests.exceptions.RequestException):
            pass  # the container (or its daemon) is gone: what was copied is what there is


def mounted_by_runs(client: DockerClient) -> set[str]:
    """The host paths that orch's running containers bind-mount (their inputs, among
    others): what a prune of the host cache must leave in place."""
    import docker.errors
    import requests

    try:
        containers = client.api.containers(filters={"label": "org.orch.run_id"})
        return {
            str(mount.get("Source"))
            for container in containers
            for mount in container.get("Mounts") or []
            if mount.get("Type") == "bind"
        }
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise BackendError(
            f"cannot list the running containers, so not which inputs they mount: "
            f"{describe(exc)}"
        ) from exc


def daemon_lost(client: DockerClient, exc: Exception) -> BackendError:
    where = getattr(getattr(client, "api", None), "base_url", "the Docker daemon")
    return BackendError(
        f"lost the Docker daemon at {where} ({type(exc).__name__}): is it running? "
        "(make setup starts it); re-submit the sweep once it is back"
    )


def run(
    client: DockerClient,
    kwargs: dict[str, Any],
    timeout: float | None,
    dirs: RunDirs,
    slot: AbstractContextManager[Any] | None = None,
    *,
    before_start: Callable[[], None] | None = None,
    while_running: Callable[[Running], AbstractContextManager[Any]] | None = None,
    stop_grace_s: int = STOP_GRACE_S,
) -> ContainerResult:
    """Create, start and wait for the container inside ``slot`` (the backend's limit on
    parallel runs); collecting its logs overlaps with the start of the next run.

    ``before_start`` runs once the slot is held (a claim is taken there, so no run holds
    a claim while it only waits for a slot); ``while_running`` wraps the wait (heartbeat,
    metrics follower, cancel hook).
    """
    with slot or nullcontext():
        if before_start is not None:
            before_start()
        running = Running.start(client, kwargs, stop_grace_s)
        with while_running(running) if while_running else nullcontext():
            running.wait(timeout)
    return running.collect(dirs)
