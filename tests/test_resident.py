"""The resident driver: a command run in a child of it is, to its caller, the same process.

Each test starts its own driver on a private socket (as the ``orch`` script starts one) and
talks to it through the client's own code, so the suite's other ``orch`` commands and
their shared driver are not touched; one test goes through the real ``orch`` script.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from helpers import sleeper_project

from orchestrator.daemon.client import remove_containers
from orchestrator.resident import client

if TYPE_CHECKING:
    from docker import DockerClient

ORCH = Path(sys.executable).with_name("orch")
#: The projects' name: their containers carry it as a label.
PROJECT = "resident-proj"

#: ``orch`` through the driver at a given socket: the console script with its path fixed.
CALLER = (
    "import sys; from orchestrator.resident import client; "
    "path = sys.argv.pop(1); code = client._remote(path); "
    "sys.exit('no driver answered' if code is None else code)"
)
RESTORE_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execvp(sys.argv[1], sys.argv[1:])"
)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    return {**env, **extra}


def _wait(predicate: object, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def _state(pid: int) -> str:
    """The process's state letter (R, S, T, Z, ...); "" when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0]
    except (FileNotFoundError, IndexError):
        return ""


def _alive(pid: int) -> bool:
    return _state(pid) not in ("", "Z")


class Driver:
    def __init__(self, root: Path) -> None:
        root.mkdir(mode=0o700)
        self.socket = str(root / "driver-test.sock")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from orchestrator.resident.server import main; main()",
             self.socket], cwd="/", env=_env(), start_new_session=True,
        )
        pidfile = Path(self.socket.removesuffix(".sock") + ".pid")
        _wait(pidfile.exists, "the driver to listen")
        assert int(pidfile.read_text()) == self.proc.pid

    def caller(self, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
               **popen: object) -> subprocess.Popen[str]:
        return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
            [sys.executable, "-c", CALLER, self.socket, *args], cwd=cwd, env=env or _env(),
            text=True, **popen,
        )

    def children(self) -> list[int]:
        return _children(self.proc.pid)

    def running_sweep(self, tmp_path: Path, base_image: str,
                      sleep: float) -> tuple[subprocess.Popen[str], Path, Path, int]:
        """``orch sweep`` of one sleeping run through this driver, once its run started:
        (the caller, its stderr file, the project, the command's pid)."""
        root = sleeper_project(tmp_path / PROJECT, base_image, sleep=sleep)
        err = tmp_path / "err"
        with err.open("w") as stderr:
            proc = self.caller("sweep", "-p", str(root), "seed=1", stdout=subprocess.DEVNULL,
                               stderr=stderr)
        _wait(lambda: "running" in err.read_text(), "the run to start")
        (command,) = self.children()
        return proc, err, root, command


@pytest.fixture
def driver(tmp_path: Path, docker_client: DockerClient) -> Iterator[Driver]:
    started = Driver(tmp_path / "resident")
    yield started
    started.proc.kill()
    started.proc.wait()
    # a killed command leaves its container, as it would have in-process
    remove_containers(docker_client, {"org.orch.project": PROJECT})


def test_a_command_gets_the_callers_argv_cwd_environment_umask_and_streams(
    driver: Driver, tmp_path: Path, base_image: str
) -> None:
    root = sleeper_project(tmp_path / PROJECT, base_image, sleep=0)
    out, err = tmp_path / "out", tmp_path / "err"
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = driver.caller(
            "sweep", "--json", "seed=3", cwd=root, env=_env(ORCH_MAX_POINTS="1"),
            stdout=stdout, stderr=stderr, preexec_fn=lambda: os.umask(0o077),
        )
        assert proc.wait(timeout=300) == 0, err.read_text()
    runs = json.loads(out.read_text())["runs"]  # stdout: the caller's file
    assert [r["status"] for r in runs] == ["succeeded"]
    assert "succeeded" in err.read_text()  # stderr: progress lines
    record = next((root / ".orch" / "runs").glob("*/run.json"))  # cwd: found the project
    assert record.stat().st_mode & 0o077 == 0  # the caller's umask, not the driver's
    # the caller's environment: ORCH_MAX_POINTS=1 refuses a two-point sweep
    with err.open("w") as stderr:
        proc = driver.caller("sweep", "seed=1,2", cwd=root, env=_env(ORCH_MAX_POINTS="1"),
                             stderr=stderr)
        assert proc.wait(timeout=120) == 2
    lines = err.read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "ORCH_MAX_POINTS" in lines[0]
    assert driver.children() == []  # every child reaped


