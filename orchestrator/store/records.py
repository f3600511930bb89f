"""The store layout of CONTRACT.md on top of any :class:`~.base.Store`.

::

    sweeps/<sweep_id>.json              written once, before the runs start
    sweeps/<sweep_id>.index.json        every completed record of the sweep, one object
    runs/<run_id>/claim.json            who is running it (conditional create; a lease)
    runs/<run_id>/claim.stale-<hash>    taking over a stale claim: one taker wins
    runs/<run_id>/...                   logs, config, metrics, output/ (uploaded first)
    runs/<run_id>/run.json              written last: its presence means "complete"
    blobs/sha256/<hex>                  image layers and configs, each stored once

The commit protocol: ``claim`` -> run -> ``commit_run`` (files, then ``run.json``, then
release the claim). Readers trust only runs with ``run.json``. A claim whose holder
stopped renewing it for longer than the lease may be taken over by someone else.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import socket
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from ..errors import NotFound, StoreError, UsageError
from .base import Store, check_key

T = TypeVar("T")
R = TypeVar("R")

SCHEMA = 1
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")
_DIGEST = re.compile(r"^sha256:([0-9a-f]{64})\Z")
_CLAIM = "claim.json"
_STALE = "claim.stale-"  # + 16 hex of the stale claim's bytes


def dump_json(value: Any, *, compact: bool = False) -> bytes:
    """Sorted keys; indented for people unless ``compact`` (machine-only files)."""
    if compact:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    else:
        text = json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False)
    return text.encode("utf-8") + b"\n"


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _parallel(fn: Callable[[T], R], items: Sequence[T], workers: int) -> list[R]:
    """``[fn(item) for item in items]`` on a thread pool (store calls are I/O bound)."""
    if len(items) <= 1 or workers <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        return list(pool.map(fn, items))


class RunStore:
    """Sweeps, runs, claims and blobs in a store. Thread-safe if the store is."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- helpers ----------------------------------------------------------------------

    def _where(self, key: str) -> str:
        return f"{self.store.uri.rstrip('/')}/{key}"

    @staticmethod
    def _check_id(value: object, what: str) -> str:
        if not isinstance(value, str) or not _ID.match(value):
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
            raise StoreError(
                f"corrupt JSON in {self._where(key)}: {exc}; repair or delete it"
            ) from exc
        if not isinstance(value, dict):
            raise StoreError(f"corrupt record {self._where(key)}: expected a JSON object")
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
            raise StoreError(f"cannot write {self._where(key)}: not plain JSON ({exc})") from exc

    # -- sweeps -----------------------------------------------------------------------

    def write_sweep(self, sweep: Mapping[str, Any]) -> None:
        """``sweeps/<id>.json``, once: a sweep id names its content, so a rewrite is moot."""
        key = self._sweep_key(self._check_id(sweep.get("sweep_id"), "sweep id in the record"))
        self.store.create(key, self._dump(key, dict(sweep)))

    def read_sweep(self, sweep_id: str) -> dict[str, Any]:
        key = self._sweep_key(sweep_id)
        return self._load(
            key, f"no sweep {sweep_id!r} in store {self.store.uri}: check the id and --store"
        )

    def list_sweeps(self, workers: int = 32) -> list[dict[str, Any]]:
        """Every sweep record, newest first."""
        keys = [
            key
            for key in self.store.list("sweeps/")
            if key.endswith(".json") and not key.endswith(".index.json")
        ]
        sweeps = _parallel(lambda key: self._parse(key, self.store.get(key)), keys, workers)
        return sorted(sweeps, key=lambda sweep: str(sweep.get("created_at") or ""), reverse=True)

    def write_sweep_index(self, sweep_id: str, records: Sequence[Mapping[str, Any]]) -> None:
        """One object with every completed record of the sweep: reading results of 10,000
        runs is then one GET instead of 10,000. Compact JSON: it is a cache, not for people.
        """
        key = self._sweep_key(sweep_id, ".index.json")
        runs: dict[str, Any] = {}
        for record in records:
            run_id = self._check_id(record.get("run_id"), "run id in an index record")
            runs[run_id] = dict(record)
        index = {"schema": SCHEMA, "sweep_id": sweep_id, "written_at": now_iso(), "runs": runs}
        self.store.put(key, self._dump(key, index, compact=True))

    def _read_index(self, sweep_id: str) -> dict[str, dict[str, Any]]:
        """The index's records by run id; empty when missing or unreadable (it is a cache)."""
        key = self._sweep_key(sweep_id, ".index.json")
        try:
            index = self._parse(key, self.store.get(key))
        except (NotFound, StoreError):
            return {}
        runs = index.get("runs")
        if not isinstance(runs, dict):
            return {}
        return {
            run_id: record
            for run_id, record in runs.items()
            if isinstance(record, dict) and record.get("run_id") == run_id
        }

    def read_sweep_runs(self, sweep_id: str, workers: int = 32) -> list[dict[str, Any]]:
        """The completed records of the sweep's runs, in sweep order (index first)."""
        sweep = self.read_sweep(sweep_id)
        run_ids = [str(run.get("run_id")) for run in sweep.get("runs") or []]
        records = self.read_runs(run_ids, workers, sweep_id=sweep_id)
        return [record for record in records if record is not None]

    # -- runs -------------------------------------------------------------------------

    def is_complete(self, run_id: str) -> bool:
        return self.store.exists(self._run_key(run_id, "run.json"))

    def read_run(self, run_id: str) -> dict[str, Any]:
        key = self._run_key(run_id, "run.json")
        return self._load(
            key,
            f"run {run_id!r} is not in store {self.store.uri} (unknown, or not complete yet)",
        )

    def _read_run_or_none(self, run_id: str) -> dict[str, Any] | None:
        key = self._run_key(run_id, "run.json")
        try:
            return self._parse(key, self.store.get(key))
        except NotFound:
            return None

    def read_runs(
        self, run_ids: Sequence[str], workers: int = 32, *, sweep_id: str | None = None
    ) -> list[dict[str, Any] | None]:
        """Records in the order of ``run_ids``, None for runs not complete.

        With ``sweep_id``, that sweep's index answers first and only the runs missing
        from it are read, in parallel.
        """
        index = self._read_index(sweep_id) if sweep_id else {}
        records: list[dict[str, Any] | None] = [index.get(run_id) for run_id in run_ids]
        missing = [i for i, record in enumerate(records) if record is None]
        found = _parallel(lambda i: self._read_run_or_none(run_ids[i]), missing, workers)
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
        self, record: Mapping[str, Any], files: Mapping[str, bytes | Path], workers: int = 8
    ) -> None:
        """Upload ``files`` (keyed relative to ``runs/<id>/``), then ``run.json``, then
        release the claim. A crash before ``run.json`` leaves an incomplete run that
        readers ignore and a later sweep redoes.
        """
        run_id = self._check_id(record.get("run_id"), "run id in the record")
        for name in files:
            check_key(name)
            if name == "run.json" or name == _CLAIM or name.startswith(_STALE):
                raise UsageError(f"file name {name!r} is reserved in a run's directory")
        run_key = self._run_key(run_id, "run.json")
        body = self._dump(run_key, dict(record))

        def upload(item: tuple[str, bytes | Path]) -> None:
            name, source = item
            key = self._run_key(run_id, name)
            if isinstance(source, bytes | bytearray | memoryview):
                self.store.put(key, bytes(source))
            else:
                self.store.put_file(key, Path(os.fspath(source)))

        _parallel(upload, list(files.items()), workers)
        self.store.put(run_key, body)
        self.release(run_id)

    def list_run_files(self, run_id: str) -> list[str]:
        """Names relative to ``runs/<id>/`` (claims left out), sorted."""
        base = self._run_key(run_id, "")
        names = (key[len(base) :] for key in self.store.list(base))
        return [name for name in names if name != _CLAIM and not name.startswith(_STALE)]

    def read_file(self, run_id: str, name: str) -> bytes:
        key = self._run_key(run_id, check_key(name))
        try:
            return self.store.get(key)
        except NotFound:
            raise NotFound(
                f"run {run_id!r} has no file {name!r} in store {self.store.uri}"
            ) from None

    # -- claims -----------------------------------------------------------------------

    def _claim_body(self, run_id: str, owner: str, lease_s: float) -> bytes:
        claim = {
            "run_id": run_id,
            "owner": owner,
            "claimed_at": now_iso(),
            "lease_s": lease_s,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "nonce": uuid.uuid4().hex,  # no two claims have the same bytes
        }
        return dump_json(claim)

    @staticmethod
    def _owner_of(data: bytes) -> str | None:
        try:
            claim = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None
        owner = claim.get("owner") if isinstance(claim, dict) else None
        return owner if isinstance(owner, str) else None

    def claim(self, run_id: str, owner: str, lease_s: float = 3600) -> bool:
        """Take ``runs/<id>/claim.json``: True if ``owner`` now holds the run.

        False if the run is complete or someone else holds a live claim. Calling it again
        as the holder renews the lease (a heartbeat). A claim not renewed for ``lease_s``
        is stale: of all who try to take it over, exactly one wins.
        """
        key = self._run_key(run_id, _CLAIM)
        if not owner:
            raise UsageError("a claim needs a non-empty owner")
        if self.is_complete(run_id):
            return False
        for _ in range(3):  # a claim released while we looked at it: start over
            body = self._claim_body(run_id, owner, lease_s)
            if self.store.create(key, body):
                if self.is_complete(run_id):  # finished by someone between our two steps
                    self.store.delete(key)
                    return False
                return True
            try:
                current = self.store.get(key)
            except NotFound:
                continue
            if self._owner_of(current) == owner:
                self.store.put(key, body)
                return True
            age = self.store.age(key)
            if age is None:
                continue
            if age <= lease_s:
                return False
            return self._take_over(run_id, key, current, body)
        return False

    def _take_over(self, run_id: str, key: str, stale: bytes, body: bytes) -> bool:
        # Deleting and re-creating the claim would let two takers both win (A deletes,
        # A creates, B deletes A's claim, B creates). Instead the takers race to create a
        # marker named after the stale claim's bytes; only its winner replaces the claim.
        marker = self._run_key(run_id, _STALE + hashlib.sha256(stale).hexdigest()[:16])
        if not self.store.create(marker, body):
            return False
        if self.is_complete(run_id):
            return False
        try:
            now = self.store.get(key)
        except NotFound:
            now = None
        if now is not None and now != stale:  # renewed by its holder after all
            return False
        self.store.put(key, body)
        return True

    def claim_is_stale(self, run_id: str, lease_s: float) -> bool:
        """No live claim: none at all, or one not renewed for ``lease_s`` seconds."""
        age = self.store.age(self._run_key(run_id, _CLAIM))
        return age is None or age > lease_s

    def release(self, run_id: str) -> None:
        """Drop the claim (and the takeover markers of earlier, stale claims)."""
        self.store.delete(self._run_key(run_id, _CLAIM))
        for key in self.store.list(self._run_key(run_id, _STALE)):
            self.store.delete(key)

    # -- blobs ------------------------------------------------------------------------

    def _blob_key(self, digest: str) -> tuple[str, str]:
        match = _DIGEST.match(digest) if isinstance(digest, str) else None
        if match is None:
            raise UsageError(f"invalid digest {digest!r}: expected sha256:<64 lowercase hex>")
        return f"blobs/sha256/{match.group(1)}", match.group(1)

    def has_blob(self, digest: str) -> bool:
        return self.store.exists(self._blob_key(digest)[0])

    def put_blob(self, digest: str, source: bytes | Path) -> bool:
        """Store a blob under its digest: True if uploaded, False if already there."""
        key, expected = self._blob_key(digest)
        if self.store.exists(key):
            return False
        if isinstance(source, bytes | bytearray | memoryview):
            data = bytes(source)
            actual = hashlib.sha256(data).hexdigest()
            if actual != expected:
                raise StoreError(f"refusing blob {digest}: its content hashes to sha256:{actual}")
            return self.store.create(key, data)
        path = Path(os.fspath(source))
        try:
            actual = _sha256_file(path)
        except OSError as exc:
            raise StoreError(f"cannot read blob source {path}: {exc.strerror or exc}") from exc
        if actual != expected:
            raise StoreError(f"refusing blob {digest} from {path}: it hashes to sha256:{actual}")
        self.store.put_file(key, path)
        return True

    def get_blob(self, digest: str) -> bytes:
        key, expected = self._blob_key(digest)
        try:
            data = self.store.get(key)
        except NotFound:
            raise NotFound(f"blob {digest} is not in store {self.store.uri}") from None
        if hashlib.sha256(data).hexdigest() != expected:
            raise StoreError(f"blob {digest} in {self.store.uri} is corrupt: delete it and rerun")
        return data

    def get_blob_file(self, digest: str, path: Path) -> None:
        key, expected = self._blob_key(digest)
        target = Path(path)
        try:
            self.store.get_file(key, target)
        except NotFound:
            raise NotFound(f"blob {digest} is not in store {self.store.uri}") from None
        if _sha256_file(target) != expected:
            target.unlink(missing_ok=True)
            raise StoreError(f"blob {digest} in {self.store.uri} is corrupt: delete it and rerun")

    def blob_digests(self) -> Iterable[str]:
        """Every blob in the store, as ``sha256:<hex>``."""
        return (f"sha256:{key.rsplit('/', 1)[1]}" for key in self.store.list("blobs/sha256/"))
