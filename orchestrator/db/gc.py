"""``orch gc``: remove what nothing needs, and nothing that a running sweep will.

Mark, then sweep:

* **Marked blobs**: every ``sha256:<hex>`` mentioned by any run record - current ones
  (``runs/<id>/run.json``) and earlier attempts (``runs/<id>/attempts/<n>/run.json``) -
  which covers layers, image configs, the images a run is built on and input manifests;
  then, transitively, every digest a marked blob that is JSON (an image config, an input
  manifest) mentions.
* **Protected blobs**: every blob a live open-sweep marker names (a running sweep names
  there the blobs its runs will reference before it relies on finding them stored: a
  directory store links cached layers in with the cache file's age, and a blob found
  stored is not written again, so a blob's age says nothing about who needs it). The
  markers are read again right before deleting.
* **Grace**: an unmarked blob is kept if it was written less than ``grace_s`` ago, or
  after the *cutoff*: the oldest of every open sweep (``sweeps/<id>.open-*``) and every
  live claim, less a minute for clocks. A running sweep uploads its blobs after its
  sweep is opened and before its runs commit the records that reference them, so no
  blob that a live run will commit can be older than the cutoff.
* **Stale claims**: ``claim.json`` (and takeover markers) not renewed for the lease, of
  runs that are complete or that nobody runs any more.
* **Partial runs**: runs without ``run.json`` whose every object is older than the lease
  and that no live claim holds: their logs and outputs go; their earlier ``attempts/``
  and their checkpoint (``checkpoint.tar``/``.json``: the next attempt resumes from it)
  stay.
* **Half-done set-asides**: ``attempts/<n>/`` whose record is still the run's
  ``run.json``, older than the lease (a re-submitter killed while setting a failed
  attempt aside): the copy goes, the run keeps its record, and a re-submission retries.
* **Open markers** older than the lease of sweeps none of whose runs is claimed: left by
  a submission that died; they only slow readers down. The sweep's index is rebuilt
  from its runs' records first: the dead submission may have committed runs after it.
  A marker handed over to a scheduler's jobs (a detached SLURM sweep, whose tasks may
  wait in the queue for hours) is kept until the jobs' last step removes it.

``dry_run`` reports the same and removes nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._util.ids import SHA256_HEX
from .._util.pool import parallel_map
from ..errors import NotFound
from ..schema.record import CorruptRecord
from ..store import RunStore
from ..store.interface import Store

_DIGEST = re.compile(f"sha256:({SHA256_HEX})".encode())
#: Clocks of the machines writing a store may disagree by this much.
SKEW_S = 60.0
#: Blobs larger than this are layers, not JSON that could mention other blobs.
_JSON_MAX = 4 << 20
_KEEP_IN_PARTIAL = ("attempts/", "checkpoint.tar", "checkpoint.json")


@dataclass
class Report:
    blobs: list[str] = field(default_factory=list)
    claims: list[str] = field(default_factory=list)
    partial: list[str] = field(default_factory=list)
    partial_runs: set[str] = field(default_factory=set)
    markers: list[str] = field(default_factory=list)
    kept_young: int = 0
    referenced: int = 0

    @property
    def removed(self) -> list[str]:
        return [*self.blobs, *self.claims, *self.partial, *self.markers]

    def summary(self, dry_run: bool) -> str:
        verb = "would remove" if dry_run else "removed"
        return (
            f"{verb} {len(self.blobs)} unreferenced blobs, {len(self.claims)} stale claim "
            f"files, {len(self.partial)} files of {len(self.partial_runs)} abandoned partial "
            f"runs, {len(self.markers)} stale open-sweep markers; kept {self.referenced} "
            f"referenced blobs and {self.kept_young} young ones"
        )


def _stamp(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def collect(
    runs: RunStore, *, lease_s: float, grace_s: float = 3600.0, dry_run: bool = False
) -> Report:
    store = runs.store
    report = Report()
    now = time.time()

    # -- what is in the runs/ tree, by run -------------------------------------------
    by_run: dict[str, list[str]] = defaultdict(list)
    for key in store.list("runs/"):
        parts = key.split("/", 2)
        if len(parts) == 3:
            by_run[parts[1]].append(parts[2])

    # -- live claims and open sweeps: the cutoff -------------------------------------
    claimed = [rid for rid, names in by_run.items() if "claim.json" in names]
    claim_ages = dict(zip(claimed, parallel_map(
        lambda rid: store.age(f"runs/{rid}/claim.json"), claimed), strict=True))
    live = {rid for rid, age in claim_ages.items() if age is not None and age <= lease_s}

    def claimed_at(run_id: str) -> float:
        try:
            value = json.loads(store.get(f"runs/{run_id}/claim.json")).get("claimed_at")
        except (NotFound, ValueError, AttributeError):
            value = None
        age = claim_ages.get(run_id) or 0.0
        return _stamp(value) or now - age

    starts = parallel_map(claimed_at, sorted(live))
    markers = [k for k in store.list("sweeps/") if ".open-" in k.rsplit("/", 1)[-1]]
    marker_ages = dict(zip(markers, parallel_map(store.age, markers), strict=True))
    sweep_runs = _sweep_runs(runs, markers)
    for key, age in marker_ages.items():
        if age is None:
            continue
        sweep_id = _marker_sweep(key)
        if (age > lease_s and not (sweep_runs.get(sweep_id, set()) & live)
                and not _held(store, key)):
            report.markers.append(key)  # a dead submission's: it protects nothing
        else:
            starts.append(now - age)
    cutoff = min([now - grace_s, *(s - SKEW_S for s in starts)])
    live_markers = [k for k in markers if k not in report.markers]
    protected = _marker_blobs(runs, live_markers)

    # -- mark --------------------------------------------------------------------------
    record_keys = [
        f"runs/{rid}/{name}"
        for rid, names in by_run.items()
        for name in names
        if name == "run.json" or (name.startswith("attempts/") and name.endswith("/run.json"))
    ]
    marked: set[str] = set(protected)
    follow: set[str] = set(protected)
    records = dict(zip(record_keys, parallel_map(_getter(runs), record_keys, 32), strict=True))
    for data in records.values():
        marked.update(m.decode() for m in _DIGEST.findall(data))
        follow |= _followed(data)
    present = {key.rsplit("/", 1)[1] for key in store.list("blobs/sha256/")}
    frontier = follow & present
    seen: set[str] = set()
    while frontier:  # blobs that are JSON (configs, manifests) name further blobs
        seen |= frontier
        found = parallel_map(lambda h: _json_digests(runs, h), sorted(frontier), 16)
        frontier = {d for ds in found for d in ds} & present - seen
    marked |= seen

    # -- sweep: blobs --------------------------------------------------------------------
    unmarked = sorted(present - marked)
    report.referenced = len(present & marked)
    ages = parallel_map(lambda h: store.age(f"blobs/sha256/{h}"), unmarked, 32)
    for hexd, age in zip(unmarked, ages, strict=True):
        if age is None:
            continue
        if now - age < cutoff:
            report.blobs.append(f"blobs/sha256/{hexd}")
        else:
            report.kept_young += 1

    # -- claims, half-done set-asides and partial runs ------------------------------------
    for run_id, names in sorted(by_run.items()):
        complete = "run.json" in names
        if complete and run_id not in live:
            report.partial += _dead_set_aside(runs, run_id, names, records, lease_s)
        stale_claim = run_id in claim_ages and run_id not in live
        claim_files = [n for n in names if n == "claim.json" or n.startswith("claim.stale-")]
        if complete and claim_files and (stale_claim or "claim.json" not in names):
            report.claims += [f"runs/{run_id}/{n}" for n in claim_files]
        if complete or run_id in live:
            continue
        others = [n for n in names if not n.startswith(_KEEP_IN_PARTIAL)]
        if not others:
            continue
        keys = [f"runs/{run_id}/{n}" for n in names]
        youngest = min((a for a in parallel_map(store.age, keys) if a is not None), default=0.0)
        if youngest > lease_s:
            report.partial += [f"runs/{run_id}/{n}" for n in others]
            report.partial_runs.add(run_id)

    if not dry_run:
        # A submission that opened its sweep while we marked names its blobs now: read the
        # markers again right before deleting (a sweep checks for a blob only after its
        # marker names it, so no blob it found is deleted under it).
        fresh = [k for k in store.list("sweeps/") if ".open-" in k.rsplit("/", 1)[-1]]
        again = _marker_blobs(runs, [k for k in fresh if k not in report.markers])
        report.blobs = [key for key in report.blobs if key.rsplit("/", 1)[1] not in again]
        # Claims last-but-one and markers last: a crash part-way leaves the store as safe
        # as before (an unremoved marker only protects more).
        parallel_map(store.delete, [*report.blobs, *report.partial, *report.claims], 32)
        # A dead submission may have committed runs after its sweep's index was last
        # written: readers trust the index once the marker is gone, so rebuild it first.
        for sweep_id in sorted({_marker_sweep(k) for k in report.markers}):
            try:
                runs.rebuild_sweep_index(sweep_id)
            except (NotFound, CorruptRecord):
                pass  # no sweep document: the index, if any, answers for nothing
        parallel_map(store.delete, report.markers, 8)
    return report


def _held(store: Store, key: str) -> bool:
    """A marker handed over to a scheduler's jobs (``RunStore.hand_over``): its runs may
    wait in a queue for longer than any lease; the jobs' last step removes it."""
    try:
        body = _json(store.get(key))
    except NotFound:
        return False
    return isinstance(body, dict) and bool(body.get("held_by"))


