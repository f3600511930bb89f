"""Every run of a store in a bounded number of reads: what ``results``, ``best``,
``query``, ``export`` and ``gc`` stand on.

A read of the catalog is, whatever the number of runs:

1. one listing of ``sweeps/`` (a page per 1,000 keys): which sweeps exist, which have an
   index, which are *open* (a submission is committing runs: ``<id>.open-<nonce>``)
   and which runs are reruns of them (``<id>.reruns/<run_id>``);
2. one listing of ``labels/`` (names, tags, notes; see :mod:`..store.labels`);
3. one GET per selected sweep, in parallel: its index, which carries the sweep
   document too (the document itself only for sweeps without an index).

Only runs the index cannot answer for are read one by one: every run of an *open* sweep
(its index may predate a retry), runs of the document missing from the index (a sweep
stopped early, or still running: their claims and ``live.json`` say whether they run and
what they reached) and reruns. A closed index is written after every record it holds
and the open marker is removed only after the index, so a reader that sees no marker
reads an index as new as every committed run of that sweep; a reader that sees one
never trusts the index. Nothing is ever read half-written: each object is put whole.

Why one module of this size: the rules above (which sweeps to read, when an index is
trusted, which runs are read one by one and how a run without a record is shown) are one
protocol, kept in one place with the types it returns.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._util.ids import RUN_ID
from .._util.pool import parallel_iter, parallel_map
from ..errors import NotFound, StoreError, UsageError
from ..schema.record import CorruptRecord, RunStatus, SweepDoc
from ..store import RunStore
from ..store.labels import LABEL, Labels, close_matches, read_labels
from .frame import IndexRef

if TYPE_CHECKING:
    from .frame import IndexSummary, RunFrame

log = logging.getLogger("orchestrator.db.catalog")


def check_ref(ref: str) -> str:
    """A sweep id (or prefix), name or tag as a user typed it."""
    if not (RUN_ID.match(ref) or LABEL.match(ref)):
        raise UsageError(
            f"{ref!r} is not a sweep id, name or tag: expected hex characters (see orch "
            "runs) or a name of letters, digits, '.', '_', '-'"
        )
    return ref


@dataclass(frozen=True)
class Listing:
    """What the listing of ``sweeps/`` says, before any object is read."""

    docs: frozenset[str]
    indexed: frozenset[str]
    open: frozenset[str]
    open_keys: tuple[str, ...]
    reruns: dict[str, tuple[str, ...]]

    @classmethod
    def parse(cls, keys: Iterable[str]) -> Listing:
        docs: set[str] = set()
        indexed: set[str] = set()
        opened: set[str] = set()
        open_keys: list[str] = []
        reruns: dict[str, list[str]] = defaultdict(list)
        for key in keys:
            name = key[len("sweeps/") :]
            if "/" in name:
                head, _, run_id = name.partition("/")
                sweep_id, dot, kind = head.rpartition(".")
                if dot and kind == "reruns" and run_id:
                    reruns[sweep_id].append(run_id)
            elif name.endswith(".index.json"):
                indexed.add(name[: -len(".index.json")])
            elif name.endswith(".json"):
                docs.add(name[: -len(".json")])
            elif ".open-" in name:
                opened.add(name.rsplit(".open-", 1)[0])
                open_keys.append(key)
        return cls(
            frozenset(docs),
            frozenset(indexed),
            frozenset(opened),
            tuple(open_keys),
            {k: tuple(sorted(v)) for k, v in reruns.items()},
        )

    @property
    def sweep_ids(self) -> frozenset[str]:
        return self.docs | self.indexed


@dataclass(frozen=True)
class SweepInfo:
    sweep_id: str
    project: str
    created_at: str
    args: tuple[str, ...]
    run_ids: tuple[str, ...]
    name: str | None
    tags: frozenset[str]
    note: str | None
    open: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "sweep_id": self.sweep_id,
            "project": self.project,
            "created_at": self.created_at,
            "args": list(self.args),
            "name": self.name,
            "tags": sorted(self.tags),
            "note": self.note,
        }


@dataclass
class Snapshot:
    """The selected sweeps and their runs' records (JSON form), labels folded in.

    Each record gets ``sweep_name``, ``tags`` (the run's own and its sweep's, sorted)
    and ``note``. Runs not complete appear as ``queued`` or ``running`` records with
    what is known of them (overrides; a running one's latest step metrics).
    """

    sweeps: list[SweepInfo]
    records: list[dict[str, Any]]
    labels: Labels
    listing: Listing
    stats: dict[str, int] = field(default_factory=dict)
    #: With a frame: every run in order, records read here and runs left in the frame.
    entries: list[dict[str, Any] | IndexRef] = field(default_factory=list)


class Catalog:
    """Reads sweeps and runs of a :class:`RunStore` across sweeps."""

    def __init__(self, runs: RunStore, *, lease_s: float = 3600.0, workers: int = 32) -> None:
        self.runs = runs
        self.store = runs.store
        self.lease_s = lease_s
        self.workers = workers

    # -- selection ------------------------------------------------------------------

    def listing(self) -> Listing:
        return Listing.parse(self.store.list("sweeps/"))

    def resolve(self, refs: Sequence[str], listing: Listing, labels: Labels) -> list[str]:
        """Sweep ids named by ``refs``: ids, unique id prefixes, names and tags."""
        found: list[str] = []
        ids = listing.sweep_ids
        for ref in refs:
            if ref in ids:
                matches = [ref]
            elif labels.sweeps_named(ref):
                matches = labels.sweeps_named(ref)
            elif labels.sweeps_tagged(ref):
                matches = labels.sweeps_tagged(ref)
            else:
                matches = sorted(sid for sid in ids if sid.startswith(ref))
                if len(matches) > 1:
                    shown = ", ".join(matches[:5]) + (" ..." if len(matches) > 5 else "")
                    raise UsageError(
                        f"sweep id {ref!r} is ambiguous ({len(matches)} sweeps: {shown}): "
                        "give more characters"
                    )
            if not matches:
                known = [*labels.all_names(), *labels.all_tags()]
                raise UsageError(
                    f"{close_matches(ref, known, 'sweep id, name or tag')} in store "
                    f"{self.store.uri}; see orch runs"
                )
            found += [m for m in matches if m not in found]
        return found

    # -- reading --------------------------------------------------------------------

    def read(
        self,
        refs: Sequence[str] = (),
        *,
        project: str | None = None,
        live: bool = True,
        frame: RunFrame | None = None,
    ) -> Snapshot:
        """The runs of the sweeps named by ``refs`` (none: every sweep, of ``project``
        when given). ``live``: include runs not complete, with their claim's state.

        With a ``frame``, closed indexes are parsed by it and their records stay there:
        ``records`` then holds only the runs read one by one, ``entries`` every run in
        order (call ``frame.build_runs(snapshot.entries, snapshot.labels)``)."""
        with ThreadPoolExecutor(2) as pool:
            listing_f = pool.submit(self.listing)
            labels_f = pool.submit(read_labels, self.store)
            listing, labels = listing_f.result(), labels_f.result()
        chosen = self.resolve(refs, listing, labels) if refs else sorted(listing.sweep_ids)
        summaries = self._summaries(chosen, listing, frame) if frame is not None else None
        # A sweep whose index in the frame answers for all its runs reads nothing more:
        # loaded here (no thread switching per sweep), the others (objects to read) on
        # the pool.
        inline = {sid for sid, summary in (summaries or {}).items()
                  if sid not in listing.open and sid not in listing.reruns
                  and _complete(summary)}
        by_pool = [sid for sid in chosen if sid not in inline]
        pooled = dict(zip(by_pool, parallel_map(
            lambda sid: self._load(sid, listing, labels, summaries), by_pool, self.workers
        ), strict=True))
        loaded = [pooled[sid] if sid in pooled else self._load(sid, listing, labels, summaries)
                  for sid in chosen]
        # Oldest sweep first, each in its own order: a log of experiments, newest at the end.
        loaded.sort(key=lambda item: item[0].created_at if item else "")
        sweeps: list[SweepInfo] = []
        records: list[dict[str, Any] | IndexRef] = []
        pending: list[tuple[SweepInfo, str, tuple[str, ...]]] = []
        stats = {"sweeps": 0, "indexed": 0, "run_reads": 0}
        for item in loaded:
            if item is None:
                continue
            info, sweep_records, missing, reads = item
            if project is not None and not refs and info.project != project:
                continue
            sweeps.append(info)
            records += sweep_records
            pending += missing
            stats["sweeps"] += 1
            stats["run_reads"] += reads
            stats["indexed"] += info.sweep_id in listing.indexed and not info.open
        if live and pending:
            found = parallel_map(lambda p: self._pending(*p), pending, self.workers)
            records += [record for record in found if record is not None]
            stats["run_reads"] += 2 * len(pending)
        read_here = [record for record in records if isinstance(record, dict)]
        for record in read_here:
            _label(record, labels)
        sweeps.sort(key=lambda s: s.created_at, reverse=True)
        entries = records if frame is not None else []
        return Snapshot(sweeps, read_here, labels, listing, stats, entries)

    def _summaries(
        self, chosen: Sequence[str], listing: Listing, frame: RunFrame
    ) -> dict[str, IndexSummary]:
        """The indexes of ``chosen`` sweeps not open, fetched in parallel, parsed by
        ``frame`` in one load."""
        wanted = [sid for sid in chosen if sid in listing.indexed and sid not in listing.open]
        summaries: dict[str, IndexSummary] = {}
        batch: dict[str, bytes] = {}
        # A batch is parsed while the next ones download (DuckDB parses without the GIL):
        # the parse of all but the last batch hides behind the GETs.
        size = max(64, len(wanted) // 6)
        for sid, data in parallel_iter(
            lambda sid: (sid, self._get_bytes(f"sweeps/{sid}.index.json")), wanted, self.workers
        ):
            if data is not None:
                batch[sid] = data
            if len(batch) >= size:
                summaries.update(frame.load_indexes(batch))
                batch = {}
        summaries.update(frame.load_indexes(batch))
        return summaries

    def _get_bytes(self, key: str) -> bytes | None:
        try:
            return self.store.get(key)
        except NotFound:
            return None
        except StoreError:
            return None  # an index is a cache: the sweep is then read run by run

    def _load(
        self,
        sweep_id: str,
        listing: Listing,
        labels: Labels,
        summaries: dict[str, IndexSummary] | None = None,
    ) -> tuple[SweepInfo, list[dict[str, Any] | IndexRef],
               list[tuple[SweepInfo, str, tuple[str, ...]]], int] | None:
        index: dict[str, Any] = {}
        summary = summaries.get(sweep_id) if summaries is not None else None
        if summaries is None and sweep_id in listing.indexed:
            index = self._get_json(f"sweeps/{sweep_id}.index.json") or {}
        if summary is not None:
            doc_json = summary.doc
        else:
            doc_json = index.get("sweep") if isinstance(index.get("sweep"), dict) else None
        if doc_json is None:
            doc_json = self._get_json(f"sweeps/{sweep_id}.json", warn=True)
        if doc_json is None:
            return None  # an index without its sweep, or deleted while we listed
        try:
            doc = SweepDoc.from_json(doc_json, self.runs.where(f"sweeps/{sweep_id}.json"))
        except CorruptRecord as exc:
            log.warning("skipped %s", exc)
            return None
        is_open = sweep_id in listing.open
        label = labels.of("sweep", sweep_id)
        info = SweepInfo(
            sweep_id=sweep_id,
            project=doc.project,
            created_at=doc.created_at,
            args=doc.args,
            run_ids=tuple(doc.run_ids),
            name=label.name,
            tags=frozenset(label.tags),
            note=label.note,
            open=is_open,
        )
        indexed: Mapping[str, dict[str, Any] | IndexRef]
        if is_open:
            indexed = {}
        elif summary is not None:
            indexed = _Refs(sweep_id, summary.run_ids)
        else:
            indexed = _index_records(index, sweep_id)
        wanted = [rid for rid in doc.run_ids if rid not in indexed]
        wanted += [rid for rid in listing.reruns.get(sweep_id, ()) if rid not in indexed]
        read = self.runs.read_runs(wanted, workers=8) if wanted else []
        by_id = {rid: r.to_json() for rid, r in zip(wanted, read, strict=True) if r is not None}
        overrides = {entry.run_id: entry.overrides for entry in doc.runs}
        records: list[dict[str, Any] | IndexRef] = []
        missing: list[tuple[SweepInfo, str, tuple[str, ...]]] = []
        for run_id in doc.run_ids:
            record = indexed.get(run_id) or by_id.get(run_id)
            if record is not None:
                records.append(record)
            else:
                missing.append((info, run_id, overrides.get(run_id, ())))
        records += [by_id[rid] for rid in listing.reruns.get(sweep_id, ()) if rid in by_id]
        return info, records, missing, len(wanted)

    def _get_json(self, key: str, *, warn: bool = False) -> dict[str, Any] | None:
        """``key``'s JSON object; None when missing or unreadable (named when ``warn``:
        a record, not a cache the caller falls back from)."""
        try:
            value = json.loads(self.store.get(key))
        except NotFound:
            return None
        except (UnicodeDecodeError, json.JSONDecodeError, StoreError) as exc:
            if warn:
                log.warning("skipped corrupt JSON in %s: %s", self.runs.where(key), exc)
            return None
        return value if isinstance(value, dict) else None

    def _pending(
        self, info: SweepInfo, run_id: str, overrides: tuple[str, ...]
    ) -> dict[str, Any] | None:
        """A run without a readable ``run.json``: running if its claim is live, else queued;
        None when its ``run.json`` is there but corrupt (skipped, and named, by the read)."""
        if self.runs.is_complete(run_id):
            return None
        running = self.runs.claims.is_live(run_id, self.lease_s)
        live = self.runs.read_live(run_id) if running else None
        record: dict[str, Any] = {
            "run_id": run_id,
            "sweep_id": info.sweep_id,
            "project": info.project,
            "status": RunStatus.RUNNING.value if running else RunStatus.QUEUED.value,
            "overrides": list(overrides),
            "config": {},
            "metrics": {},
            "image_id": "",
        }
        if live:
            metrics = live.get("metrics")
            if isinstance(metrics, dict):
                record["metrics"] = {
                    k: v for k, v in metrics.items()
                    if isinstance(v, int | float) and not isinstance(v, bool)
                }
            for key in ("attempt", "started_at", "host", "node", "step"):
                if key in live:
                    record[key] = live[key]
        return record


class _Refs(Mapping[str, IndexRef]):
    """The runs an index in a frame answers for, as references to their rows."""

    def __init__(self, sweep_id: str, run_ids: frozenset[str]) -> None:
        self.sweep_id, self.run_ids = sweep_id, run_ids

    def __getitem__(self, run_id: str) -> IndexRef:
        if run_id not in self.run_ids:
            raise KeyError(run_id)
        return IndexRef(self.sweep_id, run_id)

    def __contains__(self, run_id: object) -> bool:
        return run_id in self.run_ids

    def get(self, run_id: str, default: Any = None) -> Any:
        # Mapping.get through __getitem__ raises and catches a KeyError per miss.
        return IndexRef(self.sweep_id, run_id) if run_id in self.run_ids else default

    def __iter__(self) -> Iterator[str]:
        return iter(self.run_ids)

    def __len__(self) -> int:
        return len(self.run_ids)


def _complete(summary: IndexSummary) -> bool:
    """Whether an index holds every run its sweep document lists."""
    runs = summary.doc.get("runs") if summary.doc is not None else None
    return isinstance(runs, list) and all(
        isinstance(run, dict) and run.get("run_id") in summary.run_ids for run in runs
    )


def _index_records(index: dict[str, Any], sweep_id: str) -> dict[str, dict[str, Any]]:
    """An index's records, checked only as much as a cache needs: the full check of
    every field happens when a record is read by itself (``orch show``)."""
    runs = index.get("runs")
    if not isinstance(runs, dict) or index.get("sweep_id") != sweep_id:
        return {}
    statuses = {status.value for status in RunStatus}
    return {
        run_id: record
        for run_id, record in runs.items()
        if isinstance(record, dict)
        and record.get("run_id") == run_id
        and record.get("status") in statuses
        and isinstance(record.get("config", {}), dict)
        and isinstance(record.get("metrics", {}), dict)
    }


def _label(record: dict[str, Any], labels: Labels) -> None:
    label = labels.of_run(str(record.get("sweep_id") or ""), str(record.get("run_id") or ""))
    record["sweep_name"] = label.name
    record["tags"] = sorted(label.tags)
    record["note"] = label.note
