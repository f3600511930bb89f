"""Real services for tests: a Docker registry and a second Docker daemon, on loopback.

Each is a context manager that waits (bounded) until the service answers and, on exit,
stops it and removes everything it created::

    with registry(tmp_dir) as host:                 # "127.0.0.1:PORT"
        ...
    with second_daemon(tmp_dir) as docker_host:     # "unix:///tmp/orchdXXXX/docker.sock"
        copy_image("unix:///var/run/docker.sock", docker_host, image_id)

The second daemon is a simulated second node with an empty image cache. It gets its own
bridge (``orchbr1``, 172.30.0.1/24) and ``--iptables=false``, so it neither fights the first
daemon over ``docker0`` nor touches the host's firewall. Its state lives in a short
directory under /tmp, because a unix socket path must stay under about 100 characters.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

REGISTRY_BINARY = "/usr/bin/docker-registry"
BRIDGE = "orchbr1"
BRIDGE_ADDR = "172.30.0.1/24"


class ServiceError(RuntimeError):
    """A test service did not start or stop in time."""


# Below Linux's default ephemeral range (32768-60999), so no outgoing connection takes a
# port between the probe and the service binding it.
_PORT_RANGE = (20000, 32768)
_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on and that no earlier call in this process returned.

    A service such as Ray takes several ports at once and refuses two components on one
    port; successive ``bind(0)`` probes may return the same port, so each port is given once.
    """
    rng = random.Random()
    for _ in range(1000):
        port = rng.randrange(*_PORT_RANGE)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise ServiceError(f"no free loopback port in {_PORT_RANGE[0]}-{_PORT_RANGE[1] - 1}")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _stop(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, wait, then SIGKILL: the process is gone when this returns."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _wait_until(
    check: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, log: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise ServiceError(f"{what} exited with {proc.returncode}:\n{_tail(log)}")
        if check():
            return
        if time.monotonic() > deadline:
            raise ServiceError(f"{what} did not answer within {timeout:.0f}s:\n{_tail(log)}")
        time.sleep(0.1)


# --- registry ----------------------------------------------------------------------------


def _registry_answers(address: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{address}/v2/", timeout=1) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def registry(tmp_path: Path, timeout: float = 30) -> Iterator[str]:
    """Debian's distribution registry on a free loopback port, no auth; yields ``host:port``.

    Docker treats 127.0.0.0/8 registries as insecure (plain HTTP) by default.
    """
    if not os.access(REGISTRY_BINARY, os.X_OK):
        raise ServiceError(f"{REGISTRY_BINARY} missing: run scripts/ensure-docker.sh")
    root = tmp_path / "registry"
    (root / "data").mkdir(parents=True, exist_ok=True)
    address = f"127.0.0.1:{free_port()}"
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log: {level: warn}\n"
        f"storage: {{filesystem: {{rootdirectory: {root / 'data'}}}, delete: {{enabled: true}}}}\n"
        f"http: {{addr: '{address}'}}\n"
    )
    log = root / "registry.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [REGISTRY_BINARY, "serve", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        _wait_until(lambda: _registry_answers(address), proc, "docker-registry", log, timeout)
        yield address
    finally:
        _stop(proc, timeout=10)
        shutil.rmtree(root, ignore_errors=True)


# --- second Docker daemon ----------------------------------------------------------------


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False)


def ensure_bridge(name: str = BRIDGE, address: str = BRIDGE_ADDR) -> bool:
    """Create the bridge ``name`` with ``address`` unless it exists; True when created here."""
    if _ip("link", "show", name).returncode == 0:
        return False
    for args in (
        ("link", "add", "name", name, "type", "bridge"),
        ("addr", "add", address, "dev", name),
        ("link", "set", name, "up"),
    ):
        result = _ip(*args)
        if result.returncode != 0:
            raise ServiceError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
    return True


def _bridge_in_use(name: str) -> bool:
    """Whether a running dockerd was started with ``--bridge name`` (another test session)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"dockerd") and f"--bridge={name}".encode() in args:
            return True
    return False


def _mounts_below(path: Path) -> list[str]:
    prefix = str(path.resolve()).rstrip("/") + "/"
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        target = line.split()[4].replace("\\040", " ")
        if (target + "/").startswith(prefix):
            found.append(target)
    return found


def _remove_state(root: Path) -> None:
    """Unmount what a killed daemon may leave (overlays, netns, shm), then delete."""
    for target in sorted(_mounts_below(root), key=len, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True, check=False)
    shutil.rmtree(root, ignore_errors=True)


def _pid_from(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _started_under(pid: int, root: Path) -> bool:
    """Whether ``pid`` is alive and was started with a path under ``root`` (not a reused pid)."""
    try:
        return str(root).encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _daemon_answers(docker_host: str) -> bool:
    result = subprocess.run(
        ["docker", "-H", docker_host, "version", "--format", "{{.Server.Version}}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=10,
    )
    return result.returncode == 0


@contextlib.contextmanager
def second_daemon(tmp_path: Path, timeout: float = 60) -> Iterator[str]:
    """A second dockerd with its own state, socket and bridge; yields its ``DOCKER_HOST``."""
    dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
    if not os.access(dockerd, os.X_OK):
        raise ServiceError("dockerd missing: run scripts/ensure-docker.sh")
    created_bridge = ensure_bridge()
    root = Path(tempfile.mkdtemp(prefix="orchd", dir="/tmp"))
    docker_host = f"unix://{root}/docker.sock"
    (root / "daemon.json").write_text("{}\n")  # not /etc/docker/daemon.json of the first one
    log = tmp_path / "dockerd2.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        dockerd,
        f"--config-file={root / 'daemon.json'}",
        f"--data-root={root / 'data'}",
        f"--exec-root={root / 'exec'}",
        f"--pidfile={root / 'docker.pid'}",
        f"--host={docker_host}",
        f"--bridge={BRIDGE}",
        "--iptables=false",
        "--ip-masq=false",
        "--log-level=warn",
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        _wait_until(lambda: _daemon_answers(docker_host), proc, "second dockerd", log, timeout)
        yield docker_host
    finally:
        containerd_pid = _pid_from(root / "exec" / "containerd" / "containerd.pid")
        _stop(proc, timeout=30)
        # dockerd stops the containerd it started, unless it had to be killed.
        if containerd_pid is not None and _started_under(containerd_pid, root):
            with contextlib.suppress(ProcessLookupError):
                os.kill(containerd_pid, signal.SIGKILL)
        _remove_state(root)
        if created_bridge and not _bridge_in_use(BRIDGE):
            _ip("link", "delete", BRIDGE)


def copy_image(src_docker_host: str, dst_docker_host: str, image_id: str) -> None:
    """``docker save | docker load`` of one image from one daemon to another (streamed)."""
    save = subprocess.Popen(
        ["docker", "-H", src_docker_host, "save", image_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert save.stdout is not None
    load = subprocess.run(
        ["docker", "-H", dst_docker_host, "load", "--quiet"],
        stdin=save.stdout,
        capture_output=True,
        text=True,
        check=False,
    )
    save.stdout.close()
    save_err = save.stderr.read().decode(errors="replace") if save.stderr else ""
    if save.wait(60) != 0:
        raise ServiceError(f"docker save {image_id} failed: {save_err.strip()}")
    if load.returncode != 0:
        raise ServiceError(f"docker load failed: {load.stderr.strip()}")
