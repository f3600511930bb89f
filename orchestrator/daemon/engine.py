"""Which container engine answers on the Docker API socket, and what a run needs from it.

orch speaks one API, Docker's, through the docker SDK. Podman serves the same API on its
own socket (``podman system service``), so the engine is picked the way the socket is:
``DOCKER_HOST`` when set, else Docker's socket, else Podman's (:func:`default_sockets`).
What answers there is detected once per connection (:func:`detect`): Podman's answer to
the ping names its ``Libpod-Api-Version``, and only its ``/libpod/info`` says whether it
runs rootless (the Docker-compatible ``/info`` does not) and on which cgroup version.

Images and their IDs are the same on both engines: orch writes the archives, and an
image ID is the sha256 of its config. What differs is said here, once:

- **Rootless Podman** runs containers in the user's namespace, where the run's uid 65534
  is one of the user's subordinate uids: it could not write the run's bind-mounted
  directories (owned by the user), and what it wrote the user could not read or remove.
  So the run's uid:gid is mapped onto the user (``UsernsMode=keep-id:uid=...,gid=...``,
  a value the docker SDK refuses, so it goes on the raw create request). Podman 4.3 then
  keeps a copy of each run image with its files re-owned, at the cost of disk space.
- **Rootless on cgroup v1** cannot limit CPU, memory or processes: Podman ignores the
  limits, and orch says so in one warning.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("orchestrator.daemon.engine")

@dataclass(frozen=True)
class Engine:
    """The engine behind one socket, as detected when orch connected to it."""

    name: str = "docker"  # "docker" or "podman"
    version: str = ""
    rootless: bool = False
    cgroup_version: int = 0  # 1 or 2; 0 when the engine did not say

    @property
    def label(self) -> str:
        """``Docker 20.10.24``, ``rootless Podman 4.3.1``: for messages and records."""
        mode = "rootless " if self.rootless else ""
        return f"{mode}{self.name.capitalize()} {self.version}".strip()

    @property
    def ignores_limits(self) -> bool:
        """Whether CPU and memory limits are silently dropped (rootless on cgroup v1)."""
        return self.name == "podman" and self.rootless and self.cgroup_version == 1

    def userns_mode(self, user: str | None) -> str | None:
        """The raw ``HostConfig.UsernsMode`` for a container started as ``user`` (uid:gid).

        On rootless Podman a numeric non-root user is mapped onto the user who runs
        Podman, so what the container writes to a bind mount is theirs. uid 0 needs no
        option: rootless Podman maps the container's root onto that user already.
        """
        if not (self.name == "podman" and self.rootless) or not user:
            return None
        uid, _, gid = user.partition(":")
        gid = gid or uid
        if not (uid.isdigit() and gid.isdigit()) or uid == "0":
            return None
        return f"keep-id:uid={uid},gid={gid}"

    def warn_ignored_limits(self) -> None:
        log.warning(
            "%s on cgroup v1 ignores the runs' CPU and memory limits (orch.yaml resources) "
            "and their process limit: the runs are not limited (cgroup v2 with delegation "
            "enforces them)",
            self.label,
        )


DOCKER = Engine()


def detect(
    ping_headers: Mapping[str, str], libpod_info: Callable[[], Mapping[str, Any]]
) -> Engine:
    """The engine that answered a ping with these headers; ``libpod_info`` (Podman's own
    ``/libpod/info``) is called only for Podman, whose ping names ``Libpod-Api-Version``."""
    podman = ping_headers.get("Libpod-Api-Version")
    if not podman:
        server = ping_headers.get("Server", "")  # "Docker/20.10.24 (linux)"
        return Engine("docker", server.split("/", 1)[1].split()[0] if "/" in server else "")
    try:
        host = libpod_info().get("host") or {}
    except Exception:  # noqa: BLE001 - no libpod info: a rootful engine's defaults, no warning
        host = {}
    security = host.get("security") or {}
    cgroup = str(host.get("cgroupVersion", "")).lstrip("v")
    return Engine(
        "podman",
        podman,
        rootless=bool(security.get("rootless", False)),
        cgroup_version=int(cgroup) if cgroup.isdigit() else 0,
    )


def default_sockets(environ: Mapping[str, str] | None = None) -> list[str]:
    """Where orch looks for an engine when ``DOCKER_HOST`` is not set, in order.

    Docker's socket, then rootless Podman's (``systemctl --user start podman.socket``
    makes it) and rootful Podman's. The first whose socket file exists is used.
    """
    env = os.environ if environ is None else environ
    found = ["/var/run/docker.sock"]
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime:
        found.append(f"{runtime}/podman/podman.sock")
    found.append("/run/podman/podman.sock")
    return found


#: Rootless Podman (4.3, Debian 12's) reads /etc/subuid for each keep-id create through
#: libsubid, not thread-safe: two creates at once can fail with this. Ours are made one at
#: a time; one that meets it anyway (another process's create) is made again.
_SUBID_RACE = "keep-id requires additional UIDs or GIDs"
_USERNS_CREATE = threading.Lock()


def create_in_userns(api: Any, args: dict[str, Any], attempts: int = 5) -> Any:
    import docker.errors

    for attempt in range(1, attempts):
        try:
            with _USERNS_CREATE:
                return api.create_container(**args)
        except docker.errors.APIError as exc:
            if _SUBID_RACE not in str(exc):
                raise
            time.sleep(0.05 * attempt)
    with _USERNS_CREATE:
        return api.create_container(**args)
