"""The resident driver: imports orch once, then forks a child per command.

It stays single-threaded, so every fork is safe: one selector loop accepts commands, sees
children end (a pidfd each) and callers hang up. A caller that disappears (SIGKILL) takes
its command with it, as it would have in-process. The driver exits after
:data:`~orchestrator.resident.IDLE_S` seconds with nothing running, or once its socket is
gone or replaced (``rm`` stops it).
"""

from __future__ import annotations

import fcntl
import importlib
import io
import json
import os
import selectors
import signal
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, cast

from . import IDLE_S

#: What a command may need, imported before the first fork. Not Ray, DuckDB, Optuna or
#: pandas: they start threads or are large, and only some commands use them.
WARM = ("orchestrator.cli", "orchestrator.drivers.search", "orchestrator.backends.local",
        "orchestrator.results", "orchestrator.image.closure", "orchestrator.store.s3",
        "docker", "hydra.compose", "rich.console", "rich.table", "boto3")
#: Seconds between checks that the socket is still this driver's, when idle.
_CHECK_S = 5.0
#: Seconds a caller has to send its request once connected.
_REQUEST_S = 5.0
_HEADER = struct.Struct("!I")
_MAX_REQUEST = 16 << 20


@dataclass(frozen=True)
class Request:
    """A command as its caller would have run it in-process."""

    argv: list[str]
    cwd: str
    env: dict[str, str]
    umask: int
    ignored: list[int]
    streams: list[dict[str, Any]]
    fds: list[int]


@dataclass
class _Child:
    pid: int
    conn: socket.socket
    pidfd: int
    caller_gone: bool = False


@dataclass
class Driver:
    """The accept loop; :meth:`serve` returns a :class:`Request` in each forked child and
    None in the driver when it is time to exit."""

    path: str
    listener: socket.socket
    lock_fd: int
    children: dict[int, _Child] = field(default_factory=dict)

    def serve(self) -> Request | None:
        selector = selectors.DefaultSelector()
        selector.register(self.listener, selectors.EVENT_READ, ("accept", None))
        inode = os.stat(self.path).st_ino
        idle_since = time.monotonic()
        while True:
            events = selector.select(None if self.children else _CHECK_S)
            for key, _ in events:
                kind, value = key.data
                if kind == "accept":
                    self._accept(selector)
                elif kind == "request":
                    request = self._start(selector, value)
                    if request is not None:
                        return request
                elif kind == "ended":
                    self._ended(selector, value)
                else:
                    self._hangup(selector, value)
            if self.children:
                idle_since = time.monotonic()
            elif not _still_ours(self.path, inode) or time.monotonic() - idle_since > IDLE_S:
                selector.close()
                if _still_ours(self.path, inode):
                    os.unlink(self.path)
                return None

    def _accept(self, selector: selectors.BaseSelector) -> None:
        """A caller connected: its request is read once it has sent it (the loop never
        waits on one caller)."""
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        selector.register(conn, selectors.EVENT_READ, ("request", conn))

    def _start(self, selector: selectors.BaseSelector, conn: socket.socket) -> Request | None:
        """Fork the command's process; the request in it, None in the driver."""
        selector.unregister(conn)
        try:
            request = _read_request(conn)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"refused a request: {exc}", file=sys.stderr, flush=True)
            conn.close()
            return None
        pid = os.fork()
        if pid == 0:
            # The child keeps only its caller's streams: every socket, pidfd and the lock
            # stay the driver's (a child holding the lock would keep a new driver out).
            for key in list(selector.get_map().values()):
                if isinstance(key.fileobj, int):
                    os.close(key.fileobj)
                else:
                    cast(socket.socket, key.fileobj).close()
            selector.close()
            conn.close()
            os.close(self.lock_fd)
            return request
        try:
            os.setpgid(pid, pid)  # also done by the child: whichever runs first
        except OSError:
            pass
        for fd in request.fds:
            os.close(fd)
        child = _Child(pid, conn, os.pidfd_open(pid))
        self.children[pid] = child
        selector.register(child.pidfd, selectors.EVENT_READ, ("ended", child))
        selector.register(conn, selectors.EVENT_READ, ("hangup", child))
        _send(conn, {"pid": pid})
        return None

    def _ended(self, selector: selectors.BaseSelector, child: _Child) -> None:
        _, status = os.waitpid(child.pid, 0)
        selector.unregister(child.pidfd)
        os.close(child.pidfd)
        if not child.caller_gone:
            selector.unregister(child.conn)
            if os.WIFSIGNALED(status):
                _send(child.conn, {"signal": os.WTERMSIG(status)})
            else:
                _send(child.conn, {"exit": os.waitstatus_to_exitcode(status)})
        child.conn.close()
        del self.children[child.pid]

    def _hangup(self, selector: selectors.BaseSelector, child: _Child) -> None:
        """The caller wrote or closed: only a caller that died closes before the end."""
        try:
            data = child.conn.recv(1)
        except OSError:
            data = b""
        if data:
            return
        selector.unregister(child.conn)
        child.caller_gone = True
        try:
            os.kill(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _still_ours(path: str, inode: int) -> bool:
    try:
        return os.stat(path).st_ino == inode
    except OSError:
        return False


def _send(conn: socket.socket, message: dict[str, int]) -> None:
    try:
        conn.sendall(json.dumps(message).encode() + b"\n")
    except OSError:  # the caller is gone; its hangup is handled on its own
        pass


def _read_request(conn: socket.socket) -> Request:
    conn.settimeout(_REQUEST_S)
    uid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1]
    if uid != os.getuid():
        raise ValueError(f"a caller with uid {uid}")
    header, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 3)
    if len(fds) != 3 or len(header) != _HEADER.size:
        for fd in fds:
            os.close(fd)
        raise ValueError("no streams sent")
    (size,) = _HEADER.unpack(header)
    if size > _MAX_REQUEST:
        raise ValueError(f"a request of {size} bytes")
    payload = bytearray()
    while len(payload) < size:
        chunk = conn.recv(size - len(payload))
        if not chunk:
            raise ValueError("a request cut short")
        payload += chunk
    conn.settimeout(None)
    data = json.loads(payload)
    return Request(argv=list(data["argv"]), cwd=str(data["cwd"]), env=dict(data["env"]),
                   umask=int(data["umask"]), ignored=[int(s) for s in data["ignored"]],
                   streams=list(data["streams"]), fds=fds)


