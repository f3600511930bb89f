#!/usr/bin/env python3
"""Print the summary of the last fault run (``make faults``) again, from its JSON.

    scripts/faults-summary.py [SUMMARY.json]

The file is written by tests/faults/conftest.py at the end of a pytest session: the path
given, else ``$ORCH_FAULTS_SUMMARY``, else the newest ``faults-summary.json`` in pytest's
base temp dirs (``<tmp>/pytest-of-<user>/pytest-*/``; not ``pytest-current``, which a
later pytest session without the fault suite may have moved). Exit status: 0 when no run was lost
or duplicated, 1 when some were, 2 when there is no summary to read.
"""

from __future__ import annotations

import getpass
import json
import os
import sys
import tempfile
from pathlib import Path

LABELS = {
    "bad_inputs_tried": "bad inputs tried",
    "faults_survived": "faults survived",
    "runs_lost": "runs lost",
    "runs_duplicated": "runs duplicated",
    "peak_rss_mb": "peak RSS of orch sweep under big outputs (MB)",
}


def default_path() -> Path:
    explicit = os.environ.get("ORCH_FAULTS_SUMMARY")
    if explicit:
        return Path(explicit)
    root = os.environ.get("PYTEST_DEBUG_TEMPROOT") or tempfile.gettempdir()
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    base = Path(root) / f"pytest-of-{user}"
    newest: tuple[float, Path] | None = None
    for path in base.glob("pytest-*/faults-summary.json"):
        try:
            mtime = path.stat().st_mtime
        except OSError:  # pytest removed that session's dir meanwhile
            continue
        if newest is None or mtime > newest[0]:
            newest = (mtime, path)
    return newest[1] if newest else base / "pytest-current" / "faults-summary.json"


def main(argv: list[str]) -> int:
    path = Path(argv[1]) if len(argv) > 1 else default_path()
    try:
        totals = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        print(f"error: no fault summary at {path} ({exc}): run `make faults` first",
              file=sys.stderr)
        return 2
    for name, label in LABELS.items():
        print(f"{label}: {int(totals.get(name, 0))}")
    return 1 if totals.get("runs_lost", 0) or totals.get("runs_duplicated", 0) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
