"""Rerunning a recorded run exactly: by run id, image ID or registry digest.

The image is taken by digest (this daemon, else the registry recorded, else the
store's blobs, only the missing layers), its data inputs by digest from the store's
blobs (verified), run with the recorded command, env and resources, and its metrics
compared with the stored ones. The rerun is stored as a new run with ``rerun_of``.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from dataclasses import dataclass
from typing import Any

from .docker_api import DockerClient
from .errors import ImageError, NotFound, UsageError
from .execute import execute
from .ids import DIGEST_REF, IMAGE_ID, RUN_ID
from .image.archive import has_image
from .image.imageconfig import ImageConfig
from .image.transport import ensure_image, pull_by_digest
from .job import Job
from .record import RunRecord
from .settings import Settings
from .store import RunStore


@dataclass
class RerunResult:
    original: RunRecord
    record: RunRecord
    differences: list[str]

    @property
    def identical(self) -> bool:
        return self.record.succeeded and not self.differences

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": self.record.run_id,
            "rerun_of": self.original.run_id,
            "status": self.record.status.value,
            "identical": self.identical,
            "image_id": self.record.image_id,
            "metrics": dict(self.record.metrics),
            "original_metrics": dict(self.original.metrics),
            "differences": self.differences,
        }


def find_original(runs: RunStore, client: DockerClient, target: str) -> RunRecord:
    """The record a target names: a run id (or unique prefix), an image ID, a repo digest."""
    if IMAGE_ID.match(target):
        return runs.read_run(_run_id_of_image(runs, client, target))
    if DIGEST_REF.match(target):
        image_id = pull_by_digest(client, target)
        if image_id is None:
            raise ImageError(f"cannot pull {target}: is the registry running and reachable?")
        return runs.read_run(_run_id_of_image(runs, client, image_id))
    if RUN_ID.match(target):
        return runs.read_run(runs.resolve_run_id(target))
    raise UsageError(
        f"{target!r} is not a run id, an image ID (sha256:<64 hex>) or repo@sha256:<digest>"
    )


def _run_id_of_image(runs: RunStore, client: DockerClient, image_id: str) -> str:
    """Run images carry their run id as a label, in the config blob and on the daemon."""
    try:
        labels = ImageConfig(runs.blobs.get(image_id)).data["config"].get("Labels") or {}
    except NotFound:
        if not has_image(client, image_id):
            raise NotFound(f"image {image_id} is not in the store nor on this daemon") from None
        labels = client.api.inspect_image(image_id)["Config"].get("Labels") or {}
    run_id = labels.get("org.orch.run_id")
    if not run_id:
        raise UsageError(f"image {image_id} is not an orch run image (no org.orch.run_id label)")
    return str(run_id)


def record_image(client: DockerClient, runs: RunStore, record: RunRecord) -> str:
    """Make a recorded run's image present on this daemon; returns where it came from."""
    images = record.images
    return ensure_image(
        client,
        runs.blobs,
        record.image_id,
        repo_digest=record.repo_digest,
        prefixes=(images.base, images.env, images.code) if images else None,
    )


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
    client: DockerClient,
    runs: RunStore,
    target: str,
    *,
    gpu_ids: list[str] | None = None,
    node: str | None = None,
    settings: Settings | None = None,
) -> RerunResult:
    original = find_original(runs, client, target)
    record_image(client, runs, original)
    # The rerun starts from the original's plan only: what the original observed (its
    # node, GPU ids, simulated GPUs, metrics) is not carried over.
    plan = dataclasses.replace(
        original.plan(),
        run_id=uuid.uuid4().hex[:12],
        rerun_of=original.run_id,
        env={**original.env, "ORCH_RUN_ID": original.run_id},
    )
    job = Job(
        plan=plan,
        owner=uuid.uuid4().hex,
        lease_s=(settings or Settings()).lease_s,
        files=(("config.yaml", runs.read_file(original.run_id, "config.yaml")),),
    )
    # The recorded inputs come from the store into this machine's cache, each file checked
    # against its digest (cached ones hashed again): the rerun reads the same bytes.
    record = execute(
        job,
        client,
        runs,
        gpu_ids=gpu_ids,
        node=node,
        cache_root=(settings or Settings()).cache_root,
        verify_inputs=True,
    )
    return RerunResult(original, record, compare_metrics(original.metrics, record.metrics))
