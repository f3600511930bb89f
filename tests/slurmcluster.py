"""A real two-node SLURM cluster on this machine, for tests: munged, slurmctld and two
slurmd (``-N n1``, ``-N n2``; Debian builds SLURM with multiple-slurmd support), each node
with 2 CPUs and 2 GPUs as generic resources backed by device nodes (no real GPU here).

::

    with slurm_cluster(tmp_dir) as cluster:
        env = cluster.env          # SLURM_CONF for the client commands
        cluster.kill_node("n1")    # SIGKILL its slurmd (its jobs' processes live on)
        cluster.start_node("n1")

Everything lives under one directory with o+x on every component (munged refuses a socket
path without it), on free loopback ports. An epilog removes the containers a job left
(labels ``slurm_job_id`` and ``slurm_cluster``), as a real cluster's admin would set it up;
each cluster has a name of its own, so two on one machine never remove each other's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

NODES = ("n1", "n2")


class ClusterError(RuntimeError):
    """The test cluster did not come up or go down in time."""


def slurm_installed() -> bool:
    return all(shutil.which(c) for c in ("slurmctld", "slurmd", "sbatch", "munged"))


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class SlurmCluster:
    root: Path
    env: dict[str, str]
    name: str

    @property
    def conf(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(argv), capture_output=True, text=True, check=check,
                              env={**os.environ, **self.env}, timeout=60)

    def _pid(self, name: str) -> int | None:
        path = self.root / name
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            return None

    def kill_node(self, node: str) -> None:
        """SIGKILL the node's slurmd: the controller loses it; its jobs' processes go on."""
        pid = self._pid(f"{node}/slurmd.pid")
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def start_node(self, node: str) -> None:
        self.run("slurmd", "-N", node, "-f", str(self.conf))

    def node_states(self) -> dict[str, str]:
        out = self.run("sinfo", "-h", "-N", "-o", "%N %t").stdout
        return dict(line.split() for line in out.splitlines() if line.strip())

    def wait_idle(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = self.node_states()
            if states and all(s == "idle" for s in states.values()):
                return
            time.sleep(0.2)
        raise ClusterError(f"nodes not idle after {timeout:.0f}s: {self.node_states()}")

    def drain(self, node: str) -> None:
        self.run("scontrol", "update", f"nodename={node}", "state=drain", "reason=test")

    def resume(self, node: str) -> None:
        self.run("scontrol", "update", f"nodename={node}", "state=resume")

    def cancel_all(self) -> None:
        self.run("scancel", "--user=root", check=False)


def _write_config(root: Path, ports: list[int], name: str) -> None:
    host = socket.gethostname().split(".")[0]
    docker = shutil.which("docker") or "/usr/bin/docker"
    (root / "etc").mkdir()
    for sub in ("munge", "ctld/state", "log", "dev", *(f"{n}/spool" for n in NODES)):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(2):
        os.mknod(root / "dev" / f"gpu{i}", 0o666 | 0o020000, os.makedev(195, i))
    ctld, *node_ports = ports
    nodes = "\n".join(
        f"NodeName={n} NodeHostname={host} NodeAddr=127.0.0.1 Port={p} CPUs=2 Boards=1 "
        "SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=4000 Gres=gpu:2 "
        "State=UNKNOWN"
        for n, p in zip(NODES, node_ports, strict=True)
    )
    (root / "etc" / "slurm.conf").write_text(f"""\
ClusterName={name}
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.sock,cred_expire=10
StateSaveLocation={root}/ctld/state
SlurmctldPidFile={root}/ctld/slurmctld.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdSpoolDir={root}/%n/spool
SlurmdPidFile={root}/%n/slurmd.pid
SlurmdLogFile={root}/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={root}/log/jobcomp.txt
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,bf_interval=1
GresTypes=gpu
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=10
InactiveLimit=0
KillWait=5
MinJobAge=300
MailProg=/bin/true
Epilog={root}/etc/epilog.sh
{nodes}
PartitionName=debug Nodes={','.join(NODES)} Default=YES MaxTime=INFINITE State=UP
""")
    (root / "etc" / "gres.conf").write_text(
        f"NodeName=n[1-2] Name=gpu File={root}/dev/gpu[0-1]\n"
    )
    epilog = root / "etc" / "epilog.sh"
    epilog.write_text(f"""\
#!/bin/sh
# On the node after every job (scancel, timeout, SIGKILL, node re-registration).
ids=$({docker} ps -aq --filter "label=slurm_job_id=$SLURM_JOB_ID" \\
      --filter "label=slurm_cluster=$SLURM_CLUSTER_NAME")
[ -n "$ids" ] && {docker} rm -f $ids >/dev/null 2>&1
exit 0
""")
    epilog.chmod(0o755)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)


@contextlib.contextmanager
def slurm_cluster(parent: Path | None = None) -> Iterator[SlurmCluster]:
    # Not under a 0700 home or pytest's tmp tree: munged wants o+x on every component.
    root = Path(tempfile.mkdtemp(prefix="orchslurm", dir=parent or "/var/tmp"))
    root.chmod(0o755)
    name = "orchtest" + root.name[len("orchslurm"):].lower().replace("_", "")[:8]
    _write_config(root, _free_ports(3), name)
    cluster = SlurmCluster(root, {"SLURM_CONF": str(root / "etc" / "slurm.conf")}, name)
    try:
        cluster.run("munged", f"--socket={root}/munge/munge.sock",
                    f"--key-file={root}/munge/munge.key", f"--log-file={root}/munge/munged.log",
                    f"--pid-file={root}/munge/munged.pid", f"--seed-file={root}/munge/munged.seed")
        cluster.run("slurmctld", "-f", str(cluster.conf))
        for node in NODES:
            cluster.start_node(node)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ping = cluster.run("scontrol", "ping", check=False).stdout
            if "is UP" in ping:
                break
            time.sleep(0.2)
        cluster.wait_idle(30)
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            cluster.cancel_all()
        daemons = (*(f"{n}/slurmd.pid" for n in NODES), "ctld/slurmctld.pid",
                   "munge/munged.pid")
        for signum, then in ((signal.SIGTERM, 0.5), (signal.SIGKILL, 0.0)):
            for name in daemons:
                pid = cluster._pid(name)
                if pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signum)
            time.sleep(then)
        shutil.rmtree(root, ignore_errors=True)
