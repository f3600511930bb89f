"""Reading and validating a project's ``orch.yaml``.

Why one module of this size: every key of ``orch.yaml`` is read here, with one error shape
(the file, the key, what to write); ``resources:`` and ``slurm:`` are parsed beside the
rest because a user edits them in the same file and reads their errors the same way.
"""

from __future__ import annotations

import glob
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .._util.ids import DIGEST_REF as DIGEST_REF
from .._util.ids import IMAGE_ID as IMAGE_ID
from ..errors import ProjectError
from ..inputs.decl import InputDecl, parse_inputs
from ..schema.record import TMP_SIZE
from .hydra_app import command_args as hydra_app_args
from .hydra_app import detect as detect_hydra_app

PROJECT_FILE = "orch.yaml"
_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*\Z")
log = logging.getLogger("orchestrator.compose.project")
#: Names that usually hold credentials (AWS_SECRET_ACCESS_KEY, HF_TOKEN, DB_PASSWORD, ...).
_SECRET = re.compile(r"(SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|API_?KEY|PRIVATE_KEY)", re.I)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
_KNOWN = {
    "name",
    "base_image",
    "config_dir",
    "config_name",
    "command",
    "requirements",
    "resources",
    "network",
    "exclude",
    "code",
    "timeout",
    "env",
    "pass_env",
    "inputs",
    "hydra_app",
    "overrides",
    "slurm",
}
_RESOURCE_KEYS = {"cpus", "gpus", "memory", "pids", "tmp"}


@dataclass(frozen=True)
class Resources:
    """What one run asks for. ``memory`` is a Docker size string such as ``"512m"``."""

    cpus: float = 1.0
    gpus: int = 0
    memory: str | None = None
    #: Processes and threads at once; None: orch's default (``container.PIDS_LIMIT``).
    pids: int | None = None
    #: Size of the /tmp and /var/tmp tmpfs; None: orch's default (``container.TMP_SIZE``).
    tmp: str | None = None


#: A SLURM name or time (partition, account, QoS, ``1-02:00:00``): one sbatch word.
_SLURM_WORD = re.compile(r"^[A-Za-z0-9_.,:@+=/%-]+\Z")
_SLURM_KEYS = {"partition", "account", "time", "qos", "sbatch", "gpu_request", "python",
               "log_dir", "engine"}


@dataclass(frozen=True)
class SlurmOptions:
    """``slurm:`` in orch.yaml (and ``orch sweep``'s options over it): how runs become
    tasks of SLURM job arrays (``--backend slurm``)."""

    partition: str | None = None
    account: str | None = None
    #: The time limit of each task, in sbatch's forms (``30``, ``2:00:00``, ``1-00:00:00``).
    time: str | None = None
    qos: str | None = None
    #: More sbatch options, each as sbatch takes it (``--constraint=a100``).
    sbatch: tuple[str, ...] = ()
    #: ``gres``: ``--gres=gpu:N`` (every SLURM version); ``gpus``: ``--gpus-per-task=N``.
    gpu_request: str = "gres"
    #: The Python with orch installed on the nodes (default: the submitter's own, which
    #: a venv on a shared filesystem makes the same path everywhere).
    python: str | None = None
    #: Where sbatch writes each task's own output (default: under the submitter's cache).
    log_dir: str | None = None
    #: What runs a task's container on its node: ``docker`` (Docker or Podman through
    #: ``DOCKER_HOST``) or ``apptainer``.
    engine: str = "docker"


def _section(value: Any, where: str, name: str, keys: set[str], like: str) -> None:
    """A section of orch.yaml is a mapping of known keys; otherwise one error naming it."""
    if not isinstance(value, dict):
        raise ProjectError(f"{where}: {name}: must be a mapping like {{{like}}}")
    unknown = sorted(set(map(str, value)) - keys)
    if unknown:
        raise ProjectError(
            f"{where}: {name}.{unknown[0]}: unknown (valid: {', '.join(sorted(keys))})"
        )


