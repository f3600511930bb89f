"""The Ray backend: every run is a Ray task, placed by Ray on a node with its CPUs and GPUs.

=============  ====================================================================
module         concern
=============  ====================================================================
``cluster``    importing Ray (lazily, with an install hint), starting or joining a
               cluster, the reachability check, Ray's driver messages to stderr
``dispatch``   :class:`RayBackend`, on the driver: runs in flight, results back
``node``       a run's task on its node: store, Docker, image by digest, execute
``jobs``       detached sweeps: the sweep's driver as a Ray Job, its status
``workdir``    the project directory zipped for a detached sweep, ``.git`` included
=============  ====================================================================

Importing this package does not import Ray: orch works without it installed.
"""

from __future__ import annotations

from ..gpusim import FAKE_GPUS_ENV as FAKE_GPUS_ENV
from ..gpusim import SimulatedGpuClient as SimulatedGpuClient
from ..node import ensure_run_image as ensure_run_image
from ..node import shared_store_uri as shared_store_uri
from .cluster import import_ray as import_ray
from .detached_job import DetachedSweep as DetachedSweep
from .detached_job import detached_status as detached_status
from .detached_job import submit_detached as submit_detached
from .dispatch import MAX_RETRIES as MAX_RETRIES
from .dispatch import RayBackend as RayBackend
from .dispatch import memory_bytes as memory_bytes
from .dispatch import task_error as task_error
from .node import run_on_node as run_on_node

__all__ = [
    "FAKE_GPUS_ENV",
    "MAX_RETRIES",
    "DetachedSweep",
    "RayBackend",
    "SimulatedGpuClient",
    "detached_status",
    "ensure_run_image",
    "import_ray",
    "memory_bytes",
    "run_on_node",
    "shared_store_uri",
    "submit_detached",
    "task_error",
]
