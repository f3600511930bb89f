"""The JSON bytes orch writes to a store: sorted keys, UTF-8, one trailing newline."""

from __future__ import annotations

import json
from typing import Any


def dump_json(value: Any, *, compact: bool = False) -> bytes:
    """Sorted keys; indented for people unless ``compact`` (machine-only files)."""
    if compact:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    else:
        text = json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False)
    return text.encode("utf-8") + b"\n"
