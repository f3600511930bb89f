"""The ``orch`` console script: hand the command to the resident driver, or run it here.

It imports nothing heavy (the standard library's socket, json and hashlib; not typing): its
own start is the cost a command pays before the driver's child takes over.
"""

from __future__ import annotations

import array
import hashlib
import json
import os
import signal
import site
import socket
import stat
import struct
import sys

TYPE_CHECKING = False  # not typing's: its import costs every command 2 ms
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

#: Signals the caller passes on to the command's process, as if it were that process.
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
#: Those a terminal sends to its foreground process group: they go to the command's group
#: (the command and what it started), the others to the command alone.
GROUP_SIGNALS = frozenset({signal.SIGINT, signal.SIGQUIT, signal.SIGHUP})
#: ``PYTHON*`` variables the driver reproduces in the child (on its streams); any other one
#: changes how modules load or behave, so the command runs in-process.
_STREAM_VARIABLES = frozenset({"PYTHONUNBUFFERED", "PYTHONIOENCODING", "PYTHONDONTWRITEBYTECODE"})
#: Interpreter options (``sys.flags``) the driver, started plainly, would not share.
_FLAGS = ("debug", "inspect", "interactive", "optimize", "no_user_site", "no_site",
          "ignore_environment", "verbose", "bytes_warning", "isolated", "dev_mode",
          "safe_path", "warn_default_encoding")
#: The namespaces a caller must share with the driver (those the kernel has).
_NAMESPACES = ("mnt", "pid", "net", "user", "uts", "ipc", "cgroup")
#: Longest unix socket path Linux accepts, less a margin.
_MAX_SOCKET_PATH = 100


def main() -> None:
    """``orch``: the command in a child of the resident driver, or in-process."""
    path = socket_path() if eligible(os.environ) else None
    code = _remote(path) if path is not None else None
    if code is not None:
        sys.exit(code)
    from ..cli import main as cli_main

    cli_main()


def eligible(env: Mapping[str, str]) -> bool:
    """Whether a command with this environment and interpreter may run in the driver."""
    if env.get("ORCH_RESIDENT", "").strip().lower() in {"0", "false", "no", "off"}:
        return False
    if "SLURM_JOB_ID" in env:  # the command must stay in the job's cgroup
        return False
    if any(name.startswith("PYTHON") and name not in _STREAM_VARIABLES for name in env):
        return False
    if sys._xoptions or sys.warnoptions or any(getattr(sys.flags, f, 0) for f in _FLAGS):
        return False
    return sys.platform == "linux" and hasattr(os, "pidfd_open")


def socket_path() -> str | None:
    """The driver's socket for this user, interpreter and orch source; None when no private
    directory can hold it."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isabs(runtime):
        base = os.path.join(runtime, "orch")
    else:
        base = os.path.join(os.environ.get("TMPDIR") or "/tmp", f"orch-{os.getuid()}")
    try:
        os.mkdir(base, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return None
    info = os.lstat(base)
    # Whoever can connect runs commands as this user: the directory must be ours alone.
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        return None
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(base, f"driver-{driver_key(package)}.sock")
    return path if len(path.encode()) <= _MAX_SOCKET_PATH else None


def driver_key(package: str) -> str:
    """What a driver's imported code depends on: the environment (``sys.prefix``: python3
    and python name the same one) and its Python, the locale, every ``.py`` file of orch
    (path, size, mtime) and the site directories' mtimes (a package installed or removed)."""
    locale = [os.environ.get(name, "") for name in ("LC_ALL", "LC_CTYPE", "LANG")]
    digest = hashlib.sha256("\0".join([sys.prefix, sys.version, *locale, ""]).encode())
    stack = [package]
    while stack:
        entries = sorted(os.scandir(stack.pop()), key=lambda e: e.name)
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                if entry.name != "__pycache__":
                    stack.append(entry.path)
            elif entry.name.endswith(".py"):
                info = entry.stat()
                digest.update(f"{entry.path}\0{info.st_size}\0{info.st_mtime_ns}\0".encode())
    user_site = [site.getusersitepackages()] if site.ENABLE_USER_SITE else []
    for directory in [*site.getsitepackages(), *user_site]:
        try:
            digest.update(f"{directory}\0{os.stat(directory).st_mtime_ns}\0".encode())
        except OSError:
            continue
    return digest.hexdigest()[:16]


def _stream(stream: Any) -> dict[str, Any] | None:
    if stream is None or not hasattr(stream, "encoding"):
        return None
    return {
        "encoding": stream.encoding,
        "errors": stream.errors,
        "line_buffering": bool(getattr(stream, "line_buffering", False)),
        "write_through": bool(getattr(stream, "write_through", False)),
    }