def _marker_sweep(key: str) -> str:
    return key[len("sweeps/") :].rsplit(".open-", 1)[0]


def _marker_blobs(runs: RunStore, markers: Sequence[str]) -> set[str]:
    """The blobs open sweeps named in their markers (``RunStore.protect_blobs``), as hex."""

    def read(key: str) -> set[str]:
        try:
            return {m.decode() for m in _DIGEST.findall(runs.store.get(key))}
        except NotFound:
            return set()

    return set().union(*parallel_map(read, list(markers), 8)) if markers else set()


def _dead_set_aside(runs: RunStore, run_id: str, names: Sequence[str],
                    records: dict[str, bytes], lease_s: float) -> list[str]:
    """The kept copy of a set-aside that its submitter did not finish (killed between
    keeping ``attempts/<n>/`` and removing ``run.json``): the attempt is still the run's
    current one, so the copy is rolled back; older than the lease, so not in progress."""
    current = records.get(f"runs/{run_id}/run.json")
    if not current:
        return []
    for name in names:
        if not (name.startswith("attempts/") and name.endswith("/run.json")):
            continue
        kept = records.get(f"runs/{run_id}/{name}")
        if not kept or _json(kept) != _json(current) or _json(kept) is None:
            continue
        age = runs.store.age(f"runs/{run_id}/{name}")
        if age is None or age <= lease_s:
            continue
        base = name[: -len("run.json")]
        return [f"runs/{run_id}/{n}" for n in names if n.startswith(base)]
    return []


