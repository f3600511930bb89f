"""The build engine of the environment's layers (see :mod:`.envlayer`): the missing
layers unpacked, compiled and written by two chains side by side, and the written bottom
of the environment reported while the rest is still built.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .._util.files import atomic_write
from .._util.stopping import Stop
from ..daemon.client import DockerClient
from ..errors import BuildCancelled
from . import bytecode, envinstall
from .envplan import (
    ENV_LAYER_FORMAT,
    HEAVY_WHEEL,
    EnvLayer,
    Package,
    Slot,
    check_conflicts,
    slots,
    split_payload,
)
from .interpreter import Interpreter
from .tarball import Entry, fixed_mtime, write_layer_file

#: Called with the environment's bottom layers each time more of them are written.
OnReady = Callable[[list[EnvLayer]], None]


class Build:
    """The missing layers, built by two chains side by side on the machine's cores.

    The heavy chain unpacks the big wheels (torch) and compiles their sources; the light
    chain does the same for the other wheels and the standard library, so its compiling
    overlaps the heavy unpacking.
    Payload layers are written by a thread of their own as soon as their package is
    unpacked. Once every package is unpacked the layer order is known, and each time a
    longer bottom part of it is written, ``on_ready`` is told: the payload layers go to
    the daemon while the sources still compile. Bytes never depend on this schedule:
    each layer is its package's own content, compiled by itself.
    """

    def __init__(
        self,
        client: DockerClient,
        image_id: str,
        interpreter: Interpreter,
        layers_dir: Path,
        stage: Path,
        on_ready: OnReady | None,
        stop: Stop | None = None,
    ) -> None:
        self.client = client
        self.image_id = image_id
        self.interpreter = interpreter
        self.layers_dir = layers_dir
        self.stage = stage
        self.on_ready = on_ready
        self.stop = stop or Stop()
        self._lock = threading.Lock()
        self._failed = threading.Event()
        #: Per package: whether it has a payload layer (known once it is unpacked).
        self._split: dict[int, bool] = {}
        self._payloads: dict[int, EnvLayer] = {}
        self._written: dict[int, EnvLayer] = {}
        self._files: dict[int, dict[str, str]] = {}
        self._std: EnvLayer | None = None
        self._reported = 0
        self._payload_writer = ThreadPoolExecutor(1, thread_name_prefix="orch-payload")
        self._payload_writes: list[Future[None]] = []

    def run(
        self,
        groups: list[list[Path]],
        keys: list[str],
        names: list[tuple[str, ...]],
        known: dict[int, Package],
        std_key: str | None,
        std: EnvLayer | None,
    ) -> list[EnvLayer]:
        self.groups, self.keys, self.names, self.std_key = groups, keys, names, std_key
        for index, package in known.items():
            self._split[index] = package.payload is not None
            if package.payload is not None:
                self._payloads[index] = package.payload
            self._written[index] = package.layer
            self._files[index] = package.files
        self._std = std
        self._stdlib = std_key is not None
        missing = [index for index in range(len(groups)) if index not in known]
        heavy = [i for i in missing if sum(w.stat().st_size for w in groups[i]) >= HEAVY_WHEEL]
        light = [i for i in missing if i not in heavy]
        build_std = std is None and std_key is not None
        try:
            with ThreadPoolExecutor(2, thread_name_prefix="orch-env") as pool:
                chains = [
                    pool.submit(self._chain, heavy, False, "heavy"),
                    pool.submit(self._chain, light, build_std, "light"),
                ]
                first_error(chains)
        except BaseException:
            self._failed.set()
            raise
        finally:
            self._payload_writer.shutdown(wait=True)
        first_error(self._payload_writes)
        ready = self._ready()
        assert len(ready) == len(self._order())  # every layer was written
        return ready

    def _chain(self, indices: list[int], with_std: bool, name: str) -> None:
        try:
            self._build_chain(indices, with_std, self.stage / name)
        except BaseException:
            self._failed.set()
            raise

    def _build_chain(self, indices: list[int], with_std: bool, stage: Path) -> None:
        stage.mkdir()
        rest: dict[int, list[Entry]] = {}
        for i in indices:
            if self._failed.is_set():
                return
            # A folder per package: spilled files are numbered per package.
            (stage / f"g{i}").mkdir()
            installed = envinstall.install_group(
                self.groups[i], self.interpreter, stage / f"g{i}", self._check
            )
            entries = [item.entry for item in installed.files.values()]
            payload, rest[i] = split_payload(entries)
            if payload:
                write = self._payload_writer.submit(self._write_payload, i, payload)
                self._payload_writes.append(write)
            self._unpacked(i, bool(payload), installed.listing())
        jobs: list[list[Entry] | bytecode.InImage] = [rest[i] for i in indices]
        if with_std:
            jobs.insert(0, bytecode.InImage(self.interpreter.stdlib.strip("/")))
        if not jobs or self._failed.is_set():
            return
        self._check()
        client, interpreter = self.client, self.interpreter
        compiled = bytecode.compile_groups(
            client, self.image_id, interpreter, jobs, stage, self.stop
        )
        if with_std:
            assert self.std_key is not None
            self._done(None, self._write(f"pkg-{self.std_key}", compiled.pop(0), None, {}))
        for i, pyc in zip(indices, compiled, strict=True):
            self._done(i, self._write(f"pkg-{self.keys[i]}", rest[i] + pyc, i, self._files[i]))

    def _check(self) -> None:
        if self.stop.cancelled:
            raise BuildCancelled()

    def _write_payload(self, index: int, entries: list[Entry]) -> None:
        if self._failed.is_set():
            return
        layer = self._write(f"pkg-{self.keys[index]}-payload", entries, index, {})
        # Staged files deleted at once are dropped from the page cache unwritten: the
        # disk does not have to take torch's 620 MB twice while the build goes on.
        for entry in entries:
            if entry.source is not None:
                entry.source.unlink()
        with self._lock:
            self._payloads[index] = layer
        self._report()

    def _write(
        self, name: str, entries: list[Entry], index: int | None, files: dict[str, str]
    ) -> EnvLayer:
        tar = self.layers_dir / f"{name}.tar"
        diff_id = write_layer_file(entries, tar)
        wheels = () if index is None else self.names[index]
        payload = name.endswith("-payload")
        record: dict[str, Any] = {
            "diff_id": diff_id,
            "size": tar.stat().st_size,
            "mtime": fixed_mtime(),
            "format": ENV_LAYER_FORMAT,
            "wheels": list(wheels),
            "files": files,
        }
        if index is not None and not payload:
            record["payload"] = self._split[index]
        atomic_write(self.layers_dir / f"{name}.json", json.dumps(record, sort_keys=True).encode())
        return EnvLayer(diff_id, tar, record["size"], wheels, payload=payload)

    def _unpacked(self, index: int, split: bool, files: dict[str, str]) -> None:
        with self._lock:
            self._split[index] = split
            self._files[index] = files
            if len(self._split) == len(self.groups):
                # Every package is unpacked: the conflicts can be checked, the order is known.
                check_conflicts([(self.names[i], self._files[i]) for i in range(len(self.groups))])
        self._report()

    def _done(self, index: int | None, layer: EnvLayer) -> None:
        """Package ``index``'s layer (None: the standard library's) is written."""
        with self._lock:
            if index is None:
                self._std = layer
            else:
                self._written[index] = layer
        self._report()

    def _report(self) -> None:
        """Tell ``on_ready`` of the longest written prefix, when it grew."""
        if self.on_ready is None:
            return
        with self._lock:
            if len(self._split) < len(self.groups):
                return
            ready = self._ready()
            if len(ready) <= self._reported:
                return
            self._reported = len(ready)
        self.on_ready(ready)

    def _order(self) -> list[Slot]:
        return slots([self._split[i] for i in range(len(self.groups))], self._stdlib)

    def _ready(self) -> list[EnvLayer]:
        """The longest bottom part of the environment that is written (every package unpacked)."""
        ready: list[EnvLayer] = []
        for kind, i in self._order():
            if kind == "stdlib":
                layer = self._std
            else:
                layer = (self._payloads if kind == "payload" else self._written).get(i)
            if layer is None:
                break
            ready.append(layer)
        return ready


def first_error(futures: Sequence[Future[None]]) -> None:
    for future in futures:
        exc = future.exception()
        if exc is not None:
            raise exc
