"""A run's ``$ORCH_CHECKPOINT`` directory, carried from one attempt to the next.

Saved to the store as one tar (``runs/<id>/checkpoint.tar``, then ``checkpoint.json``
naming the attempt that wrote it) when an attempt ends in any way, and every
``interval_s`` while it runs, so that a node that dies mid-run loses at most that much.
The next attempt of the same run, on any node, starts with it restored.
"""

from __future__ import annotations

import os
import tarfile
import tempfile
import threading
from pathlib import Path

from .store import RunStore


def _signature(root: Path) -> tuple[tuple[str, int, int], ...]:
    entries = []
    for directory, _, names in os.walk(root):
        for name in names:
            path = Path(directory) / name
            try:
                info = path.lstat()
            except FileNotFoundError:
                continue
            entries.append((str(path.relative_to(root)), info.st_size, info.st_mtime_ns))
    return tuple(sorted(entries))


def save(runs: RunStore, run_id: str, root: Path, attempt: int) -> bool:
    """Upload the directory's regular files; False when it is empty (nothing saved)."""
    files = [
        Path(d) / n for d, _, names in os.walk(root) for n in names if (Path(d) / n).is_file()
    ]
    if not files:
        return False
    with tempfile.NamedTemporaryFile(prefix="orch-checkpoint-", suffix=".tar") as spool:
        with tarfile.open(fileobj=spool, mode="w") as tar:
            for path in sorted(files):
                if not path.is_symlink():
                    tar.add(path, arcname=str(path.relative_to(root)), recursive=False)
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
    """Saves the checkpoint every ``interval_s`` while the run lives, when it changed."""

    def __init__(self, runs: RunStore, run_id: str, root: Path, attempt: int,
                 interval_s: float) -> None:
        self._args = (runs, run_id, root, attempt)
        self._interval = interval_s
        self._stop = threading.Event()
        self._seen = _signature(root)
        self._thread = threading.Thread(target=self._loop, daemon=True, name=f"ckpt-{run_id}")

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.save_if_changed()

    def save_if_changed(self) -> None:
        now = _signature(self._args[2])
        if now == self._seen:
            return
        try:
            save(*self._args)
            self._seen = now
        except Exception:  # noqa: BLE001 - a missed periodic save is retried next time
            pass

    def __enter__(self) -> Saver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.save_if_changed()
