"""The container adapter without a daemon: what orch does when Docker goes away, and the
output walk that decides what of a run's directory is stored."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import requests.exceptions

from orchestrator.errors import BackendError
from orchestrator.runner import container
from orchestrator.runner.container import Running
from orchestrator.runner.outputs import collect_outputs


class _GoneAPI:
    base_url = "http+docker://localhost"


class _GoneClient:
    """A client whose daemon stopped answering."""

    api = _GoneAPI()

    class containers:  # noqa: N801 - the docker SDK's attribute name
        @staticmethod
        def create(**kwargs: Any) -> Any:
            raise requests.exceptions.ConnectionError("connection refused")

    def ping(self) -> bool:
        raise requests.exceptions.ConnectionError("connection refused")


class _WaitDies:
    id = "c1"

    def wait(self, timeout: float | None = None) -> dict[str, int]:
        raise requests.exceptions.ConnectionError("connection aborted")


def test_a_daemon_gone_at_create_is_one_clear_error() -> None:
    with pytest.raises(BackendError, match="lost the Docker daemon at http\\+docker://localhost"):
        Running.start(_GoneClient(), {"image": "sha256:" + "0" * 64})


def test_a_daemon_gone_mid_run_is_waited_for_then_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(container, "DAEMON_RETRY_S", 1.5)
    running = Running(_GoneClient(), _WaitDies(), started=0.0)
    with pytest.raises(BackendError, match="lost the Docker daemon"):
        running.wait(timeout=None)


def test_a_daemon_that_comes_back_fails_only_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    class Back(_GoneClient):
        def ping(self) -> bool:
            return True

    monkeypatch.setattr(container, "DAEMON_RETRY_S", 5)
    running = Running(Back(), _WaitDies(), started=0.0)
    running.wait(timeout=None)
    assert running.reason == "the Docker daemon went away during the run"


def test_outputs_keep_regular_files_and_list_what_was_dropped(tmp_path: Path) -> None:
    root = tmp_path / "output"
    (root / "sub").mkdir(parents=True)
    (root / "ok.txt").write_text("fine")
    (root / "sub" / "deep.txt").write_text("deep")
    (root / "link").symlink_to("/etc/passwd")
    (root / "dirlink").symlink_to("/etc")
    os.mkfifo(root / "fifo")
    (root / "bad\nname").write_text("x")
    outputs = collect_outputs(root)
    assert list(outputs.names()) == ["ok.txt", "sub/deep.txt"]  # walk order, from the listing
    assert outputs.count == 2 and len((tmp_path / "outputs.list").read_text().splitlines()) == 2
    assert outputs.dropped == {"dirlink": "a link", "link": "a link", "fifo": "not a file",
                               "bad\nname": "unsafe name"}
    assert outputs.total_bytes == 8


def test_work_dirs_of_dead_processes_on_this_host_are_reaped(tmp_path: Path) -> None:
    """A submitter killed mid-run leaves its run's directories; the next run made on the
    same host removes them, never a live process's nor another host's."""
    import subprocess

    from orchestrator.runner.container import RunDirs

    gone = subprocess.Popen(["true"])
    gone.wait()
    host = container._OWNER_HOST
    orphan = tmp_path / f"orch-aaaaaaaaaaaa-1.{host}.{gone.pid}-x1"
    live = tmp_path / f"orch-bbbbbbbbbbbb-1.{host}.{os.getpid()}-x2"
    elsewhere = tmp_path / f"orch-cccccccccccc-1.otherhost.{gone.pid}-x3"
    for path in (orphan, live, elsewhere):
        (path / "output").mkdir(parents=True)
    made = RunDirs.create(tmp_path, "orch-dddddddddddd-1")
    assert not orphan.exists()
    assert live.exists() and elsewhere.exists() and made.output.is_dir()
    made.remove()
    assert not made.root.exists()


def test_what_was_enforced_is_what_the_engine_reports() -> None:
    from orchestrator.daemon.engine import DOCKER, Engine

    host = {"PidsLimit": 4096, "Memory": 268435456, "NanoCpus": 500_000_000,
            "Tmpfs": {"/tmp": "size=1g,mode=1777"}, "ReadonlyRootfs": True}
    enforced = container.from_host_config(host, Engine("docker", "20.10.24"))
    assert (enforced.engine, enforced.pids, enforced.memory, enforced.cpus) == (
        "Docker 20.10.24", 4096, 268435456, 0.5)
    assert enforced.tmpfs == {"/tmp": "size=1g,mode=1777"} and enforced.read_only_root
    # no limit is 0 or -1 to an engine; Podman may say CPUs as a quota over a period
    unlimited = container.from_host_config(
        {"PidsLimit": -1, "Memory": 0, "CpuQuota": 150000, "CpuPeriod": 100000}, DOCKER)
    assert (unlimited.pids, unlimited.memory, unlimited.cpus) == (None, None, 1.5)
    assert not unlimited.read_only_root and unlimited.tmpfs == {}
    # rootless Podman on cgroup v1 takes the limits and enforces none of them
    ignored = container.from_host_config(
        host, Engine("podman", "4.3.1", rootless=True, cgroup_version=1))
    assert (ignored.pids, ignored.memory, ignored.cpus) == (None, None, None)
    assert ignored.engine == "rootless Podman 4.3.1" and "does not enforce" in ignored.note
    assert ignored.tmpfs == {"/tmp": "size=1g,mode=1777"} and ignored.read_only_root