def _json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (UnicodeDecodeError, ValueError):
        return None


def _getter(runs: RunStore) -> Callable[[str], bytes]:
    def get(key: str) -> bytes:
        try:
            return runs.store.get(key)
        except NotFound:
            return b""

    return get


#: Record fields whose digests name JSON blobs (image configs, input manifests) that
#: may name further blobs; layers (the rest) are never downloaded to look inside.
_FOLLOWED = ("image_id", "images", "base_image", "inputs")


def _followed(data: bytes) -> set[str]:
    try:
        record = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        return set()
    if not isinstance(record, dict):
        return set()
    text = json.dumps([record.get(name) for name in _FOLLOWED]).encode()
    return {m.decode() for m in _DIGEST.findall(text)}


def _json_digests(runs: RunStore, hexd: str) -> Iterable[str]:
    try:
        data = runs.store.get(f"blobs/sha256/{hexd}")
    except NotFound:
        return ()
    if len(data) > _JSON_MAX or data.lstrip()[:1] not in (b"{", b"["):
        return ()
    return {m.decode() for m in _DIGEST.findall(data)}


def _sweep_runs(runs: RunStore, markers: Sequence[str]) -> dict[str, set[str]]:
    ids = sorted({k[len("sweeps/") :].rsplit(".open-", 1)[0] for k in markers})

    def read(sweep_id: str) -> tuple[str, set[str]]:
        try:
            return sweep_id, set(runs.read_sweep(sweep_id).run_ids)
        except NotFound:
            return sweep_id, set()

    return dict(parallel_map(read, ids))
