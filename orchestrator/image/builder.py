"""From a project and its composed configs to loaded run images.

Layers: base (pinned) -> environment (one layer per locked wheel, bytecode compiled,
keyed by wheel + interpreter: :mod:`.envlayer`) -> code (git tree) -> config
(/orch/config.yaml and .json). Every layer is a deterministic tar
written here and every image config is canonical JSON, so each image ID is computed
before anything reaches the daemon; a whole sweep then loads in one thin archive.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._util.canonical import digest
from .._util.files import atomic_write
from .._util.stopping import Stop
from ..compose import configio as configmod
from ..compose import hydra_app
from ..compose.project import Project
from ..daemon.client import DockerClient
from ..errors import ImageError
from . import cache, envlayer
from .archive import ENV_LABEL, ThinArchive, has_image, present_prefix
from .code import CodeSnapshot, snapshot
from .envlayer import EnvLayer
from .imageconfig import ImageConfig, make_config, merge_env
from .preload import Preloader
from .tarball import Entry, layer_bytes

RUN_USER = "65534:65534"
WORKDIR = "/orch/code"
CONFIG_PATH = "/orch/config.yaml"
OUTPUT_DIR = "/orch/output"
#: Bumped whenever the environment layers' layout changes, so old caches are not reused.
ENV_FORMAT = 2
#: Layers per image that Docker's overlay2 driver allows.
DOCKER_MAX_LAYERS = 127


@dataclass(frozen=True)
class BaseInfo:
    ref: str
    image_id: str
    diff_ids: tuple[str, ...]
    env: tuple[str, ...]
    architecture: str
    os_name: str


@dataclass(frozen=True)
class ImageSettings:
    """What every image config of a project shares: base, environment, PATH prefix."""

    base: BaseInfo
    env: dict[str, str]
    path_prefix: str

    def config(
        self, diff_ids: list[str], extra_env: dict[str, str], cmd: list[str], labels: dict[str, str]
    ) -> ImageConfig:
        return make_config(
            architecture=self.base.architecture,
            os_name=self.base.os_name,
            diff_ids=diff_ids,
            env=merge_env(list(self.base.env), {**self.env, **extra_env}, self.path_prefix),
            cmd=cmd,
            working_dir=WORKDIR,
            user=RUN_USER,
            labels=labels,
        )


@dataclass(frozen=True)
class Environment:
    """Everything shared by the runs of one sweep."""

    project: Project
    settings: ImageSettings
    env_key: str
    env_layers: tuple[EnvLayer, ...]
    code: CodeSnapshot
    env_image: ImageConfig
    code_image: ImageConfig

    @property
    def base(self) -> BaseInfo:
        return self.settings.base

    @property
    def image_env(self) -> dict[str, str]:
        return self.settings.env

    @property
    def code_key(self) -> str:
        return self.code.diff_id

    @property
    def env_diff_ids(self) -> tuple[str, ...]:
        """The environment's layers, bottom first (none for an empty lock)."""
        return tuple(layer.diff_id for layer in self.env_layers)

    def tag(self, kind: str, key: str) -> str:
        suffix = "" if kind == "run" else f"-{kind}"
        return f"orch/{self.project.name}{suffix}:{key.split(':')[-1][:12]}"


@dataclass(frozen=True)
class RunImage:
    run_id: str
    config: ImageConfig
    layer: bytes
    diff_id: str
    tag: str

    @property
    def image_id(self) -> str:
        return self.config.image_id


def resolve_base(client: DockerClient, ref: str) -> BaseInfo:
    """Inspect the pinned base image, pulling ``name@sha256:...`` when absent."""
    import docker.errors

    try:
        attrs = client.api.inspect_image(ref)
    except docker.errors.ImageNotFound:
        if "@sha256:" not in ref:
            raise ImageError(
                f"base image {ref} is not on this Docker daemon: build it (make base-image) "
                f"or load it (docker load)"
            ) from None
        try:
            client.images.pull(ref)
            attrs = client.api.inspect_image(ref)
        except docker.errors.APIError as exc:
            raise ImageError(f"cannot pull base image {ref}: {exc.explanation or exc}") from exc
    except docker.errors.APIError as exc:
        raise ImageError(f"cannot inspect base image {ref}: {exc.explanation or exc}") from exc
    config = attrs.get("Config") or {}
    return BaseInfo(
        ref=ref,
        image_id=attrs["Id"],
        diff_ids=tuple(attrs["RootFS"]["Layers"]),
        env=tuple(config.get("Env") or ()),
        architecture=attrs.get("Architecture", "amd64"),
        os_name=attrs.get("Os", "linux"),
    )


