"""The SLURM backend: every run is a task of a job array, on the cluster's nodes.

=============  ====================================================================
module         concern
=============  ====================================================================
``commands``   ``sbatch``, ``scontrol``, ``scancel``: the cluster, as a login node has it
``script``     the batch script of one array (resources, placement, the task command)
``protocol``   what the driver and a task say to each other through the store
``dispatch``   :class:`SlurmBackend`, on the driver: arrays submitted and followed
``task``       one task on its node: image by digest, execute, outcome
``apptainer``  a run image as Apptainer runs it (conversion and ``apptainer exec``)
=============  ====================================================================

The sweep's state lives in the store: the driver writes each run's job there before it
submits, and a task needs nothing else from the driver (``--detach`` returns at once).
"""

from __future__ import annotations

from .commands import Slurm as Slurm
from .commands import TaskState as TaskState
from .dispatch import SlurmBackend as SlurmBackend

__all__ = ["Slurm", "SlurmBackend", "TaskState"]
