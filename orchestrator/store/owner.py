"""Who the files orch writes on this machine belong to: the user who runs orch.

A file a process creates is its effective user's, so for a user running orch that holds
by itself. Two cases need help:

- a run's outputs are written by the container's user (uid 65534, ``nobody``): the
  directory store copies them rather than hard-linking them, so the stored file is a new
  one, the caller's (``DirStore.put_file``); ``orch pull`` writes new files too;
- ``sudo orch ...``: the process is root, but the user is ``SUDO_UID``/``SUDO_GID``
  (set by sudo itself). Files and directories orch creates in a directory store and in a
  pull's destination are given to that user, so a later ``orch`` without sudo can read,
  write and delete them. Root without ``SUDO_UID`` (a root shell, CI) keeps root's.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Self


@dataclass(frozen=True)
class Owner:
    """The user and group files are to have; ``give`` applies it to a new path."""

    uid: int
    gid: int
    #: True when this process must chown what it creates (root working for SUDO_UID).
    chown: bool = False

    @classmethod
    def invoking(cls, environ: dict[str, str] | None = None) -> Self:
        """The user running orch: ``SUDO_UID``/``SUDO_GID`` under sudo, else this process's."""
        env = os.environ if environ is None else environ
        uid, gid = os.geteuid(), os.getegid()
        sudo_uid = env.get("SUDO_UID", "")
        if uid == 0 and sudo_uid.isdigit() and int(sudo_uid) != 0:
            sudo_gid = env.get("SUDO_GID", "")
            return cls(int(sudo_uid), int(sudo_gid) if sudo_gid.isdigit() else int(sudo_uid),
                       chown=True)
        return cls(uid, gid)

    def owns(self, path: Path) -> bool:
        return Path(path).stat().st_uid == self.uid

    def give(self, path: Path) -> None:
        """Hand a path this process just created to the user (a no-op unless under sudo).

        Best effort: a file system that refuses (a root-squashed NFS mount) leaves root's
        file, which is what orch wrote before this existed.
        """
        if self.chown:
            with contextlib.suppress(OSError):
                os.chown(path, self.uid, self.gid, follow_symlinks=False)

    def makedirs(self, path: Path) -> None:
        """``mkdir -p path``, each directory it creates given to the user."""
        path = Path(path)
        if not self.chown:
            path.mkdir(parents=True, exist_ok=True)
            return
        missing = []
        probe = path
        while not probe.exists() and probe != probe.parent:
            missing.append(probe)
            probe = probe.parent
        path.mkdir(parents=True, exist_ok=True)
        for created in reversed(missing):
            self.give(created)
