"""The store layout (README, "Store layout"; docs/records.md) on top of any
:class:`~.interface.Store`.

::

    sweeps/<sweep_id>.json              written once, before the runs start
    sweeps/<sweep_id>.index.json        every completed record of the sweep (and the sweep
                                        document), one object
    sweeps/<sweep_id>.open-<nonce>      a submission of the sweep is committing runs: the
                                        index alone is not to be trusted (see ``catalog``);
                                        it names the blobs the submission's runs will
                                        reference, which ``gc`` keeps
    sweeps/<sweep_id>.reruns/<run_id>   a rerun of one of the sweep's runs (empty object)
    sweeps/<sweep_id>.trials/<number>   a search's trial (number, run id, parameters),
                                        created once: of two submitters of one search,
                                        one gets each number
    runs/<run_id>/claim.json            who is running it (``claims``: a lease)
    runs/<run_id>/claim.stale-<hash>    taking over a stale claim: one taker wins
    runs/<run_id>/...                   logs, config, metrics, output/ (uploaded first)
    runs/<run_id>/outputs.jsonl         each output's name, size and SHA-256, a line each,
                                        computed as the output was stored (``orch pull``
                                        checks them); written before run.json
    runs/<run_id>/run.json              written last: its presence means "complete"; it
                                        names the manifest (digest, count, bytes)
    runs/<run_id>/live.json             a running attempt's latest step metrics (removed
                                        when it commits)
    runs/<run_id>/stop.json             a search's pruner asks the running attempt to stop
                                        (the node stops it and records it ``pruned``)
    runs/<run_id>/checkpoint.tar        the last saved $ORCH_CHECKPOINT, then
    runs/<run_id>/checkpoint.json       naming the attempt that saved it
    runs/<run_id>/attempts/<n>/...      an earlier attempt's run.json, logs and outputs
    blobs/sha256/<hex>                  image layers and configs, each stored once (``blobs``)

The commit protocol: ``claim`` -> run -> ``commit_run`` (files, then every blob the record
names is checked to be stored, then ``run.json``, then the claim released by its owner;
the claim is renewed until then). Readers trust only runs with ``run.json``. A claim whose holder
stopped renewing it for longer than the lease may be taken over by someone else.

Why one module of this size: it is the layout above, the one place that knows these keys;
claims and blobs are their own classes (``claims``, ``blobs``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import os
import tempfile
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from .._util.files import sha256_file
from .._util.ids import STORE_ID
from .._util.pool import parallel_iter, parallel_map
from ..errors import NotFound, StoreError, UsageError
from ..schema.record import (
    SCHEMA,
    ArtifactFile,
    CorruptRecord,
    OutputsRef,
    RunRecord,
    SweepDoc,
    now_iso,
)
from .blobs import Blobs
from .claims import Claims
from .interface import Store, check_key
from .jsonio import dump_json

#: Readers of many records skip a corrupt one with a warning here instead of failing the
#: whole command; the CLI prints these as ``warning:`` lines.
log = logging.getLogger("orchestrator.store")

#: A run's outputs (artifacts) are the files under this name in its directory.
OUTPUT_DIR = "output/"
#: Each output's name, size and SHA-256, one JSON object a line, beside ``run.json``.
MANIFEST = "outputs.jsonl"


class OutputSource(Protocol):
    """Outputs to commit, named relative to ``output/``, as a stream (a run's directory
    walked to a listing on disk: ``container.Outputs``)."""

    def items(self) -> Iterable[tuple[str, Path]]:
        """``(name, path)`` of each output, one at a time."""


class RunStore:
    """Sweeps, the sweep index and runs in a store; ``claims`` and ``blobs`` beside them.

    Thread-safe if the store is. Every record read is parsed into its type here, so a
    corrupt object is reported once, naming its key, as :class:`CorruptRecord`.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.claims = Claims(store, self._run_key, self.is_complete)
        self.blobs = Blobs(store)
        # Which sweeps this store object has open (write_sweep .. write_sweep_index), and
        # how many times: two submissions of one sweep sharing it close it once both end.
        self._nonce = uuid.uuid4().hex[:16]
        self._open: Counter[str] = Counter()
        self._open_lock = threading.Lock()
        #: The blobs each open sweep named in its marker (``protect_blobs``).
        self._protected: dict[str, set[str]] = {}
        self._opened_at: dict[str, str] = {}
        #: Called with each sweep document right after it is written (the CLI labels a
        #: new sweep there, so its name works while its runs still run).
        self.after_write_sweep: list[Callable[[SweepDoc], None]] = []

    # -- helpers ----------------------------------------------------------------------

    def where(self, key: str) -> str:
        return f"{self.store.uri.rstrip('/')}/{key}"

    @staticmethod
    def _check_id(value: object, what: str) -> str:
        if not isinstance(value, str) or not STORE_ID.match(value):
            raise UsageError(f"invalid {what} {value!r}: use letters, digits, '.', '_', '-'")
        return value

    def _run_key(self, run_id: str, name: str) -> str:
        return f"runs/{self._check_id(run_id, 'run id')}/{name}"

    def _sweep_key(self, sweep_id: str, suffix: str = ".json") -> str:
        return f"sweeps/{self._check_id(sweep_id, 'sweep id')}{suffix}"

    def _parse(self, key: str, data: bytes) -> dict[str, Any]:
        try:
            value = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CorruptRecord(
                f"corrupt JSON in {self.where(key)}: {exc}; repair or delete it"
            ) from exc
        if not isinstance(value, dict):
            raise CorruptRecord(f"corrupt record {self.where(key)}: expected a JSON object")
        return value

    def _load(self, key: str, missing: str) -> dict[str, Any]:
        try:
            data = self.store.get(key)
        except NotFound:
            raise NotFound(missing) from None
        return self._parse(key, data)

    def _dump(self, key: str, value: Any, *, compact: bool = False) -> bytes:
        try:
            return dump_json(value, compact=compact)
        except (TypeError, ValueError) as exc:
            raise StoreError(f"cannot write {self.where(key)}: not plain JSON ({exc})") from exc

    # -- sweeps -----------------------------------------------------------------------

    def write_sweep(self, sweep: SweepDoc) -> None:
        """``sweeps/<id>.json``, once: a sweep id names its content, so a rewrite is moot.

        Also opens the sweep: ``sweeps/<id>.open-<nonce>`` says that runs of it are being
        committed, until :meth:`write_sweep_index` closes it. Readers of many sweeps (the
        catalog) then read such a sweep run by run instead of trusting its index; a
        submission that dies leaves the marker, which costs readers time, never results.
        """
        key = self._sweep_key(self._check_id(sweep.sweep_id, "sweep id in the record"))
        marker = self._sweep_key(sweep.sweep_id, f".open-{self._nonce}")
        with self._open_lock:
            self._open[sweep.sweep_id] += 1
            self._opened_at.setdefault(sweep.sweep_id, now_iso())
        check = getattr(self.store, "check_conditional_writes", None)
        if check is not None:  # an S3 server that ignores If-None-Match: refuse up front
            check()
        self.store.put(marker, self._dump(marker, {"opened_at": now_iso()}))
        self.store.create(key, self._dump(key, sweep.to_json()))
        for listener in self.after_write_sweep:
            listener(sweep)

    def protect_blobs(self, sweep_id: str, digests: Sequence[str]) -> None:
        """Name, in the sweep's open marker, blobs its runs will reference: ``gc`` keeps
        every blob a live marker names, however old the blob (a directory store links
        cached layers in with the cache file's age; a blob found already stored is not
        written again). Called before the sweep relies on finding them; rewriting the
        marker also renews it."""
        marker = self._sweep_key(sweep_id, f".open-{self._nonce}")
        with self._open_lock:
            if not self._open[sweep_id]:
                return
            known = self._protected.setdefault(sweep_id, set())
            if set(digests) <= known:
                return
            known.update(digests)
            body = {"opened_at": self._opened_at.get(sweep_id, now_iso()),
                    "blobs": sorted(known)}
        self.store.put(marker, self._dump(marker, body))

    def rebuild_sweep_index(self, sweep_id: str) -> bool:
        """Rewrite a sweep's index from its runs' ``run.json``: a submission that died
        after committing runs left an index older than them, which readers trust once its
        open marker is gone. False when the sweep has no index to rebuild."""
        key = self._sweep_key(sweep_id, ".index.json")
        if not self.store.exists(key):
            return False
        sweep = self.read_sweep(sweep_id)
        records = [r for r in self.read_runs(sweep.run_ids) if r is not None]
        runs = {r.run_id: r.to_json() for r in records}
        index: dict[str, Any] = {"schema": SCHEMA, "sweep_id": sweep_id, "written_at": now_iso(),
                                 "runs": runs, "sweep": sweep.to_json()}
        self.store.put(key, self._dump(key, index, compact=True))
        return True

    def update_sweep(self, sweep: SweepDoc) -> None:
        """Rewrite a search's document: its runs are listed as its trials are created
        (a grid's document never changes, :meth:`write_sweep` writes it once). The trial
        objects are the truth; the document is their view, and whoever rewrites it lists
        them again afterwards (``search.driver``), so a rewrite lost to a concurrent one
        is redone."""
        key = self._sweep_key(self._check_id(sweep.sweep_id, "sweep id in the record"))
        self.store.put(key, self._dump(key, sweep.to_json()))

    def create_trial(self, sweep_id: str, number: int, trial: Mapping[str, Any]) -> bool:
        """Record a search's trial ``number``; False when another submitter has it."""
        key = self._trial_key(sweep_id, number)
        return self.store.create(key, self._dump(key, dict(trial)))

    def read_trials(self, sweep_id: str, known: Sequence[int] = ()) -> list[dict[str, Any]]:
        """A search's trial objects in number order, those numbered in ``known`` left out
        (a submitter re-reads only what others added)."""
        prefix = self._sweep_key(sweep_id, ".trials/")
        skip = {self._trial_key(sweep_id, number) for number in known}
        keys = [key for key in self.store.list(prefix) if key not in skip]

        def read(key: str) -> dict[str, Any] | None:
            try:
                return self._parse(key, self.store.get(key))
            except (NotFound, CorruptRecord) as exc:
                log.warning("skipped trial %s: %s", key, exc)
                return None

        found = [trial for trial in parallel_map(read, keys, 16) if trial is not None]
        return sorted(found, key=lambda trial: trial["number"]
                      if isinstance(trial.get("number"), int) else -1)

    def _trial_key(self, sweep_id: str, number: int) -> str:
        return self._sweep_key(sweep_id, f".trials/{number:06d}")

    def read_sweep(self, sweep_id: str) -> SweepDoc:
        key = self._sweep_key(sweep_id)
        data = self._load(
            key, f"no sweep {sweep_id!r} in store {self.store.uri}: check the id and --store"
        )
        return SweepDoc.from_json(data, self.where(key))

    def list_sweeps(self, workers: int = 32) -> list[SweepDoc]:
        """Every sweep record, newest first."""
        keys = [
            key
            for key in self.store.list("sweeps/")
            if key.endswith(".json") and not key.endswith(".index.json")
        ]

        def read(key: str) -> SweepDoc | None:
            try:
                return SweepDoc.from_json(self._parse(key, self.store.get(key)), self.where(key))
            except NotFound:
                return None  # deleted while we listed
            except CorruptRecord as exc:
                log.warning("skipped %s", exc)
                return None

        sweeps = [sweep for sweep in parallel_map(read, keys, workers) if sweep is not None]
        return sorted(sweeps, key=lambda sweep: sweep.created_at, reverse=True)

    def write_sweep_index(self, sweep_id: str, records: Sequence[RunRecord],
                          sweep: SweepDoc | None = None) -> None:
        """One object with every completed record of the sweep: reading results of 10,000
        runs is then one GET instead of 10,000. Compact JSON: it is a cache, not for people.
        ``sweep``: the document to embed (a search's writer passes its own view, since the
        stored one may be a concurrent submitter's older rewrite); else the stored one.
        """
        key = self._sweep_key(sweep_id, ".index.json")
        runs = {self._check_id(r.run_id, "run id in an index record"): r.to_json() for r in records}
        index: dict[str, Any] = {
            "schema": SCHEMA, "sweep_id": sweep_id, "written_at": now_iso(), "runs": runs
        }
        try:  # the sweep document rides along: a catalog read is then one GET per sweep
            index["sweep"] = (sweep or self.read_sweep(sweep_id)).to_json()
        except (NotFound, CorruptRecord):
            pass
        self.store.put(key, self._dump(key, index, compact=True))
        self._close_sweep(sweep_id)

    def _close_sweep(self, sweep_id: str) -> None:
        with self._open_lock:
            if self._open[sweep_id] <= 0:
                return
            self._open[sweep_id] -= 1
            if self._open[sweep_id]:
                return
            del self._open[sweep_id]
            self._protected.pop(sweep_id, None)
            self._opened_at.pop(sweep_id, None)
        self.store.delete(self._sweep_key(sweep_id, f".open-{self._nonce}"))

    def hand_over(self, sweep_id: str, holder: Mapping[str, Any]) -> str:
        """Leave the sweep open when this process ends: ``holder`` (a scheduler's jobs that
        commit its runs) closes it later with :meth:`close_handed_over`. The marker keeps
        the blobs it names and says who holds it; ``gc`` keeps such a marker however old.
        Returns the marker's key."""
        marker = self._sweep_key(sweep_id, f".open-{self._nonce}")
        with self._open_lock:
            body = {"opened_at": self._opened_at.pop(sweep_id, now_iso()),
                    "blobs": sorted(self._protected.pop(sweep_id, set())),
                    "held_by": dict(holder)}
            self._open.pop(sweep_id, None)  # write_sweep_index no longer closes it
        self.store.put(marker, self._dump(marker, body))
        return marker

    def close_handed_over(self, sweep_id: str, marker: str) -> None:
        """The holder's end of :meth:`hand_over`: the sweep's index from its runs' records,
        then the marker goes."""
        sweep = self.read_sweep(sweep_id)
        records = [r for r in self.read_runs(sweep.run_ids) if r is not None]
        key = self._sweep_key(sweep_id, ".index.json")
        index = {"schema": SCHEMA, "sweep_id": sweep_id, "written_at": now_iso(),
                 "runs": {r.run_id: r.to_json() for r in records}, "sweep": sweep.to_json()}
        self.store.put(key, self._dump(key, index, compact=True))
        if not marker.startswith(self._sweep_key(sweep_id, ".open-")):
            raise UsageError(f"{marker!r} is not an open marker of sweep {sweep_id}")
        self.store.delete(marker)

    def _read_index(self, sweep_id: str) -> dict[str, RunRecord]:
        """The index's records by run id; empty when missing or unreadable (it is a cache)."""
        key = self._sweep_key(sweep_id, ".index.json")
        try:
            index = self._parse(key, self.store.get(key))
        except (NotFound, StoreError):
            return {}
        runs = index.get("runs")
        if not isinstance(runs, dict):
            return {}
        records: dict[str, RunRecord] = {}
        for run_id, data in runs.items():
            try:
                record = RunRecord.from_json(data, f"{self.where(key)} (runs.{run_id})")
            except CorruptRecord:
                continue  # a cache entry: run.json answers instead
            if record.run_id == run_id:
                records[run_id] = record
        return records

    def read_sweep_runs(self, sweep_id: str, workers: int = 32) -> list[RunRecord]:
        """The completed records of the sweep's runs, in sweep order (index first)."""
        sweep = self.read_sweep(sweep_id)
        records = self.read_runs(sweep.run_ids, workers, sweep_id=sweep_id)
        return [record for record in records if record is not None]

    # -- runs -------------------------------------------------------------------------

    def is_complete(self, run_id: str) -> bool:
        return self.store.exists(self._run_key(run_id, "run.json"))

    def read_run(self, run_id: str) -> RunRecord:
        key = self._run_key(run_id, "run.json")
        data = self._load(
            key,
            f"run {run_id!r} is not in store {self.store.uri} (unknown, or not complete yet)",
        )
        return RunRecord.from_json(data, self.where(key))

    def _read_run_or_none(self, run_id: str) -> RunRecord | None:
        """A reader of many runs skips a corrupt one (with a warning) rather than failing."""
        key = self._run_key(run_id, "run.json")
        try:
            return RunRecord.from_json(self._parse(key, self.store.get(key)), self.where(key))
        except NotFound:
            return None
        except CorruptRecord as exc:
            log.warning("skipped %s", exc)
            return None

    def set_aside_corrupt(self, run_id: str) -> str:
        """Move an unreadable ``run.json`` to ``run.json.corrupt`` so the run counts as
        incomplete and a re-submission runs it again; its bytes are kept for a look."""
        key = self._run_key(run_id, "run.json")
        aside = self._run_key(run_id, "run.json.corrupt")
        try:
            self.store.put(aside, self.store.get(key))
        except NotFound:
            return aside
        self.store.delete(key)
        return aside

    def read_runs(
        self, run_ids: Sequence[str], workers: int = 32, *, sweep_id: str | None = None
    ) -> list[RunRecord | None]:
        """Records in the order of ``run_ids``, None for runs not complete.

        With ``sweep_id``, that sweep's index answers first and only the runs missing
        from it are read, in parallel.
        """
        index = self._read_index(sweep_id) if sweep_id else {}
        records: list[RunRecord | None] = [index.get(run_id) for run_id in run_ids]
        missing = [i for i, record in enumerate(records) if record is None]
        found = parallel_map(lambda i: self._read_run_or_none(run_ids[i]), missing, workers)
        for i, record in zip(missing, found, strict=True):
            records[i] = record
        return records

    def resolve_run_id(self, prefix: str) -> str:
        """The run whose id starts with ``prefix``; complete runs win over in-flight ones."""
        self._check_id(prefix, "run id")
        keys = list(self.store.list(f"runs/{prefix}"))
        all_ids = sorted({key.split("/")[1] for key in keys})
        complete = sorted({key.split("/")[1] for key in keys if key.endswith("/run.json")})
        if prefix in all_ids:
            return prefix
        candidates = complete or all_ids
        if not candidates:
            raise NotFound(f"no run matching {prefix!r} in store {self.store.uri}")
        if len(candidates) > 1:
            shown = ", ".join(candidates[:5]) + (" ..." if len(candidates) > 5 else "")
            raise UsageError(
                f"run id {prefix!r} is ambiguous ({len(candidates)} runs: {shown}): "
                "give more characters"
            )
        return candidates[0]

    def commit_run(
        self,
        record: RunRecord,
        files: Mapping[str, bytes | Path],
        workers: int = 8,
        *,
        outputs: OutputSource | None = None,
        owner: str | None = None,
        before_record: Callable[[RunRecord], None] | None = None,
    ) -> RunRecord:
        """Upload ``files`` (keyed relative to ``runs/<id>/``) and ``outputs``, then
        ``run.json``, then release the claim. A crash before ``run.json`` leaves an
        incomplete run that readers ignore and a later sweep redoes.

        The outputs are ``outputs``' files and any of ``files`` named ``output/...``. Each
        is stored under ``output/`` while its size and SHA-256 are computed, and its line
        written to the manifest (:data:`MANIFEST`, stored beside ``run.json`` when there
        is at least one output), a few at a time: memory does not grow with their number.
        The record written (and returned) names the manifest in ``outputs``, with the
        count and total size; it lists no output itself.

        ``before_record`` is called with that record just before ``run.json`` is written:
        it may raise to stop the commit (the claim was lost; a blob the record names is
        not stored). Only ``owner``'s claim is released (any claim without an owner).
        Outputs left under ``output/`` by an earlier, uncommitted attempt and not part of
        this one are removed once ``run.json`` is written: nothing lists them.
        """
        run_id = self._check_id(record.run_id, "run id in the record")
        for name in files:
            check_key(name)
            if name in ("run.json", MANIFEST) or Claims.is_claim_file(name):
                raise UsageError(f"file name {name!r} is reserved in a run's directory")
        run_key = self._run_key(run_id, "run.json")
        self._dump(run_key, record.to_json())  # not plain JSON: fail before uploading
        # An earlier attempt's outputs (normally none): those this one does not store again
        # are removed after the commit.
        earlier = set(self.store.list(self._run_key(run_id, OUTPUT_DIR)))

        def upload(item: tuple[str, bytes | Path]) -> None:
            name, source = item
            key = self._run_key(run_id, name)
            if isinstance(source, bytes | bytearray | memoryview):
                self.store.put(key, bytes(source))
            else:
                self.store.put_file(key, Path(os.fspath(source)))

        parallel_map(upload, [(n, s) for n, s in files.items() if not n.startswith(OUTPUT_DIR)],
                     workers)
        given = [(n[len(OUTPUT_DIR):], s) for n, s in files.items() if n.startswith(OUTPUT_DIR)]
        every = itertools.chain(given, outputs.items() if outputs is not None else ())
        with tempfile.TemporaryDirectory(prefix="orch-manifest-") as tmp:
            manifest = Path(tmp) / MANIFEST
            ref = self._store_outputs(run_id, every, manifest, earlier, workers)
            if ref.files:  # none: nothing to list, no object (readers know from the count)
                self.store.put_file(self._run_key(run_id, MANIFEST), manifest)
        record = dataclasses.replace(record, outputs=ref, artifacts=(), artifact_files={})
        if before_record is not None:
            before_record(record)
        body = self._dump(run_key, record.to_json())
        if record.rerun_of and record.sweep_id:
            # Not in the sweep's document: this pointer is how readers of the sweep find it.
            pointer = self._sweep_key(record.sweep_id, f".reruns/{run_id}")
            self.store.put(pointer, b"")
        self.store.put(run_key, body)
        if earlier and not ref.files:  # an earlier attempt's manifest: this one has none
            earlier.add(self._run_key(run_id, MANIFEST))
        parallel_map(self.store.delete, sorted(earlier), workers)
        self.claims.release(run_id, owner)
        return record

    def _store_outputs(self, run_id: str, items: Iterable[tuple[str, bytes | Path]],
                       manifest: Path, earlier: set[str], workers: int) -> OutputsRef:
        """Store each output under ``output/`` and write its manifest line to ``manifest``
        (in the order given); what was stored leaves ``earlier``."""

        def upload(item: tuple[str, bytes | Path]) -> tuple[str, ArtifactFile]:
            name, source = item
            key = self._run_key(run_id, check_key(OUTPUT_DIR + name))
            if isinstance(source, bytes | bytearray | memoryview):
                data = bytes(source)
                self.store.put(key, data)
                return name, ArtifactFile(len(data), hashlib.sha256(data).hexdigest())
            path = Path(os.fspath(source))
            try:
                info = describe_file(path)
            except OSError as exc:
                raise StoreError(f"cannot store output {path}: {exc.strerror or exc}") from exc
            self.store.put_file(key, path)
            return name, info

        digest = hashlib.sha256()
        count = total = 0
        with manifest.open("wb") as handle:
            for name, info in parallel_iter(upload, items, workers):
                line = dump_json({"name": name, **info.to_json()}, compact=True).rstrip(b"\n")
                line += b"\n"
                handle.write(line)
                digest.update(line)
                count += 1
                total += info.size
                earlier.discard(self._run_key(run_id, OUTPUT_DIR + name))
        return OutputsRef(count, total, MANIFEST, digest.hexdigest())

    def outputs(self, record: RunRecord, attempt: int | None = None,
                ) -> Iterator[tuple[str, ArtifactFile | None]]:
        """Each output of ``record`` with the size and SHA-256 its commit saw, streamed
        from its manifest (``attempt``: an earlier attempt's, kept under
        ``attempts/<n>/``). Records written before manifests list their outputs inline
        (sorted; without sizes in the oldest: None). The manifest is checked against the
        record's digest before a line of it is believed."""
        ref = record.outputs
        if ref is None:
            for name in sorted(set(record.artifacts) | set(record.artifact_files)):
                yield name, record.artifact_files.get(name)
            return
        if ref.files == 0:
            return
        base = "" if attempt is None else f"attempts/{attempt}/"
        key = self._run_key(record.run_id, base + ref.manifest)
        with tempfile.TemporaryDirectory(prefix="orch-manifest-") as tmp:
            path = Path(tmp) / MANIFEST
            try:
                self.store.get_file(key, path)
            except NotFound:
                raise StoreError(f"run {record.run_id}: its outputs' manifest "
                                 f"{self.where(key)} is missing from the store") from None
            if sha256_file(path) != ref.sha256:
                raise CorruptRecord(f"corrupt manifest {self.where(key)}: its sha256 is not "
                                    "the one its run.json names; repair or delete the run")
            with path.open("rb") as handle:
                for number, line in enumerate(handle, 1):
                    where = f"{self.where(key)} (line {number})"
                    entry = self._parse(key, line)
                    listed = entry.get("name")
                    if not isinstance(listed, str) or not listed:
                        raise CorruptRecord(f"corrupt record {where}: no output name")
                    yield listed, ArtifactFile.from_json(entry, where)

    @staticmethod
    def record_blobs(record: RunRecord) -> list[str]:
        """The blobs a record names that a node needs to run it again: its image's
        layers and configs (the base image's config is not stored: a node has the base)."""
        digests = [record.image_id]
        if record.layers is not None:
            digests += record.layers.all()
        if record.images is not None:
            digests += [record.images.env, record.images.code]
        digests += [ref.digest for ref in record.inputs.values()]
        return sorted({digest for digest in digests if digest})

    def missing_blobs(self, record: RunRecord, workers: int = 16) -> list[str]:
        """The blobs of :meth:`record_blobs` the store does not hold."""
        digests = self.record_blobs(record)
        present = parallel_map(self.blobs.has, digests, workers)
        return [digest for digest, here in zip(digests, present, strict=True) if not here]

    def list_run_files(self, run_id: str) -> list[str]:
        """Names relative to ``runs/<id>/`` (claims left out), sorted."""
        base = self._run_key(run_id, "")
        names = (key[len(base) :] for key in self.store.list(base))
        return [name for name in names if not Claims.is_claim_file(name)]

    def list_outputs(self, run_id: str) -> list[str]:
        """A run's stored outputs (artifacts): names relative to its ``output/``, sorted."""
        base = self._run_key(run_id, OUTPUT_DIR)
        return [key[len(base) :] for key in self.store.list(base)]

    def fetch_output(
        self, run_id: str, name: str, target: Path,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Copy one of a run's outputs to ``target`` (atomically). ``progress``, for a
        store whose ``get_file`` takes it (the directory and S3 stores), is called with
        each chunk's size and may stop the copy by raising."""
        key = self._run_key(run_id, OUTPUT_DIR + check_key(name))
        try:
            if progress is None:
                self.store.get_file(key, target)
            else:
                self.store.get_file(key, target, progress=progress)  # type: ignore[call-arg]
        except NotFound:
            raise NotFound(
                f"run {run_id!r} has no output {name!r} in store {self.store.uri}"
            ) from None

    def fetch_file(self, run_id: str, name: str, target: Path) -> None:
        """Copy a run's file to ``target`` in chunks (a log can be larger than memory)."""
        key = self._run_key(run_id, check_key(name))
        try:
            self.store.get_file(key, target)
        except NotFound:
            raise NotFound(
                f"run {run_id!r} has no file {name!r} in store {self.store.uri}"
            ) from None

    def read_file(self, run_id: str, name: str) -> bytes:
        key = self._run_key(run_id, check_key(name))
        try:
            return self.store.get(key)
        except NotFound:
            raise NotFound(
                f"run {run_id!r} has no file {name!r} in store {self.store.uri}"
            ) from None

    # -- live state, checkpoints, earlier attempts ---------------------------------------

    def write_live(self, run_id: str, live: Mapping[str, Any]) -> None:
        """A running attempt's latest state (overwritten at a bounded rate)."""
        key = self._run_key(run_id, "live.json")
        self.store.put(key, self._dump(key, dict(live), compact=True))

    def read_live(self, run_id: str) -> dict[str, Any] | None:
        key = self._run_key(run_id, "live.json")
        try:
            return self._parse(key, self.store.get(key))
        except (NotFound, CorruptRecord):
            return None  # not running, or caught mid-write by a store without atomic puts

    def delete_live(self, run_id: str) -> None:
        self.store.delete(self._run_key(run_id, "live.json"))

    def request_stop(self, run_id: str, reason: str, owner: str | None = None) -> None:
        """Ask the node running ``run_id`` to stop it as pruned, saying why. ``owner``
        names the attempt meant (its claim's owner): a request left by a driver that died
        must not stop the next attempt, started by another submission, at once."""
        key = self._run_key(run_id, "stop.json")
        body: dict[str, Any] = {"reason": reason, "requested_at": now_iso()}
        if owner is not None:
            body["owner"] = owner
        self.store.put(key, self._dump(key, body))

    def read_stop_request(self, run_id: str, owner: str | None = None) -> str | None:
        """The reason of a pending stop request for the attempt of ``owner`` (a request
        naming another attempt is not this one's), None when there is none."""
        key = self._run_key(run_id, "stop.json")
        try:
            data = self._parse(key, self.store.get(key))
        except (NotFound, CorruptRecord):
            return None
        meant = data.get("owner")
        if owner is not None and isinstance(meant, str) and meant != owner:
            return None
        reason = data.get("reason")
        return reason if isinstance(reason, str) and reason else "stopped by the search"

    def delete_stop_request(self, run_id: str) -> None:
        self.store.delete(self._run_key(run_id, "stop.json"))

    def put_checkpoint(self, run_id: str, tar: Path, attempt: int) -> None:
        self.store.put_file(self._run_key(run_id, "checkpoint.tar"), tar)
        key = self._run_key(run_id, "checkpoint.json")
        self.store.put(key, self._dump(key, {"attempt": attempt, "saved_at": now_iso()}))

    def get_checkpoint(self, run_id: str, target: Path) -> int | None:
        """Download the run's last checkpoint to ``target``; the attempt that saved it."""
        key = self._run_key(run_id, "checkpoint.json")
        try:
            meta = self._parse(key, self.store.get(key))
            self.store.get_file(self._run_key(run_id, "checkpoint.tar"), target)
        except NotFound:
            return None
        attempt = meta.get("attempt")
        return attempt if isinstance(attempt, int) and not isinstance(attempt, bool) else 0

    def set_aside_attempt(self, record: RunRecord) -> int:
        """Keep a finished attempt under ``attempts/<n>/`` (its record, logs and outputs)
        and remove its ``run.json``, so the run can be claimed and run again; the ``n``
        it is kept under.

        Safe to repeat and to race: the kept record is created conditionally; one found
        with the same content is this attempt's, set aside by another submitter or by one
        killed part-way, and the set-aside is finished; one found with other content (a
        run committed again as the same attempt number) moves this one to the next free
        number. ``run.json`` is removed only while it is still this record.
        """
        run_id = record.run_id
        wanted = json.loads(self._dump(self._run_key(run_id, "run.json"), record.to_json()))
        number = max(record.attempt, 1)
        while True:
            kept = self._run_key(run_id, f"attempts/{number}/run.json")
            if self.store.create(kept, self._dump(kept, wanted)):
                break
            try:
                if self._parse(kept, self.store.get(kept)) == wanted:
                    break
            except NotFound:
                continue  # removed while we looked (gc rolled a dead set-aside back)
            except CorruptRecord:
                pass
            number += 1
        if not self._is_record(run_id, wanted):
            return number  # someone else finished it; the run may be running again
        base = f"attempts/{number}/"
        names = itertools.chain(
            ["stdout.log", "stderr.log", "metrics.jsonl"],
            [MANIFEST] if record.outputs is not None and record.outputs.files else [],
            (OUTPUT_DIR + name for name, _ in self.outputs(record)),
        )
        with tempfile.TemporaryDirectory(prefix="orch-attempt-") as tmp:
            for i, name in enumerate(names):
                spool = Path(tmp) / str(i)  # logs can be large: through a file, not memory
                try:
                    self.store.get_file(self._run_key(run_id, name), spool)
                except NotFound:
                    continue
                self.store.put_file(self._run_key(run_id, base + name), spool)
                spool.unlink()
        if self._is_record(run_id, wanted):
            self.store.delete(self._run_key(run_id, "run.json"))
        # The attempt's outputs under output/ stay until the next attempt commits, which
        # removes what it does not list (commit_run): deleting them here could race it.
        return number

    def _is_record(self, run_id: str, wanted: Mapping[str, Any]) -> bool:
        key = self._run_key(run_id, "run.json")
        try:
            return self._parse(key, self.store.get(key)) == wanted
        except (NotFound, CorruptRecord):
            return False

    def next_attempt(self, run_id: str) -> int:
        """The number of a run's next attempt: one past the highest kept one."""
        prefix = self._run_key(run_id, "attempts/")
        numbers = [int(part) for key in self.store.list(prefix)
                   if key.endswith("/run.json")
                   and (part := key[len(prefix):].split("/", 1)[0]).isdigit()]
        return max(numbers, default=0) + 1

    def read_attempts(self, run_id: str) -> list[RunRecord]:
        """The earlier attempts of a run, oldest first."""
        prefix = self._run_key(run_id, "attempts/")
        keys = [k for k in self.store.list(prefix) if k.endswith("/run.json")]
        records = []
        for key in keys:
            try:
                records.append(RunRecord.from_json(self._parse(key, self.store.get(key)),
                                                   self.where(key)))
            except (NotFound, CorruptRecord) as exc:
                log.warning("skipped %s", exc)
        return sorted(records, key=lambda r: r.attempt)


def describe_file(path: Path) -> ArtifactFile:
    """The size and SHA-256 of a file, as a record keeps them for an output."""
    return ArtifactFile(path.stat().st_size, sha256_file(path))
