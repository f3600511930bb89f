"""``orch image verify``: rebuild a run's image from its recorded inputs and compare IDs,
and check that the store holds every blob the record names.

The project is checked out at the recorded commit in a temporary git worktree, so the
rebuild goes through exactly the code path of the original build. An identical rebuild
says the recorded image can be made again here; the blobs say it can be fetched by a
node that has nothing (``orch rerun`` on an empty daemon), which is what the store is for.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .._util.git import git, git_text, git_try
from ..compose.project import load_project
from ..daemon.client import DockerClient
from ..errors import ImageError
from ..schema.record import Layers, RunRecord
from ..store import RunStore
from . import builder


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


def verify(client: DockerClient, project_root: Path, record: RunRecord,
           runs: RunStore | None = None) -> VerifyResult:
    if record.dirty:
        raise ImageError(
            f"run {record.run_id} was built from uncommitted changes (dirty): its code "
            f"cannot be rebuilt from a commit; see its dirty.diff in the store"
        )
    commit = record.git_commit
    if not commit:
        raise ImageError(f"run {record.run_id} records no git commit to rebuild from")
    top = Path(git_text(project_root, "rev-parse", "--show-toplevel"))
    sub = project_root.resolve().relative_to(top.resolve())
    with tempfile.TemporaryDirectory(prefix="orch-verify-") as tmp:
        worktree = Path(tmp) / "tree"
        git(top, "worktree", "add", "--detach", str(worktree), commit)
        try:
            project = load_project(worktree / sub, allow_unpinned=not record.pinned)
            env = builder.prepare(client, project)
            image = builder.run_image(
                env,
                record.run_id,
                record.overrides,
                record.config,
                command=record.command or project.run_command,
                deferred=record.deferred,
                hydra=record.hydra,
            )
        finally:
            git_try(top, "worktree", "remove", "--force", str(worktree))  # best effort
    rebuilt = Layers(
        base=tuple(env.base.diff_ids),
        env=tuple(env.env_diff_ids),
        code=env.code.diff_id,
        config=image.diff_id,
    )
    first = _first_difference(record.layers, rebuilt)
    if first is None and image.image_id != record.image_id:
        first = "image config (layers are identical)"
    missing = tuple(runs.missing_blobs(record)) if runs is not None else ()
    return VerifyResult(record.image_id, image.image_id, first, missing)


def _first_difference(recorded: Layers | None, rebuilt: Layers) -> str | None:
    """The first layer, bottom up, whose diff IDs differ (a record without layers
    differs at the base)."""
    for part in dataclasses.fields(Layers):
        old = None if recorded is None else getattr(recorded, part.name)
        new = getattr(rebuilt, part.name)
        if old != new:
            return f"{part.name} layer: recorded {_shown(old)}, rebuilt {_shown(new)}"
    return None


def _shown(diff_ids: tuple[str, ...] | str | None) -> list[str] | str | None:
    # As the record's JSON spells them: a list for the base and environment layers.
    return list(diff_ids) if isinstance(diff_ids, tuple) else diff_ids