def parse_slurm(value: Any, where: str) -> SlurmOptions:
    if value is None:
        return SlurmOptions()
    _section(value, where, "slurm", _SLURM_KEYS, "partition: gpu")
    words: dict[str, str | None] = {}
    for key in ("partition", "account", "time", "qos"):
        item = value.get(key)
        if item is not None:
            item = str(item) if isinstance(item, (str, int)) and not isinstance(item, bool) else ""
            if not _SLURM_WORD.match(item):
                raise ProjectError(f"{where}: slurm.{key}: {value.get(key)!r} is not a SLURM "
                                   "name or time (letters, digits, _.,:@+=/%-)")
        words[key] = item
    extra = value.get("sbatch", [])
    if isinstance(extra, str):
        extra = [extra]
    if not isinstance(extra, list) or not all(
        isinstance(opt, str) and opt.startswith("-") and "\n" not in opt and "\r" not in opt
        for opt in extra
    ):
        raise ProjectError(f"{where}: slurm.sbatch: must be a list of sbatch options, e.g. "
                           "['--constraint=a100'] (one line each)")
    choices = {"gpu_request": ("gres", "gpus"), "engine": ("docker", "apptainer")}
    chosen = {}
    for key, allowed in choices.items():
        item = value.get(key, allowed[0])
        if item not in allowed:
            raise ProjectError(f"{where}: slurm.{key}: {item!r} must be "
                               + " or ".join(repr(a) for a in allowed))
        chosen[key] = str(item)
    paths = {}
    for key in ("python", "log_dir"):
        item = value.get(key)
        if item is not None and (not isinstance(item, str) or not item or "\n" in item):
            raise ProjectError(f"{where}: slurm.{key}: must be a path")
        paths[key] = item
    return SlurmOptions(
        partition=words.get("partition"), account=words.get("account"),
        time=words.get("time"), qos=words.get("qos"), sbatch=tuple(extra),
        gpu_request=chosen["gpu_request"], python=paths["python"], log_dir=paths["log_dir"],
        engine=chosen["engine"],
    )


@dataclass(frozen=True)
class Project:
    root: Path
    name: str
    base_image: str
    command: tuple[str, ...]
    config_dir: Path
    config_name: str = "config"
    requirements: Path | None = None
    resources: Resources = field(default_factory=Resources)
    network: str = "none"
    exclude: tuple[str, ...] = ()
    #: What makes the code layer (``code:``, paths or globs); empty: every tracked file.
    code: tuple[str, ...] = ()
    timeout: float | None = None
    env: tuple[tuple[str, str], ...] = ()
    #: Names of variables passed to every run from the environment of whoever runs it
    #: (the submitter, a Ray node), at run time only: never baked, never recorded.
    pass_env: tuple[str, ...] = ()
    #: Data inputs (``inputs:``), mounted read-only at /orch/inputs/<name>.
    inputs: tuple[InputDecl, ...] = ()
    #: The command starts a ``@hydra.main`` application (``hydra_app:`` or detected; see
    #: orchestrator.compose.hydra_app), and how orch knows: the script, or "orch.yaml".
    hydra_app: str | None = None
    #: Overrides every point starts with (``overrides:``), before the command line's.
    overrides: tuple[str, ...] = ()
    #: ``slurm:``, for ``--backend slurm``.
    slurm: SlurmOptions = field(default_factory=SlurmOptions)

    @property
    def run_command(self) -> tuple[str, ...]:
        """The command a run's container starts: a Hydra application gets the arguments
        that make it load the config orch composed."""
        if self.hydra_app is None:
            return self.command
        return (*self.command, *hydra_app_args(self.config_name))

    @property
    def pinned(self) -> bool:
        return is_pinned(self.base_image)

    @property
    def inputs_inside(self) -> tuple[str, ...]:
        """The local inputs inside the project, as exclude patterns: data is pinned by content
        and mounted, never baked into the code layer too (nor a reason to call a tree dirty)."""
        root = self.root.resolve()
        inside = []
        for decl in self.inputs:
            if decl.is_s3:
                continue
            try:
                rel = decl.local_path(self.root).resolve().relative_to(root)
            except ValueError:
                continue  # outside the project: never part of the code layer anyway
            if rel.parts:
                inside.append(glob.escape(rel.as_posix()))
        return tuple(inside)


def is_pinned(ref: str) -> bool:
    """An image ID or a ``name@sha256:...`` reference: both name exact content."""
    return bool(IMAGE_ID.match(ref) or DIGEST_REF.match(ref))


