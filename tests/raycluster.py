"""A real multi-node Ray cluster on this machine, for tests and benchmarks.

    with ray_cluster(tmp_dir, worker_env={"DOCKER_HOST": second_host}) as cluster:
        cluster.address                  # "127.0.0.2:PORT": pass as --ray-address
        cluster.worker.node_id           # as recorded in run.json's "node"
        cluster.worker.kill()            # SIGKILL the whole node: a lost machine

Each node is one ``ray start --block`` in a session (process group) of its own, with its
own short ``--temp-dir`` and explicit ports, so teardown stops exactly the processes it
started (never ``ray stop``, which stops every Ray on the machine). The nodes advertise
the loopback address 127.0.0.2: Ray replaces 127.0.0.1 (only that one) by the machine's
routable address, and nothing here may talk to that.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from services import ServiceError, free_port

RAY = str(Path(sys.executable).with_name("ray"))
#: What every process of the cluster, and every driver talking to it, runs with. Ray turns
#: token authentication on by itself when ``~/.ray/auth_token`` exists (any local
#: ``ray.init()`` writes one), and then rejects drivers that were not told; this
#: loopback-only cluster pins it off, so it works the same whatever ``~/.ray`` holds.
CLUSTER_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
#: Loopback, but not the one address Ray swaps for the machine's routable one.
NODE_IP = "127.0.0.2"


@dataclass
class RayNode:
    name: str
    temp_dir: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    node_id: str = ""

    @property
    def pgid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def processes(self) -> list[int]:
        """Live processes of this node: its process group, plus any that left it."""
        found = []
        marker = str(self.temp_dir).encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            try:
                if os.getpgid(pid) == self.pgid:
                    found.append(pid)
                    continue
                if marker in (entry / "cmdline").read_bytes():
                    found.append(pid)
            except (OSError, ProcessLookupError):
                continue
        return found

    def kill(self) -> None:
        """SIGKILL every process of the node at once, as when its machine is lost."""
        for pid in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)

    def stop(self, grace: float = 8.0) -> None:
        """SIGTERM (``ray start --block`` then stops its children), then SIGKILL the rest."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace)
        deadline = time.monotonic() + grace
        while self.processes() and time.monotonic() < deadline:
            time.sleep(0.2)
        self.kill()
        deadline = time.monotonic() + 10
        while self.processes() and time.monotonic() < deadline:
            time.sleep(0.1)
        left = self.processes()
        if left:
            raise ServiceError(f"ray node {self.name}: processes {left} survived SIGKILL")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class RayCluster:
    address: str
    head: RayNode
    worker: RayNode
    #: ``http://127.0.0.1:PORT`` of the dashboard (Ray Jobs), when started with it.
    dashboard: str = ""

    @property
    def nodes(self) -> list[RayNode]:
        return [self.head, self.worker]

    def node_name(self, node_id: str) -> str:
        return next((n.name for n in self.nodes if n.node_id == node_id), "?")


def _ports(*names: str) -> list[str]:
    return [f"--{name}={free_port()}" for name in names]


_NODE_PORTS = ("node-manager-port", "object-manager-port", "dashboard-agent-listen-port",
               "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port")


def _start(node: RayNode, args: list[str], env: Mapping[str, str]) -> None:
    """``ray start --block`` in its own session; this venv's bin first on PATH, as on a
    node where orch is installed in the environment Ray runs from."""
    node.temp_dir.mkdir(parents=True, exist_ok=True)
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    with node.log.open("wb") as out:
        node.proc = subprocess.Popen(
            [RAY, "start", "--block", "--disable-usage-stats", f"--temp-dir={node.temp_dir}",
             f"--node-ip-address={NODE_IP}", "--min-worker-port=0", "--max-worker-port=0",
             *_ports(*_NODE_PORTS), *args],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "PATH": path, **CLUSTER_ENV, **env},
            start_new_session=True,
        )


_PROBE = """
import json, sys, time
import ray
deadline = time.monotonic() + float(sys.argv[3])
while True:  # a loaded machine may time out the first connection: retry until the deadline
    try:
        ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
        break
    except Exception:
        ray.shutdown()
        if time.monotonic() > deadline:
            raise
        time.sleep(1)
while True:
    nodes = [n for n in ray.nodes() if n["Alive"]]
    if len(nodes) >= int(sys.argv[2]) or time.monotonic() > deadline:
        break
    time.sleep(0.2)
print(json.dumps([{"id": n["NodeID"], "store": n["ObjectStoreSocketName"],
                   "ip": n["NodeManagerAddress"], "resources": n["Resources"]} for n in nodes]))
"""


