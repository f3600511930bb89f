"""The ``orch`` entry point: each command runs in a process forked from a resident driver.

Most of a warm one-run ``orch sweep``'s fixed cost was Python's own: importing click, Hydra,
the docker SDK and orch itself took longer than the container's run. A resident driver
(:mod:`.server`) imports them once and forks a child per command. The child takes over the
caller's stdin, stdout and stderr (passed over a unix socket), its argv, working directory,
environment, umask and ignored signals, and runs the command as ``orch`` would in-process.
The caller (:mod:`.client`) forwards Ctrl-C, SIGTERM and SIGHUP to it and exits with its
status, so to a terminal or a script the two are one process.

- The first ``orch`` of a session runs in-process and starts the driver in the background;
  the driver exits after :data:`IDLE_S` seconds without a command.
- One driver per user, interpreter and orch source: a changed ``.py`` file of orch or a
  package installed or removed in its environment starts a new one, so a command never runs
  code older than what is on disk.
- In-process instead, always: ``ORCH_RESIDENT=0``; a ``PYTHON*`` variable or interpreter
  option that changes how modules load or behave (``PYTHONPATH``, ``-X importtime``, ...);
  inside a SLURM job (the child must live in the job's cgroup, not in a driver started
  elsewhere); a platform without ``pidfd_open``.

Nothing in the package imports it, and it imports nothing of orch but :mod:`orchestrator.cli`
(in the driver and in the in-process fallback).
"""

from __future__ import annotations

#: Seconds a driver with no command running waits for the next one before it exits.
IDLE_S = 600.0
