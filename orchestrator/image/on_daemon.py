"""The run images orch leaves on a Docker daemon: listing them and pruning unused ones.

Every image orch builds carries the label ``org.orch.project`` (run images also
``org.orch.run_id``), so one project's images are told apart from another's on a shared
daemon, and nothing orch did not build is ever touched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..daemon.client import DockerClient, describe
from ..errors import ImageError
from ..store import RunStore
from .archive import ENV_LABEL

PROJECT_LABEL = "org.orch.project"
RUN_LABEL = "org.orch.run_id"


@dataclass(frozen=True)
class DaemonImage:
    image_id: str
    tags: tuple[str, ...]
    size: int
    project: str | None
    run_id: str | None

    @classmethod
    def from_api(cls, item: Mapping[str, Any]) -> DaemonImage:
        labels = item.get("Labels") or {}
        tags = tuple(t for t in item.get("RepoTags") or () if t != "<none>:<none>")
        return cls(
            image_id=str(item["Id"]),
            tags=tags,
            size=int(item.get("Size") or 0),
            project=labels.get(PROJECT_LABEL),
            run_id=labels.get(RUN_LABEL),
        )


def list_images(client: DockerClient, project: str | None = None) -> list[DaemonImage]:
    """orch's images on the daemon: of ``project``, or of every project when None."""
    label = PROJECT_LABEL if project is None else f"{PROJECT_LABEL}={project}"
    images = [DaemonImage.from_api(item) for item in client.api.images(filters={"label": label})]
    return sorted(images, key=lambda image: (image.tags[:1] or ("",))[0])


@dataclass(frozen=True)
class PrunePlan:
    remove: tuple[DaemonImage, ...]
    referenced: frozenset[str]
    #: Images not removed although no record references them, each with why.
    spared: Mapping[str, str]


def prune_plan(
    client: DockerClient, runs: RunStore, lease_s: float, *, foreign: bool = False
) -> PrunePlan:
    """Run images of the store's projects that no stored run references and no run needs.

    Spared: images a container uses; images of runs of a sweep still going (one of its
    runs holds a live claim: its queued runs' images are loaded before they start); and,
    unless ``foreign``, images of runs this store does not know (another store's runs of
    the same project). Other projects' images are never touched. Also removed: the
    prefix images a killed environment build left (see :func:`_leftover_prefixes`).
    """
    keep: set[str] = set()
    projects: set[str] = set()
    live_sweep_runs: set[str] = set()
    known_runs: set[str] = set()
    for sweep in runs.list_sweeps():
        projects.add(sweep.project)
        known_runs.update(sweep.run_ids)
        records = runs.read_runs(sweep.run_ids, sweep_id=sweep.sweep_id)
        keep.update(record.image_id for record in records if record is not None)
        unfinished = [rid for rid, rec in zip(sweep.run_ids, records, strict=True) if rec is None]
        if any(runs.claims.is_live(run_id, lease_s) for run_id in unfinished):
            live_sweep_runs.update(unfinished)
    in_use = {str(c.get("ImageID", "")) for c in client.api.containers(all=True)}
    remove: list[DaemonImage] = []
    spared: dict[str, str] = {}
    for image in map(DaemonImage.from_api, client.api.images(filters={"label": RUN_LABEL})):
        if image.image_id in keep or image.project not in projects:
            continue
        if image.image_id in in_use:
            spared[image.image_id] = "a container uses it"
        elif image.run_id in live_sweep_runs:
            spared[image.image_id] = "its sweep is running"
        elif image.run_id not in known_runs and not foreign:
            spared[image.image_id] = "a run this store does not know (--foreign removes it)"
        else:
            remove.append(image)
    remove.extend(_leftover_prefixes(client, projects))
    return PrunePlan(remove=tuple(remove), referenced=frozenset(keep), spared=spared)


def _leftover_prefixes(client: DockerClient, projects: set[str]) -> list[DaemonImage]:
    """Untagged environment images of ``projects`` whose layers another image of the
    project has at its bottom.

    An environment build loads its bottom layers as images of their own while it goes on
    (:mod:`.preload`) and removes them at its end; a build that was killed leaves
    them. Removing one frees only its record: its layers stay with the longer image. A
    prefix no other image covers is spared: a build still going may need it.
    """
    import docker.errors

    kind_key, kind = ENV_LABEL.split("=")
    items = client.api.images(all=True, filters={"label": PROJECT_LABEL})
    images = [DaemonImage.from_api(item) for item in items]
    candidates = [
        image
        for image, item in zip(images, items, strict=True)
        if (item.get("Labels") or {}).get(kind_key) == kind
        and not image.tags
        and image.project in projects
    ]
    if not candidates:
        return []

    def layers(image_id: str) -> tuple[str, ...]:
        try:
            return tuple(client.api.inspect_image(image_id)["RootFS"]["Layers"])
        except docker.errors.APIError:
            return ()  # gone meanwhile: covers nothing

    wanted = {image.project for image in candidates}
    chains = {image.image_id: layers(image.image_id) for image in images if image.project in wanted}
    projects_of = {image.image_id: image.project for image in images}
    leftovers = []
    for image in candidates:
        mine = chains[image.image_id]
        if mine and any(
            image_id != image.image_id and projects_of[image_id] == image.project
            and chain[: len(mine)] == mine
            for image_id, chain in chains.items()
        ):
            leftovers.append(image)
    return leftovers


def remove_image(client: DockerClient, image_id: str) -> None:
    import docker.errors

    try:
        client.api.remove_image(image_id)  # never forced: an image in use stays
    except docker.errors.NotFound:
        pass  # gone already: what prune wanted
    except docker.errors.APIError as exc:
        raise ImageError(f"cannot remove image {image_id}: {describe(exc)}") from exc
