"""Podman's Docker-compatible API for tests: rootful, or rootless as a user of its own.

Each service keeps all its state in a short directory under /tmp (a unix socket path
must stay under about 100 characters): its storage (``--root``), its run state, its
socket and, rootless, the user's home and ``XDG_RUNTIME_DIR``. On exit the containers
are removed, the service stopped, its rootless pause process ended, and the directory
deleted::

    with podman_service(tmp) as podman:                      # rootful
        podman.docker_host                                   # "unix:///tmp/orchpXXXX/podman.sock"
    with podman_service(tmp, user=ensure_user("orchpodman")) as podman:   # rootless
        podman.run_as_user([...])                            # a command as that user

Rootful Podman here needs a containers.conf with explicit default ulimits: root on these
machines lacks CAP_SYS_RESOURCE, so Podman's default rlimits fail every container.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers import REPO
from services import ServiceError, _remove_state, _stop, _wait_until

PODMAN = shutil.which("podman") or "/usr/bin/podman"
#: Debian's own interpreter: a user who is not root cannot reach the venv's (under /root).
SYSTEM_PYTHON = "/usr/bin/python3"
CONTAINERS_CONF = '[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
#: ``orch`` from this checkout and the venv's packages, under the system interpreter (the
#: same CPython 3.11 ABI), with SIGINT's default handler as a terminal's job has it.
_ORCH_AS_USER = (
    "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.path[:0] = [sys.argv.pop(1), sys.argv.pop(1)]; sys.argv[0] = 'orch'; "
    "from orchestrator.cli import main; main()"
)


@dataclass(frozen=True)
class Podman:
    docker_host: str
    root: Path
    #: The user a rootless service runs as; None when rootful.
    user: pwd.struct_passwd | None = None
    #: ``podman`` and its global options (storage, run state): the CLI on the same storage.
    argv: tuple[str, ...] = ()
    #: The environment the CLI needs (CONTAINERS_CONF, rootless: HOME and XDG_RUNTIME_DIR).
    env: tuple[tuple[str, str], ...] = ()

    def cli(self, *args: str) -> list[str]:
        """``podman ARGS`` on this service's storage (run as root only when rootful)."""
        return [*self.argv, *args]

    @property
    def rootless(self) -> bool:
        return self.user is not None

    @property
    def home(self) -> Path:
        """A directory of the service's user (the home a rootless user's orch runs with)."""
        return self.root / "home"

    def client(self) -> Any:
        import docker

        return docker.DockerClient(base_url=self.docker_host, timeout=120)

    def containers(self, label: str = "org.orch.run_id") -> list[str]:
        """Names of the containers (running or not) that carry ``label``."""
        client = self.client()
        try:
            return sorted(c["Names"][0].lstrip("/") for c in client.api.containers(
                all=True, filters={"label": label}))
        finally:
            client.close()

    def user_env(self, **extra: str) -> dict[str, str]:
        """The whole environment of a process run as the service's user."""
        assert self.user is not None
        return {"PATH": "/usr/bin:/bin", "HOME": str(self.home), "LANG": "C.UTF-8",
                "DOCKER_HOST": self.docker_host, **extra}

    def orch_as_user(self, args: Sequence[str]) -> list[str]:
        """The argv of ``orch ARGS`` for :meth:`run_as_user` / :meth:`popen_as_user`."""
        site = next((REPO / ".venv" / "lib").glob("python3*/site-packages"))
        return [SYSTEM_PYTHON, "-c", _ORCH_AS_USER, str(REPO), str(site), *args]

    def run_as_user(self, argv: Sequence[str], *, cwd: Path, timeout: float = 300,
                    **extra_env: str) -> subprocess.CompletedProcess[str]:
        assert self.user is not None
        return subprocess.run(list(argv), capture_output=True, text=True, cwd=cwd,
                              timeout=timeout, env=self.user_env(**extra_env),
                              user=self.user.pw_uid, group=self.user.pw_gid, extra_groups=[])

    def popen_as_user(self, argv: Sequence[str], *, cwd: Path, log: Path,
                      **extra_env: str) -> subprocess.Popen[bytes]:
        """Started in a session of its own (a terminal's foreground job), output to files."""
        assert self.user is not None
        with (log / "out").open("wb") as out, (log / "err").open("wb") as err:
            return subprocess.Popen(
                list(argv), stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=cwd,
                env=self.user_env(**extra_env), user=self.user.pw_uid, group=self.user.pw_gid,
                extra_groups=[], start_new_session=True)

    def chown(self, path: Path) -> None:
        """Give ``path`` and everything below it to the service's user."""
        assert self.user is not None
        subprocess.run(["chown", "-R", f"{self.user.pw_uid}:{self.user.pw_gid}", str(path)],
                       check=True)


