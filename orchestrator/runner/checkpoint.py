"""A run's ``$ORCH_CHECKPOINT`` directory, carried from one attempt to the next.

Saved to the store as one tar (``runs/<id>/checkpoint.tar``, then ``checkpoint.json``
naming the attempt that wrote it) when an attempt ends in any way, and every
``interval_s`` while it runs, so that a node that dies mid-run loses at most that much.
The next attempt of the same run, on any node, starts with it restored.

The run writes the directory while it is saved: every file is read through directory
descriptors without following a link at any component (:mod:`.._util.files`), so a directory
swapped for a link to the host mid-save adds nothing of the host. A checkpoint larger
than the outputs' limit (``ORCH_MAX_OUTPUT_BYTES``) is not saved (the last one that fit
stays) and says so in orch's log. A change is judged against what the attempt started
with (what :func:`restore` unpacked, else nothing), so a file written in the run's first
milliseconds, before the saver started, is saved too.
"""

from __future__ import annotations

import logging
import os
import stat
import tarfile
import tempfile
import threading
from pathlib import Path

from .._util.files import ExactReader, open_run_file, run_files
from ..store import RunStore

log = logging.getLogger(__name__)

Signature = tuple[tuple[str, int, int], ...]


class TooLarge(Exception):
    """The checkpoint directory holds more bytes than it may."""


def _signature(root: Path) -> Signature:
    entries = []
    for rel, dir_fd, name in run_files(root):
        try:
            info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if stat.S_ISREG(info.st_mode):
            entries.append((rel, info.st_size, info.st_mtime_ns))
    return tuple(sorted(entries))


#: What :func:`restore` left in each checkpoint directory (by path), taken by the
#: :class:`Saver` of the same directory as the state its attempt started from.
_started_with: dict[str, Signature] = {}
_started_lock = threading.Lock()


def save(runs: RunStore, run_id: str, root: Path, attempt: int,
         max_bytes: int | None = None) -> bool:
    """Upload the directory's regular files; False when it is empty (nothing saved).

    Raises TooLarge (before reading past the limit) when they total over ``max_bytes``."""
    count = total = 0
    with tempfile.NamedTemporaryFile(prefix="orch-checkpoint-", suffix=".tar") as spool:
        with tarfile.open(fileobj=spool, mode="w") as tar:
            for rel, dir_fd, name in run_files(root):
                opened = open_run_file(dir_fd, name)
                if opened is None:
                    continue  # a link, a FIFO, a device, or gone: not part of a checkpoint
                fd, info = opened
                with os.fdopen(fd, "rb") as handle:
                    total += info.st_size
                    if max_bytes is not None and total > max_bytes:
                        raise TooLarge(
                            f"checkpoint of run {run_id} is over {max_bytes} bytes "
                            "(ORCH_MAX_OUTPUT_BYTES): not saved; the last one saved stays"
                        )
                    member = tarfile.TarInfo(rel)
                    member.size = info.st_size
                    member.mtime = int(info.st_mtime)
                    member.mode = stat.S_IMODE(info.st_mode) & 0o755
                    tar.addfile(member, ExactReader(handle, info.st_size))
                count += 1
        if not count:
            return False
        spool.flush()
        runs.put_checkpoint(run_id, Path(spool.name), attempt)
    return True


def restore(runs: RunStore, run_id: str, root: Path, owner_uid: int) -> int | None:
    """Unpack the run's last checkpoint into ``root``; the attempt it came from, or None."""
    with tempfile.TemporaryDirectory(prefix="orch-checkpoint-") as tmp:
        attempt = runs.get_checkpoint(run_id, Path(tmp) / "checkpoint.tar")
        if attempt is None:
            return None
        with tarfile.open(Path(tmp) / "checkpoint.tar", mode="r:") as tar:
            _extract_data(tar, root)
        with _started_lock:
            _started_with[str(root)] = _signature(root)
    for directory, dirs, names in os.walk(root):
        for name in [*dirs, *names]:
            try:
                os.chown(Path(directory) / name, owner_uid, owner_uid, follow_symlinks=False)
            except PermissionError:
                pass  # not root: the files stay readable, and the run writes new ones
    return attempt


def _extract_data(tar: tarfile.TarFile, root: Path) -> None:
    """Regular files and directories only, inside ``root``: tarfile's "data" filter, which
    Python 3.11 has only from 3.11.4 on (Debian 12's own python3 is 3.11.2); older ones
    get the same rules here."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(root, filter="data")
        return
    top = root.resolve()
    for member in tar.getmembers():
        target = (root / member.name).resolve()
        if not target.is_relative_to(top) or not (member.isfile() or member.isdir()):
            continue  # a saver writes neither: such a member is not ours to unpack
        member.mode = (member.mode | 0o600) & 0o755 if member.isfile() else 0o755
        member.uid = member.gid = 0
        tar.extract(member, root, set_attrs=False)
        if member.isfile():
            os.chmod(target, member.mode)


class Saver:
    """Saves the checkpoint every ``interval_s`` while the run lives, when it changed
    since the attempt started (or since the last save)."""

    def __init__(self, runs: RunStore, run_id: str, root: Path, attempt: int,
                 interval_s: float, max_bytes: int) -> None:
        self._args = (runs, run_id, root, attempt, max_bytes)
        self._interval = interval_s
        self._stop = threading.Event()
        # Not the directory as it is now: the run has been running for a moment already.
        with _started_lock:
            self._seen: Signature = _started_with.pop(str(root), ())
        self._thread = threading.Thread(target=self._loop, daemon=True, name=f"ckpt-{run_id}")

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.save_if_changed()

    def save_if_changed(self) -> None:
        try:
            now = _signature(self._args[2])
        except OSError:
            return  # the directory is being removed: nothing left to save
        if now == self._seen:
            return
        try:
            save(*self._args)
            self._seen = now
        except TooLarge as exc:
            log.warning("%s", exc)
            self._seen = now  # said once per change, not every interval
        except Exception:  # noqa: BLE001 - a missed periodic save is retried next time
            pass

    def __enter__(self) -> Saver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.save_if_changed()
