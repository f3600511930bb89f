"""What differs between two runs: config keys, metrics, image layers, commit.

``compare`` works on two run records (``docs/records.md``) and keeps only the
differences; ``render_diff`` and ``diff_to_json`` present them.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .values import display_value, flatten, format_number, is_number, status_text

LAYERS = ("base", "env", "code", "config")  # build order


class _Missing(enum.Enum):
    MISSING = "MISSING"

    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing.MISSING
"""Stands for a key or metric one of the two runs does not have."""


@dataclass(frozen=True)
class Diff:
    """Differences between run ``a`` and run ``b``; empty fields mean "the same"."""

    config: list[tuple[str, Any, Any]] = field(default_factory=list)
    metrics: list[tuple[str, Any, Any, float | None]] = field(default_factory=list)
    image: dict[str, Any] = field(default_factory=lambda: {"same": True, "layers": []})
    commit: tuple[Any, Any] | None = None
    dirty: tuple[Any, Any] | None = None
    status: tuple[Any, Any] | None = None  # "failed: <reason>" for failed runs
    command: tuple[Any, Any] | None = None
    #: (name, digest in a, digest in b) of each data input whose digest differs.
    inputs: list[tuple[str, Any, Any]] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not (
            self.config
            or self.metrics
            or not self.image.get("same", True)
            or self.commit
            or self.dirty
            or self.status
            or self.command
            or self.inputs
        )


def _same(a: Any, b: Any) -> bool:
    # Canonical JSON, as the config hash sees it: 1 differs from 1.0 and from True.
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _delta(a: Any, b: Any) -> float | None:
    if not (is_number(a) and is_number(b)):
        return None
    # Twelve significant digits hide float noise such as 0.29 - 0.31 = -0.020000000000000018.
    return float(f"{b - a:.12g}")


def _pair(a: Mapping[str, Any], b: Mapping[str, Any], key: str) -> tuple[Any, Any] | None:
    left, right = a.get(key), b.get(key)
    return None if _same(left, right) else (left, right)


def _image(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    image_a, image_b = a.get("image_id"), b.get("image_id")
    layers_a, layers_b = a.get("layers") or {}, b.get("layers") or {}
    differing = [name for name in LAYERS if not _same(layers_a.get(name), layers_b.get(name))]
    same = image_a == image_b and not differing
    return {"same": same, "a": image_a, "b": image_b, "layers": [] if same else differing}


def _inputs(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    def digests(record: Mapping[str, Any]) -> dict[str, Any]:
        refs = record.get("inputs") or {}
        return {name: (ref or {}).get("digest") for name, ref in refs.items()}

    left, right = digests(a), digests(b)
    return [
        (name, left.get(name, MISSING), right.get(name, MISSING))
        for name in sorted(left.keys() | right.keys())
        if left.get(name, MISSING) != right.get(name, MISSING)
    ]


def compare(a: Mapping[str, Any], b: Mapping[str, Any]) -> Diff:
    """Only what differs between two run records, config keys dotted."""
    config_a, config_b = flatten(a.get("config") or {}), flatten(b.get("config") or {})
    config = [
        (key, config_a.get(key, MISSING), config_b.get(key, MISSING))
        for key in sorted(config_a.keys() | config_b.keys())
        if key not in config_a or key not in config_b or not _same(config_a[key], config_b[key])
    ]
    metrics_a, metrics_b = a.get("metrics") or {}, b.get("metrics") or {}
    metrics = [
        (
            name,
            metrics_a.get(name, MISSING),
            metrics_b.get(name, MISSING),
            _delta(metrics_a.get(name), metrics_b.get(name)),
        )
        for name in sorted(metrics_a.keys() | metrics_b.keys())
        if name not in metrics_a
        or name not in metrics_b
        or not _same(metrics_a[name], metrics_b[name])
    ]
    return Diff(
        config=config,
        metrics=metrics,
        image=_image(a, b),
        commit=_pair(a, b, "git_commit"),
        dirty=_pair(a, b, "dirty"),
        status=_pair({"s": status_text(a)}, {"s": status_text(b)}, "s"),
        command=_pair(a, b, "command"),
        inputs=_inputs(a, b),
    )


# --------------------------------------------------------------------------- rendering


def _short(image_id: Any) -> str:
    text = str(image_id)
    if text.startswith("sha256:") and len(text) > 19:
        return text[:19]
    return text


def _short_commit(commit: Any) -> Any:
    if isinstance(commit, str) and len(commit) == 40:
        return commit[:12]
    return commit


def _changes(rows: list[tuple[str, Any, Any]], show: Any, suffixes: list[str]) -> list[str]:
    lines = []
    for (key, left, right), suffix in zip(rows, suffixes, strict=True):
        if left is MISSING:
            lines.append(f"  + {key}: {show(right)}")
        elif right is MISSING:
            lines.append(f"  - {key}: {show(left)}")
        else:
            lines.append(f"  {key}: {show(left)} -> {show(right)}{suffix}")
    return lines


def _signed(delta: float) -> str:
    text = format_number(delta)
    return text if text.startswith("-") else "+" + text


def render_diff(diff: Diff, a_id: str, b_id: str) -> str:
    """Human-readable differences; ``+``/``-`` mark what only ``b``/only ``a`` has."""
    if diff.identical:
        return "runs are identical in config, metrics and image"
    lines = [f"--- {a_id}", f"+++ {b_id}"]
    if diff.config:
        lines.append("config")
        lines += _changes(diff.config, display_value, [""] * len(diff.config))
    if diff.metrics:
        lines.append("metrics")
        rows = [(name, left, right) for name, left, right, _ in diff.metrics]
        suffixes = [f" ({_signed(d)})" if d is not None else "" for *_, d in diff.metrics]
        lines += _changes(rows, format_number, suffixes)
    if not diff.image.get("same", True):
        lines.append("image")
        lines.append(f"  {_short(diff.image.get('a'))} -> {_short(diff.image.get('b'))}")
        if diff.image.get("layers"):
            lines.append(f"  differs in: {', '.join(diff.image['layers'])}")
    if diff.inputs:
        lines.append("inputs")
        lines += _changes(diff.inputs, _short, [""] * len(diff.inputs))
    singles = [
        ("commit", diff.commit),
        ("dirty", diff.dirty),
        ("status", diff.status),
        ("command", diff.command),
    ]
    for title, pair in singles:
        if pair is not None:
            left, right = (_short_commit(v) if title == "commit" else v for v in pair)
            lines.append(title)
            lines.append(f"  {display_value(left)} -> {display_value(right)}")
    return "\n".join(lines)


def _change_json(key_name: str, key: str, left: Any, right: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {key_name: key}
    if left is MISSING:
        entry["change"] = "added"
    elif right is MISSING:
        entry["change"] = "removed"
    else:
        entry["change"] = "changed"
    if left is not MISSING:
        entry["a"] = left
    if right is not MISSING:
        entry["b"] = right
    return entry


def _pair_json(pair: tuple[Any, Any] | None) -> dict[str, Any] | None:
    return None if pair is None else {"a": pair[0], "b": pair[1]}


def diff_to_json(diff: Diff) -> dict[str, Any]:
    """Plain data for ``--json``: absent sides are left out, ``change`` says which."""
    metrics = []
    for name, left, right, delta in diff.metrics:
        entry = _change_json("name", name, left, right)
        entry["delta"] = delta
        metrics.append(entry)
    return {
        "identical": diff.identical,
        "config": [_change_json("key", key, left, right) for key, left, right in diff.config],
        "metrics": metrics,
        "image": dict(diff.image),
        "commit": _pair_json(diff.commit),
        "dirty": _pair_json(diff.dirty),
        "status": _pair_json(diff.status),
        "command": _pair_json(diff.command),
        "inputs": [_change_json("name", name, left, right) for name, left, right in diff.inputs],
    }