def _wait_for_nodes(address: str, nodes: list[RayNode], timeout: float) -> None:
    """Until every node is alive in the cluster; learns each node's id (by its temp dir).

    The probe is a Ray driver in a session of its own, killed with everything it started
    if it overruns: the wait is bounded even when the machine is overloaded.
    """
    out_path = nodes[0].log.with_name("probe.out")
    with out_path.open("wb") as out:
        probe = subprocess.Popen(
            [sys.executable, "-c", _PROBE, address, str(len(nodes)), str(timeout)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **CLUSTER_ENV}, start_new_session=True,
        )
    try:
        probe.wait(timeout + 30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(probe.pid, signal.SIGKILL)
        probe.wait(10)
    output = out_path.read_text(errors="replace").strip()
    tails = "\n".join(f"--- {n.name}:\n{n.log_tail()}" for n in nodes)
    if probe.returncode != 0:
        raise ServiceError(f"ray cluster at {address}: probe failed ({probe.returncode}):\n"
                           f"{output[-2000:]}\n{tails}")
    found = json.loads(output.splitlines()[-1])
    for node in nodes:
        for info in found:
            if info["store"].startswith(str(node.temp_dir)):
                node.node_id = info["id"]
                if info["ip"] != NODE_IP:
                    raise ServiceError(f"ray node {node.name} advertises {info['ip']}, "
                                       f"not loopback")
    missing = [n.name for n in nodes if not n.node_id]
    if missing:
        raise ServiceError(f"ray nodes {missing} did not join within {timeout:.0f}s\n{tails}")


@contextlib.contextmanager
def ray_cluster(
    tmp_path: Path,
    *,
    head_env: Mapping[str, str] | None = None,
    worker_env: Mapping[str, str] | None = None,
    cpus: int = 2,
    gpus: int = 2,
    dashboard: bool = False,
    timeout: float = 180,
) -> Iterator[RayCluster]:
    """A head and one worker node, each with ``cpus`` CPUs and ``gpus`` logical GPUs.

    ``head_env``/``worker_env`` are added to each node's environment (what its tasks see:
    ``DOCKER_HOST``, store credentials, ``ORCH_FAKE_GPUS``). Drivers must run with
    :data:`CLUSTER_ENV`. ``dashboard`` also starts the dashboard (needed by Ray Jobs);
    its address is ``http://127.0.0.1:<port>``.
    """
    root = Path(tempfile.mkdtemp(prefix="oray", dir="/tmp"))  # unix sockets: short paths
    log_dir = tmp_path / "ray-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    head = RayNode("head", root / "h", log_dir / "head.log")
    worker = RayNode("worker", root / "w", log_dir / "worker.log")
    port = free_port()
    address = f"{NODE_IP}:{port}"
    dashboard_port = free_port()
    try:
        _start(head, [
            "--head", f"--port={port}", f"--num-cpus={cpus}", f"--num-gpus={gpus}",
            f"--ray-client-server-port={free_port()}", f"--dashboard-port={dashboard_port}",
            "--dashboard-host=127.0.0.1", f"--include-dashboard={str(dashboard).lower()}",
            '--resources={"orch_head": 1}',
        ], dict(head_env or {}))
        _wait_for_port(head, port, timeout)
        _start(worker, [
            f"--address={address}", f"--num-cpus={cpus}", f"--num-gpus={gpus}",
            '--resources={"orch_worker": 1}',
        ], dict(worker_env or {}))
        _wait_for_nodes(address, [head, worker], timeout)
        yield RayCluster(address, head, worker,
                         f"http://127.0.0.1:{dashboard_port}" if dashboard else "")
    finally:
        errors = []
        for node in (worker, head):
            try:
                node.stop()
            except ServiceError as exc:
                errors.append(str(exc))
        shutil.rmtree(root, ignore_errors=True)
        if errors:
            raise ServiceError("; ".join(errors))


def _wait_for_port(node: RayNode, port: int, timeout: float) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while True:
        if node.proc is not None and node.proc.poll() is not None:
            raise ServiceError(f"ray {node.name} exited with {node.proc.returncode}:\n"
                               f"{node.log_tail()}")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex((NODE_IP, port)) == 0:
                return
        if time.monotonic() > deadline:
            raise ServiceError(f"ray {node.name} did not listen on {port} within "
                               f"{timeout:.0f}s:\n{node.log_tail()}")
        time.sleep(0.2)
