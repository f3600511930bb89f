"""The batch script of one job array: each task is one run of the sweep.

Every setting becomes an ``#SBATCH`` line (so ``scontrol show job`` and the cluster's
accounting show what was asked), and the script's one command hands the task to orch on
the node. Values were checked when ``orch.yaml`` was read (one word each, no newline);
the command line is quoted for the shell.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ...compose.project import SlurmOptions, memory_bytes
from ...runner.container import STOP_GRACE_S
from ...schema.record import RunResources

#: The module a task runs: ``python -m orchestrator.backends.slurm.task``.
TASK_MODULE = "orchestrator.backends.slurm.task"


@dataclass(frozen=True)
class ArrayRequest:
    """One job array: ``size`` tasks (indices 0..size-1) of runs that ask for the same
    resources."""

    store_uri: str
    batch: str
    size: int
    resources: RunResources
    job_name: str
    python: str
    log_dir: Path
    #: At most this many tasks at once (``--array=...%N``); None: as SLURM schedules.
    throttle: int | None = None
    s3_endpoint: str | None = None
    #: Start only after these jobs ended (``afterany``): arrays split by MaxArraySize
    #: follow one another, so ``--jobs`` holds across them.
    after: Sequence[str] = ()
    #: Seconds a cancelled run gets between its SIGTERM and its SIGKILL: see stop_grace.
    stop_grace_s: int = STOP_GRACE_S


def stop_grace(kill_wait_s: int) -> int:
    """A cancelled run's grace period on this cluster. SLURM SIGKILLs a task ``KillWait``
    seconds after its SIGTERM, and a task killed before its commit leaves no record: the
    run gets at most half of that (orch's usual grace at most), the commit the rest."""
    return max(1, min(STOP_GRACE_S, kill_wait_s // 2))


def resource_options(resources: RunResources, options: SlurmOptions) -> list[str]:
    """What one run asks of SLURM: its CPUs, memory and GPUs."""
    found = ["--ntasks=1", f"--cpus-per-task={max(1, math.ceil(resources.cpus))}"]
    if resources.memory:
        # SLURM's unit is MiB; Docker then limits the container to the exact bytes.
        found.append(f"--mem={max(1, math.ceil(memory_bytes(resources.memory) / 2**20))}M")
    if resources.gpus:
        found.append(f"--gres=gpu:{resources.gpus}" if options.gpu_request == "gres"
                     else f"--gpus-per-task={resources.gpus}")
    if resources.timeout and not options.time:
        # The run's own timeout, and a minute for orch's start and commit.
        found.append(f"--time={math.ceil(resources.timeout / 60) + 1}")
    return found


def cluster_options(options: SlurmOptions, *, for_runs: bool = True) -> list[str]:
    """``slurm:``'s placement: partition, account, QoS and, for the runs' tasks (not a
    sweep's closing job), the time limit and extra options."""
    named = [("partition", options.partition), ("account", options.account),
             ("time", options.time if for_runs else None), ("qos", options.qos)]
    placed = [f"--{name}={value}" for name, value in named if value]
    return placed + list(options.sbatch) if for_runs else placed


def array_script(request: ArrayRequest, options: SlurmOptions) -> str:
    array = f"0-{request.size - 1}" + (f"%{request.throttle}" if request.throttle else "")
    directives = [
        f"--job-name={request.job_name}",
        f"--array={array}",
        *resource_options(request.resources, options),
        # A task whose node is lost runs again elsewhere; orch's claim keeps one record.
        "--requeue",
        "--open-mode=append",
        f"--output={request.log_dir}/%A_%a.out",
        *([f"--dependency=afterany:{':'.join(request.after)}"] if request.after else []),
        *cluster_options(options),
    ]
    command = [request.python, "-m", TASK_MODULE, request.store_uri, request.batch,
               "--stop-grace", str(request.stop_grace_s)]
    if request.s3_endpoint:
        command += ["--s3-endpoint", request.s3_endpoint]
    if options.engine != "docker":
        command += ["--engine", options.engine]
    lines = ["#!/bin/sh", *(f"#SBATCH {d}" for d in directives),
             # exec: scancel's SIGTERM reaches orch itself, which stops the container.
             "exec " + shlex.join(command), ""]
    return "\n".join(lines)


def finish_script(*, store_uri: str, sweep_id: str, marker: str, batches: Sequence[str],
                  after: Sequence[str], python: str, log_dir: Path, options: SlurmOptions,
                  s3_endpoint: str | None = None) -> str:
    """The last step of a detached sweep, after every array ended (``afterany``): the
    arrays' job objects removed, then the sweep's index from its records and its open
    marker removed."""
    directives = [
        f"--job-name=orch-finish-{sweep_id[:12]}",
        "--ntasks=1",
        "--cpus-per-task=1",
        "--time=10",
        f"--output={log_dir}/%j.out",
        f"--dependency=afterany:{':'.join(after)}",
        *cluster_options(options, for_runs=False),
    ]
    command = [python, "-m", TASK_MODULE, "--finish", store_uri, sweep_id, marker, *batches]
    if s3_endpoint:
        command += ["--s3-endpoint", s3_endpoint]
    return "\n".join(["#!/bin/sh", *(f"#SBATCH {d}" for d in directives),
                      "exec " + shlex.join(command), ""])
