"""The project directory as a detached sweep's job carries it: one zip, git history included.

Ray packs a ``working_dir`` directory itself, but leaves ``.git`` out by default (and
offers only a process-wide environment variable to change that). The sweep's driver
needs the history: runs are pinned to the commit. So the zip is made here and handed to
Ray as ``working_dir``, which Ray uploads as it is and unpacks on the node.

What goes in: what git sees in the tree (tracked and untracked files, minus ignored ones:
``.gitignore``, ``.git/info/exclude``), the whole ``.git``, never the project's ``.orch/``
store. Outside a git work tree, every file but ``.orch/``. The zip is deterministic (sorted
members, fixed times), so an unchanged project has the same content address and Ray
does not upload it again.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

from ...errors import UsageError

_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip can hold
_STORE_DIR = ".orch"


def _git_listing(root: Path) -> list[str] | None:
    """Files under ``root`` that git does not ignore, relative to it; None outside git."""
    try:
        done = subprocess.run(
            [
                "git",
                "-C",
                str(root),
                "ls-files",
                "-z",
                "--cached",
                "--others",
                "--exclude-standard",
            ],
            capture_output=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return [name for name in done.stdout.decode("utf-8", "surrogateescape").split("\0") if name]


def _walk(top: Path, root: Path) -> Iterator[str]:
    """Every file and directory under ``top``, relative to ``root`` (directories end in /)."""
    for directory, dirs, files in os.walk(top):
        here = Path(directory)
        dirs.sort()
        if here != root:
            yield here.relative_to(root).as_posix() + "/"
        for name in sorted(files):
            yield (here / name).relative_to(root).as_posix()


def members(root: Path) -> list[str]:
    """What the zip of ``root`` holds, sorted; directory entries end in ``/``.

    Directories are listed only from ``.git`` (git needs its empty ``refs/`` directories;
    elsewhere a directory comes with its files).
    """
    listed = _git_listing(root)
    if listed is None:
        names = set(_walk(root, root))
    else:
        names = set(listed)
        git = root / ".git"
        if git.is_dir():
            names.update(_walk(git, root))
        elif git.is_file():  # a worktree or submodule pointer, as Ray would have sent it
            names.add(".git")
    return sorted(
        name for name in names if name != f"{_STORE_DIR}/" and not name.startswith(f"{_STORE_DIR}/")
    )


def zip_project(root: Path, target: Path) -> Path:
    """Write the zip of project ``root`` to ``target`` (a ``.zip`` path); returns it."""
    if target.suffix != ".zip":
        raise ValueError(f"{target}: Ray recognises a packaged working_dir by its .zip name")
    if not root.is_dir():
        raise UsageError(f"project directory {root} does not exist")
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in members(root):
            path = root / name
            if name.endswith("/"):
                info = zipfile.ZipInfo(name, _EPOCH)
                info.external_attr = (stat.S_IFDIR | 0o755) << 16
                archive.writestr(info, b"")
                continue
            # Follows symlinks, as Ray's own packing does; a listed file that is gone
            # (deleted but still tracked) or is a directory (a submodule) is skipped.
            try:
                mode = path.stat().st_mode
            except OSError:
                continue
            if not stat.S_ISREG(mode):
                continue
            info = zipfile.ZipInfo(name, _EPOCH)
            info.external_attr = (stat.S_IFREG | stat.S_IMODE(mode)) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            with path.open("rb") as source, archive.open(info, "w") as out:
                shutil.copyfileobj(source, out, 1 << 20)
    return target
