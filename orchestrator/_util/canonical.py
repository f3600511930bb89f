"""Canonical serialization: the bytes every hash in orch is computed from.

Sorted keys, no insignificant whitespace, UTF-8, floats in Python's shortest
round-trip repr (identical on every platform). Non-finite floats are refused
because JSON cannot carry them portably.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any


def _check(value: Any, path: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{path or '<root>'}: non-finite float {value!r} cannot be hashed")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{path or '<root>'}: non-string key {key!r}")
            _check(item, f"{path}.{key}" if path else key)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check(item, f"{path}[{index}]")


def canonical_bytes(value: Any) -> bytes:
    """Serialize plain data (dict/list/str/int/float/bool/None) canonically."""
    _check(value, "")
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest(value: Any) -> str:
    """``sha256:<hex>`` of the canonical bytes of ``value``."""
    return "sha256:" + sha256_hex(canonical_bytes(value))


def short_id(value: Any, length: int = 12) -> str:
    """A short, stable identifier derived from ``value`` (used for run and sweep ids)."""
    return sha256_hex(canonical_bytes(value))[:length]
