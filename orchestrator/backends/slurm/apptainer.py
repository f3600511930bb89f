"""``engine: apptainer`` on SLURM nodes: the pinned run image as a SIF, and the exact
``apptainer exec`` of a run.

Apptainer cannot be installed on the machines orch is developed on (Debian 12 does not
package it), so this module goes up to the boundary: it writes the conversion's input and
the argv, and a SLURM task runs them on a node that has Apptainer (>= 1.2).

**Was run here** (``tests/test_apptainer.py``): the complete docker-archive written from a
real sweep's store blobs, loaded into a second, empty Docker daemon, which reports the
run's recorded image ID; the exact ``apptainer build`` and ``apptainer exec`` argv for a
demo-like run (inputs, GPUs, network none); the env file read back by a POSIX shell with
values holding spaces, commas, quotes, ``$`` and newlines; the SIF cache's lock (one
build per image among concurrent tasks) and sidecar with a stand-in for ``apptainer``.
**Not run here**: Apptainer itself. The flags below were checked against Apptainer's
sources (``cmd/internal/cli/action_flags.go``, ``internal/pkg/util/env``,
``internal/pkg/runtime``), not against a running Apptainer.

Conversion
    The run image is already pinned: its config JSON (whose sha256 is the image ID) and
    its layers are blobs in the store. :func:`write_archive` writes a *complete*
    docker-archive of it (``manifest.json``, the config, every layer tar: base,
    environment, code, config), through the same archive writer as every image load
    (:class:`~orchestrator.image.archive.ThinArchive`), with each layer decompressed and
    checked against its diff ID on the way, so the archive is the format ``docker save``
    writes and any reader takes. ``apptainer build --force <cache>/<hex>.sif
    docker-archive:<archive>`` (:func:`build_argv`) makes the SIF. A run recorded with a
    registry digest is built from ``docker://<registry>/<repo>@sha256:<digest>`` first
    (the digest pins the manifest, which pins the config and so the image ID); if that
    build fails, from the store's blobs. :func:`ensure_sif` keeps one SIF per image ID
    in a node-local cache, under a file lock, so the tasks of a node convert each image
    once; a sidecar ``<hex>.sif.json``, written last, marks a SIF complete.

Identity
    The record keeps the Docker image ID as the run's identity: it is what a rerun on
    Docker or Podman starts from and what ``orch image verify`` rebuilds. A SIF's own
    sha256 is *not* an identity: the SIF header carries a creation time and a random
    UUID, and squashfs stamps times, so two builds of the same image differ (Apptainer
    >= 1.5 builds reproducibly when ``SOURCE_DATE_EPOCH`` is set, which :func:`build_env`
    sets to the image's fixed creation time; not verified here). It says which file a node
    ran: :meth:`SifImage.record_fields` returns it as an extra record field
    (``{"sif": {"sha256": ..., "source": ...}}``; records keep unknown fields).

Exec (:func:`exec_invocation`), flag by flag, against ``container.create_kwargs``
    - ``--containall --cleanenv``: own PID, IPC and mount namespaces, no host environment;
      PID 1 is Apptainer's init, which forwards signals and reaps (Docker's ``--init``).
    - ``--no-mount hostfs,bind-paths``: neither the administrator's ``bind path`` entries
      nor ``mount hostfs`` (nothing of the host but the run's own directories, as with
      Docker).
    - ``--no-eval``: environment values are injected as they are, not shell-evaluated in
      the container (a ``$`` or a quote survives); ``--no-umask``: umask 0022, as Docker.
    - The image is read-only: a SIF is a squashfs, and no ``--writable`` is given.
    - ``--pwd /orch/code``: the image's working directory.
    - ``--bind host:container`` for ``/orch/output`` and ``/orch/checkpoint``,
      ``--bind host:/orch/inputs/<name>:ro`` for each input; ``--bind`` splits on ``,``
      and ``:``, so a host path holding one is refused, with the setting that moves it.
    - Environment: one ``--env-file`` of ``NAME='value'`` lines (shell-quoted; Apptainer
      evaluates the file with its embedded shell, no command runs), not ``--env``: that
      flag is parsed as CSV, so a comma, a quote or a newline in a value would not survive.
      It holds the image config's ``Env`` (minus ``PATH``, which the SIF sets from the same
      config, and ``HOME``), then the run's environment (as ``create_kwargs`` gets it,
      with ``ORCH_CHECKPOINT``). The image's variables are repeated because
      ``--cleanenv`` sets ``LANG=C`` before the SIF's own environment script runs, and that
      script keeps a value already set: the default base's ``LANG=C.UTF-8`` would be lost.
    - GPUs: ``--nv`` binds the host's driver libraries and ``/dev/nvidia*``. SLURM confines
      the task to its GPUs (cgroup ``ConstrainDevices``) and numbers them in the task's
      ``CUDA_VISIBLE_DEVICES``; ``--cleanenv`` would drop that variable, so the ids the task
      was given are written to the env file (Docker's runs get only their devices and no
      ``CUDA_VISIBLE_DEVICES``: the one variable that differs).
    - uid: Apptainer runs the container as the calling user and cannot switch to another
      uid unprivileged (``--security uid:`` is root-only in a setuid installation). On a
      cluster the task runs as the user, who owns the bind-mounted directories, so outputs
      are written and read back without a chown; the image's files are read-only either
      way, so uid 65534 is not needed for what a run can touch. A task running as root
      (as on orch's test cluster) gets ``--security uid:65534,gid:65534``: a run never
      runs as root.
    - Network: ``none`` is ``--net --network none`` (an empty network namespace, allowed
      unprivileged); ``bridge`` needs root or an administrator's ``allow net networks``,
      so a ``bridge`` run gets no ``--net``: the host's network, what a cluster user can have.
    - Writable places: the rootfs is read-only and the run's uid could write only
      ``/tmp``, ``/var/tmp`` and its bind mounts under Docker too; ``--workdir`` puts
      ``/tmp``, ``/var/tmp`` and ``$HOME`` on the node's disk under the run's work directory
      (removed with it), instead of the 64 MiB session tmpfs of ``--contain`` or
      ``--writable-tmpfs`` (which would also need overlay support). ``$HOME`` is the
      directory Apptainer picks (the caller's home path), not ``/tmp``: Apptainer refuses
      to set ``HOME`` from ``--env``/``--env-file``, and ``--home /tmp`` would bind the
      host's ``/tmp``.
    - Not passed: CPU and memory limits (SLURM's cgroup enforces ``--cpus-per-task`` and
      ``--mem``; Apptainer's own limits need root or cgroup v2 delegation) and the timeout
      (the task stops the process). :func:`process_env` is the environment to start
      ``apptainer`` with: the node's, without variables that would reach the container
      anyway (``TERM``, proxies, ``APPTAINERENV_*``) or change the container
      (``APPTAINER_BIND`` and other ``APPTAINER_*`` settings).

Why one module of this size: a fifth of it is this account, flag by flag, that the argv is
checked against; the conversion and the exec share the image config and the SIF cache.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from ..._util.files import atomic_write, atomic_writer, locked
from ..._util.ids import DIGEST, DIGEST_REF
from ...errors import BackendError, ImageError, NotFound
from ...image.archive import ThinArchive
from ...image.builder import WORKDIR
from ...image.imageconfig import ImageConfig
from ...image.transport import FETCH_WORKERS, Blobs
from ...runner.container import CHECKPOINT_DIR, OUTPUT_DIR, RUN_UID, RunDirs
from ...schema.record import RunPlan

APPTAINER = "apptainer"
#: The oldest Apptainer whose flags this argv uses (``--no-mount bind-paths``: 1.2.0).
MIN_VERSION = "1.2.0"
#: Variables the image sets that the env file leaves out: the SIF's environment script
#: sets PATH from the same image config, and Apptainer refuses to set HOME.
NOT_IN_ENV_FILE = frozenset({"PATH", "HOME"})
#: Host variables Apptainer passes into a container even with --cleanenv.
ALWAYS_PASSED = frozenset(
    {"TERM", "http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "no_proxy",
     "NO_PROXY", "all_proxy", "ALL_PROXY", "ftp_proxy", "FTP_PROXY"}
)
#: Apptainer settings from the environment that only say where its own files go.
KEPT_SETTINGS = frozenset(
    {"APPTAINER_CACHEDIR", "APPTAINER_TMPDIR", "APPTAINER_CONFIGDIR",
     "SINGULARITY_CACHEDIR", "SINGULARITY_TMPDIR", "SINGULARITY_CONFIGDIR"}
)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
_RESERVED_PREFIXES = ("APPTAINER", "SINGULARITY")


def image_hex(image_id: str) -> str:
    match = DIGEST.match(image_id)
    if match is None:
        raise ImageError(f"invalid image ID {image_id!r}: expected sha256:<64 lowercase hex>")
    return match.group(1)


def sif_path(cache: Path, image_id: str) -> Path:
    """Where a node keeps the SIF of ``image_id``: ``<cache>/<hex>.sif``."""
    return Path(cache) / f"{image_hex(image_id)}.sif"


# -- conversion ----------------------------------------------------------------------------


def archive_source(archive: Path) -> str:
    """``docker-archive:<path>``; the reader splits ``path:reference``, so no ``:``."""
    path = str(Path(archive).absolute())
    if ":" in path:
        raise ImageError(f"the docker-archive path {path} holds ':', which Apptainer "
                         f"reads as a reference: use a SIF cache directory without one")
    return f"docker-archive:{path}"


def registry_source(repo_digest: str) -> str:
    """``docker://<registry>/<repo>@sha256:<digest>`` of a recorded registry digest."""
    if DIGEST_REF.match(repo_digest) is None:
        raise ImageError(f"invalid repo digest {repo_digest!r}: expected "
                         f"<registry>/<repo>@sha256:<64 hex>")
    return f"docker://{repo_digest}"


