"""The typed records orch stores: a run's ``run.json`` and a sweep's ``sweeps/<id>.json``.

A :class:`RunPlan` is everything known about a run before it starts (its config, its
image and the layers that made it, the command, the resources); a :class:`RunRecord` is a
plan plus what happened (status, exit code, times, node, metrics). The split is what
keeps a rerun honest: it starts from the original's *plan*, so nothing the original run
observed (its node, its GPU ids, ``gpus_simulated``) can leak into the rerun's record.

Both serialize to flat JSON objects (the layout of ``docs/records.md``). Reading is
strict about the type of every known field and lenient about absence (older writers
left some out), and keeps the fields it does not know (a newer schema) so that a
rewrite by this version loses nothing.

Why one module of this size: it is the schema, read and written in one place (the field
readers, the plan, the record, the sweep document), so that no other module builds or
parses a record by string keys.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Self, TypeVar

from .._util.ids import HEX64
from ..errors import StoreError

#: The schema number every record this version writes carries.
SCHEMA = 1

T = TypeVar("T")


class RunStatus(StrEnum):
    """The states of a run (``skipped`` exists only in a sweep's output, not here)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PRUNED = "pruned"

    @property
    def finished(self) -> bool:
        return self not in (RunStatus.QUEUED, RunStatus.RUNNING)


class CorruptRecord(StoreError):
    """A stored record is not valid JSON or has a field of the wrong type."""


def iso(ts: float) -> str:
    """A UNIX time as the records' ISO 8601 form: UTC, milliseconds, ``Z``."""
    stamp = dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def now_iso() -> str:
    return iso(dt.datetime.now(dt.UTC).timestamp())


# -- field readers: one place that knows what a well-formed field is ------------------------


class _Fields:
    """Reads typed fields out of one JSON object, naming the object in every error."""

    def __init__(self, data: Mapping[str, Any], where: str) -> None:
        if not isinstance(data, Mapping):
            raise CorruptRecord(f"corrupt record {where}: expected a JSON object")
        self.data = data
        self.where = where
        self.used: set[str] = set()

    def bad(self, key: str, expected: str) -> CorruptRecord:
        value = repr(self.data.get(key))
        shown = value if len(value) <= 60 else value[:57] + "..."
        return CorruptRecord(
            f"corrupt record {self.where}: field {key!r} should be {expected}, got {shown}; "
            "repair or delete it"
        )

    def get(self, key: str, kinds: type | tuple[type, ...], expected: str, default: T) -> Any:
        self.used.add(key)
        value = self.data.get(key, default)
        if value is None and default is None:
            return None
        if isinstance(value, bool) and bool not in _as_tuple(kinds):
            raise self.bad(key, expected)
        if not isinstance(value, kinds):
            raise self.bad(key, expected)
        return value

    def required_str(self, key: str) -> str:
        self.used.add(key)
        value = self.data.get(key)
        if not isinstance(value, str) or not value:
            raise self.bad(key, "a non-empty string")
        return value

    def text(self, key: str, default: str | None = None) -> Any:
        return self.get(key, str, "a string", default)

    def flag(self, key: str, default: bool = False) -> bool:
        return bool(self.get(key, bool, "true or false", default))

    def number(self, key: str, default: float | None = None) -> Any:
        return self.get(key, (int, float), "a number", default)

    def integer(self, key: str, default: int | None = None) -> Any:
        return self.get(key, int, "an integer", default)

    def mapping(self, key: str) -> dict[str, Any]:
        return dict(self.get(key, dict, "a JSON object", {}))

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.get(key, list, "a list of strings", [])
        if not all(isinstance(item, str) for item in value):
            raise self.bad(key, "a list of strings")
        return tuple(value)

    def str_map(self, key: str) -> dict[str, str]:
        value = self.mapping(key)
        if not all(isinstance(item, str) for item in value.values()):
            raise self.bad(key, "an object of strings")
        return value

    def metrics(self, key: str) -> dict[str, float]:
        value = self.mapping(key)
        for item in value.values():
            if isinstance(item, bool) or not isinstance(item, int | float):
                raise self.bad(key, "an object of numbers")
            if isinstance(item, float) and not math.isfinite(item):
                raise self.bad(key, "an object of finite numbers")
        return value

    def extra(self) -> dict[str, Any]:
        return {key: value for key, value in self.data.items() if key not in self.used}


def _as_tuple(kinds: type | tuple[type, ...]) -> tuple[type, ...]:
    return kinds if isinstance(kinds, tuple) else (kinds,)


# -- the parts of a plan ---------------------------------------------------------------------


#: A size as orch.yaml's ``resources.tmp`` takes it and a tmpfs's ``size=`` option accepts
#: it (``512m``, ``1g``): whole numbers only.
TMP_SIZE = re.compile(r"^[0-9]+[kmg]?\Z")


@dataclass(frozen=True)
class RunResources:
    """What a run asked for. ``memory`` and ``tmp`` are Docker size strings such as
    ``"512m"``; ``pids`` and ``tmp`` None mean orch's defaults (``container.PIDS_LIMIT``,
    ``container.TMP_SIZE``) and are then left out of the JSON, as records had them."""

    cpus: float = 1.0
    gpus: int = 0
    memory: str | None = None
    timeout: float | None = None
    pids: int | None = None
    tmp: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key in ("pids", "tmp"):
            if data[key] is None:
                del data[key]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> RunResources:
        fields = _Fields(data, where)
        pids = fields.integer("pids")
        if pids is not None and pids < 1:
            raise fields.bad("pids", "a number of processes >= 1")
        tmp = fields.text("tmp")
        # it becomes a tmpfs option: nothing but a size may reach the mount's options
        if tmp is not None and not TMP_SIZE.match(tmp):
            raise fields.bad("tmp", "a size such as '1g' or '512m'")
        return cls(
            cpus=fields.number("cpus", 1.0) or 1.0,
            gpus=fields.integer("gpus", 0) or 0,
            memory=fields.text("memory"),
            timeout=fields.number("timeout"),
            pids=pids,
            tmp=tmp,
        )


@dataclass(frozen=True)
class Enforced:
    """What the engine held one attempt's container to, as the engine reported it once
    the container was created (Docker's and Podman's inspect of it; for Apptainer, the
    cgroup the SLURM task runs in), not what orch asked for.

    ``engine`` names the engine and its mode (``Docker 24.0.5``, ``rootless Podman
    4.3.1``, ``Apptainer``). ``pids`` (processes and threads), ``memory`` (bytes) and
    ``cpus`` are None when nothing limits them; ``tmpfs`` maps each size-limited scratch
    mount to its options; ``read_only_root`` says whether the image's filesystem was
    read-only. ``note`` says what the figures cannot (limits an engine accepted and
    ignores, scratch space on a host directory).
    """

    engine: str
    pids: int | None = None
    memory: int | None = None
    cpus: float | None = None
    tmpfs: dict[str, str] = field(default_factory=dict)
    read_only_root: bool = False
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"engine": self.engine, "pids": self.pids, "memory": self.memory,
                "cpus": self.cpus, "tmpfs": dict(self.tmpfs),
                "read_only_root": self.read_only_root, "note": self.note}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> Enforced:
        fields = _Fields(data, where)
        return cls(
            engine=fields.text("engine", "") or "",
            pids=fields.integer("pids"),
            memory=fields.integer("memory"),
            cpus=fields.number("cpus"),
            tmpfs=fields.str_map("tmpfs"),
            read_only_root=fields.flag("read_only_root", False),
            note=fields.text("note", "") or "",
        )


