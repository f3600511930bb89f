"""The one place a Docker client is made, the shape orch needs of it, and Docker's errors.

:class:`DockerClient` is a :class:`typing.Protocol` of exactly the calls orch makes on a
docker SDK client (``docker.DockerClient``), nothing more: its low-level API (``.api``),
its image and container collections, and the container objects those return. Code below
the CLI is typed against it, so mypy checks every call against one list (and, with the
SDK's stubs installed, checks the real client against the list in :func:`connect`), and a
unit test can pass a small fake instead of a daemon::

    DockerClient
      .ping()
      .api         DockerAPI       inspect_image, images, get_image, load_image, tag, push,
                                   remove_image, inspect_container, containers,
                                   remove_container
      .images      ImageCollection get, load, pull                     -> Image
      .containers  ContainerCollection create, get, run                -> Container
                   Container       id, name, labels, start, wait, kill, logs, get_archive,
                                   put_archive, remove

A new call on the client means a new member here first.

The engine behind the socket (Docker, or Podman rootful or rootless) is detected when the
client is made and is its ``engine`` (:mod:`.engine`); the few things a run needs
differently from it are applied to the raw create request here.
"""

from __future__ import annotations

import builtins
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from typing import IO, TYPE_CHECKING, Any, Literal, Protocol, overload

from ..errors import BackendError
from .engine import DOCKER, Engine, create_in_userns, default_sockets, detect

if TYPE_CHECKING:
    from docker.types import DeviceRequest, Mount


class Image(Protocol):
    """An image of :attr:`DockerClient.images` (``docker.models.images.Image``)."""

    @property
    def id(self) -> str | None: ...

    @property
    def labels(self) -> dict[str, Any]: ...

    attrs: dict[str, Any]


class Container(Protocol):
    """A container of :attr:`DockerClient.containers` (``docker.models.containers.Container``)."""

    @property
    def id(self) -> str | None: ...

    @property
    def name(self) -> str | None: ...

    @property
    def labels(self) -> dict[str, str]: ...

    @property
    def attrs(self) -> dict[str, Any]: ...

    def start(self) -> None: ...

    def stop(self, *, timeout: int | None = None) -> None: ...

    def wait(self, *, timeout: float | None = None) -> Mapping[str, Any]: ...

    def kill(self) -> None: ...

    @overload
    def logs(
        self,
        *,
        stdout: bool = True,
        stderr: bool = True,
        stream: Literal[True],
        follow: bool | None = None,
    ) -> Iterator[bytes]: ...

    @overload
    def logs(
        self,
        *,
        stdout: bool = True,
        stderr: bool = True,
        stream: Literal[False] = False,
        follow: bool | None = None,
    ) -> bytes: ...

    def get_archive(self, path: str, /) -> tuple[Iterator[bytes], dict[str, Any] | None]: ...

    def put_archive(
        self, path: str, data: bytes | IO[bytes] | Iterator[bytes | memoryview], /
    ) -> bool: ...

    def remove(self, *, force: bool = False) -> None: ...