def find_project(start: Path) -> Path:
    """The directory holding orch.yaml: ``start`` or its nearest parent."""
    start = start.resolve()
    for directory in (start, *start.parents):
        if (directory / PROJECT_FILE).is_file():
            return directory
    raise ProjectError(
        f"no {PROJECT_FILE} in {start} or its parents: run orch inside a project or pass -p DIR"
    )


def _fail(path: Path, key: str, message: str) -> ProjectError:
    return ProjectError(f"{path}: {key}: {message}")


def load_project(directory: Path, *, allow_unpinned: bool = False) -> Project:
    """Load and validate ``directory/orch.yaml``."""
    root = directory.resolve()
    path = root / PROJECT_FILE
    if not path.is_file():
        raise ProjectError(f"{path} not found: create it (see README, 'Experiment project')")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, OSError) as exc:
        raise ProjectError(f"{path}: cannot read it as UTF-8 text ({exc})") from exc
    except RecursionError as exc:  # PyYAML composes nested nodes recursively
        raise ProjectError(f"{path}: invalid YAML: nested too deeply") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ProjectError(f"{path}{where}: invalid YAML: {problem}") from exc
    if not isinstance(data, dict):
        raise ProjectError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    unknown = sorted(set(map(str, data)) - _KNOWN)
    if unknown:
        raise _fail(path, unknown[0], f"unknown key (valid keys: {', '.join(sorted(_KNOWN))})")

    name = data.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise _fail(path, "name", f"{name!r} must match [a-z0-9-]+ (e.g. 'my-experiment')")

    base = data.get("base_image")
    if not isinstance(base, str) or not base:
        raise _fail(
            path, "base_image", "required: an image ID (sha256:...) or name@sha256:<digest>"
        )
    if not is_pinned(base) and not allow_unpinned:
        raise _fail(
            path,
            "base_image",
            f"{base!r} is not pinned: use its image ID (docker inspect --format '{{{{.Id}}}}' "
            f"{base}) or name@sha256:<digest>, or pass --allow-unpinned",
        )

    command = data.get("command")
    if (
        isinstance(command, str)
        or not isinstance(command, list)
        or not command
        or not all(isinstance(part, str) for part in command)
    ):
        raise _fail(
            path, "command", 'must be a non-empty list of strings, e.g. ["python3", "train.py"]'
        )

    config_dir = data.get("config_dir", "configs")
    config_name = data.get("config_name", "config")
    for key, value in (("config_dir", config_dir), ("config_name", config_name)):
        if not isinstance(value, str) or not value:
            raise _fail(path, key, "must be a non-empty string")
    config_path = _inside(root, config_dir, path, "config_dir")

    requirements = data.get("requirements")
    req_path: Path | None = None
    if requirements is not None:
        if not isinstance(requirements, str):
            raise _fail(path, "requirements", "must be a path to a pip lock file")
        req_path = _inside(root, requirements, path, "requirements")
        if not req_path.is_file():
            raise _fail(path, "requirements", f"{requirements} does not exist")

    network = data.get("network", "none")
    if network not in ("none", "bridge"):
        raise _fail(path, "network", f"{network!r} must be 'none' (default) or 'bridge'")

    exclude = data.get("exclude", [])
    if not isinstance(exclude, list) or not all(isinstance(item, str) for item in exclude):
        raise _fail(path, "exclude", "must be a list of glob patterns")
    code = data.get("code", [])
    if not isinstance(code, list) or not all(
        isinstance(item, str) and item.strip("/") and not item.startswith("/")
        and ".." not in item.split("/") for item in code
    ):
        raise _fail(path, "code", "must be a list of paths or globs inside the project, "
                    "e.g. [train.py, configs]")

    timeout = data.get("timeout")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0
    ):
        raise _fail(path, "timeout", "must be a positive number of seconds")

    env = data.get("env", {})
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, (str, int, float)) for k, v in env.items()
    ):
        raise _fail(path, "env", "must be a mapping of NAME: value")
    if any(k.startswith("ORCH_") for k in env):
        raise _fail(path, "env", "names starting with ORCH_ are reserved")
    for variable in sorted(env):
        if _SECRET.search(variable):
            log.warning(
                "%s: env.%s looks like a secret: env values are baked into every run image "
                "and record; list it under pass_env: to give runs the value from the "
                "environment at run time, never stored", path, variable,
            )
    pass_env = data.get("pass_env", [])
    if not isinstance(pass_env, list) or not all(
        isinstance(n, str) and _ENV_NAME.match(n) and not n.startswith("ORCH_") for n in pass_env
    ):
        raise _fail(path, "pass_env", "must be a list of variable names (not ORCH_*)")

    try:
        inputs = parse_inputs(data.get("inputs"), str(path))
    except ValueError as exc:
        raise ProjectError(f"{path}: {exc}") from None

    hydra_app = data.get("hydra_app")
    if hydra_app is not None and not isinstance(hydra_app, bool):
        raise _fail(path, "hydra_app", "must be true or false (default: detected from the "
                    "command's script)")
    app = (detect_hydra_app(root, command) if hydra_app is None
           else PROJECT_FILE if hydra_app else None)

    overrides = data.get("overrides", [])
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise _fail(path, "overrides", 'must be a list of Hydra overrides, e.g. ["trainer=cpu"]')

    return Project(
        root=root,
        name=name,
        base_image=base,
        command=tuple(command),
        config_dir=config_path,
        config_name=config_name,
        requirements=req_path,
        resources=parse_resources(data.get("resources", {}), str(path)),
        network=network,
        exclude=tuple(exclude),
        code=tuple(item.rstrip("/") for item in code),
        timeout=float(timeout) if timeout is not None else None,
        env=tuple(sorted((k, str(v)) for k, v in env.items())),
        pass_env=tuple(sorted(set(pass_env))),
        inputs=inputs,
        hydra_app=app,
        overrides=tuple(overrides),
        slurm=parse_slurm(data.get("slurm"), str(path)),
    )