def build_argv(sif: Path, source: str, *, no_https: bool = False) -> list[str]:
    """``apptainer build --force <sif> <source>``; ``no_https`` for a plain-HTTP registry."""
    argv = [APPTAINER, "build", "--force"]
    if no_https:
        argv.append("--no-https")
    return [*argv, str(sif), source]


def build_env(config: ImageConfig | None, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of ``apptainer build``: the node's, with ``SOURCE_DATE_EPOCH`` at the
    image's creation time (orch's is fixed), so Apptainer >= 1.5 stamps no build time."""
    env = dict(environ)
    created = config.data.get("created") if config is not None else None
    if isinstance(created, str):
        with contextlib.suppress(ValueError):
            stamp = datetime.fromisoformat(created.replace("Z", "+00:00"))
            env["SOURCE_DATE_EPOCH"] = str(int(stamp.timestamp()))
    return env


def image_config(blobs: Blobs, image_id: str) -> ImageConfig:
    """The run image's config from the store's blobs, checked against its ID."""
    try:
        config = ImageConfig(blobs.get(image_id))
    except NotFound as exc:
        raise ImageError(f"image {image_id} is not in the store's blobs: {exc}") from exc
    if config.image_id != image_id:
        raise ImageError(f"blob {image_id} in the store is corrupt (its digest differs)")
    return config


def write_archive(blobs: Blobs, image_id: str, path: Path) -> ImageConfig:
    """Write the complete docker-archive of ``image_id`` to ``path`` (atomically): its
    manifest, its config and every layer, decompressed and checked against its diff ID.

    Returns the image config. Layer tars are staged beside ``path`` (as large as the
    image) and removed when the archive is written.
    """
    config = image_config(blobs, image_id)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".orch-layers-", dir=target.parent) as tmp:
        tars = {d: Path(tmp) / f"{image_hex(d)}.tar" for d in dict.fromkeys(config.diff_ids)}
        with ThreadPoolExecutor(FETCH_WORKERS, thread_name_prefix="orch-sif") as pool:
            for done in [pool.submit(_layer_tar, blobs, d, p) for d, p in tars.items()]:
                done.result()
        archive = ThinArchive()
        for diff_id, tar in tars.items():
            archive.add_layer(diff_id, path=tar)
        archive.add_image(config)
        try:
            with atomic_writer(target) as out:
                archive.write(out)
        except OSError as exc:
            raise ImageError(f"cannot write the docker-archive {target}: {exc}") from exc
    return config


def _layer_tar(blobs: Blobs, diff_id: str, target: Path) -> None:
    """The layer's plain tar at ``target``: the blob as stored (gzip or not), decoded."""
    fetched = target.with_suffix(".blob")
    blobs.get_file(diff_id, fetched, verify=False)
    sha = hashlib.sha256()
    with fetched.open("rb") as raw:
        encoded = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        try:
            with target.open("wb") as out:
                if encoded:
                    with gzip.GzipFile(fileobj=raw) as decoded:
                        _copy(decoded, out, sha)
                else:
                    _copy(raw, out, sha)
        except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
            raise ImageError(_corrupt(diff_id, f"bad gzip data ({exc})")) from exc
    fetched.unlink()
    if "sha256:" + sha.hexdigest() != diff_id:
        raise ImageError(_corrupt(diff_id, f"it decodes to sha256:{sha.hexdigest()}"))