def _environment_layers(
    client: DockerClient,
    project: Project,
    base: BaseInfo,
    cache_root: Path,
    on_ready: envlayer.OnReady,
    stop: Stop,
    say: Callable[[str], None],
) -> tuple[str, tuple[EnvLayer, ...]]:
    """Read and check the lock, fetch its wheels, write (or reuse) their layers."""
    from . import closure, interpreter, wheels
    from .sdist import SdistBuilder

    def key(lock_digest: str) -> str:
        return digest({"base": base.image_id, "lock": lock_digest, "format": ENV_FORMAT})

    if not project.requirements:
        return key(wheels.lock_digest([])), ()
    python = interpreter.probe(client, base.image_id, cache_root)
    lock = wheels.read_lock(project.requirements, python.version)
    env_key = key(lock.digest)
    if not lock.requirements:
        return env_key, ()
    wheel_files = wheels.ensure_wheels(
        lock.requirements,
        cache.wheels(cache_root),
        python.version,
        pip_options=lock.pip_options,
        stop=stop,
        say=say,
        sdists=SdistBuilder(client, base.image_id),
    )
    # Reading every wheel's metadata takes seconds for a torch lock: once per lock.
    checked = cache.root(cache_root) / "checked" / env_key.removeprefix("sha256:")
    if not checked.is_file():
        closure.check_closure(
            lock.requirements, wheel_files, python.version, wheels.DEFAULT_PLATFORM, lock.path
        )
        atomic_write(checked, b"complete\n")
    layers = envlayer.write_env_layers(
        client,
        base.image_id,
        python,
        wheel_files,
        cache_root,
        on_ready=on_ready,
        stop=stop,
        say=say,
    )
    if len(base.diff_ids) + len(layers) + 2 > DOCKER_MAX_LAYERS:
        raise ImageError(
            f"{project.requirements.name} needs {len(layers)} environment layers on "
            f"{len(base.diff_ids)} base layers, over Docker's {DOCKER_MAX_LAYERS}: "
            f"use a base image with fewer layers"
        )
    return env_key, tuple(layers)


def prepare(
    client: DockerClient,
    project: Project,
    *,
    allow_dirty: bool = False,
    cache_root: Path | None = None,
    stop: Stop | None = None,
    say: Callable[[str], None] | None = None,
    config_files: Sequence[Path] = (),
) -> Environment:
    """Resolve the base, build (or reuse) the environment layers, snapshot the code
    (``config_files``: what the runs' composition read, see :func:`.code.snapshot`).

    ``cache_root`` is where wheels and layers are kept (see :mod:`.cache`). An
    environment built here goes to the daemon as it is built (see :mod:`.preload`).
    ``say`` is told what a build downloads and builds; a cancelled ``stop`` ends the
    build with :class:`~orchestrator.errors.Interrupted`, the layers it finished cached.
    """
    from .envlayer import env_image_settings

    stop = stop or Stop()
    say = say or (lambda line: None)

    base = resolve_base(client, project.base_image)
    image_env = env_image_settings()
    image_env.update({"HOME": "/tmp", "ORCH_CONFIG": CONFIG_PATH, "ORCH_OUTPUT": OUTPUT_DIR})
    image_env.update(dict(project.env))
    settings = ImageSettings(base, image_env, "")
    labels = {"org.orch.project": project.name}
    env_labels = {**labels, ENV_LABEL.split("=")[0]: ENV_LABEL.split("=")[1]}
    preload = Preloader(
        client, lambda ids: settings.config(ids, {}, ["python3"], env_labels), base.diff_ids
    )
    with stop.doing("the environment build"):
        try:
            env_key, env_layers = _environment_layers(
                client, project, base, cache.root(cache_root), preload.offer, stop, say
            )
            code = snapshot(
                project.root, project.exclude, allow_dirty=allow_dirty,
                inputs=project.inputs_inside, config_files=config_files, code=project.code,
            )
            env_ids = [*base.diff_ids, *(layer.diff_id for layer in env_layers)]
            env = Environment(
                project,
                settings,
                env_key,
                env_layers,
                code,
                env_image=settings.config(env_ids, {}, ["python3"], env_labels),
                code_image=settings.config(
                    [*env_ids, code.diff_id], {}, list(project.command), labels
                ),
            )
            preload.finish(env.env_image, [env.tag("env", env.env_key)], env.env_layers)
        except BaseException:
            preload.discard()
            raise
    return env


