"""Canonical image config JSON: the image ID is the sha256 of these exact bytes."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .tarball import fixed_mtime


@dataclass(frozen=True)
class ImageConfig:
    """An image config serialized canonically; ``image_id`` is known before loading."""

    raw: bytes

    @property
    def image_id(self) -> str:
        return "sha256:" + hashlib.sha256(self.raw).hexdigest()

    @property
    def data(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.raw)
        return document

    @property
    def diff_ids(self) -> list[str]:
        return list(self.data["rootfs"]["diff_ids"])


def created_stamp() -> str:
    return datetime.fromtimestamp(fixed_mtime(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_config(
    *,
    architecture: str,
    os_name: str,
    diff_ids: list[str],
    env: list[str],
    cmd: list[str] | None,
    entrypoint: list[str] | None = None,
    working_dir: str = "",
    user: str = "",
    labels: dict[str, str] | None = None,
) -> ImageConfig:
    """Build the config JSON with only content-derived fields: no host, no daemon, fixed time."""
    container_config: dict[str, Any] = {"Env": env, "Cmd": cmd}
    if entrypoint:
        container_config["Entrypoint"] = entrypoint
    if working_dir:
        container_config["WorkingDir"] = working_dir
    if user:
        container_config["User"] = user
    if labels:
        container_config["Labels"] = dict(sorted(labels.items()))
    document = {
        "architecture": architecture,
        "os": os_name,
        "created": created_stamp(),
        "config": container_config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    raw = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return ImageConfig(raw.encode("utf-8"))


def merge_env(base: list[str], extra: dict[str, str], path_prefix: str = "") -> list[str]:
    """Base image env with ``extra`` set on top (extra's names sorted); PATH gets a prefix."""
    merged: dict[str, str] = {}
    for item in base:
        name, _, value = item.partition("=")
        merged[name] = value
    if path_prefix:
        current = merged.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        merged["PATH"] = f"{path_prefix}:{current}"
    base_names = [item.partition("=")[0] for item in base]
    ordered = [n for n in base_names if n not in extra] + sorted(extra)
    merged.update(extra)
    seen: set[str] = set()
    result = []
    for name in ordered + (["PATH"] if "PATH" not in base_names and path_prefix else []):
        if name not in seen:
            seen.add(name)
            result.append(f"{name}={merged[name]}")
    return result