def _copy(source: io.BufferedIOBase, out: IO[bytes], sha: hashlib._Hash) -> None:
    while chunk := source.read(1 << 20):
        sha.update(chunk)
        out.write(chunk)


def _corrupt(diff_id: str, why: str) -> str:
    return (f"layer blob {diff_id} in the store is corrupt ({why}): delete "
            f"blobs/sha256/{image_hex(diff_id)} and rerun the sweep that made it")


@dataclass(frozen=True)
class SifImage:
    """A run image converted on this node: ``path`` ran, ``image_id`` is the identity."""

    path: Path
    image_id: str
    #: ``sha256:<hex>`` of the SIF file: which file ran, not an identity (see module doc).
    sha256: str
    #: ``docker-archive`` (the store's blobs) or the ``docker://...@sha256:`` reference.
    source: str
    #: The image config's ``Env`` (``NAME=value``); empty when the config was not at hand.
    env: tuple[str, ...] = ()

    def record_fields(self) -> dict[str, Any]:
        """What a run record may carry beside its ``image_id``, as an extra field."""
        return {"sif": {"sha256": self.sha256, "source": self.source}}

    def to_json(self) -> dict[str, Any]:
        return {"image_id": self.image_id, "sha256": self.sha256, "source": self.source,
                "env": list(self.env)}

    @classmethod
    def from_json(cls, path: Path, data: Mapping[str, Any]) -> SifImage:
        return cls(Path(path), str(data["image_id"]), str(data["sha256"]),
                   str(data["source"]), tuple(str(item) for item in data.get("env", ())))