def config_layer(files: Sequence[tuple[str, bytes]]) -> tuple[bytes, str]:
    """The run's own layer: ``files`` ((absolute path, bytes), under /orch) and the
    writable output directory."""
    entries: list[Entry] = []
    for path, data in files:
        parent = path.rsplit("/", 1)[0].lstrip("/")
        if parent != "orch" and not any(e.path == parent for e in entries):
            entries.append(Entry(parent, "dir", mode=0o755))
        entries.append(Entry(path.lstrip("/"), data=data))
    entries.append(Entry("orch/output", "dir", mode=0o1777))
    return layer_bytes(entries)


def run_image(
    env: Environment,
    run_id: str,
    overrides: tuple[str, ...],
    config: dict[str, Any],
    *,
    command: Sequence[str],
    deferred: Sequence[str] = (),
    hydra: dict[str, Any] | None = None,
) -> RunImage:
    """The image of one run: the code image, plus its config (/orch/config.yaml and
    .json) and, for a Hydra application, the config Hydra loads (orchestrator.compose.hydra_app)."""
    files = [
        ("/orch/config.yaml", configmod.to_yaml(config, deferred=deferred).encode()),
        ("/orch/config.json", configmod.to_json(config).encode()),
    ]
    if hydra is not None:
        files += hydra_app.baked_files(config, hydra, env.project.config_name, deferred)
    extra_env = run_image_env(env, run_id, hydra is not None)
    layer, diff_id = config_layer(files)
    labels = {
        "org.orch.project": env.project.name,
        "org.orch.run_id": run_id,
        "org.orch.overrides": json.dumps(list(overrides)),
    }
    image = env.settings.config(
        [*env.code_image.diff_ids, diff_id], extra_env, list(command), labels
    )
    return RunImage(run_id, image, layer, diff_id, env.tag("run", run_id))


def run_image_env(env: Environment, run_id: str, hydra: bool) -> dict[str, str]:
    """What a run's image config adds to the project's environment variables."""
    extra = {"ORCH_RUN_ID": run_id}
    if hydra:
        extra.update(hydra_app.image_env(dict(_env_pairs(env.base.env)), env.image_env))
    return extra


def _env_pairs(items: Sequence[str]) -> Iterator[tuple[str, str]]:
    for item in items:
        name, _, value = item.partition("=")
        yield name, value


def thin_archive(client: DockerClient, env: Environment, images: list[RunImage]) -> ThinArchive:
    """An archive with the run images and exactly the layers the daemon lacks.

    The environment and code images are in it only when the daemon lacks the code
    image: re-sending configs the daemon has costs it a tag write each, per load.
    """
    archive = ThinArchive()
    if not has_image(client, env.code_image.image_id):
        archive.add_layer(env.code.diff_id, data=env.code.layer)
        if not has_image(client, env.env_image.image_id):
            if not has_image(client, env.base.image_id):
                raise ImageError(f"base image {env.base.ref} disappeared from the daemon")
            # Layers another environment on this daemon already stacked on the same base
            # (same chain) are not sent again: a one-package change sends that package.
            have = present_prefix(client, env.env_image.diff_ids, ENV_LABEL)
            for index, layer in enumerate(env.env_layers, start=len(env.base.diff_ids)):
                if index >= have:
                    archive.add_layer(layer.diff_id, path=layer.path)
        archive.add_image(env.env_image, [env.tag("env", env.env_key)])
        archive.add_image(env.code_image, [env.tag("code", env.code_key)])
    for image in images:
        archive.add_layer(image.diff_id, data=image.layer)
        archive.add_image(image.config)  # named after: DockerImages.name
    return archive


#: A batch of at least this many run images goes to the daemon as two concurrent loads:
#: dockerd registers the layers of one request one after another, but two requests side
#: by side (measured: ``bench/run.py --only config_image``, the floor loaded both ways).
SPLIT_LOAD_AT = 4


def load_run_images(client: DockerClient, env: Environment, images: list[RunImage]) -> None:
    """Load ``images`` (and whatever of their environment and code the daemon lacks)."""
    archive = thin_archive(client, env, images)
    if len(images) < SPLIT_LOAD_AT or len(archive.images) != len(images):
        archive.load(client)  # small, or it carries the prefix the run images need
        return
    from concurrent.futures import ThreadPoolExecutor

    half = len(images) // 2
    parts = [thin_archive_of(images[:half]), thin_archive_of(images[half:])]
    with ThreadPoolExecutor(2, thread_name_prefix="orch-load") as pool:
        for done in [pool.submit(part.load, client) for part in parts]:
            done.result()


def thin_archive_of(images: list[RunImage]) -> ThinArchive:
    """Run images alone, for a daemon that has their code image."""
    archive = ThinArchive()
    for image in images:
        archive.add_layer(image.diff_id, data=image.layer)
        archive.add_image(image.config)  # named after: DockerImages.name
    return archive