@dataclass(frozen=True)
class PrefixImages:
    """The image IDs a run image is built on, so a daemon can fetch only what it lacks."""

    base: str
    env: str
    code: str

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> PrefixImages:
        fields = _Fields(data, where)
        return cls(fields.text("base", ""), fields.text("env", ""), fields.text("code", ""))


@dataclass(frozen=True)
class Layers:
    """The diff IDs of a run image's layers, by the part of the image they make.

    ``env`` lists the environment's layers bottom first, one per locked package (empty
    for a project without a lock); records written before that hold one string there.
    """

    base: tuple[str, ...]
    env: tuple[str, ...]
    code: str
    config: str

    def to_json(self) -> dict[str, Any]:
        return {
            "base": list(self.base),
            "env": list(self.env),
            "code": self.code,
            "config": self.config,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> Layers:
        fields = _Fields(data, where)
        env = data.get("env")
        return cls(
            fields.strings("base"),
            (env,) if isinstance(env, str) else fields.strings("env"),
            fields.text("code", ""),
            fields.text("config", ""),
        )

    def all(self) -> tuple[str, ...]:
        return (*self.base, *self.env, self.code, self.config)


@dataclass(frozen=True)
class InputRef:
    """One data input of a run, pinned by its manifest's digest (``orchestrator.inputs``).

    ``files`` and ``bytes`` describe the content; ``source`` is where it was read from, as
    orch.yaml declares it (a path or ``s3://...``): informative only, the digest is what
    a rerun fetches from the store.
    """

    digest: str
    files: int = 0
    bytes: int = 0
    source: str = ""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> InputRef:
        fields = _Fields(data, where)
        return cls(
            digest=fields.required_str("digest"),
            files=fields.integer("files", 0) or 0,
            bytes=fields.integer("bytes", 0) or 0,
            source=fields.text("source", "") or "",
        )


@dataclass(frozen=True)
class ArtifactFile:
    """The size and SHA-256 of one stored output file, as its run's commit saw it.

    ``orch pull`` checks every file it downloads against these. Records written before
    they were kept have none (``RunRecord.artifact_files`` is then empty).
    """

    size: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size, "sha256": self.sha256}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> ArtifactFile:
        fields = _Fields(data, where)
        size = fields.integer("size")
        digest = fields.required_str("sha256")
        if size is None or size < 0:
            raise fields.bad("size", "a size in bytes")
        if not HEX64.match(digest):
            raise fields.bad("sha256", "64 lowercase hex digits")
        return cls(size, digest)