def test_ctrl_c_reaches_the_command_and_its_exit_code_comes_back(
    driver: Driver, tmp_path: Path, base_image: str
) -> None:
    root = sleeper_project(tmp_path / PROJECT, base_image, sleep=30)
    err = tmp_path / "err"
    with err.open("w") as stderr:
        proc = subprocess.Popen(
            ["setsid", sys.executable, "-c", RESTORE_SIGINT, sys.executable, "-c", CALLER,
             driver.socket, "sweep", "-p", str(root), "seed=1"],
            stdout=subprocess.DEVNULL, stderr=stderr, env=_env(), text=True,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (777, 777)),
        )
    _wait(lambda: "running" in err.read_text(), "the run to start")
    (command,) = driver.children()
    assert Path(f"/proc/{command}/cwd").resolve() == Path.cwd().resolve()
    assert resource.prlimit(command, resource.RLIMIT_NOFILE) == (777, 777)  # the caller's
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal sends Ctrl-C: the caller's group
    _wait(lambda: "Ctrl-C again" in err.read_text(), "the first Ctrl-C to be heard")
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=60) == 130, err.read_text()
    assert not _alive(command)
    (record,) = (root / ".orch" / "runs").glob("*/run.json")
    assert json.loads(record.read_text())["status"] == "cancelled"


def test_a_killed_caller_takes_its_command_with_it(
    driver: Driver, tmp_path: Path, base_image: str
) -> None:
    proc, _, _, command = driver.running_sweep(tmp_path, base_image, sleep=30)
    proc.kill()
    proc.wait()
    _wait(lambda: not _alive(command), "the command to be killed", timeout=10)
    _wait(lambda: driver.children() == [], "the driver to reap it", timeout=10)


def test_a_stopped_caller_stops_its_command_until_it_continues(
    driver: Driver, tmp_path: Path, base_image: str
) -> None:
    proc, _, _, command = driver.running_sweep(tmp_path, base_image, sleep=30)
    try:
        os.kill(proc.pid, signal.SIGSTOP)  # a paused submitter (no handler sees SIGSTOP)
        _wait(lambda: _state(command) == "T", "the command to stop", timeout=10)
        os.kill(proc.pid, signal.SIGCONT)
        _wait(lambda: _state(command) not in ("T", ""), "the command to continue", timeout=10)
    finally:
        proc.kill()
        proc.wait()


def test_a_killed_driver_leaves_the_command_to_end_and_says_its_status_is_unknown(
    driver: Driver, tmp_path: Path, base_image: str
) -> None:
    proc, err, root, command = driver.running_sweep(tmp_path, base_image, sleep=3)
    driver.proc.kill()
    assert proc.wait(timeout=120) == 2
    assert not _alive(command)  # the caller waited for the command
    last = err.read_text().splitlines()[-1]
    assert last.startswith("error: the resident orch driver ended"), err.read_text()
    (record,) = (root / ".orch" / "runs").glob("*/run.json")
    assert json.loads(record.read_text())["status"] == "succeeded"


def test_callers_killed_as_their_commands_end_leave_the_driver_serving(driver: Driver) -> None:
    # A caller's hang-up and its command's end can come in one batch of events, in
    # either order: the driver must survive both (it serves every other command).
    for i in range(40):
        proc = driver.caller("--version", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.02 + 0.002 * i)
        proc.kill()
        proc.wait()
        assert driver.proc.poll() is None, Path(driver.socket[:-5] + ".log").read_text()
    version = driver.caller("--version", stdout=subprocess.PIPE)
    out, _ = version.communicate(timeout=60)
    assert version.returncode == 0 and "version" in out
    _wait(lambda: driver.children() == [], "every command reaped", timeout=10)


