"""A forked child of the resident driver: it becomes the caller's ``orch`` and runs it.

The request carries what an in-process ``orch`` would have had (argv, working directory,
environment, umask, ignored signals, the standard streams' file descriptors and how the
caller's interpreter wrapped them); the caller's resource limits are read from the caller
itself.
"""

from __future__ import annotations

import atexit
import io
import os
import resource
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Request:
    """A command as its caller would have run it in-process."""

    caller: int
    argv: list[str]
    cwd: str
    env: dict[str, str]
    umask: int
    ignored: list[int]
    streams: list[dict[str, Any]]
    fds: list[int]


def become(request: Request) -> None:
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
    _limits_of(request.caller)
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


def _limits_of(caller: int) -> None:
    """The caller's resource limits (``ulimit``), where this process may take them: not
    above the driver's hard limits, which only root could raise."""
    for name in dir(resource):
        if name.startswith("RLIMIT_"):
            try:
                resource.setrlimit(getattr(resource, name),
                                   resource.prlimit(caller, getattr(resource, name)))
            except (OSError, ValueError):
                pass


def _text(fd: int, spec: dict[str, Any]) -> io.TextIOWrapper:
    """A standard stream on ``fd`` made as the caller's interpreter made its own."""
    raw = io.FileIO(fd, "rb" if fd == 0 else "wb", closefd=False)
    buffer = io.BufferedReader(raw) if fd == 0 else io.BufferedWriter(raw)
    return io.TextIOWrapper(buffer, encoding=spec["encoding"], errors=spec["errors"],
                            newline="\n" if fd else None,
                            line_buffering=spec["line_buffering"],
                            write_through=spec["write_through"])


def run_command() -> int:
    """Run the command, then end as the interpreter would (non-daemon threads joined, atexit
    handlers run, streams flushed) but without tearing down every module the driver
    imported: that alone took ~0.1 s, copying the driver's memory page by page."""
    from ..cli import main as cli_main

    code = 0
    try:
        cli_main()
    except SystemExit as exc:
        if isinstance(exc.code, int):
            code = exc.code
        elif exc.code is not None:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: BLE001 - reported as the interpreter reports it
        sys.excepthook(*sys.exc_info())
        code = 1
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader gone (a closed pipe): nothing to deliver
            pass
    return code
