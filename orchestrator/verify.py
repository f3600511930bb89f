"""``orch image verify``: rebuild a run's image from its recorded inputs and compare IDs,
and check that the store holds every blob the record names.

The project is checked out at the recorded commit in a temporary git worktree, so the
rebuild goes through exactly the code path of the original build. An identical rebuild
says the recorded image can be made again here; the blobs say it can be fetched by a
node that has nothing (``orch rerun`` on an empty daemon), which is what the store is for.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .docker_api import DockerClient
from .errors import ImageError
from .git import git, git_text, git_try
from .image import builder
from .project import load_project
from .record import RunRecord
from .store import RunStore


@dataclass
class VerifyResult:
    recorded: str
    rebuilt: str
    first_difference: str | None
    #: Blobs the record names that the store does not hold (checked when given a store).
    missing_blobs: tuple[str, ...] = ()

    @property
    def identical(self) -> bool:
        return self.recorded == self.rebuilt


def missing_blobs(runs: RunStore, record: dict[str, Any]) -> tuple[str, ...]:
    """The blobs a record names (layers, image configs, input manifests) not in ``runs``."""
    parsed = RunRecord.from_json(record, str(record.get("run_id")))
    return tuple(runs.missing_blobs(parsed))


def verify(client: DockerClient, project_root: Path, record: dict[str, Any],
           runs: RunStore | None = None) -> VerifyResult:
    if record.get("dirty"):
        raise ImageError(
            f"run {record['run_id']} was built from uncommitted changes (dirty): its code "
            f"cannot be rebuilt from a commit; see its dirty.diff in the store"
        )
    commit = record.get("git_commit")
    if not commit:
        raise ImageError(f"run {record['run_id']} records no git commit to rebuild from")
    top = Path(git_text(project_root, "rev-parse", "--show-toplevel"))
    sub = project_root.resolve().relative_to(top.resolve())
    with tempfile.TemporaryDirectory(prefix="orch-verify-") as tmp:
        worktree = Path(tmp) / "tree"
        git(top, "worktree", "add", "--detach", str(worktree), commit)
        try:
            project = load_project(worktree / sub, allow_unpinned=not record.get("pinned", True))
            env = builder.prepare(client, project)
            image = builder.run_image(
                env,
                record["run_id"],
                tuple(record.get("overrides", [])),
                record["config"],
                command=record.get("command") or project.run_command,
                deferred=record.get("deferred", ()),
                hydra=record.get("hydra"),
            )
        finally:
            git_try(top, "worktree", "remove", "--force", str(worktree))  # best effort
    layers = {
        "base": list(env.base.diff_ids),
        "env": list(env.env_diff_ids),
        "code": env.code.diff_id,
        "config": image.diff_id,
    }
    recorded_layers = record.get("layers") or {}
    first = None
    for name in ("base", "env", "code", "config"):
        if recorded_layers.get(name) != layers[name]:
            first = f"{name} layer: recorded {recorded_layers.get(name)}, rebuilt {layers[name]}"
            break
    if first is None and image.image_id != record["image_id"]:
        first = "image config (layers are identical)"
    missing = missing_blobs(runs, record) if runs is not None else ()
    return VerifyResult(record["image_id"], image.image_id, first, missing)
