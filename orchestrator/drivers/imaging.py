"""How the launcher gets images: an :class:`ImageBuilder` (the daemon-side steps);
:class:`DockerImages` is Docker's, :class:`orchestrator.testing.FakeImages` a test's.

What an image *is* (layers, configs, IDs) is :mod:`orchestrator.image.builder`'s and
the same for both: only building the environment, loading, exporting the base layers
and pushing touch a daemon.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from .._util.stopping import Stop
from ..compose.project import Project
from ..daemon.client import DockerClient
from ..image import builder
from ..image.archive import tag_image
from ..image.builder import Environment, RunImage
from ..image.transport import base_layer_files, push_to_registry


class ImageBuilder(Protocol):
    """What the launcher needs of images beside the pure run-image recipe
    (:func:`orchestrator.image.builder.run_image`): the daemon-side steps."""

    def environment(self, project: Project, *, allow_dirty: bool, stop: Stop,
                    say: Callable[[str], None], config_files: Sequence[Path]) -> Environment:
        """The project's base, environment and code (built if it must be)."""
        ...

    def load(self, env: Environment, images: list[RunImage]) -> None:
        """Make ``images`` runnable where the runs start."""
        ...

    def name(self, images: list[RunImage]) -> None:
        """Give loaded ``images`` their names, beside the runs (nothing waits for it)."""
        ...

    def base_layers(self, env: Environment) -> Mapping[str, bytes | Path]:
        """The base image's layers (diff id -> tar), for the store."""
        ...

    def push(self, image: RunImage, registry: str, tag: str) -> str:
        """Push ``image``; its ``repository@sha256:...`` digest."""
        ...


class DockerImages:
    """The images of a Docker daemon: built by :mod:`orchestrator.image.builder`."""

    def __init__(self, client: DockerClient) -> None:
        self.client = client

    def environment(self, project: Project, *, allow_dirty: bool, stop: Stop,
                    say: Callable[[str], None], config_files: Sequence[Path]) -> Environment:
        return builder.prepare(self.client, project, allow_dirty=allow_dirty, stop=stop,
                               say=say, config_files=config_files)

    def load(self, env: Environment, images: list[RunImage]) -> None:
        builder.load_run_images(self.client, env, images)

    def name(self, images: list[RunImage]) -> None:
        """``orch/<project>:<run id>``, for ``docker images`` and ``docker run``; nothing
        of orch's needs it. Not in the load: Docker rewrites and syncs its whole list of
        names for each name it adds (10 ms per run image on a daemon of a few thousand
        images), which would delay each batch's first run."""
        import docker.errors
        import requests.exceptions

        for image in images:
            try:
                tag_image(self.client, image.image_id, image.tag)
            except docker.errors.APIError:  # removed meanwhile (``orch image prune``)
                continue
            except requests.exceptions.RequestException:
                return  # the daemon is gone: the runs say so, a name is not worth an error

    def base_layers(self, env: Environment) -> Mapping[str, bytes | Path]:
        return base_layer_files(self.client, env.base.image_id, env.base.diff_ids)

    def push(self, image: RunImage, registry: str, tag: str) -> str:
        return push_to_registry(self.client, image.image_id, registry, tag)
