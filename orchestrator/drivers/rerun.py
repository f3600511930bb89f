"""Rerunning a recorded run exactly: by run id, image ID or registry digest.

The image is taken by digest (this daemon, else the registry recorded, else the
store's blobs, only the missing layers), its data inputs by digest from the store's
blobs (verified), run with the recorded command, env and resources, and its metrics
compared with the stored ones. The rerun is stored as a new run with ``rerun_of``.

A run a search's pruner stopped has no final metrics to compare: its rerun is stopped
where the original's curve ends, and reproduces when its step metrics are the original's,
line for line, up to there (the rerun may run a step or two further before it stops).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import uuid
from dataclasses import dataclass
from typing import Any

from .._util.ids import DIGEST_REF, IMAGE_ID, RUN_ID
from ..compose.project import parse_resources
from ..daemon.client import DockerClient
from ..errors import ImageError, NotFound, ProjectError, StoreError, UsageError
from ..image.archive import has_image
from ..image.imageconfig import ImageConfig
from ..image.transport import ensure_image, pull_by_digest
from ..runner.execute import ShouldStop, execute
from ..runner.live import StepMetrics
from ..schema.job import Job
from ..schema.record import RUN_NETWORKS, RunRecord, RunStatus
from ..settings import Settings
from ..store import RunStore


@dataclass
class RerunResult:
    original: RunRecord
    record: RunRecord
    differences: list[str]
    #: For a pruned original: the last step compared (its curve's end), else None.
    up_to_step: float | None = None

    @property
    def identical(self) -> bool:
        if self.original.status is RunStatus.PRUNED:
            # Stopped at the same step, or done before the stop reached it: either way it
            # went through the original's states
            ended = self.record.status in (RunStatus.PRUNED, RunStatus.SUCCEEDED)
            return ended and not self.differences
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
            "up_to_step": self.up_to_step,
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
    check_run_settings(original)
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
    curve: list[dict[str, Any]] | None = None
    if original.status is RunStatus.PRUNED:
        curve = _curve(runs, original.run_id)
    last_step = _step_of(curve[-1], len(curve)) if curve else None
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
        should_stop=_stop_at(last_step) if last_step is not None else None,
    )
    if curve is None:
        return RerunResult(original, record, compare_metrics(original.metrics, record.metrics))
    return RerunResult(original, record, compare_curves(curve, _curve(runs, record.run_id)),
                       up_to_step=last_step)


#: Variable names a run may be given from the node's environment (orch.yaml's pass_env).
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_run_settings(record: RunRecord) -> None:
    """The record's run settings pass orch.yaml's own checks, before anything runs: a
    record is data from a store anyone with write access may have written, and a rerun
    must not start what no orch.yaml could ask for (the host network, a node's ORCH_*
    variables, a resource Docker cannot parse)."""
    where = f"run {record.run_id}'s record"

    def bad(key: str, why: str) -> StoreError:
        return StoreError(f"{where}: {key}: {why}: not a setting orch writes; the record is "
                          "corrupt or forged, so it is not rerun")

    if record.network not in RUN_NETWORKS:
        raise bad("network", f"{record.network!r} must be 'none' or 'bridge'")
    resources = record.resources
    try:
        parse_resources({"cpus": resources.cpus, "gpus": resources.gpus,
                         "memory": resources.memory}, where)
    except ProjectError as exc:
        raise bad("resources", str(exc).removeprefix(f"{where}: ")) from None
    timeout = resources.timeout
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise bad("resources.timeout", "must be a positive number of seconds")
    # pass_env names what this node's environment gives the run (the record's env is
    # baked in its image, and orch.yaml allows any name there)
    for name in record.pass_env:
        if not _ENV_NAME.fullmatch(name):
            raise bad("pass_env", f"{name!r} is not a variable name")
        if name.startswith("ORCH_"):
            raise bad("pass_env", f"{name!r}: ORCH_* variables are orch's own")
    if not record.command:
        raise bad("command", "must be a non-empty list of strings")


def _curve(runs: RunStore, run_id: str) -> list[dict[str, Any]]:
    """A run's step metrics, one dict per well-formed line of its ``metrics.jsonl``."""
    try:
        data = runs.read_file(run_id, "metrics.jsonl")
    except NotFound:
        return []
    lines = []
    for line in data.splitlines():
        try:
            values = json.loads(line)
        except ValueError:
            continue  # a line cut by the stop: what the step publisher also skips
        if isinstance(values, dict):
            lines.append(values)
    return lines


def _step_of(values: dict[str, Any], number: int) -> float:
    step = values.get("step")
    if isinstance(step, int | float) and not isinstance(step, bool):
        return float(step)
    return float(number)


def _stop_at(last_step: float) -> ShouldStop:
    def check(steps: StepMetrics) -> str | None:
        if steps.step is not None and steps.step >= last_step:
            return f"stopped at step {last_step:g}, where the original was pruned"
        return None

    return check


def compare_curves(original: list[dict[str, Any]], rerun: list[dict[str, Any]]) -> list[str]:
    """How the rerun's step metrics differ from a pruned original's, over its length."""
    if not original:
        return ["the pruned original has no step metrics to compare"]
    differences = []
    for number, old in enumerate(original, 1):
        if number > len(rerun):
            differences.append(f"step line {number}: {old!r} -> missing (the rerun stopped "
                               f"after {len(rerun)} lines)")
            break
        differences.extend(f"step line {number}: {difference}"
                           for difference in compare_metrics(old, rerun[number - 1]))
    return differences
