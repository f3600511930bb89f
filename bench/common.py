"""Shared pieces of the benchmark harness: statistics, timing, cleanup, subprocesses.

Every benchmark registers what it creates (temporary directories, Docker images and
containers, child processes, servers) with the :class:`Janitor`, which removes it all
when the harness ends, normally, on an error or on SIGINT/SIGTERM/SIGHUP.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
ORCH = str(VENV_BIN / "orch")
BENCH_CACHE = Path(
    os.environ.get("ORCH_BENCH_CACHE")
    or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "orch-bench"
    )
)
BASE_TAG = "orch/base:bookworm"

# Throwaway git repositories need an identity; never touch ~/.gitconfig.
GIT_ENV = {
    "GIT_AUTHOR_NAME": "orch bench",
    "GIT_AUTHOR_EMAIL": "bench@orch.invalid",
    "GIT_COMMITTER_NAME": "orch bench",
    "GIT_COMMITTER_EMAIL": "bench@orch.invalid",
}


class BenchError(Exception):
    """A benchmark could not be measured; the message says why (it becomes a note)."""


class BenchSkipped(BenchError):
    """A section cannot run here at all: a service it needs is absent from this machine
    (the message says which, and how to get it). Its keys are null with the message as
    their note, and the smoke test skips the section with that reason."""


@dataclass
class Stat:
    """Samples of one quantity, in seconds (or a unitless ratio)."""

    name: str
    samples: list[float] = field(default_factory=list)
    note: str = ""

    def add(self, value: float) -> None:
        self.samples.append(value)

    @property
    def n(self) -> int:
        return len(self.samples)

    @property
    def median(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None

    @property
    def min(self) -> float | None:
        return min(self.samples) if self.samples else None

    @property
    def max(self) -> float | None:
        return max(self.samples) if self.samples else None


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return a / b


def paired(values: list[float], groups: list[list[float]]) -> float | None:
    """Median over repeats of ``values[i] / median(groups[i] + groups[i + 1])``: each
    repeat against the floor samples taken just before and just after it, which follows
    the machine's load when it drifts during the run (the plain ratio of medians does not).
    """
    ratios = []
    for index, value in enumerate(values):
        around = [*groups[index], *(groups[index + 1] if index + 1 < len(groups) else [])]
        if around and statistics.median(around) > 0:
            ratios.append(value / statistics.median(around))
    return statistics.median(ratios) if ratios else None


def loadavg() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def log(message: str) -> None:
    """Progress goes to stderr; stdout holds only the table and the final JSON line."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class _Interrupted(BaseException):
    pass


class Janitor:
    """Undo everything the harness created, last first, exactly once."""

    def __init__(self) -> None:
        self._actions: list[tuple[str, Callable[[], None]]] = []
        self._procs: list[subprocess.Popen[Any]] = []
        self._grace: dict[int, float] = {}
        self._done = False
        self.root = Path(tempfile.mkdtemp(prefix="orch-bench-"))
        self.add(
            "remove the scratch directory", lambda: shutil.rmtree(self.root, ignore_errors=True)
        )

    def add(self, what: str, action: Callable[[], None]) -> None:
        self._actions.append((what, action))

    def tempdir(self, prefix: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=prefix, dir=self.root))

    def track(self, proc: subprocess.Popen[Any], grace: float = 5.0) -> subprocess.Popen[Any]:
        """Kill ``proc`` (and its process group) at cleanup, after ``grace`` seconds of
        SIGTERM so a child with cleanup of its own can do it."""
        self._procs.append(proc)
        self._grace[proc.pid] = grace
        return proc

    def untrack(self, proc: subprocess.Popen[Any]) -> None:
        with contextlib.suppress(ValueError):
            self._procs.remove(proc)

    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: object) -> None:
            raise _Interrupted(signal.Signals(signum).name)

        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, handler)

    def cleanup(self) -> None:
        if self._done:
            return
        self._done = True
        # No second signal may interrupt the cleanup half-way.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        for proc in list(self._procs):
            kill_tree(proc, self._grace.get(proc.pid, 5.0))
        for what, action in reversed(self._actions):
            try:
                action()
            except Exception as exc:  # noqa: BLE001 - one failed step must not stop the rest
                log(f"cleanup: could not {what}: {exc}")


def kill_tree(proc: subprocess.Popen[Any], grace: float = 0.0) -> None:
    """Stop a child started with start_new_session=True, then everything it started:
    SIGTERM to the child itself, ``grace`` seconds to exit, then SIGKILL to its group."""
    if grace > 0 and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        proc.wait(timeout=10)


@dataclass
class Timed:
    seconds: float
    stdout: str
    stderr: str
    returncode: int


def run_timed(
    janitor: Janitor,
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 600,
    check: bool = True,
    grace: float = 5.0,
) -> Timed:
    """Run ``argv`` in its own session (so a kill takes its children too), timing it."""
    full_env = {**os.environ, **(env or {})}
    start = time.perf_counter()
    proc = janitor.track(
        subprocess.Popen(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
            text=True,
        )
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc, grace)
        raise BenchError(f"{' '.join(argv[:3])} ... timed out after {timeout:.0f}s") from None
    finally:
        janitor.untrack(proc)
    seconds = time.perf_counter() - start
    if check and proc.returncode != 0:
        tail = "\n".join((err or "").strip().splitlines()[-5:])
        raise BenchError(f"{' '.join(argv[:4])} ... exited {proc.returncode}: {tail}")
    return Timed(seconds, out, err, proc.returncode)


@contextlib.contextmanager
def stopwatch() -> Iterator[list[float]]:
    box: list[float] = []
    start = time.perf_counter()
    try:
        yield box
    finally:
        box.append(time.perf_counter() - start)


def docker_ids(args: Sequence[str]) -> list[str]:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    return [line for line in proc.stdout.split() if line]


def remove_containers(docker_filter: str) -> None:
    """Force-remove the containers matching a ``docker ps --filter`` expression."""
    containers = docker_ids(["ps", "-aq", "--filter", docker_filter])
    if containers:
        subprocess.run(["docker", "rm", "-f", *containers], capture_output=True, check=False)


def remove_images(docker_filter: str) -> None:
    """Force-remove the images matching a ``docker images --filter`` expression."""
    images = sorted(set(docker_ids(["images", "-q", "--no-trunc", "--filter", docker_filter])))
    if images:
        subprocess.run(["docker", "rmi", "-f", *images], capture_output=True, check=False)