@dataclass(frozen=True)
class OutputsRef:
    """A run's outputs, as its record keeps them: how many, their total size, and the
    manifest that lists each (``runs/<run_id>/outputs.jsonl``, one JSON object
    ``{"name", "size", "sha256"}`` per line, in the order they were stored; ``sha256`` is
    the manifest's own). The list is never in the record: a run may leave 300k files,
    and every reader of records (tables, indexes, gc) would carry it.
    """

    files: int
    bytes: int
    manifest: str
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> OutputsRef:
        fields = _Fields(data, where)
        files, size = fields.integer("files"), fields.integer("bytes")
        manifest, digest = fields.required_str("manifest"), fields.required_str("sha256")
        if files is None or files < 0:
            raise fields.bad("files", "a number of files")
        if size is None or size < 0:
            raise fields.bad("bytes", "a size in bytes")
        # a name in the run's directory, never a path that leaves it
        if "/" in manifest or manifest.startswith("."):
            raise fields.bad("manifest", "a file name in the run's directory")
        if not HEX64.match(digest):
            raise fields.bad("sha256", "64 lowercase hex digits")
        return cls(files, size, manifest, digest)


def _outputs_from_json(fields: _Fields) -> OutputsRef | None:
    value = fields.get("outputs", dict, "a JSON object", None)
    return None if value is None else OutputsRef.from_json(value, f"{fields.where} (outputs)")


def _artifact_files_from_json(fields: _Fields) -> dict[str, ArtifactFile]:
    value = fields.mapping("artifact_files")
    files = {}
    for name, item in value.items():
        if not isinstance(item, dict):
            raise fields.bad("artifact_files", "an object of {size, sha256} objects")
        files[name] = ArtifactFile.from_json(item, f"{fields.where} (artifact_files.{name})")
    return files


def _enforced_from_json(fields: _Fields) -> Enforced | None:
    value = fields.get("enforced", dict, "a JSON object", None)
    return None if value is None else Enforced.from_json(value, f"{fields.where} (enforced)")


