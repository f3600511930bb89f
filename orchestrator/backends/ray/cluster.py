"""Reaching Ray: the lazy import, starting or joining a cluster, and where Ray's driver
messages go.

``ray`` is an optional dependency: nothing here imports it at module level, so orch
works without it, and every entry point that needs it goes through :func:`import_ray`,
which names the extra to install.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
from typing import Any

from ...errors import BackendError, require

_HOST_PORT = re.compile(r"^(?:ray://)?\[?([A-Za-z0-9.:-]+?)\]?:(\d{1,5})$")


def import_ray() -> Any:
    """The ``ray`` module, or MissingDependency naming the extra to install."""
    return require("ray", "--backend ray", "'orch[ray]'")


def one_line(exc: BaseException) -> str:
    """An exception as one line: Ray's messages span many, orch's errors are one."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def init(ray: Any, address: str | None) -> None:
    """Start a local Ray (address None) or connect to a cluster; errors name the address."""
    route_messages_to_stderr()
    quiet: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.ERROR,
        "configure_logging": True,
    }
    if address is None:
        try:
            # "local": a new Ray of our own even if a `ray start` cluster runs on this machine.
            ray.init(address="local", num_cpus=os.cpu_count() or 1, **quiet)
        except Exception as exc:  # noqa: BLE001 - translated at the boundary
            raise BackendError(f"cannot start a local Ray: {one_line(exc)}") from exc
        return
    check_reachable(address)
    quiet.pop("include_dashboard")
    try:
        ray.init(address=address, **quiet)
    except Exception as exc:  # noqa: BLE001 - translated at the boundary
        with contextlib.suppress(Exception):
            ray.shutdown()
        raise BackendError(
            f"cannot connect to the Ray cluster at {address}: {one_line(exc)}"
        ) from exc


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds, not after Ray's long connect timeout, when nothing listens there."""
    if address == "auto":
        return
    match = _HOST_PORT.match(address)
    if match is None:
        raise BackendError(
            f"--ray-address {address!r}: expected HOST:PORT of the head node (e.g. "
            f"10.0.0.5:6379), ray://HOST:PORT or auto"
        )
    host, port = match.group(1), int(match.group(2))
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise BackendError(
            f"cannot connect to the Ray cluster at {address}: {exc.strerror or exc} "
            f"(is the head node up? ray start --head --port={port})"
        ) from exc


def route_messages_to_stderr() -> None:
    """Ray's driver prints cluster events ("task failed, will be retried", "node marked
    dead") on stdout, which belongs to orch's results (``--json``): send them to stderr.

    Ray has no setting for this; its printer is wrapped once per process (idempotent),
    and only the stream flag of each message changes.
    """
    try:
        from ray._private import worker as ray_worker
    except ImportError:
        return
    original = getattr(ray_worker, "print_to_stdstream", None)
    if original is None or getattr(original, "orch_to_stderr", False):
        return

    def to_stderr(data: dict[str, Any], ignore_prefix: bool) -> None:
        original({**data, "is_err": True}, ignore_prefix)

    to_stderr.orch_to_stderr = True  # type: ignore[attr-defined]  # a marker, read above
    ray_worker.print_to_stdstream = to_stderr
