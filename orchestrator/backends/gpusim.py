"""Simulated GPUs, for GPU-less test machines.

With ``ORCH_FAKE_GPUS=1`` in a *node's* environment (node configuration, like its
``DOCKER_HOST``), runs there still get and record the GPU ids Ray assigned and see them
as ``NVIDIA_VISIBLE_DEVICES``, but no device request is sent to Docker, which would fail
without the NVIDIA runtime. Their records say ``"gpus_simulated": true``. Never set it on
a real GPU node.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

#: Set to 1 in a node's environment to simulate its GPUs (tests on GPU-less machines).
FAKE_GPUS_ENV = "ORCH_FAKE_GPUS"


def simulates_gpus(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this node is configured to simulate its GPUs (the one place that reads it)."""
    env = os.environ if environ is None else environ
    return env.get(FAKE_GPUS_ENV) == "1"


class SimulatedGpuClient:
    """A Docker client that runs containers *without* a GPU device request.

    The container sees the assigned ids as ``NVIDIA_VISIBLE_DEVICES``, as the NVIDIA
    runtime would set them; everything else goes to the real client unchanged.
    """

    def __init__(self, client: Any, gpu_ids: list[str]) -> None:
        self._client = client
        self.containers = _SimulatedGpuContainers(client.containers, gpu_ids)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class _SimulatedGpuContainers:
    def __init__(self, containers: Any, gpu_ids: list[str]) -> None:
        self._containers = containers
        self._gpu_ids = list(gpu_ids)

    def create(self, **kwargs: Any) -> Any:
        kwargs.pop("device_requests", None)
        env = dict(kwargs.get("environment") or {})
        env["NVIDIA_VISIBLE_DEVICES"] = ",".join(self._gpu_ids)
        kwargs["environment"] = env
        return self._containers.create(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._containers, name)
