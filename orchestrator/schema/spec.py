"""Immutable run and sweep specs, and the identities derived from them.

A run is defined by (project, environment, code, canonical config, command, the
resources and environment variables that change results, and the digests of the data
inputs it reads). Its ``run_id`` is a short
hash of exactly that, so re-submitting an unchanged run finds it done, and any change
to code, dependencies or config gives a new id.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .._util.canonical import canonical_bytes, short_id

RUN_ID_LENGTH = 12


@dataclass(frozen=True)
class RunSpec:
    project: str
    overrides: tuple[str, ...]
    config_bytes: bytes  # canonical JSON of the composed, resolved config
    env_key: str
    code_key: str
    command: tuple[str, ...]
    gpus: int = 0
    env: tuple[tuple[str, str], ...] = ()
    #: (name, manifest digest) of each data input the run reads, sorted by name.
    inputs: tuple[tuple[str, str], ...] = ()
    #: Config keys whose value the run resolves (``${oc.env:...}`` it alone holds).
    deferred: tuple[str, ...] = ()
    #: Canonical JSON of the hydra node a Hydra application receives (empty otherwise).
    #: Not part of the identity: it follows from the config files (the code layer) and the
    #: point, except ``job.num``, the point's place in its sweep, which must not make one
    #: config two runs.
    hydra: bytes = b""

    @classmethod
    def create(
        cls,
        *,
        project: str,
        overrides: tuple[str, ...],
        config: dict[str, Any],
        env_key: str,
        code_key: str,
        command: tuple[str, ...],
        gpus: int = 0,
        env: tuple[tuple[str, str], ...] = (),
        inputs: tuple[tuple[str, str], ...] = (),
        deferred: tuple[str, ...] = (),
        hydra: dict[str, Any] | None = None,
    ) -> RunSpec:
        return cls(
            project,
            overrides,
            canonical_bytes(config),
            env_key,
            code_key,
            command,
            gpus,
            env,
            tuple(sorted(inputs)),
            tuple(deferred),
            canonical_bytes(hydra) if hydra is not None else b"",
        )

    @property
    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = json.loads(self.config_bytes)
        return config

    @property
    def hydra_node(self) -> dict[str, Any] | None:
        node: dict[str, Any] | None = json.loads(self.hydra) if self.hydra else None
        return node

    def identity(self) -> dict[str, Any]:
        """What defines the run. Overrides are absent on purpose: two spellings of the
        same composed config are the same run. ``inputs`` (and ``deferred``) appear only
        when there are some, so the ids of runs without them stay what they were."""
        identity = {
            "project": self.project,
            "env_key": self.env_key,
            "code_key": self.code_key,
            "config": self.config,
            "command": list(self.command),
            "gpus": self.gpus,
            "env": [list(pair) for pair in self.env],
        }
        if self.inputs:
            identity["inputs"] = dict(self.inputs)
        if self.deferred:  # the same text, resolved or left to the run, is not one run
            identity["deferred"] = list(self.deferred)
        return identity

    @property
    def run_id(self) -> str:
        return short_id(self.identity(), RUN_ID_LENGTH)


@dataclass(frozen=True)
class SweepSpec:
    project: str
    args: tuple[str, ...]
    runs: tuple[RunSpec, ...] = field(default_factory=tuple)

    @property
    def sweep_id(self) -> str:
        return short_id(
            {"project": self.project, "runs": [run.run_id for run in self.runs]}, RUN_ID_LENGTH
        )