#: The networks orch.yaml allows a run; a record naming another (``host``) is not one orch
#: wrote, and a rerun must not start a container on it.
RUN_NETWORKS = ("none", "bridge")


def _network(fields: _Fields) -> str:
    network = fields.text("network", "none") or "none"
    if network not in RUN_NETWORKS:
        raise fields.bad("network", " or ".join(repr(n) for n in RUN_NETWORKS))
    return str(network)


def _inputs_from_json(fields: _Fields) -> dict[str, InputRef]:
    value = fields.mapping("inputs")
    refs = {}
    for name, item in value.items():
        if not isinstance(item, dict):
            raise fields.bad("inputs", "an object of {digest, files, bytes, source} objects")
        refs[name] = InputRef.from_json(item, f"{fields.where} (inputs.{name})")
    return refs


# -- runs -------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RunPlan:
    """What is known of a run before it starts; carried to whichever node runs it.

    The dict fields (``config``, ``env``) are plain JSON values, never mutated.
    """

    run_id: str
    sweep_id: str = ""
    project: str = ""
    overrides: tuple[str, ...] = ()
    config: dict[str, Any] = field(default_factory=dict)
    image_id: str = ""
    repo_digest: str | None = None
    base_image: str = ""
    base_ref: str = ""
    pinned: bool = True
    images: PrefixImages | None = None
    layers: Layers | None = None
    env_key: str = ""
    code_key: str = ""
    command: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    resources: RunResources = field(default_factory=RunResources)
    network: str = "none"
    git_commit: str | None = None
    git_tree: str | None = None
    dirty: bool = False
    #: The data inputs mounted into the run, by name (their digests are in the run id).
    inputs: dict[str, InputRef] = field(default_factory=dict)
    rerun_of: str | None = None
    #: Names of variables each node passes from its own environment at run time (the
    #: names only: their values are never recorded).
    pass_env: tuple[str, ...] = ()
    #: Config keys whose ``${oc.env:...}`` the run resolved: their value in ``config`` is
    #: the interpolation text (orchestrator.compose.config.run_env).
    deferred: tuple[str, ...] = ()
    #: The hydra node a Hydra application received (orchestrator.compose.hydra_app), else None.
    hydra: dict[str, Any] | None = None

    def plan(self) -> RunPlan:
        """Only the plan's fields: what a rerun starts from."""
        names = {f.name for f in dataclasses.fields(RunPlan)}
        return RunPlan(**{name: getattr(self, name) for name in names})

    def plan_json(self) -> dict[str, Any]:
        """Only the plan's fields, as JSON: a job on its way to a node through the store."""
        return self.plan()._plan_json()

    @staticmethod
    def from_plan_json(data: Mapping[str, Any], where: str) -> RunPlan:
        """The plan :meth:`plan_json` wrote, checked as a record's fields are."""
        return RunPlan(**RunPlan._plan_fields(_Fields(data, where)))

    def _plan_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "run_id": self.run_id,
            "sweep_id": self.sweep_id,
            "project": self.project,
            "overrides": list(self.overrides),
            "config": self.config,
            "image_id": self.image_id,
            "repo_digest": self.repo_digest,
            "base_image": self.base_image,
            "base_ref": self.base_ref,
            "pinned": self.pinned,
            "images": self.images.to_json() if self.images else None,
            "layers": self.layers.to_json() if self.layers else None,
            "env_key": self.env_key,
            "code_key": self.code_key,
            "command": list(self.command),
            "env": dict(self.env),
            "resources": self.resources.to_json(),
            "network": self.network,
            "git_commit": self.git_commit,
            "git_tree": self.git_tree,
            "dirty": self.dirty,
            "inputs": {name: ref.to_json() for name, ref in sorted(self.inputs.items())},
        }
        if self.rerun_of is not None:
            data["rerun_of"] = self.rerun_of
        if self.pass_env:
            data["pass_env"] = list(self.pass_env)
        if self.deferred:
            data["deferred"] = list(self.deferred)
        if self.hydra is not None:
            data["hydra"] = self.hydra
        return data

    @staticmethod
    def _plan_fields(fields: _Fields) -> dict[str, Any]:
        where = fields.where
        images = fields.get("images", dict, "a JSON object", None)
        layers = fields.get("layers", dict, "a JSON object", None)
        resources = fields.get("resources", dict, "a JSON object", {})
        return {
            "run_id": fields.required_str("run_id"),
            "sweep_id": fields.text("sweep_id", "") or "",
            "project": fields.text("project", "") or "",
            "overrides": fields.strings("overrides"),
            "config": fields.mapping("config"),
            "image_id": fields.text("image_id", "") or "",
            "repo_digest": fields.text("repo_digest"),
            "base_image": fields.text("base_image", "") or "",
            "base_ref": fields.text("base_ref", "") or "",
            "pinned": fields.flag("pinned", True),
            "images": PrefixImages.from_json(images, f"{where} (images)") if images else None,
            "layers": Layers.from_json(layers, f"{where} (layers)") if layers else None,
            "env_key": fields.text("env_key", "") or "",
            "code_key": fields.text("code_key", "") or "",
            "command": fields.strings("command"),
            "env": fields.str_map("env"),
            "resources": RunResources.from_json(resources, f"{where} (resources)"),
            "network": _network(fields),
            "git_commit": fields.text("git_commit"),
            "git_tree": fields.text("git_tree"),
            "dirty": fields.flag("dirty", False),
            "inputs": _inputs_from_json(fields),
            "rerun_of": fields.text("rerun_of"),
            "pass_env": fields.strings("pass_env"),
            "deferred": fields.strings("deferred"),
            "hydra": fields.get("hydra", dict, "a JSON object", None),
        }


