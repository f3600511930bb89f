"""Running git: one way to call it, one way its failures become orch errors.

The code layer reads the project's tree through it and ``orch image verify`` checks out a
recorded commit through it. A missing ``git`` binary or a failing command is an
:class:`~orchestrator.errors.ImageError` naming the command and git's last line of stderr.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from ..errors import ImageError


def git(root: Path, *args: str, input: bytes | None = None) -> bytes:
    """``git -C root ARGS``'s stdout; ImageError when it fails."""
    proc = _run(root, args, input)
    if proc.returncode != 0:
        message = proc.stderr.decode(errors="replace").strip().splitlines()
        raise ImageError(f"git {' '.join(args)} failed in {root}: {message[-1] if message else ''}")
    return proc.stdout


def git_text(root: Path, *args: str) -> str:
    """Like :func:`git`, decoded and stripped (for one-line answers such as a commit)."""
    return git(root, *args).decode().strip()


def git_try(root: Path, *args: str) -> str | None:
    """The stripped answer of ``git -C root ARGS``, or None when git says no (a non-zero exit).

    For questions git answers by its exit code: "is this a repository?", "is there a HEAD?".
    """
    proc = _run(root, args, None)
    return proc.stdout.decode().strip() if proc.returncode == 0 else None


def _run(
    root: Path, args: tuple[str, ...], input: bytes | None
) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            ["git", "-C", str(root), *args], input=input, capture_output=True, check=False
        )
    except FileNotFoundError as exc:
        raise ImageError("git is not installed: install it (apt-get install git)") from exc
