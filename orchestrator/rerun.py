"""Rerunning a recorded run exactly: by run id, image ID or registry digest.

The image is taken by digest (this daemon, else the registry recorded, else the
store's blobs, only the missing layers), run with the recorded command, env and
resources, and its metrics compared with the stored ones. The rerun is stored as a
new run with ``rerun_of``.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from .backends.base import Job
from .errors import ImageError, NotFound, UsageError
from .execute import execute
from .image.archive import has_image
from .image.imageconfig import ImageConfig
from .image.transport import fetch_from_store, pull_by_digest
from .project import DIGEST_REF, IMAGE_ID
from .store import RunStore

_RUN_ID = re.compile(r"^[0-9a-f]{1,64}\Z")
_DYNAMIC = {
    "status",
    "reason",
    "exit_code",
    "started_at",
    "ended_at",
    "duration_s",
    "host",
    "node",
    "gpus",
    "metrics",
    "artifacts",
    "rerun_of",
    "run_id",
}


@dataclass
class RerunResult:
    original: dict[str, Any]
    record: dict[str, Any]
    differences: list[str]

    @property
    def identical(self) -> bool:
        return self.record["status"] == "succeeded" and not self.differences

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": self.record["run_id"],
            "rerun_of": self.original["run_id"],
            "status": self.record["status"],
            "identical": self.identical,
            "image_id": self.record["image_id"],
            "metrics": self.record["metrics"],
            "original_metrics": self.original.get("metrics", {}),
            "differences": self.differences,
        }


def find_original(runs: RunStore, client: Any, target: str) -> dict[str, Any]:
    """The record a target names: a run id (or unique prefix), an image ID, a repo digest."""
    if IMAGE_ID.match(target):
        return runs.read_run(_run_id_of_image(runs, client, target))
    if DIGEST_REF.match(target):
        image_id = pull_by_digest(client, target)
        if image_id is None:
            raise ImageError(f"cannot pull {target}: is the registry running and reachable?")
        return runs.read_run(_run_id_of_image(runs, client, image_id))
    if _RUN_ID.match(target):
        return runs.read_run(runs.resolve_run_id(target))
    raise UsageError(
        f"{target!r} is not a run id, an image ID (sha256:<64 hex>) or repo@sha256:<digest>"
    )


def _run_id_of_image(runs: RunStore, client: Any, image_id: str) -> str:
    """Run images carry their run id as a label, in the config blob and on the daemon."""
    try:
        labels = ImageConfig(runs.get_blob(image_id)).data["config"].get("Labels") or {}
    except NotFound:
        if not has_image(client, image_id):
            raise NotFound(f"image {image_id} is not in the store nor on this daemon") from None
        labels = client.api.inspect_image(image_id)["Config"].get("Labels") or {}
    run_id = labels.get("org.orch.run_id")
    if not run_id:
        raise UsageError(f"image {image_id} is not an orch run image (no org.orch.run_id label)")
    return str(run_id)


def ensure_image(client: Any, runs: RunStore, record: dict[str, Any]) -> str:
    """Make the record's image present on this daemon; returns where it came from.

    From the store, the environment and code images are loaded first, so that of every
    later run of the same sweep on this daemon only its small config layer travels.
    """
    image_id = record["image_id"]
    if has_image(client, image_id):
        return "daemon"
    digest = record.get("repo_digest")
    if digest and pull_by_digest(client, digest) == image_id:
        return "registry"
    images = record.get("images") or {}
    known = [images.get("base", "")]
    for prefix in (images.get("env"), images.get("code")):
        if prefix and not has_image(client, prefix):
            fetch_from_store(client, runs, prefix, known)
        known.insert(0, prefix or "")
    fetch_from_store(client, runs, image_id, known)
    return "store"


def compare_metrics(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    differences = []
    for key in sorted(set(old) | set(new)):
        if key not in new:
            differences.append(f"{key}: {old[key]!r} -> missing")
        elif key not in old:
            differences.append(f"{key}: missing -> {new[key]!r}")
        elif json.dumps(old[key]) != json.dumps(new[key]):
            differences.append(f"{key}: {old[key]!r} -> {new[key]!r}")
    return differences


def rerun(
    client: Any,
    runs: RunStore,
    target: str,
    *,
    gpu_ids: list[str] | None = None,
    node: str | None = None,
) -> RerunResult:
    original = find_original(runs, client, target)
    ensure_image(client, runs, original)
    run_id = uuid.uuid4().hex[:12]
    resources = original.get("resources") or {}
    base_record = {k: v for k, v in original.items() if k not in _DYNAMIC}
    base_record["rerun_of"] = original["run_id"]
    base_record["env"] = {**(original.get("env") or {}), "ORCH_RUN_ID": original["run_id"]}
    job = Job(
        run_id=run_id,
        sweep_id=original.get("sweep_id", ""),
        image_id=original["image_id"],
        image_tag="",
        command=tuple(original["command"]),
        cpus=float(resources.get("cpus") or 1),
        gpus=int(resources.get("gpus") or 0),
        memory=resources.get("memory"),
        timeout=resources.get("timeout"),
        network=original.get("network", "none"),
        owner=uuid.uuid4().hex,
        record=base_record,
        files=(("config.yaml", runs.read_file(original["run_id"], "config.yaml")),),
    )
    record = execute(job, client, runs, gpu_ids=gpu_ids, node=node)
    return RerunResult(
        original, record, compare_metrics(original.get("metrics", {}), record["metrics"])
    )
