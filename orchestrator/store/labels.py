"""Names, tags and notes of sweeps and runs: mutable labels beside immutable records.

Records are never rewritten to label them. Every change is one new object, created
conditionally (``Store.create``, an ``If-None-Match`` put on S3), never overwritten::

    labels/<kind>/<id>/<seq>.tag+.<tag>      add a tag          (kind: sweep | run)
    labels/<kind>/<id>/<seq>.tag-.<tag>      remove a tag
    labels/<kind>/<id>/<seq>.name.<name>     set the name (sweeps; a run has its sweep's)
    labels/<kind>/<id>/<seq>.name-           clear the name
    labels/<kind>/<id>/<seq>.note            set the note: the object's body is its text

``seq`` is one more than the highest the writer saw. Two writers that saw the same one
write different keys (their changes differ) or the same key (then they made the same
change): either way nothing is lost, and the fold below orders events by key, so every
reader agrees on the outcome. Everything but a note's text is in the key, so reading
every label of a store is one listing plus one GET per target that has a note.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..errors import NotFound, StoreError, UsageError
from .interface import Store

PREFIX = "labels/"
KINDS = ("sweep", "run")
#: A tag or a name: safe in a store key, a shell and a SQL string alike.
LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
_KEY = re.compile(r"^labels/(sweep|run)/([^/]+)/(\d{8})\.(tag\+|tag-|name-|name|note)(?:\.(.+))?\Z")
_ATTEMPTS = 64


@dataclass
class Label:
    """The folded labels of one sweep or run."""

    name: str | None = None
    tags: set[str] = field(default_factory=set)
    note: str | None = None
    #: The key of the latest note (its body is read only when wanted).
    note_key: str | None = None


@dataclass
class Labels:
    """Every label in a store, by kind then id."""

    sweeps: dict[str, Label] = field(default_factory=dict)
    runs: dict[str, Label] = field(default_factory=dict)

    def of(self, kind: str, target: str) -> Label:
        return (self.sweeps if kind == "sweep" else self.runs).get(target) or Label()

    def of_run(self, sweep_id: str, run_id: str) -> Label:
        """What a run shows: its sweep's name, its own tags and its sweep's, its own note
        or else its sweep's."""
        sweep, run = self.of("sweep", sweep_id), self.of("run", run_id)
        return Label(name=sweep.name, tags=sweep.tags | run.tags, note=run.note or sweep.note)

    def all_tags(self) -> set[str]:
        return {t for label in [*self.sweeps.values(), *self.runs.values()] for t in label.tags}

    def all_names(self) -> set[str]:
        return {label.name for label in self.sweeps.values() if label.name}

    def sweeps_named(self, name: str) -> list[str]:
        return sorted(sid for sid, label in self.sweeps.items() if label.name == name)

    def sweeps_tagged(self, tag: str) -> list[str]:
        return sorted(sid for sid, label in self.sweeps.items() if tag in label.tags)


def check_label(value: str, what: str) -> str:
    if not LABEL.match(value):
        raise UsageError(
            f"invalid {what} {value!r}: use letters, digits, '.', '_', '-' "
            "(at most 64, starting with a letter or digit)"
        )
    return value


def close_matches(word: str, known: Iterable[str], what: str) -> str:
    """``unknown tag 'lstn' (close: lstm, lstm2)``-style text for error messages."""
    pool = sorted(set(known))
    close = difflib.get_close_matches(word, pool, n=5, cutoff=0.5)
    if close:
        return f"unknown {what} {word!r} (close: {', '.join(close)})"
    shown = ", ".join(pool[:10]) + (" ..." if len(pool) > 10 else "")
    return f"unknown {what} {word!r} (known: {shown or 'none'})"


def _events(keys: Iterable[str]) -> Iterable[tuple[str, str, str, str | None, str]]:
    for key in sorted(keys):
        match = _KEY.match(key)
        if match:
            kind, target, _seq, op, value = match.groups()
            yield kind, target, op, value, key


def fold(keys: Iterable[str]) -> Labels:
    """Labels from the event keys alone (notes' text not read)."""
    labels = Labels()
    for kind, target, op, value, key in _events(keys):
        table = labels.sweeps if kind == "sweep" else labels.runs
        label = table.setdefault(target, Label())
        if op == "tag+" and value:
            label.tags.add(value)
        elif op == "tag-" and value:
            label.tags.discard(value)
        elif op == "name":
            label.name = value
        elif op == "name-":
            label.name = None
        elif op == "note":
            label.note_key = key
    return labels


def read_labels(store: Store, *, notes: bool = True, workers: int = 16) -> Labels:
    """Every label in the store: one listing, then the latest note of each target."""
    labels = fold(store.list(PREFIX))
    if notes:
        wanted = [label for label in [*labels.sweeps.values(), *labels.runs.values()]
                  if label.note_key]

        def read(label: Label) -> None:
            assert label.note_key is not None
            try:
                label.note = store.get(label.note_key).decode(errors="replace") or None
            except NotFound:
                label.note = None

        if wanted:
            with ThreadPoolExecutor(min(workers, len(wanted))) as pool:
                list(pool.map(read, wanted))
    return labels


def read_target(store: Store, kind: str, target: str) -> Label:
    """The labels of one sweep or run (one listing; its note's text if it has one)."""
    label = fold(store.list(f"{PREFIX}{kind}/{target}/")).of(kind, target)
    if label.note_key:
        try:
            label.note = store.get(label.note_key).decode(errors="replace") or None
        except NotFound:
            label.note = None
    return label


def _append(store: Store, kind: str, target: str, suffix: str, body: bytes) -> str:
    """Create the next event of ``target``; retried past slots taken meanwhile."""
    base = f"{PREFIX}{kind}/{target}/"
    seen = [int(m.group(3)) for m in map(_KEY.match, store.list(base)) if m]
    seq = max(seen, default=0) + 1
    for _ in range(_ATTEMPTS):
        key = f"{base}{seq:08d}.{suffix}"
        if store.create(key, body):
            return key
        if suffix != "note" and store.get(key) == body:
            return key  # the very same change, made by a concurrent writer
        seq += 1
    raise StoreError(f"could not write a label of {kind} {target} in {store.uri}: "
                     f"{_ATTEMPTS} concurrent writers took every slot; try again")


def change(
    store: Store,
    kind: str,
    target: str,
    *,
    add: Sequence[str] = (),
    remove: Sequence[str] = (),
    name: str | None = None,
    clear_name: bool = False,
    note: str | None = None,
) -> None:
    """Apply label changes to one sweep or run, one conditional create each."""
    if kind not in KINDS:
        raise UsageError(f"labels are for {' or '.join(KINDS)}, not {kind!r}")
    for tag in [*add, *remove]:
        check_label(tag, "tag")
    if name is not None:
        check_label(name, "name")
    for tag in add:
        _append(store, kind, target, f"tag+.{tag}", b"")
    for tag in remove:
        _append(store, kind, target, f"tag-.{tag}", b"")
    if clear_name:
        _append(store, kind, target, "name-", b"")
    if name is not None:
        _append(store, kind, target, f"name.{name}", b"")
    if note is not None:
        _append(store, kind, target, "note", note.encode())
