"""Helpers shared by test modules (imported by name; conftest.py holds only fixtures)."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def git_commit_all(root: Path, message: str = "snapshot") -> str:
    """Commit everything in ``root``; returns the commit id."""
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True, capture_output=True)
    subprocess.run(["git", "-C", str(root), "commit", "-q", "-m", message, "--allow-empty"],
                   check=True, capture_output=True)
    return subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()
