"""A detached sweep's request, and its outcome in the store.

``orch sweep --detach`` does not run the sweep's driver here: it sends a
:class:`SweepRequest` (what to sweep and with which options, as plain JSON) to a cluster,
whose entry point (:mod:`orchestrator.api.detached`) runs the sweep and writes a
:class:`SweepOutcome` to the sweep's store under ``requests/<request_id>.json``. Whoever
asks later (``orch status``) reads that object from the store; the runs' own records are
in the store as for any sweep.

Both are frozen values with ``to_json``/``from_json``; a request's ``request_id`` is also
the id of the job that carries it, so one id names the submission everywhere.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .._util.ids import DIGEST
from ..errors import NotFound, UsageError
from ..schema.record import CorruptRecord, now_iso
from .interface import Store

SCHEMA = 1
#: Request ids are store key components and job ids: short, no separators.
REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}\Z")

OutcomeStatus = Literal["succeeded", "failed", "error"]
_STATUSES: tuple[OutcomeStatus, ...] = ("succeeded", "failed", "error")


def new_request_id() -> str:
    return f"orch-sweep-{uuid.uuid4().hex[:12]}"


def check_request_id(request_id: str) -> str:
    if not isinstance(request_id, str) or not REQUEST_ID.match(request_id):
        raise UsageError(
            f"{request_id!r} is not a sweep job id (letters, digits, '-' and '_', "
            f"as printed by orch sweep --detach)"
        )
    return request_id


def outcome_key(request_id: str) -> str:
    """Where the outcome of request ``request_id`` lives in its store."""
    return f"requests/{check_request_id(request_id)}.json"


@dataclass(frozen=True, kw_only=True)
class SweepRequest:
    """Everything a sweep's driver needs besides the project directory it runs in."""

    request_id: str
    #: The sweep's arguments (Hydra overrides and sweep syntax), as given to ``orch sweep``.
    overrides: tuple[str, ...]
    #: A store every node reaches: ``s3://bucket/prefix`` or ``file:///absolute/path``.
    store_uri: str
    s3_endpoint: str | None = None
    registry: str | None = None
    jobs: int | None = None
    allow_dirty: bool = False
    allow_unpinned: bool = False
    #: A base image instead of orch.yaml's (same pinning rules), or None.
    base_image: str | None = None
    #: The data inputs the submitter pinned and put in the store: (name, digest) pairs.
    #: The driver reads their manifests from the store; the data stays out of the job.
    inputs: tuple[tuple[str, str], ...] = ()

    @classmethod
    def new(cls, overrides: Sequence[str], store_uri: str, **options: Any) -> SweepRequest:
        """A request with a fresh id."""
        return cls(
            request_id=new_request_id(),
            overrides=tuple(overrides),
            store_uri=store_uri,
            **options,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "request_id": self.request_id,
            "overrides": list(self.overrides),
            "store_uri": self.store_uri,
            "s3_endpoint": self.s3_endpoint,
            "registry": self.registry,
            "jobs": self.jobs,
            "allow_dirty": self.allow_dirty,
            "allow_unpinned": self.allow_unpinned,
            "base_image": self.base_image,
            "inputs": dict(self.inputs),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str = "sweep request") -> SweepRequest:
        fields = _Reader(data, where)
        jobs = fields.get("jobs", int, None)
        if jobs is not None and jobs < 1:
            raise fields.bad("jobs", "a positive integer")
        return cls(
            request_id=check_request_id(fields.get("request_id", str)),
            overrides=fields.strings("overrides"),
            store_uri=fields.get("store_uri", str),
            s3_endpoint=fields.get("s3_endpoint", str, None),
            registry=fields.get("registry", str, None),
            jobs=jobs,
            allow_dirty=fields.get("allow_dirty", bool, False),
            allow_unpinned=fields.get("allow_unpinned", bool, False),
            base_image=fields.get("base_image", str, None),
            inputs=fields.digests("inputs"),
        )

    def encode(self) -> str:
        """One compact JSON line: the argument of the entry point."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def decode(cls, text: str) -> SweepRequest:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise UsageError(f"the sweep request is not valid JSON: {exc}") from exc
        return cls.from_json(data)


@dataclass(frozen=True, kw_only=True)
class SweepOutcome:
    """``requests/<request_id>.json``: how a detached sweep ended, written once, at its end.

    ``status`` is ``succeeded`` (every run succeeded or was already done), ``failed``
    (some run failed) or ``error`` (the sweep did not run: ``error`` says why, and
    ``sweep_id`` is None).
    """

    request: SweepRequest
    status: OutcomeStatus
    sweep_id: str | None = None
    #: The runs as ``orch sweep --json`` lists them (run_id, status, overrides, ...).
    runs: tuple[dict[str, Any], ...] = ()
    error: str | None = None
    finished_at: str = ""

    @property
    def request_id(self) -> str:
        return self.request.request_id

    @classmethod
    def of_sweep(cls, request: SweepRequest, sweep: Mapping[str, Any]) -> SweepOutcome:
        """The outcome of a sweep that ran, from its ``orch sweep --json`` object."""
        runs = tuple(dict(run) for run in sweep.get("runs", []))
        failed = any(run.get("status") == "failed" for run in runs)
        return cls(
            request=request,
            status="failed" if failed else "succeeded",
            sweep_id=str(sweep["sweep_id"]),
            runs=runs,
            finished_at=now_iso(),
        )

    @classmethod
    def of_error(cls, request: SweepRequest, message: str) -> SweepOutcome:
        return cls(request=request, status="error", error=message, finished_at=now_iso())

    def sweep_json(self) -> dict[str, Any] | None:
        """The ``orch sweep --json`` object of the sweep, None if it did not run."""
        if self.sweep_id is None:
            return None
        return {"sweep_id": self.sweep_id, "runs": [dict(run) for run in self.runs]}

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "request_id": self.request_id,
            "request": self.request.to_json(),
            "status": self.status,
            "sweep_id": self.sweep_id,
            "runs": [dict(run) for run in self.runs],
            "error": self.error,
            "finished_at": self.finished_at,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str = "sweep outcome") -> SweepOutcome:
        """Raises CorruptRecord: an outcome comes from a store, not from the user."""
        try:
            return cls._from_json(data, where)
        except UsageError as exc:
            raise CorruptRecord(f"corrupt record {exc}; repair or delete it") from exc

    @classmethod
    def _from_json(cls, data: Mapping[str, Any], where: str) -> SweepOutcome:
        fields = _Reader(data, where)
        status = fields.get("status", str)
        if status not in _STATUSES:
            raise fields.bad("status", f"one of {', '.join(_STATUSES)}")
        runs = fields.get("runs", list, [])
        if not all(isinstance(run, dict) for run in runs):
            raise fields.bad("runs", "a list of JSON objects")
        return cls(
            request=SweepRequest.from_json(fields.get("request", dict), f"{where} (request)"),
            status=status,
            sweep_id=fields.get("sweep_id", str, None),
            runs=tuple(runs),
            error=fields.get("error", str, None),
            finished_at=fields.get("finished_at", str, ""),
        )


def write_outcome(store: Store, outcome: SweepOutcome) -> None:
    data = json.dumps(outcome.to_json(), sort_keys=True, indent=2) + "\n"
    store.put(outcome_key(outcome.request_id), data.encode())


def read_outcome(store: Store, request_id: str) -> SweepOutcome | None:
    """The outcome of ``request_id`` in ``store``; None while there is none."""
    key = outcome_key(request_id)
    try:
        raw = store.get(key)
    except NotFound:
        return None
    where = f"{store.uri}/{key}"
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise CorruptRecord(f"corrupt record {where}: not valid JSON ({exc})") from exc
    outcome = SweepOutcome.from_json(data, where)
    if outcome.request_id != request_id:
        raise CorruptRecord(f"corrupt record {where}: it holds request {outcome.request_id}")
    return outcome


_MISSING: Any = object()


class _Reader:
    """Typed fields of one JSON object; errors name the object (requests come from
    a command line, outcomes from a store: both may be hand-edited or truncated)."""

    def __init__(self, data: object, where: str) -> None:
        if not isinstance(data, Mapping):
            raise UsageError(f"{where}: expected a JSON object")
        self.data = data
        self.where = where

    def bad(self, key: str, expected: str) -> UsageError:
        return UsageError(f"{self.where}: {key!r} should be {expected}, got {self.data.get(key)!r}")

    def get(self, key: str, kind: type, default: Any = _MISSING) -> Any:
        if key not in self.data:
            if default is _MISSING:
                raise self.bad(key, f"present ({kind.__name__})")
            return default
        value = self.data[key]
        if value is None and default is None:
            return None
        # bool is an int to Python, not to JSON
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise self.bad(key, f"a {kind.__name__}")
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.get(key, list, [])
        if not all(isinstance(item, str) for item in value):
            raise self.bad(key, "a list of strings")
        return tuple(value)

    def digests(self, key: str) -> tuple[tuple[str, str], ...]:
        """A JSON object of name -> ``sha256:<64 hex>``, as sorted pairs."""
        value = self.get(key, dict, {})
        if not all(isinstance(v, str) and DIGEST.match(v) for v in value.values()):
            raise self.bad(key, "an object of input name -> sha256:<64 hex>")
        return tuple(sorted(value.items()))