def _inside(root: Path, rel: str, path: Path, key: str) -> Path:
    target = (root / rel).resolve()
    if target != root and root not in target.parents:
        raise _fail(path, key, f"{rel!r} must be inside the project directory")
    return target


def parse_resources(value: Any, where: str) -> Resources:
    if value is None:
        return Resources()
    _section(value, where, "resources", _RESOURCE_KEYS, "cpus: 1, gpus: 0")
    cpus = value.get("cpus", 1)
    gpus = value.get("gpus", 0)
    memory = value.get("memory")
    if isinstance(cpus, bool) or not isinstance(cpus, (int, float)) or cpus <= 0:
        raise ProjectError(f"{where}: resources.cpus: must be a positive number")
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
        raise ProjectError(f"{where}: resources.gpus: must be a whole number >= 0")
    if memory is not None:
        try:
            if not isinstance(memory, str):
                raise ValueError(memory)
            memory_bytes(memory)
        except ValueError:
            raise ProjectError(
                f"{where}: resources.memory: must look like '512m' or '2g'"
            ) from None
        memory = memory.strip().lower()
    pids = value.get("pids")
    if pids is not None and (isinstance(pids, bool) or not isinstance(pids, int) or pids < 1):
        raise ProjectError(f"{where}: resources.pids: must be a whole number >= 1")
    tmp = value.get("tmp")
    if tmp is not None:
        tmp = str(tmp).strip().lower() if isinstance(tmp, str | int) else None
        if tmp is None or isinstance(value.get("tmp"), bool) or not TMP_SIZE.match(tmp):
            raise ProjectError(f"{where}: resources.tmp: must look like '512m' or '1g'")
    return Resources(cpus=float(cpus), gpus=gpus, memory=memory or None, pids=pids, tmp=tmp)


def memory_bytes(text: str) -> int:
    """A Docker size string (``"512m"``, ``"2g"``, ``"1.5g"``, ``"100"``) in bytes.

    The grammar is the Docker SDK's own (``docker.utils.parse_bytes``), the one that turns
    ``mem_limit`` into bytes when the container is created, so what a project may write is
    exactly what Docker will take; negative and non-finite sizes are refused here on top.
    Raises ValueError for anything else.
    """
    import docker.errors
    import docker.utils

    stripped = text.strip()
    # parse_bytes takes "-5m" and lets float() read "nan"/"inf": only digits may lead.
    if not stripped[:1].isdigit():
        raise ValueError(f"not a size: {text!r}")
    try:
        value = docker.utils.parse_bytes(stripped)
    except (docker.errors.DockerException, ValueError, OverflowError) as exc:
        raise ValueError(f"not a size: {text!r}") from exc
    return int(value)