def sidecar_path(sif: Path) -> Path:
    return sif.with_name(sif.name + ".json")


def cached_sif(cache: Path, image_id: str) -> SifImage | None:
    """The complete SIF of ``image_id`` in ``cache`` (its sidecar written), else None."""
    sif = sif_path(cache, image_id)
    try:
        data = json.loads(sidecar_path(sif).read_text())
        image = SifImage.from_json(sif, data)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return image if image.image_id == image_id and sif.is_file() else None


def sif_sha256(sif: Path) -> str:
    """``sha256:<hex>`` of a SIF file (read in chunks)."""
    with Path(sif).open("rb") as handle:
        return "sha256:" + hashlib.file_digest(handle, "sha256").hexdigest()


#: Runs one ``apptainer`` argv with an environment; raises ImageError when it fails.
Runner = Callable[[Sequence[str], Mapping[str, str]], None]


def run_apptainer(argv: Sequence[str], env: Mapping[str, str]) -> None:
    """Run ``argv`` (an ``apptainer build``); its last lines of stderr in the error."""
    if shutil.which(argv[0], path=env.get("PATH")) is None:
        raise ImageError(f"{argv[0]} is not installed on this node: engine: apptainer needs "
                         f"Apptainer >= {MIN_VERSION} on every node")
    proc = subprocess.run(list(argv), env=dict(env), capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise ImageError(f"{shlex.join(argv)} failed (exit {proc.returncode}): {tail}")


def ensure_sif(
    blobs: Blobs,
    image_id: str,
    cache: Path,
    *,
    repo_digest: str | None = None,
    no_https: bool = False,
    run: Runner = run_apptainer,
    environ: Mapping[str, str] | None = None,
) -> SifImage:
    """The SIF of ``image_id`` in the node-local ``cache``, built once per node.

    Tasks of a node take turns on a lock per image; the first builds (from
    ``repo_digest`` when given, else, or when that build fails, from a complete
    docker-archive of the store's blobs), the others find its sidecar. The cache must be
    on the node's own disk (``flock`` on a network filesystem is not to be trusted).
    """
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    hexid = image_hex(image_id)
    with locked(cache / f"{hexid}.lock"):
        done = cached_sif(cache, image_id)
        if done is not None:
            return done
        sif = sif_path(cache, image_id)
        config: ImageConfig | None
        try:
            config = image_config(blobs, image_id)
        except ImageError:
            if not repo_digest:
                raise
            config = None  # the registry has it; the env file falls back to the plan's env
        env = build_env(config, os.environ if environ is None else environ)
        source = ""
        failure: ImageError | None = None
        if repo_digest:
            reference = registry_source(repo_digest)
            try:
                run(build_argv(sif, reference, no_https=no_https), env)
                source = reference
            except ImageError as exc:
                failure = exc
        if not source:
            if config is None:
                raise failure or ImageError(f"image {image_id} is not in the store's blobs")
            archive = cache / f".{hexid}.docker-archive.tar"
            try:
                write_archive(blobs, image_id, archive)
                run(build_argv(sif, archive_source(archive)), env)
            finally:
                archive.unlink(missing_ok=True)
            source = "docker-archive"
        env_list = tuple(config.data.get("config", {}).get("Env") or ()) if config else ()
        image = SifImage(sif, image_id, sif_sha256(sif), source, env_list)
        atomic_write(sidecar_path(sif), json.dumps(image.to_json(), indent=1).encode())
        return image



# -- exec ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Invocation:
    """One run's ``apptainer exec``: call :meth:`prepare`, then run ``argv`` with
    ``process_env(os.environ)``."""

    argv: tuple[str, ...]
    #: The env file ``--env-file`` names, and what :meth:`prepare` writes into it.
    env_file: Path
    env_text: str
    #: ``--workdir``: /tmp, /var/tmp and $HOME of the run, on the node's disk.
    workdir: Path
    #: The uid:gid the run has inside (None: the calling user's).
    run_as: int | None = None

    def prepare(self) -> None:
        """Write the env file (owner-only) and make the work directory's parts."""
        atomic_write(self.env_file, self.env_text.encode())
        self.env_file.chmod(0o600)
        self.workdir.mkdir(parents=True, exist_ok=True)
        for name in ("tmp", "var_tmp"):
            part = self.workdir / name
            part.mkdir(exist_ok=True)
            part.chmod(0o1777)
        home = self.workdir / "home"
        home.mkdir(exist_ok=True)
        home.chmod(0o700)
        if self.run_as is not None:
            with contextlib.suppress(PermissionError):
                os.chown(home, self.run_as, self.run_as)


def container_env(
    plan: RunPlan,
    env: Mapping[str, str],
    *,
    image_env: Sequence[str] = (),
    gpu_ids: Sequence[str] = (),
) -> dict[str, str]:
    """What the run's process sees besides PATH and HOME: the image config's ``Env``
    (else the plan's, which is what orch added to the base's), the run's ``env`` (as
    ``create_kwargs`` gets it), ``ORCH_CHECKPOINT`` and, with GPUs, ``CUDA_VISIBLE_DEVICES``.
    """
    values: dict[str, str] = {}
    if image_env:
        for item in image_env:
            name, _, value = item.partition("=")
            values[name] = value
    else:
        values.update(plan.env)
    values.update(env)
    values["ORCH_CHECKPOINT"] = CHECKPOINT_DIR
    if gpu_ids:
        values["CUDA_VISIBLE_DEVICES"] = ",".join(gpu_ids)
    for name in NOT_IN_ENV_FILE:
        values.pop(name, None)
    for name, value in values.items():
        if _ENV_NAME.match(name) is None or name.upper().startswith(_RESERVED_PREFIXES):
            raise BackendError(f"environment variable {name!r} of run {plan.run_id} cannot "
                               f"be passed to Apptainer (names: letters, digits, '_'; "
                               f"none starting APPTAINER or SINGULARITY)")
        if "\0" in value:
            raise BackendError(f"environment variable {name} of run {plan.run_id} holds a "
                               f"NUL byte")
    return dict(sorted(values.items()))


def env_file_text(values: Mapping[str, str]) -> str:
    """``NAME='value'`` lines, shell-quoted: Apptainer evaluates the file with its embedded
    shell (command execution disabled), so every value comes back byte for byte."""
    lines = ["# orch: the run's environment, read by apptainer exec --env-file"]
    lines += [f"{name}={shlex.quote(value)}" for name, value in values.items()]
    return "\n".join(lines) + "\n"


def exec_invocation(
    plan: RunPlan,
    sif: SifImage,
    dirs: RunDirs,
    *,
    env: Mapping[str, str],
    mounts: Sequence[tuple[str, str]] = (),
    gpu_ids: Sequence[str] = (),
    uid: int | None = None,
) -> Invocation:
    """The ``apptainer exec`` of one run attempt.

    ``env`` is the run's environment as :func:`orchestrator.runner.execute.execute` passes it to
    ``create_kwargs`` (passed variables, runtime env, inputs, ``ORCH_ATTEMPT``);
    ``mounts`` its inputs, (container path, host path) pairs, read-only; ``gpu_ids`` the
    GPUs SLURM gave the task, as it numbers them; ``uid`` the caller's (default: this
    process's effective uid).
    """
    uid = os.geteuid() if uid is None else uid
    workdir = dirs.root / "apptainer"
    env_file = dirs.root / "apptainer.env"
    _plain(env_file, "the env file", ",")
    values = container_env(plan, env, image_env=sif.env, gpu_ids=gpu_ids)
    argv = [APPTAINER, "exec", "--containall", "--cleanenv", "--no-eval", "--no-umask",
            "--no-mount", "hostfs,bind-paths"]
    run_as = None
    if uid == 0:
        run_as = RUN_UID
        argv += ["--security", f"uid:{RUN_UID},gid:{RUN_UID}"]
    argv += ["--pwd", WORKDIR, "--workdir", str(workdir), "--env-file", str(env_file)]
    if plan.network == "none":
        argv += ["--net", "--network", "none"]
    if gpu_ids:
        argv.append("--nv")
    binds = [(str(dirs.output), OUTPUT_DIR, False), (str(dirs.checkpoint), CHECKPOINT_DIR, False)]
    binds += [(host, target, True) for target, host in mounts]
    for host, target, read_only in binds:
        _plain(Path(host), f"the host path of {target}", ",:")
        _plain(Path(target), "a container path", ",:")
        argv += ["--bind", f"{host}:{target}:ro" if read_only else f"{host}:{target}"]
    argv += [str(sif.path), *plan.command]
    return Invocation(tuple(argv), env_file, env_file_text(values), workdir, run_as)


def _plain(path: Path, what: str, forbidden: str) -> None:
    text = str(path)
    bad = [c for c in forbidden if c in text]
    if bad:
        raise BackendError(
            f"{what}, {text}, holds {bad[0]!r}, which Apptainer's --bind and --env-file "
            f"split on: move orch's work and cache directories (ORCH_WORK_DIR, "
            f"ORCH_CACHE) to a path without it"
        )


def process_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment to start ``apptainer`` with: ``environ`` without what would reach
    the container past ``--cleanenv`` (``TERM``, proxies, ``APPTAINERENV_*``) or change it
    (``APPTAINER_BIND``, ``APPTAINER_NV``... : only the cache/tmp/config dirs are kept)."""
    kept: dict[str, str] = {}
    for name, value in environ.items():
        if name in ALWAYS_PASSED:
            continue
        if name.startswith(_RESERVED_PREFIXES) and name not in KEPT_SETTINGS:
            continue
        kept[name] = value
    return kept
