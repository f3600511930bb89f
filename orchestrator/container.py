"""Running one run image as a container, and collecting what it leaves behind."""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from .docker_api import describe
from .errors import BackendError

RUN_USER = "65534:65534"
OUTPUT_DIR = "/orch/output"
#: Outputs larger than this in total are refused rather than loaded into memory.
MAX_OUTPUT_BYTES = 2 << 30


@dataclass
class ContainerResult:
    exit_code: int | None
    stdout: bytes
    stderr: bytes
    outputs: dict[str, bytes] = field(default_factory=dict)
    started: float = 0.0
    ended: float = 0.0
    reason: str | None = None


def device_requests(gpu_ids: list[str]) -> list[Any]:
    """The exact GPU request sent to Docker for these device ids (nvidia runtime)."""
    if not gpu_ids:
        return []
    from docker.types import DeviceRequest

    return [DeviceRequest(driver="nvidia", device_ids=list(gpu_ids), capabilities=[["gpu"]])]


def create_kwargs(
    *,
    image_id: str,
    command: list[str],
    run_id: str,
    cpus: float,
    memory: str | None,
    network: str,
    gpu_ids: list[str],
    env: dict[str, str],
    name: str,
    mounts: Sequence[tuple[str, str]] = (),
) -> dict[str, Any]:
    """Arguments of ``containers.create``: unprivileged, no capabilities, argv only.

    ``mounts`` are (container path, host path) pairs, bound read-only (data inputs).
    """
    kwargs: dict[str, Any] = {
        "image": image_id,
        "command": command,
        "user": RUN_USER,
        "network_mode": network,
        "labels": {"org.orch.run_id": run_id},
        "nano_cpus": int(cpus * 1e9),
        "privileged": False,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "environment": env,
        "name": name,
        "detach": True,
    }
    if memory:
        kwargs["mem_limit"] = memory
        kwargs["memswap_limit"] = memory  # no swap: over the limit means the OOM killer
    requests = device_requests(gpu_ids)
    if requests:
        kwargs["device_requests"] = requests
    if mounts:
        from docker.types import Mount

        kwargs["mounts"] = [
            Mount(target, source, type="bind", read_only=True) for target, source in mounts
        ]
    return kwargs


def run(
    client: Any,
    kwargs: dict[str, Any],
    timeout: float | None,
    slot: AbstractContextManager[Any] | None = None,
) -> ContainerResult:
    """Create, start and wait for the container; collect what it left; always remove it.

    Only create/start/wait happen inside ``slot`` (the backend's parallelism limit):
    collecting logs and outputs of one run overlaps with the start of the next.
    """
    import docker.errors
    import requests.exceptions

    with slot or nullcontext():
        try:
            container = client.containers.create(**kwargs)
        except docker.errors.ImageNotFound as exc:
            raise BackendError(
                f"image {kwargs['image']} is not on the daemon: {describe(exc)}"
            ) from exc
        except docker.errors.APIError as exc:
            raise BackendError(f"cannot create the container: {describe(exc)}") from exc
        started = time.time()
        reason = None
        exit_code: int | None = None
        try:
            container.start()
            status = container.wait(timeout=timeout) if timeout else container.wait()
            exit_code = int(status.get("StatusCode", -1))
        except docker.errors.APIError as exc:
            reason = f"could not start: {describe(exc)}"
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            container.kill()
            container.wait()
            reason = f"timeout after {timeout:g}s"
        ended = time.time()
    try:
        if reason is None:
            state = client.api.inspect_container(container.id)["State"]
            if state.get("OOMKilled"):
                reason = "killed: out of memory"
            elif exit_code != 0:
                reason = f"exit code {exit_code}"
        stdout = container.logs(stdout=True, stderr=False)
        stderr = container.logs(stdout=False, stderr=True)
        if reason is not None and reason.startswith("could not start"):
            stderr += reason.encode() + b"\n"
        outputs = collect_outputs(container)
        return ContainerResult(exit_code, stdout, stderr, outputs, started, ended, reason)
    finally:
        try:
            container.remove(force=True)
        except docker.errors.APIError:
            pass  # already gone; nothing of the run depends on it


def collect_outputs(container: Any) -> dict[str, bytes]:
    """Regular files under /orch/output, by relative path.

    Links, devices and any name that could not be stored safely (outside ``output/``,
    ``..``, backslashes, control characters, not UTF-8) are left out: an artifact can
    never point or land outside its run.
    """
    import docker.errors

    try:
        stream, _ = container.get_archive(OUTPUT_DIR)
    except docker.errors.NotFound:
        return {}
    buffer = io.BytesIO()
    for chunk in stream:
        buffer.write(chunk)
        if buffer.tell() > MAX_OUTPUT_BYTES:
            raise BackendError(f"outputs of {container.name} exceed {MAX_OUTPUT_BYTES} bytes")
    buffer.seek(0)
    outputs: dict[str, bytes] = {}
    with tarfile.open(fileobj=buffer, mode="r:", encoding="utf-8") as tar:
        for member in tar:
            name = safe_output_name(member.name)
            if not member.isfile() or name is None:
                continue
            handle = tar.extractfile(member)
            if handle is not None:
                outputs[name] = handle.read()
    return outputs


def safe_output_name(member: str) -> str | None:
    """``output/a/b.txt`` -> ``a/b.txt``; None for anything unsafe to store."""
    parts = PurePosixPath(member).parts
    if len(parts) < 2 or parts[0] != "output":
        return None
    rest = parts[1:]
    for part in rest:
        if part in ("..", ".", "") or "\\" in part:
            return None
        if any(ord(c) < 32 or c == "\x7f" for c in part):
            return None
        try:
            part.encode("utf-8")
        except UnicodeEncodeError:
            return None
    return "/".join(rest)
