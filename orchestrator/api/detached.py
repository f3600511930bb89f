"""The entry point of a detached sweep's job: ``python -m orchestrator.api.detached REQUEST``.

It runs on the cluster's head node, in the project directory the job uploaded, with
REQUEST a :class:`~orchestrator.store.request.SweepRequest` as JSON. It runs the sweep like
``orch sweep --backend ray`` (the cluster is the one the job runs in) and writes the
outcome to the sweep's store under ``requests/<request_id>.json`` - also when the sweep
could not start (``status: error`` and the reason), so ``orch status`` can say why.

Exit code: 0 when every run succeeded, 1 when some run failed, 2 on an error; Ray marks
the job FAILED for both of the latter.

This module sits at the level of the CLI: it drives the sweep, and nothing imports it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import OrchestratorError
from ..store.interface import Store
from ..store.request import SweepOutcome, SweepRequest, write_outcome

EXIT_FAILED = 1


class _Lines:
    """Progress lines on stderr (the job's log), as ``orch sweep`` prints without a tty."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.finished = 0
        self._running = 0

    def __call__(self, event: str, run_id: str, record: Any) -> None:
        if event == "running":
            self._running += 1
        if event not in ("done", "skipped", "waiting"):
            return
        if event == "done":
            self._running = max(0, self._running - 1)
        if event in ("done", "skipped"):
            self.finished += 1
        status = _field(record, "status") if event == "done" else event
        reason = _field(record, "reason") if event == "done" else None
        shown = f" ({reason})" if reason else ""
        print(f"[{self.finished}/{self.total}] {run_id} {status}{shown}", file=sys.stderr,
              flush=True)

    def say(self, line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    def note(self, line: str) -> None:
        self.say(line)

    def running(self) -> int:
        return self._running

    def close(self) -> None:
        pass


def _field(record: Any, name: str) -> str | None:
    # The record of a progress event: a run.json mapping or a typed record.
    value = record.get(name) if isinstance(record, Mapping) else getattr(record, name, None)
    return None if value is None else str(value)


def run_request(request: SweepRequest, project_dir: Path, store: Store) -> SweepOutcome:
    """Run the request's sweep of ``project_dir`` on the Ray cluster this process is in."""
    from ..backends.ray import RayBackend
    from ..compose.project import load_project
    from ..daemon.client import connect
    from ..drivers.grid import SweepDriver, compose_points
    from ..settings import Settings
    from ..store import RunStore
    from .running import make_launcher, with_base_image

    # The head's own settings: the driver of a detached sweep runs there.
    settings = Settings.from_env()

    project = with_base_image(
        load_project(project_dir, allow_unpinned=request.allow_unpinned),
        request.base_image, request.allow_unpinned,
    )
    points = compose_points(project, request.overrides, settings.max_points)
    runs = RunStore(store)
    client = connect()
    # A Ray Job's driver is told its cluster in RAY_ADDRESS; "auto" finds it otherwise.
    address = os.environ.get("RAY_ADDRESS") or "auto"
    backend = RayBackend(
        runs, address=address, max_in_flight=request.jobs, s3_endpoint=request.s3_endpoint
    )
    try:
        launcher = make_launcher(
            project,
            client,
            runs,
            backend,
            settings=settings,
            jobs=request.jobs,
            registry=request.registry,
            allow_dirty=request.allow_dirty,
            display=_Lines(len(points)),
            staged_inputs=dict(request.inputs),
        )
        result = SweepDriver(launcher).run(list(request.overrides), points)
    finally:
        backend.close()
    return SweepOutcome.of_sweep(request, result.as_json())


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m orchestrator.api.detached REQUEST_JSON", file=sys.stderr)
        return 2
    try:
        request = SweepRequest.decode(args[0])
    except OrchestratorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    from ..store import open_store

    try:
        store = open_store(
            request.store_uri, project_dir=Path.cwd(), s3_endpoint=request.s3_endpoint
        )
    except OrchestratorError as exc:  # nowhere to write the outcome: the log says it
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    try:
        outcome = run_request(request, Path.cwd(), store)
    except OrchestratorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        _write(store, SweepOutcome.of_error(request, str(exc)))
        return exc.exit_code
    if not _write(store, outcome):
        return 2
    print(
        f"sweep {outcome.sweep_id}: {outcome.status} (outcome in "
        f"{request.store_uri} requests/{request.request_id}.json)",
        file=sys.stderr,
    )
    return EXIT_FAILED if outcome.status == "failed" else 0


def _write(store: Store, outcome: SweepOutcome) -> bool:
    try:
        write_outcome(store, outcome)
    except OrchestratorError as exc:  # the runs' records are in; only the summary is lost
        print(f"error: cannot write the sweep's outcome: {exc}", file=sys.stderr)
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