@dataclass(frozen=True, kw_only=True)
class RunRecord(RunPlan):
    """``runs/<run_id>/run.json``: a plan and its outcome. Build with :meth:`finish`."""

    status: RunStatus
    reason: str | None = None
    exit_code: int | None = None
    started_at: str | None = None
    ended_at: str | None = None
    duration_s: float | None = None
    host: str | None = None
    node: str | None = None
    gpus: tuple[str, ...] = ()
    #: True only when the node ran with ORCH_FAKE_GPUS=1 (no real GPU there).
    gpus_simulated: bool = False
    metrics: dict[str, float] = field(default_factory=dict)
    #: The outputs' count, size and manifest (None: the record lists them inline in
    #: ``artifacts``/``artifact_files``, as records did before manifests; read them
    #: through ``RunStore.outputs`` either way).
    outputs: OutputsRef | None = None
    artifacts: tuple[str, ...] = ()
    #: Size and SHA-256 of each artifact by name, computed when the run was committed
    #: (older records; empty in records written before they were kept).
    artifact_files: dict[str, ArtifactFile] = field(default_factory=dict)
    #: Which attempt of the run this is: 1, then one more each time a re-submission
    #: retries a failed or cancelled run (earlier attempts are kept beside it).
    attempt: int = 1
    #: The attempt whose checkpoint this one started from, if any.
    resumed_from_attempt: int | None = None
    #: Entries of the output directory not stored, each with why (links, unsafe names).
    dropped_outputs: dict[str, str] = field(default_factory=dict)
    #: What the engine held this attempt's container to (None in records written before
    #: it was kept, and for attempts whose container was never created).
    enforced: Enforced | None = None
    schema: int = SCHEMA
    #: Fields this version does not know (a newer writer's), kept for a faithful rewrite.
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def finish(cls, plan: RunPlan, **outcome: Any) -> RunRecord:
        return cls(**{f.name: getattr(plan, f.name) for f in dataclasses.fields(RunPlan)},
                   **outcome)

    @property
    def succeeded(self) -> bool:
        return self.status is RunStatus.SUCCEEDED

    def to_json(self) -> dict[str, Any]:
        data = {**self.extra, **self._plan_json()}
        data.update(
            {
                "schema": self.schema,
                "status": self.status.value,
                "reason": self.reason,
                "exit_code": self.exit_code,
                "started_at": self.started_at,
                "ended_at": self.ended_at,
                "duration_s": self.duration_s,
                "host": self.host,
                "node": self.node,
                "gpus": list(self.gpus),
                "metrics": dict(self.metrics),
                "attempt": self.attempt,
            }
        )
        if self.outputs is not None:
            data["outputs"] = self.outputs.to_json()
        if self.artifacts or self.outputs is None:
            data["artifacts"] = list(self.artifacts)
        if self.gpus_simulated:
            data["gpus_simulated"] = True
        if self.resumed_from_attempt is not None:
            data["resumed_from_attempt"] = self.resumed_from_attempt
        if self.dropped_outputs:
            data["dropped_outputs"] = dict(self.dropped_outputs)
        if self.enforced is not None:
            data["enforced"] = self.enforced.to_json()
        if self.artifact_files:
            data["artifact_files"] = {
                name: item.to_json() for name, item in sorted(self.artifact_files.items())
            }
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str = "run.json") -> Self:
        fields = _Fields(data, where)
        plan = RunPlan._plan_fields(fields)
        status = fields.required_str("status")
        try:
            run_status = RunStatus(status)
        except ValueError:
            raise fields.bad("status", f"one of {', '.join(s.value for s in RunStatus)}") from None
        return cls(
            **plan,
            status=run_status,
            reason=fields.text("reason"),
            exit_code=fields.integer("exit_code"),
            started_at=fields.text("started_at"),
            ended_at=fields.text("ended_at"),
            duration_s=fields.number("duration_s"),
            host=fields.text("host"),
            node=fields.text("node"),
            gpus=fields.strings("gpus"),
            gpus_simulated=fields.flag("gpus_simulated", False),
            metrics=fields.metrics("metrics"),
            outputs=_outputs_from_json(fields),
            artifacts=fields.strings("artifacts"),
            artifact_files=_artifact_files_from_json(fields),
            attempt=fields.integer("attempt", 1) or 1,
            resumed_from_attempt=fields.integer("resumed_from_attempt"),
            dropped_outputs=fields.str_map("dropped_outputs"),
            enforced=_enforced_from_json(fields),
            schema=fields.integer("schema", SCHEMA) or SCHEMA,
            extra=fields.extra(),
        )


