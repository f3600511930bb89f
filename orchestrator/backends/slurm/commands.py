"""SLURM's client commands, the one way orch talks to a cluster: ``sbatch``, ``scontrol``,
``scancel``. No library binds SLURM's C API across versions (pyslurm follows each
release), while these commands and their ``-o``/``--parsable`` forms are stable, and what
a login node has. Their failures become one :class:`BackendError` line here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ...errors import BackendError

#: Task states after which SLURM runs nothing more for the task (a requeue leaves them).
ENDED = frozenset({
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
    "BOOT_FAIL", "DEADLINE", "PREEMPTED", "SPECIAL_EXIT",
})
#: The index under which :meth:`Slurm.tasks` lists the state of the indices it does not list.
REST = -1
#: SLURM's "no value" for a task id (an array's record once its pending tasks are gone).
_NO_VAL = 4294967294
#: How long one command may take: a controller that does not answer is an error, not a hang.
COMMAND_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ClusterConfig:
    #: Indices of one array go from 0 to this minus one.
    max_array_size: int
    #: Seconds between a task's SIGTERM (scancel, its time limit) and its SIGKILL.
    kill_wait_s: int


@dataclass(frozen=True)
class TaskState:
    """One task of a job array, as ``scontrol show job`` tells it."""

    index: int
    job_id: str
    state: str
    #: The batch script's exit status and the signal that ended it (``ExitCode=N:S``).
    exit_code: int | None = None
    signal: int | None = None
    node: str | None = None
    restarts: int = 0

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    @property
    def running(self) -> bool:
        return self.state in ("RUNNING", "COMPLETING")


class Slurm:
    """The client commands of one cluster (``SLURM_CONF`` and the rest come from the
    environment, as for ``sbatch`` typed in a shell)."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self._env = dict(env) if env is not None else None
        missing = [c for c in ("sbatch", "scontrol", "scancel") if shutil.which(c) is None]
        if missing:
            raise BackendError(
                f"--backend slurm needs SLURM's client commands ({', '.join(missing)} not "
                "found on PATH): submit from a login node of the cluster"
            )
        # SLURM's commands retry a missing SLURM_CONF for 60 s before they give up: say so now.
        conf = (env if env is not None else os.environ).get("SLURM_CONF")
        if conf and not os.path.exists(conf):
            raise BackendError(
                f"SLURM_CONF names {conf}, which does not exist: set SLURM_CONF to the "
                "cluster's slurm.conf, or submit from a login node"
            )

    def _run(self, argv: Sequence[str], stdin: str | None = None) -> str:
        try:
            # Its own session: a Ctrl-C at the terminal goes to the whole foreground process
            # group, and would kill the scontrol or scancel that orch runs to answer it.
            done = subprocess.run(
                list(argv), input=stdin, capture_output=True, text=True, env=self._env,
                timeout=COMMAND_TIMEOUT_S, check=False, start_new_session=True,
            )
        except subprocess.TimeoutExpired:
            raise BackendError(
                f"{argv[0]} did not answer within {COMMAND_TIMEOUT_S:.0f}s: is slurmctld up "
                "(scontrol ping)?"
            ) from None
        except OSError as exc:
            raise BackendError(f"cannot run {argv[0]}: {exc.strerror or exc}") from exc
        if done.returncode != 0:
            # SLURM's commands explain in their last line ("fatal: ..."); earlier lines are
            # the steps that led there.
            lines = [" ".join(line.split()) for line in (done.stderr or done.stdout).splitlines()]
            message = next((line for line in reversed(lines) if line), f"exit {done.returncode}")
            hint = ""
            if "configuration" in message or "slurm.conf" in message:
                hint = " (set SLURM_CONF to the cluster's slurm.conf, or submit from a login node)"
            raise BackendError(f"{argv[0]} failed: {message}{hint}")
        return done.stdout

    def submit(self, script: str, cwd: Path | None = None) -> str:
        """``sbatch --parsable`` of a script given on stdin; the job id."""
        argv = ["sbatch", "--parsable"]
        if cwd is not None:
            argv.append(f"--chdir={cwd}")
        out = self._run(argv, stdin=script).strip()
        job_id = out.split(";", 1)[0]
        if not job_id.isdigit():
            raise BackendError(f"sbatch answered {out!r}, not a job id")
        return job_id

    def tasks(self, array_id: str) -> dict[int, TaskState] | None:
        """The tasks of a job array that SLURM still knows (``MinJobAge`` keeps ended ones
        a while), by index; None when the controller has forgotten the whole array.

        A throttled array's pending tasks are one line (``ArrayTaskId=4-19%2``): each
        index of it is listed as pending. Once those are cancelled the line loses its
        indices (``ArrayTaskId=4294967294``, CANCELLED): it is then listed as :data:`REST`,
        the state of every index not listed.
        """
        try:
            out = self._run(["scontrol", "show", "job", "-o", array_id])
        except BackendError as exc:
            if "Invalid job id" in str(exc):
                return None
            raise
        found: dict[int, TaskState] = {}
        for line in out.splitlines():
            fields = _fields(line)
            if not fields.get("JobId"):
                continue
            indices = _indices(fields.get("ArrayTaskId", "")) or [REST]
            code, signal = _exit_code(fields.get("ExitCode", ""))
            node = fields.get("NodeList") or None
            for index in indices:
                found[index] = TaskState(
                    index=index,
                    job_id=fields["JobId"],
                    state=fields.get("JobState", "UNKNOWN"),
                    exit_code=code,
                    signal=signal,
                    node=None if node in (None, "(null)") else node,
                    restarts=int(fields.get("Restarts", "0") or 0),
                )
        return found

    def cancel(self, job_ids: Sequence[str], *, pending_only: bool = False) -> None:
        """``scancel``: SIGTERM to each running task's batch script (orch's task stops its
        container and commits the run as cancelled), then SIGKILL after ``KillWait``;
        pending tasks are dropped. ``pending_only``: only those."""
        if not job_ids:
            return
        argv = ["scancel", *(["--state=PENDING"] if pending_only else []), *job_ids]
        self._run(argv)

    def config(self) -> ClusterConfig:
        """What orch needs of ``scontrol show config`` (SLURM's defaults where unsaid)."""
        out = self._run(["scontrol", "show", "config"])
        found: dict[str, int] = {}
        for line in out.splitlines():
            key, _, value = line.partition("=")
            number = value.split()[0] if value.split() else ""  # "KillWait = 30 sec"
            if number.isdigit():
                found[key.strip()] = int(number)
        return ClusterConfig(max_array_size=found.get("MaxArraySize", 1001),
                             kill_wait_s=found.get("KillWait", 30))


def _fields(line: str) -> dict[str, str]:
    """``Key=Value Key=Value ...`` of ``scontrol -o``; a value never holds ``" Key="``."""
    fields: dict[str, str] = {}
    for word in line.split():
        key, sep, value = word.partition("=")
        if sep and key not in fields:
            fields[key] = value
    return fields


def _indices(text: str) -> list[int]:
    """``3``, ``4-19%2`` or ``1,3,5-7`` as indices."""
    text = text.split("%", 1)[0]
    found: list[int] = []
    for part in filter(None, text.split(",")):
        low, _, high = part.partition("-")
        if low.isdigit() and (not high or high.isdigit()) and int(low) < _NO_VAL:
            found.extend(range(int(low), int(high or low) + 1))
    return found


def _exit_code(text: str) -> tuple[int | None, int | None]:
    code, _, signal = text.partition(":")
    return (int(code) if code.isdigit() else None, int(signal) if signal.isdigit() else None)
