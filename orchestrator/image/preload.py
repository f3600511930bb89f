"""Loading an environment into the daemon while it is still being built.

dockerd registers the layers of a load request only once the whole archive is in, one
after another, so an environment loaded after its build waits for all of it. Instead,
each time the build has written a longer bottom part of the environment (the
``on_ready`` of :func:`.envlayer.write_env_layers`), a background thread loads that
prefix as an image of its own: untagged, with the environment's label, so that
:func:`.archive.present_prefix` finds its layers. torch's 620 MB of libraries register
while its sources compile. :meth:`Preloader.finish` then loads the environment image
itself, sending only the layers above what was preloaded, and removes the prefix
images: the environment image holds their layers now.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from ..daemon.client import DockerClient, describe
from ..errors import ImageError
from .archive import ENV_LABEL, ThinArchive, present_prefix, tag_image
from .envlayer import EnvLayer
from .imageconfig import ImageConfig


class Preloader:
    """Loads the prefixes :meth:`offer` is given, newest first, one request at a time.

    ``config_of`` makes the image config of a list of diff IDs (the base's first);
    ``base_ids`` are the base image's layers, which the daemon has.
    """

    def __init__(
        self,
        client: DockerClient,
        config_of: Callable[[list[str]], ImageConfig],
        base_ids: Sequence[str],
    ) -> None:
        self._client = client
        self._config_of = config_of
        self._base = list(base_ids)
        self._cond = threading.Condition()
        self._offered: list[EnvLayer] = []
        self._closing = False
        self._thread: threading.Thread | None = None
        self._error: ImageError | None = None
        #: Environment layers the daemon has as one chain (known after the first load).
        self._present: int | None = None
        self._images: list[str] = []

    def offer(self, prefix: list[EnvLayer]) -> None:
        """The build has written ``prefix``, the environment's bottom layers."""
        with self._cond:
            if len(prefix) <= len(self._offered) or self._closing:
                return
            self._offered = list(prefix)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="orch-preload", daemon=True)
                self._thread.start()
            self._cond.notify()

    def finish(self, image: ImageConfig, tags: Sequence[str], layers: Sequence[EnvLayer]) -> None:
        """Load the environment ``image`` (its ``layers`` above the base) when a prefix of it
        went to the daemon already, and remove the prefix images. Without a preload the
        environment is left to the run images' archive, as it would be anyway."""
        self._stop()
        if self._error is not None:
            raise self._error
        if not self._images:
            return
        present = self._present or 0
        if present == len(layers) and image.image_id in self._images:
            # The last prefix was the whole environment: it is the image, only untagged.
            self._tag(image.image_id, tags)
            self._remove(keep=image.image_id)
            return
        archive = ThinArchive()
        for index, layer in enumerate(layers):
            if index >= present:
                archive.add_layer(layer.diff_id, path=layer.path)
        archive.add_image(image, list(tags))
        archive.load(self._client)
        self._remove(keep=image.image_id)

    def _tag(self, image_id: str, tags: Sequence[str]) -> None:
        import docker.errors

        try:
            for tag in tags:
                tag_image(self._client, image_id, tag)
        except docker.errors.APIError as exc:
            raise ImageError(f"cannot tag {image_id}: {describe(exc)}") from exc

    def discard(self) -> None:
        """The build failed: wait for the thread and remove the prefix images."""
        self._stop()
        self._remove(keep="")

    def _stop(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closing and len(self._offered) <= (self._present or 0):
                    self._cond.wait()
                if self._closing:
                    return  # what is left goes with the environment image
                prefix = self._offered
            try:
                self._load(prefix)
            except ImageError as exc:
                self._error = exc
                return

    def _load(self, prefix: list[EnvLayer]) -> None:
        config = self._config_of([*self._base, *(layer.diff_id for layer in prefix)])
        if self._present is None:
            have = present_prefix(self._client, config.diff_ids, ENV_LABEL)
            self._present = max(0, have - len(self._base))
        if self._present >= len(prefix):
            return  # another environment on this daemon stacked the same layers
        archive = ThinArchive()
        for layer in prefix[self._present :]:
            archive.add_layer(layer.diff_id, path=layer.path)
        archive.add_image(config)
        archive.load(self._client)
        self._images.append(config.image_id)
        self._present = len(prefix)

    def _remove(self, keep: str) -> None:
        import docker.errors

        for image_id in self._images:
            if image_id == keep:
                continue
            try:
                self._client.api.remove_image(image_id)
            except docker.errors.DockerException:  # noqa: S110 - a leftover prefix is harmless
                pass
        self._images = []