class DockerAPI(Protocol):
    """The low-level API (``docker.APIClient``): calls that answer with plain JSON."""

    def inspect_image(self, image: str, /) -> dict[str, Any]: ...

    def images(
        self, *, quiet: bool = False, all: bool = False, filters: dict[str, Any] | None = None
    ) -> list[Any]:
        """Image summaries (dicts), or only their IDs (str) when ``quiet``."""
        ...

    def get_image(self, image: str, /) -> Iterable[bytes]:
        """``docker save`` of ``image``: a tar stream in chunks."""
        ...

    def load_image(
        self, data: bytes | IO[bytes] | Iterator[bytes | memoryview], /, quiet: bool | None = None
    ) -> Iterable[Any]:
        """``docker load`` of a whole archive, a file or a stream of chunks (sent
        chunked): the daemon's progress messages (dicts)."""
        ...

    def tag(self, image: str, repository: str, tag: str | None = None, /) -> bool: ...

    def push(
        self,
        repository: str,
        /,
        tag: str | None = None,
        *,
        stream: bool = False,
        decode: bool = False,
    ) -> Any:
        """With ``stream`` and ``decode``: the daemon's progress messages (dicts)."""
        ...

    def remove_image(self, image: str, /, force: bool = False) -> Any: ...

    def inspect_container(self, container: str, /) -> dict[str, Any]: ...

    def containers(
        self, *, all: bool = False, filters: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Container summaries (``docker ps``), not the collection's ``list``, which
        inspects each and raises NotFound for one removed in between (a run ending)."""
        ...

    def remove_container(self, container: str, /, *, force: bool = False) -> None: ...


class ImageCollection(Protocol):
    def get(self, name: str, /) -> Image: ...

    def load(self, data: bytes | IO[bytes], /) -> Sequence[Image]: ...

    def pull(self, repository: str, /) -> Image: ...


class ContainerCollection(Protocol):
    def create(
        self,
        image: str,
        command: list[str] | None = None,
        *,
        cap_drop: list[str] | None = None,
        detach: bool = False,
        device_requests: list[DeviceRequest] | None = None,
        environment: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
        mem_limit: str | int | None = None,
        memswap_limit: str | int | None = None,
        mounts: list[Mount] | None = None,
        name: str | None = None,
        nano_cpus: int | None = None,
        network_mode: str | None = None,
        privileged: bool = False,
        security_opt: list[str] | None = None,
        user: str | None = None,
    ) -> Container: ...

    def get(self, container_id: str, /) -> Container: ...

    def run(
        self,
        image: str,
        command: builtins.list[str] | None = None,  # .list shadows the builtin here
        *,
        remove: bool = False,
        network_mode: str | None = None,
    ) -> bytes:
        """Run to the end (not detached) and answer with the container's stdout."""
        ...


class DockerClient(Protocol):
    """What orch uses of a docker SDK client; see the module docstring."""

    @property
    def api(self) -> DockerAPI: ...

    @property
    def images(self) -> ImageCollection: ...

    @property
    def containers(self) -> ContainerCollection: ...

    def ping(self) -> bool: ...

    @property
    def engine(self) -> Engine:
        """Docker or Podman (rootful or rootless), detected by :func:`connect`."""
        ...


def connect(docker_host: str | None = None, timeout: int = 120) -> DockerClient:
    """A docker SDK client for ``docker_host`` (default: DOCKER_HOST, else the first of
    Docker's and Podman's sockets that exists), with its engine detected.

    Raises BackendError with how to start a daemon when none answers.
    """
    import docker
    import docker.constants
    import docker.errors

    host = docker_host or os.environ.get("DOCKER_HOST") or _default_host()
    try:
        # Declared, not cast: with the SDK's stubs (types-docker) mypy checks here that the
        # real client has every member of the protocol.
        client: DockerClient = _client_class()(
            base_url=host, timeout=timeout, version=docker.constants.DEFAULT_DOCKER_API_VERSION
        )
        # The ping's headers name the server's API version (the SDK would ask /version,
        # which Podman takes half a second to answer) and the engine: one round trip.
        api: Any = client.api
        answer = api._get(api._url("/_ping", versioned_api=False))
        api._result(answer)  # raises for an error status
        api._version = answer.headers.get("Api-Version") or api._retrieve_server_version()
        headers = answer.headers
    except (docker.errors.DockerException, OSError) as exc:
        raise BackendError(
            f"cannot reach the Docker daemon at {host}: start it (make setup, or dockerd &), "
            f"or set DOCKER_HOST (a Podman socket works too)"
        ) from exc
    made: Any = client
    made.detect_engine(
        headers, lambda: api._result(api._get(api._url("/libpod/info")), json=True)
    )
    return client


def _default_host() -> str:
    sockets = default_sockets()
    return "unix://" + next((s for s in sockets if os.path.exists(s)), sockets[0])


class _LazyAttrs(dict[str, Any]):
    """A new container's attributes, inspected only when something reads beyond its ID
    (the SDK's own ``containers.run`` reads ``HostConfig``; orch's run path never does)."""

    def __init__(self, container_id: str, inspect: Callable[[], dict[str, Any]]) -> None:
        super().__init__(Id=container_id)
        self._inspect: Callable[[], dict[str, Any]] | None = inspect

    def _load(self) -> None:
        if self._inspect is not None:
            inspect, self._inspect = self._inspect, None
            self.update(inspect())

    def __missing__(self, key: str) -> Any:
        self._load()
        return dict.__getitem__(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self._load()
        return dict.get(self, key, default)


#: The create arguments that rootless Podman on cgroup v1 drops (it has no cgroup to apply
#: them to).
_LIMITS = ("nano_cpus", "mem_limit", "memswap_limit", "pids_limit", "cpu_quota", "cpuset_cpus")
#: How often Podman looks whether a waited-for container has ended.
PODMAN_WAIT_INTERVAL = "50ms"


def _client_class() -> type[Any]:
    """``docker.DockerClient`` whose ``containers.create`` skips the SDK's inspect of the
    new container: one API call less per run, on the path every run takes. The container
    object it returns knows only its ID; orch reads a run's state with its own calls."""
    import docker
    from docker.models import containers as sdk

    class Container(sdk.Container):
        def wait(self, **kwargs: Any) -> Any:  # the SDK's keywords, its answer's shape
            client: Any = self.client
            if getattr(client, "engine", DOCKER).name != "podman":
                return super().wait(**kwargs)
            # Podman's Docker-compatible wait polls the container every quarter second;
            # its own endpoint takes an interval: the end of a run is seen sooner.
            api = client.api
            answer = api._post(
                api._url("/libpod/containers/{0}/wait", self.id),
                params={"condition": ["stopped", "exited"], "interval": PODMAN_WAIT_INTERVAL},
                timeout=kwargs.get("timeout"),
            )
            return {"StatusCode": int(api._result(answer, json=True))}

    class Containers(sdk.ContainerCollection):
        model = Container

        # The stubs type create() as Collection.create(attrs); the SDK's own takes these.
        def create(  # type: ignore[override]
            self, image: str, command: Any = None, **kwargs: Any
        ) -> Any:
            engine: Engine = getattr(self.client, "engine", DOCKER)
            if engine.ignores_limits and any(kwargs.get(k) for k in _LIMITS):
                self.client.warn_ignored_limits()
            userns = engine.userns_mode(kwargs.get("user"))
            kwargs.update(image=image, command=command, version=self.client.api.api_version)
            args = sdk._create_container_args(kwargs)  # type: ignore[attr-defined]  # not stubbed
            if userns:  # the SDK accepts only "host" as a user namespace mode
                args["host_config"]["UsernsMode"] = userns
                made = create_in_userns(self.client.api, args)
            else:
                made = self.client.api.create_container(**args)
            api, made_id = self.client.api, made["Id"]
            return self.prepare_model(_LazyAttrs(made_id, lambda: api.inspect_container(made_id)))

    class Client(docker.DockerClient):
        _engine: Future[Engine] | None = None
        _warned = False

        @property
        def containers(self) -> Containers:
            return Containers(client=self)

        @property
        def engine(self) -> Engine:
            return DOCKER if self._engine is None else self._engine.result()

        def detect_engine(
            self, headers: Mapping[str, str], libpod_info: Callable[[], Mapping[str, Any]]
        ) -> None:
            """Docker is known from the ping; Podman's ``/libpod/info`` (half a second) is
            asked in the background, since only a container's creation needs its answer."""
            future: Future[Engine] = Future()
            self._engine = future
            if not headers.get("Libpod-Api-Version"):
                future.set_result(detect(headers, libpod_info))
                return

            def ask() -> None:
                try:
                    future.set_result(detect(headers, libpod_info))
                except BaseException as exc:  # noqa: BLE001 - re-raised where .engine is read
                    future.set_exception(exc)

            threading.Thread(target=ask, name="orch-engine", daemon=True).start()

        def warn_ignored_limits(self) -> None:
            # Once per client (one command), not once per run.
            if not self._warned:
                self._warned = True
                self.engine.warn_ignored_limits()

    return Client


def describe(exc: Exception) -> str:
    """One line out of a docker SDK exception."""
    explanation = getattr(exc, "explanation", None)
    text = str(explanation or exc)
    return " ".join(text.split())


def remove_containers(client: DockerClient, labels: Mapping[str, str]) -> None:
    """Remove every container carrying all of ``labels``, running or not. Best effort: a
    daemon that does not answer leaves them for the next caller; one already gone is
    what was wanted."""
    import docker.errors

    try:
        found = client.api.containers(
            all=True, filters={"label": [f"{k}={v}" for k, v in labels.items()]}
        )
    except docker.errors.DockerException:
        return
    for container in found:
        try:
            client.api.remove_container(container["Id"], force=True)
        except docker.errors.DockerException:
            continue
