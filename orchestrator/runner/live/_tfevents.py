"""Step metrics from TensorBoard event files (``events.out.tfevents.*``), read while they grow.

Lightning's default logger, Hugging Face's Trainer and Keras write them. The records are
read by the ``tensorboard`` package's own ``EventFileLoader`` (the optional extra
``orch[tensorboard]``), never by a parser of ours: it resumes where it stopped, waits at a
record that is not complete yet, and passes each event through TensorBoard's read-time
compatibility layer, so a scalar written in the old form (``simple_value``, as
``torch.utils.tensorboard`` writes by default) and one in the tensor form (``new_style``,
``tf.summary``) both arrive as a one-element tensor marked as a scalar. Only scalars are
taken; histograms, images, text and graphs are passed over.

The event files of one directory are one stream (one TensorBoard "run"), read in name
order as TensorBoard does. Each file is opened once without following links and handed
to the loader as ``/proc/self/fd/N``, so a file swapped for a link later is not followed;
its descriptor is closed with the reader.
"""

from __future__ import annotations

import os
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._base import Sink, final_of, keep, number, open_nofollow

#: Event files of one directory beyond this many are not read.
MAX_FILES = 64
INSTALL_HINT = "install 'orch[tensorboard]' to read TensorBoard event files"


def is_event_file(name: str) -> bool:
    """TensorBoard's own test (``io_wrapper.IsTensorFlowEventsFile``), less the profiler's
    empty marker files."""
    return "tfevents" in name and not name.endswith(".profile-empty")


def available() -> bool:
    try:
        import tensorboard.backend.event_processing.event_file_loader  # noqa: F401
    except ImportError:
        return False
    return True


def _fd_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}" if os.path.isdir("/proc/self/fd") else f"/dev/fd/{fd}"


class _EventFile:
    """One event file: a descriptor of our own and the library's loader reading it."""

    def __init__(self, fd: int) -> None:
        from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

        self._close = weakref.finalize(self, os.close, fd)
        try:
            self.loader: Any = EventFileLoader(_fd_path(fd))
        except BaseException:
            self._close()
            raise

    def close(self) -> None:
        self._close()


@dataclass
class EventSteps:
    """Follows the event files of one directory (``root/rel_dir``, ``""`` for ``root``);
    names get ``prefix`` in front, and each event with scalars also goes to ``sink``."""

    root: Path
    rel_dir: str
    prefix: str = ""
    sink: Sink | None = None
    latest: dict[str, float] = field(default_factory=dict)
    step: float | None = None
    lines: int = 0
    bad_lines: int = 0
    #: Files not read, each with why.
    skipped: dict[str, str] = field(default_factory=dict)
    _files: dict[str, _EventFile] = field(default_factory=dict)
    _scalar: dict[str, bool] = field(default_factory=dict)  # tag -> is a scalar series
    _closed: bool = False

    def poll(self) -> bool:
        """Read the new events of every event file in the directory; True on a change."""
        if self._closed:
            return False
        self._open_new()
        changed = False
        for name in sorted(self._files):
            try:
                for event in self._files[name].loader.Load():
                    changed |= self._take(event)
            except Exception as exc:  # noqa: BLE001 - a corrupt file is skipped, not fatal
                self.skipped[self._rel(name)] = f"not a readable event file ({exc})"
                self._files.pop(name).close()
        return changed

    def _rel(self, name: str) -> str:
        return f"{self.rel_dir}/{name}" if self.rel_dir else name

    def _open_new(self) -> None:
        fd = open_nofollow(self.root, self.rel_dir, directory=True)
        if fd is None:
            return
        try:
            names = sorted(entry.name for entry in os.scandir(fd)
                           if is_event_file(entry.name) and entry.is_file(follow_symlinks=False))
        finally:
            os.close(fd)
        for name in names:
            rel = self._rel(name)
            if name in self._files or rel in self.skipped:
                continue
            if len(self._files) >= MAX_FILES:
                self.skipped[rel] = f"over {MAX_FILES} event files in one directory"
                continue
            file_fd = open_nofollow(self.root, rel)
            if file_fd is None:
                continue
            try:
                self._files[name] = _EventFile(file_fd)
            except Exception as exc:  # noqa: BLE001 - the library refused the file: skip it
                self.skipped[rel] = f"not a readable event file ({exc})"

    def _take(self, event: Any) -> bool:
        if event.WhichOneof("what") != "summary":
            return False
        values: dict[str, float] = {}
        for value in event.summary.value:
            scalar = self._is_scalar(value)
            if scalar is not None:
                values[value.tag if value.tag in ("epoch", "time") else self.prefix + value.tag] = (
                    scalar
                )
        if not values:
            return False
        self.lines += 1
        self.step = float(event.step)
        for key, number_ in values.items():
            keep(self.latest, key, number_)
        if self.sink is not None:
            self.sink(event.step, values)
        return True

    def _is_scalar(self, value: Any) -> float | None:
        """The value of a scalar summary, else None. The metadata that marks a series as
        scalars may come with its first value only, so it is remembered by tag."""
        from tensorboard.compat.proto import summary_pb2
        from tensorboard.util import tensor_util

        if value.HasField("metadata"):
            meta = value.metadata
            self._scalar[value.tag] = (meta.data_class == summary_pb2.DATA_CLASS_SCALAR
                                       or meta.plugin_data.plugin_name == "scalars")
        if not self._scalar.get(value.tag) or not value.HasField("tensor"):
            return None
        try:
            array = tensor_util.make_ndarray(value.tensor)
        except Exception:  # noqa: BLE001 - a malformed tensor is one value skipped
            self.bad_lines += 1
            return None
        if array.size != 1 or array.dtype.kind not in "fiu":
            return None
        checked = number(array.item())
        return None if checked is None else checked

    def final(self) -> dict[str, float]:
        self.poll()
        return final_of(self.latest)

    def close(self) -> None:
        self._closed = True
        for handle in self._files.values():
            handle.close()
        self._files.clear()