def ensure_user(name: str) -> pwd.struct_passwd:
    """A user with a home and subordinate ids (what rootless Podman needs), made if missing."""
    if os.geteuid() != 0:
        raise ServiceError("making a user for rootless Podman needs root")
    try:
        user = pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], check=True,
                       capture_output=True)
        user = pwd.getpwnam(name)
    for table in ("/etc/subuid", "/etc/subgid"):
        lines = Path(table).read_text().splitlines() if Path(table).exists() else []
        if not any(line.split(":")[0] in (name, str(user.pw_uid)) for line in lines):
            raise ServiceError(f"{name} has no range in {table}: usermod --add-subuids/gids")
    return user


def _answers(docker_host: str) -> bool:
    import docker
    import docker.errors

    try:
        client = docker.DockerClient(base_url=docker_host, timeout=5)
    except docker.errors.DockerException:
        return False
    try:
        return bool(client.ping())
    except Exception:  # noqa: BLE001 - not up yet, whatever the way it fails
        return False
    finally:
        client.close()


@contextlib.contextmanager
def podman_service(log_dir: Path, user: pwd.struct_passwd | None = None,
                   timeout: float = 60) -> Iterator[Podman]:
    """``podman system service`` with its own storage; rootless when ``user`` is given."""
    if not os.access(PODMAN, os.X_OK):
        raise ServiceError("podman missing: run scripts/ensure-docker.sh")
    root = Path(tempfile.mkdtemp(prefix="orchp", dir="/tmp"))
    root.chmod(0o755)  # a rootless user reaches its directories below
    conf = root / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    storage = ["--root", str(root / "storage"), "--runroot", str(root / "run"),
               "--storage-driver", "overlay"]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CONTAINERS_CONF": str(conf)}
    (root / "home").mkdir()
    _mount_tmpfs(root / "storage", user)
    if user is None:
        socket = root / "podman.sock"
        popen: dict[str, Any] = {"env": {**env, "HOME": str(root / "home")}}
    else:
        runtime = root / "xdg"  # a rootless service's socket must be in a directory of its own
        runtime.mkdir(mode=0o700)
        for path in (root / "home", runtime):
            os.chown(path, user.pw_uid, user.pw_gid)
        storage[3] = str(runtime / "run")
        socket = runtime / "podman.sock"
        popen = {"env": {**env, "HOME": str(root / "home"), "XDG_RUNTIME_DIR": str(runtime)},
                 "user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    docker_host = f"unix://{socket}"
    log = log_dir / ("podman-rootless.log" if user else "podman.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [PODMAN, *storage, "system", "service", "--time=0", docker_host],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, **popen,
        )
    podman = Podman(docker_host, root, user, (PODMAN, *storage),
                    tuple(sorted(popen["env"].items())))
    try:
        _wait_until(lambda: _answers(docker_host), proc, "podman system service", log, timeout)
        yield podman
    finally:
        if proc.poll() is None:
            with contextlib.suppress(Exception):
                _remove_containers(podman)
        _stop(proc, timeout=30)
        # Rootless Podman re-executes itself inside the user's namespace: the service that
        # answers is a child in the same process group, which outlives its parent.
        _stop_group(proc.pid, timeout=30)
        if user is not None:
            _end_pause_process(root / "xdg" / "libpod" / "tmp" / "pause.pid", user)
        _remove_state(root)


def _mount_tmpfs(path: Path, user: pwd.struct_passwd | None) -> None:
    """Podman's storage in memory: a rootless Podman 4.3 keeps a re-owned copy of every
    run image (thousands of files each), which a disk takes seconds to write and delete."""
    path.mkdir()
    owner = f",uid={user.pw_uid},gid={user.pw_gid}" if user else ""
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size=8g,mode=0755{owner}",
                             "orch-podman", str(path)], capture_output=True, text=True)
    if result.returncode != 0:
        raise ServiceError(f"cannot mount a tmpfs for Podman's storage: {result.stderr}")


def _remove_containers(podman: Podman) -> None:
    client = podman.client()
    try:
        for container in client.containers.list(all=True):
            container.remove(force=True)
    finally:
        client.close()


def _group_members(pgid: int) -> list[int]:
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid:  # state, ppid, pgrp
            members.append(int(stat.parent.name))
    return members


def _stop_group(pgid: int, timeout: float) -> None:
    """SIGTERM to what is left of the process group the service started, then SIGKILL."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        if not _group_members(pgid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signum)
        deadline = time.monotonic() + timeout
        while _group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)


def _end_pause_process(pidfile: Path, user: pwd.struct_passwd) -> None:
    """Rootless Podman keeps a pause process holding the user's namespace after the
    service exits; this service's (named in its own run directory) is ended here."""
    try:
        pid = int(pidfile.read_text().strip())
        owner = Path(f"/proc/{pid}").stat().st_uid
    except (OSError, ValueError):
        return
    if owner == user.pw_uid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def copy_base_image(podman: Podman, image_id: str) -> None:
    """The base image, from Docker to this service (as root, through its socket)."""
    from services import copy_image

    copy_image(os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock",
               podman.docker_host, image_id)