# -- sweeps -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepEntry:
    run_id: str
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class SweepDoc:
    """``sweeps/<sweep_id>.json``: written once, before the sweep's runs start."""

    sweep_id: str
    project: str = ""
    created_at: str = ""
    args: tuple[str, ...] = ()
    runs: tuple[SweepEntry, ...] = ()
    #: A search's settings and its trials (``orchestrator.search``); None for a grid.
    #: A search's document is rewritten as its trials are created, ``runs`` with it.
    search: dict[str, Any] | None = None
    schema: int = SCHEMA
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def run_ids(self) -> list[str]:
        return [entry.run_id for entry in self.runs]

    def to_json(self) -> dict[str, Any]:
        return {
            **self.extra,
            "schema": self.schema,
            "sweep_id": self.sweep_id,
            "project": self.project,
            "created_at": self.created_at,
            "args": list(self.args),
            "runs": [{"run_id": e.run_id, "overrides": list(e.overrides)} for e in self.runs],
            **({"search": self.search} if self.search is not None else {}),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str = "sweep.json") -> Self:
        fields = _Fields(data, where)
        entries = []
        for i, item in enumerate(fields.get("runs", list, "a list of runs", [])):
            entry = _Fields(item, f"{where} (runs[{i}])")
            entries.append(SweepEntry(entry.required_str("run_id"), entry.strings("overrides")))
        return cls(
            sweep_id=fields.required_str("sweep_id"),
            project=fields.text("project", "") or "",
            created_at=fields.text("created_at", "") or "",
            args=fields.strings("args"),
            runs=tuple(entries),
            search=fields.get("search", dict, "a JSON object", None),
            schema=fields.integer("schema", SCHEMA) or SCHEMA,
            extra=fields.extra(),
        )