def _remote(path: str) -> int | None:
    """The command's exit code from the driver; None when it must run in-process (no driver
    answered: one is started for the next command)."""
    streams = [_stream(s) for s in (sys.stdin, sys.stdout, sys.stderr)]
    try:
        cwd = os.getcwd()
    except OSError:  # removed under it: in-process, the command says so itself
        return None
    if None in streams:
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        _start_driver(path)
        return None
    if not _same_world(sock):
        sock.close()
        return None
    child = 0
    pending: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        if child:
            send_signal(child, signum)
        else:
            pending.append(signum)

    # Every one is passed on, even one this process inherited ignored (nohup): the
    # command starts with it ignored too, and a sweep catches it anyway, as in-process.
    ignored = [s for s in FORWARDED if signal.getsignal(s) == signal.SIG_IGN]
    previous = {s: signal.signal(s, forward) for s in FORWARDED}
    mask = os.umask(0)
    os.umask(mask)
    request = {
        "argv": sys.argv,
        "cwd": cwd,
        "env": dict(os.environ),
        "umask": mask,
        "ignored": [int(s) for s in ignored],
        "streams": streams,
    }
    payload = json.dumps(request).encode()
    try:
        sock.sendmsg(
            [struct.pack("!I", len(payload)), payload],
            [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [0, 1, 2]))],
        )
        answers = sock.makefile("rb")
        started = json.loads(answers.readline() or b"{}")
    except (OSError, ValueError):
        started = {}
    if "pid" not in started:  # refused or gone before forking: nothing ran
        sock.close()
        for forwarded, handler in previous.items():
            signal.signal(forwarded, handler)
        if pending and pending[0] == signal.SIGINT:  # Ctrl-C meanwhile, as the CLI says it
            print("error: interrupted", file=sys.stderr)
            return 130
        if pending:
            return _die_of(pending[0])
        return None
    child = int(started["pid"])
    for signum in pending:
        send_signal(child, signum)
    line = answers.readline()
    if not line:  # the driver was killed: the command runs on, its exit status unknown
        _wait_for(child)
        print(f"error: the resident orch driver ended while it ran this command (pid {child}), "
              "so its exit status is unknown: see its output; set ORCH_RESIDENT=0 to run "
              "commands in-process", file=sys.stderr)
        return 2
    ended = json.loads(line)
    if "signal" in ended:  # die of the same signal, as the command did
        return _die_of(int(ended["signal"]))
    return int(ended["exit"])


def _same_world(sock: socket.socket) -> bool:
    """Whether the driver sees what this process sees: the same root and namespaces. A
    caller under ``unshare``, ``chroot`` or in a container that shares the socket's
    directory would otherwise run its command against other mounts (another store, other
    files), another network or other process ids."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid = struct.unpack("3i", creds)[0]
    if pid <= 0:  # the driver's pid is not visible from here: another pid namespace
        return False
    try:
        theirs, ours = os.stat(f"/proc/{pid}/root"), os.stat("/")
        if (theirs.st_dev, theirs.st_ino) != (ours.st_dev, ours.st_ino):
            return False
        for ns in _NAMESPACES:
            try:
                own = os.readlink(f"/proc/self/ns/{ns}")
            except FileNotFoundError:  # a namespace this kernel does not have
                continue
            if os.readlink(f"/proc/{pid}/ns/{ns}") != own:
                return False
    except OSError:  # cannot tell: in-process is always right
        return False
    return True


def _die_of(signum: int) -> int:
    """End as a process killed by ``signum`` does."""
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    return 128 + signum  # only if the signal is blocked


def _wait_for(pid: int) -> None:
    """Until ``pid`` has ended (signals are still passed on meanwhile)."""
    import select

    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        select.select([pidfd], [], [])
    finally:
        os.close(pidfd)


def send_signal(pid: int, signum: int) -> None:
    try:
        if signum in GROUP_SIGNALS:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)
    except ProcessLookupError:  # it has just ended
        pass


def _start_driver(path: str) -> None:
    """A driver for the next command, detached from this one's session and streams; of
    several started at once, all but one exit at once (they lock the socket's path)."""
    import subprocess

    try:
        subprocess.Popen(
            [sys.executable, "-c", "from orchestrator.resident.server import main; main()", path],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            cwd="/", start_new_session=True,
        )
    except OSError:  # no driver: commands keep running in-process
        pass
