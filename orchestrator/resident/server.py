"""The resident driver: imports orch once, then forks a child per command.

It stays single-threaded, so every fork is safe: one selector loop accepts commands, sees
children end (a pidfd each) and callers hang up. A caller that disappears (SIGKILL) takes
its command with it, as it would have in-process. The driver exits after
:data:`~orchestrator.resident.IDLE_S` seconds with nothing running, once its socket is
gone or replaced (``rm`` stops it), or once its Python environment is removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import importlib
import json
import os
import selectors
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import cast

from . import IDLE_S
from .child import Request, become, run_command

#: What a command may need, imported before the first fork. Not Ray, Optuna or pandas:
#: importing them starts threads (a fork copies a thread's locks, not the thread).
WARM = ("orchestrator.cli", "orchestrator.drivers.search", "orchestrator.backends.local",
        "orchestrator.results", "orchestrator.image.closure", "orchestrator.image.sdist",
        "orchestrator.image.wheels", "orchestrator.store.labels", "orchestrator.store.s3",
        "orchestrator.db.query", "orchestrator.db.catalog", "duckdb", "docker",
        "hydra.compose", "omegaconf._impl", "rich.console", "rich.table", "boto3", "difflib",
        "netrc", "tomllib")
#: Seconds between checks that the socket is still this driver's, when idle.
_CHECK_S = 5.0
#: Seconds between looks at whether a running command's caller was stopped.
_FOLLOW_S = 0.25
#: Seconds a caller has to send its request once connected.
_REQUEST_S = 5.0
_HEADER = struct.Struct("!I")
#: Bytes past which a driver's log is started afresh.
_MAX_LOG = 1 << 20
_MAX_REQUEST = 16 << 20


@dataclass
class _Child:
    pid: int
    caller: int
    conn: socket.socket
    pidfd: int
    caller_gone: bool = False
    paused: bool = False

    def follow_caller(self) -> None:
        """Stop the command while its caller is stopped (Ctrl-Z, SIGSTOP: signals no
        handler sees, so the caller cannot forward them) and continue it with its caller."""
        try:
            with open(f"/proc/{self.caller}/stat", "rb") as stat:
                state = stat.read().rsplit(b") ", 1)[1][:1]
        except (OSError, IndexError):
            return
        if (state == b"T") != self.paused:
            self.paused = not self.paused
            try:
                os.killpg(self.pid, signal.SIGSTOP if self.paused else signal.SIGCONT)
            except ProcessLookupError:
                pass


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
            events = selector.select(_FOLLOW_S if self.children else _CHECK_S)
            for key, _ in events:
                kind, value = key.data
                if kind == "accept":
                    self._accept(selector)
                elif kind == "request":
                    request = self._start(selector, value)
                    if request is not None:
                        return request
                elif value.pid not in self.children:
                    continue  # ended earlier in this same batch of events
                elif kind == "ended":
                    self._ended(selector, value)
                elif not value.caller_gone:
                    self._hangup(selector, value)
            for child in list(self.children.values()):
                if not child.caller_gone:
                    child.follow_caller()
            if self.children:
                idle_since = time.monotonic()
            elif reason := _why_exit(self.path, inode, idle_since):
                _log(f"driver {os.getpid()} exits: {reason}")
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
            _log(f"refused a request: {exc!r}")
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
        child = _Child(pid, request.caller, conn, os.pidfd_open(pid))
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
        _log(f"the caller {child.caller} of command {child.pid} is gone: killing it")
        try:
            os.kill(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _why_exit(path: str, inode: int, idle_since: float) -> str:
    """Why a driver with nothing running should exit now; "" while it should not."""
    if not _still_ours(path, inode):
        return "its socket was removed or replaced"
    if not os.path.isdir(sys.prefix):
        return f"its environment {sys.prefix} was removed"
    if time.monotonic() - idle_since > IDLE_S:
        return f"no command for {IDLE_S:.0f} s"
    return ""


def _log(line: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {line}", file=sys.stderr, flush=True)


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
    caller, uid, _ = struct.unpack(
        "3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
    )
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
    return Request(caller=caller, argv=list(data["argv"]), cwd=str(data["cwd"]),
                   env=dict(data["env"]),
                   umask=int(data["umask"]), ignored=[int(s) for s in data["ignored"]],
                   streams=list(data["streams"]), fds=fds)


def warm() -> None:
    """What the driver does once for all its commands: import :data:`WARM`, then parse
    what every sweep parses (ANTLR builds its lexers' and parsers' DFAs on first use,
    ~30 ms of a command, and a child inherits them built)."""
    for name in WARM:
        try:
            importlib.import_module(name)
        except ImportError:  # an optional extra not installed
            pass
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.plugins import Plugins
    from omegaconf import OmegaConf

    Plugins.instance()  # imports Hydra's core plugins, as the first compose would
    # A lexer's DFA grows one edge per (state, character): show it every character in a
    # key, a value, a quoted string, a list and a function call.
    chars = "".join(map(chr, range(0x21, 0x7F))).replace("'", "")
    word = "".join(sorted((c for c in chars if c.isalnum()), key=str.isdigit)) + "_-"
    parser = OverridesParser.create()
    for line in (
        f"{word}.{word}={word}.5e-3", f"+{word}/{word}@{word}={word}", f"~{word}",
        f"++{word}=[1, {word}, '{chars}', \"{word} {word}\"]",
        f"{word}=range(0,3),choice(a,b),interval(0.1, 1.0),null,true,${{{word}.{word}}}",
        f"{word}={{{word}: 1, {word}: [x, y]}}", f"{word}=glob(*,exclude={word})",
    ):
        try:
            parser.parse_overrides([line])
        except Exception:  # noqa: BLE001 - a line the grammar refuses still warmed it
            pass
    OmegaConf.to_container(OmegaConf.create({"a": 1, "b": "${a}", "c": "x_${b}"}),
                           resolve=True)


def main() -> None:
    """``python -c '...main()' SOCKET_PATH``, as the client starts it."""
    path = sys.argv[1]
    lock_fd = os.open(path.removesuffix(".sock") + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # another driver for this source is starting or serving
        return
    log = path.removesuffix(".sock") + ".log"
    with contextlib.suppress(OSError):
        if os.path.getsize(log) > _MAX_LOG:
            os.unlink(log)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    _log(f"driver {os.getpid()} starting for {path}")
    warm()
    # Objects the driver made are never collected: the children's collector leaves them
    # alone instead of writing to (so copying) every page of the driver's heap.
    gc.collect()
    gc.freeze()
    threads = len(os.listdir("/proc/self/task"))  # native ones too, not only Python's
    if threads > 1:  # a fork would copy a thread's locks, not the thread
        _log(f"not serving: importing {WARM} started {threads - 1} thread(s)")
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
    try:
        request = Driver(path, listener, lock_fd).serve()
    except BaseException as exc:
        _log(f"driver {os.getpid()} failed: {exc!r}")
        raise
    if request is None:
        return
    become(request)
    os._exit(run_command())