def _become(request: Request) -> None:
    """Turn this forked child into the caller's ``orch`` process."""
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    for target, fd in enumerate(request.fds):
        os.dup2(fd, target)
        os.close(fd)
    os.environ.clear()
    os.environ.update(request.env)
    time.tzset()
    os.umask(request.umask)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        if signum in request.ignored:
            signal.signal(signum, signal.SIG_IGN)
        elif signum == signal.SIGINT:
            signal.signal(signum, signal.default_int_handler)
        else:
            signal.signal(signum, signal.SIG_DFL)
    sys.argv = request.argv
    stdin, stdout, stderr = (_text(fd, spec) for fd, spec in enumerate(request.streams))
    for name, stream in (("stdin", stdin), ("stdout", stdout), ("stderr", stderr)):
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)
    os.chdir(request.cwd)


def _text(fd: int, spec: dict[str, Any]) -> io.TextIOWrapper:
    """A standard stream on ``fd`` made as the caller's interpreter made its own."""
    raw = io.FileIO(fd, "rb" if fd == 0 else "wb", closefd=False)
    buffer = io.BufferedReader(raw) if fd == 0 else io.BufferedWriter(raw)
    return io.TextIOWrapper(buffer, encoding=spec["encoding"], errors=spec["errors"],
                            newline="\n" if fd else None,
                            line_buffering=spec["line_buffering"],
                            write_through=spec["write_through"])


def main() -> None:
    """``python -c '...main()' SOCKET_PATH``, as the client starts it."""
    path = sys.argv[1]
    lock_fd = os.open(path.removesuffix(".sock") + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # another driver for this source is starting or serving
        return
    log = os.open(path.removesuffix(".sock") + ".log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                  0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    for name in WARM:
        try:
            importlib.import_module(name)
        except ImportError:  # an optional extra not installed
            pass
    if threading.active_count() > 1:  # a fork would copy a thread's locks, not the thread
        print(f"not serving: an import started a thread ({threading.enumerate()})", flush=True)
        return
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    with open(path.removesuffix(".sock") + ".pid", "w") as out:
        out.write(f"{os.getpid()}\n")
    request = Driver(path, listener, lock_fd).serve()
    if request is None:
        return
    _become(request)
    from ..cli import main as cli_main

    cli_main()
