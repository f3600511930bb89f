"""orch's settings from the environment, read once by the CLI and passed down.

Nothing below the CLI reads ``os.environ`` for these: a library caller builds a
:class:`Settings` (or takes the defaults) and hands it in, so two callers in one process
can use different values, and a bad value is reported once, as a usage error, up front.

- ``ORCH_LEASE_S``: seconds a run's claim lives without a renewal (60)
- ``ORCH_MAX_POINTS``: the largest sweep, in points, orch will expand (100000)
- ``ORCH_CACHE``: the cache root: wheels, layers, base rootfs, data inputs
  (``$XDG_CACHE_HOME/orch``)
- ``ORCH_WORK_DIR``: where a run's output and checkpoint directories are made, on the
  Docker host (``<cache>/work``)
- ``ORCH_MAX_OUTPUT_BYTES``: the largest total of one run's outputs (10 GiB)
- ``ORCH_CHECKPOINT_S``: seconds between saves of a running run's checkpoint (30)
- ``ORCH_LIVE_S``: seconds between publications of a running run's step metrics (1)
- ``ORCH_S3_RETRY_S``: seconds one S3 operation keeps retrying a server that is down (60);
  a commit that still fails keeps the finished run on disk for the next submission
- ``ORCH_DEBUG``: show tracebacks and third-party warnings (unset)

``ORCH_RESIDENT=0`` (run every command in-process, not in the resident driver) is read by
the ``orch`` script itself, before any of this is imported: see :mod:`orchestrator.resident`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UsageError


def default_cache_root(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("ORCH_CACHE"):
        return Path(env["ORCH_CACHE"])
    xdg = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "orch"


@dataclass(frozen=True)
class Settings:
    lease_s: float = 60.0
    max_points: int = 100_000
    cache_root: Path = field(default_factory=default_cache_root)
    work_dir: Path | None = None
    max_output_bytes: int = 10 << 30
    checkpoint_s: float = 30.0
    live_s: float = 1.0
    s3_retry_s: float = 60.0
    debug: bool = False

    @property
    def work_root(self) -> Path:
        """Where each attempt's host directories are made (on the Docker host)."""
        return self.work_dir or self.cache_root / "work"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        return cls(
            lease_s=_positive(env, "ORCH_LEASE_S", 60.0, float),
            max_points=int(_positive(env, "ORCH_MAX_POINTS", 100_000, int)),
            cache_root=default_cache_root(env),
            work_dir=Path(env["ORCH_WORK_DIR"]) if env.get("ORCH_WORK_DIR") else None,
            max_output_bytes=int(_positive(env, "ORCH_MAX_OUTPUT_BYTES", 10 << 30, int)),
            checkpoint_s=_positive(env, "ORCH_CHECKPOINT_S", 30.0, float),
            live_s=_positive(env, "ORCH_LIVE_S", 1.0, float),
            s3_retry_s=_positive(env, "ORCH_S3_RETRY_S", 60.0, float),
            debug=bool(env.get("ORCH_DEBUG")),
        )


def _positive(env: Mapping[str, str], name: str, default: float, kind: type) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = kind(raw.strip())
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value <= 0:
        what = "a positive whole number" if kind is int else "a positive number of seconds"
        raise UsageError(f"{name}={raw!r} is not {what}: fix or unset it")
    return float(value)