def test_a_removed_socket_stops_the_driver(driver: Driver) -> None:
    os.unlink(driver.socket)
    assert driver.proc.wait(timeout=30) == 0


def test_the_orch_script_runs_commands_in_its_users_driver(
    tmp_path: Path, base_image: str
) -> None:
    env = _env(XDG_RUNTIME_DIR=str(tmp_path))
    path = subprocess.run(
        [sys.executable, "-c", "from orchestrator.resident import client; "
         "print(client.socket_path())"], env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert path.startswith(f"{tmp_path}/orch/driver-")
    first = subprocess.run([ORCH, "--version"], env=env, capture_output=True, text=True)
    assert first.returncode == 0 and "version" in first.stdout  # in-process; starts one
    pidfile = Path(path.removesuffix(".sock") + ".pid")
    _wait(pidfile.exists, "the driver to listen")
    pid = int(pidfile.read_text())
    try:
        assert os.stat(Path(path).parent).st_mode & 0o777 == 0o700
        root = sleeper_project(tmp_path / PROJECT, base_image, sleep=2)
        sweep = subprocess.Popen([ORCH, "sweep", "-p", str(root), "--json", "seed=1"], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait(lambda: _children(pid) != [], "the sweep to run in the driver")
        out, err = sweep.communicate(timeout=300)
        assert sweep.returncode == 0, err
        assert [r["status"] for r in json.loads(out)["runs"]] == ["succeeded"]
        bad = subprocess.run([ORCH, "show", "nope"], env=env, capture_output=True, text=True,
                             cwd=root)
        assert bad.returncode == 2 and bad.stdout == ""
        assert bad.stderr.startswith("error: ") and len(bad.stderr.splitlines()) == 1
    finally:
        os.kill(pid, signal.SIGTERM)


def test_a_caller_in_another_mount_namespace_runs_in_process(driver: Driver) -> None:
    """A caller under ``unshare -m`` (or in a container that shares the socket's directory)
    sees other mounts than the driver: handed to it, its command would read and write
    another filesystem (another store), so the client keeps it."""
    version = [sys.executable, "-c", CALLER, driver.socket, "--version"]
    apart = subprocess.run(["unshare", "-m", "--propagation", "private", *version],
                           capture_output=True, text=True, env=_env(), timeout=60)
    assert apart.returncode == 1 and "no driver answered" in apart.stderr, apart.stderr
    served = subprocess.run(version, capture_output=True, text=True, env=_env(), timeout=60)
    assert served.returncode == 0 and "version" in served.stdout, served.stderr


def test_commands_that_must_run_in_process_do() -> None:
    plain = {"HOME": "/home/u", "PATH": "/usr/bin"}
    assert client.eligible(plain)
    assert client.eligible({**plain, "PYTHONUNBUFFERED": "1"})  # reproduced on the streams
    assert not client.eligible({**plain, "ORCH_RESIDENT": "0"})
    assert not client.eligible({**plain, "PYTHONPATH": "/x"})  # modules the driver lacks
    assert not client.eligible({**plain, "SLURM_JOB_ID": "12"})  # the job's cgroup


def test_the_driver_key_follows_the_source(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub" / "__pycache__").mkdir(parents=True)
    (package / "a.py").write_text("x = 1\n")
    (package / "sub" / "b.py").write_text("y = 2\n")
    key = client.driver_key(str(package))
    assert client.driver_key(str(package)) == key
    (package / "sub" / "__pycache__" / "b.cpython-311.pyc").write_bytes(b"\0")
    (package / "notes.txt").write_text("not code")
    assert client.driver_key(str(package)) == key
    (package / "sub" / "b.py").write_text("y = 3\n")
    os.utime(package / "sub" / "b.py", ns=(1, 1))
    assert client.driver_key(str(package)) != key
