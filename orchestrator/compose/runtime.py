"""What a run sees of its config at run time: the container's directories Hydra reports, the
job fields of job N of a multirun, the environment composition may read, and the
resolution of a composed config into the plain values a run receives.

``${oc.env:NAME}`` is resolved where the run runs. Composition knows the variables orch
itself sets in every run's container (:func:`run_env`); any other name is *deferred*: the
composed config keeps the interpolation text and the run resolves it (a Hydra application
by itself; a plain script reading /orch/config.yaml with OmegaConf likewise). So no host
variable is baked, and composing never needs one that only the container has.

The resolvers are process-wide (OmegaConf's registry); :func:`run_env_set` is called under
the composer's lock.
"""

from __future__ import annotations

import datetime
import enum
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from hydra.core.override_parser.types import Override
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, Node, OmegaConf, open_dict, read_write
from omegaconf._utils import _DEFAULT_MARKER_
from omegaconf.errors import OmegaConfBaseException
from omegaconf.resolvers import oc as _oc_resolvers

from ..errors import ConfigError
from ..inputs.decl import env_name as input_env_name
from ..inputs.decl import mount_path, resolve_input
from .configio import fold

#: What a run's ``${hydra:...}`` reads for the run's own directories: the container's paths
#: (see the README's "Hydra compatibility"). ``hydra.sweep.dir``/``subdir`` are set so that
#: ``output_dir`` is ``sweep.dir/sweep.subdir``, as for every job of a Hydra multirun.
HYDRA_RUNTIME: dict[str, str] = {
    "runtime.output_dir": "/orch/output",
    "run.dir": "/orch/output",
    "sweep.dir": "/orch",
    "sweep.subdir": "output",
    "runtime.cwd": "/orch/code",
}

# --------------------------------------------------------------------------- resolvers

# ${orch.input:NAME} -> /orch/inputs/NAME: a config names the data input it reads, and the
# sweep makes that input's digest part of the run's identity (orchestrator.inputs).
if not OmegaConf.has_resolver("orch.input"):
    OmegaConf.register_new_resolver("orch.input", resolve_input)


# ${oc.env:NAME} is resolved where the run runs. Composition knows the variables orch itself
# sets in every run's container (:func:`run_env`); any other name is *deferred*: the
# composed config keeps the interpolation text and the run resolves it (a Hydra
# application by itself; a plain script reading /orch/config.yaml with OmegaConf likewise).
# So no host variable is baked, and composing never needs one that only the container has.
_oc_env = _oc_resolvers.env
#: The run environment of the composition in progress (set under _HYDRA_LOCK), or None:
#: then ``oc.env`` is OmegaConf's own.
_RUN_ENV: Mapping[str, str] | None = None
#: orch's variables a run only gets when it starts: deferred, never refused.
_RUN_TIME_ORCH = frozenset({"ORCH_RUN_ID", "ORCH_ATTEMPT", "ORCH_CHECKPOINT"})


class _Deferred(Exception):
    """An ``oc.env`` variable only the run's environment holds."""


def _env_resolver(key: str, default: Any = _DEFAULT_MARKER_) -> Any:
    known = _RUN_ENV
    if known is None:
        return _oc_env(key, default)
    if key in known:
        return known[key]
    if key.startswith("ORCH_") and key not in _RUN_TIME_ORCH:
        raise ValueError(
            f"oc.env:{key}: orch sets no such variable in a run (ORCH_ names are orch's; "
            f"it sets {', '.join(sorted({*known, *_RUN_TIME_ORCH}))})"
        )
    raise _Deferred(key)


OmegaConf.register_new_resolver("oc.env", _env_resolver, replace=True)


#: What ``${now:...}`` gave since the list was last cleared (under _HYDRA_LOCK). Hydra's
#: merges read it where orch then sets another value (``hydra.run.dir``); a composition
#: whose result holds one of these texts, or that read the clock while orch resolved the
#: run's config, holds the time, and is not cached.
_CLOCK: list[str] = []


def clock_now(pattern: str) -> str:
    text = datetime.datetime.now().strftime(pattern)
    _CLOCK.append(text if _RUN_ENV is None else "")  # "" is in every result: never cached
    return text


def clear_clock() -> None:
    _CLOCK.clear()


def read_clock(results: Sequence[Any]) -> bool:
    """Whether the time reached these results (composed points: config, hydra, node)."""
    if not _CLOCK:
        return False
    text = json.dumps([[r.config, r.hydra, r.node] for r in results], default=str)
    return any(read in text for read in _CLOCK)


def run_env(env: Mapping[str, str], inputs: Sequence[str] = ()) -> dict[str, str]:
    """The variables every run's container has before it starts, as composition may read
    them: orch.yaml's ``env`` and orch's own fixed paths."""
    known = dict(env)
    known.update({"ORCH_CONFIG": "/orch/config.yaml", "ORCH_OUTPUT": HYDRA_RUNTIME["run.dir"]})
    known.update({input_env_name(name): mount_path(name) for name in inputs})
    return known


@contextmanager
def run_env_set(env: Mapping[str, str] | None) -> Iterator[None]:
    global _RUN_ENV
    saved, _RUN_ENV = _RUN_ENV, env
    try:
        yield
    finally:
        _RUN_ENV = saved


def is_deferred(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(16):  # OmegaConf wraps a resolver's error once or twice
        if seen is None:
            return False
        if isinstance(seen, _Deferred):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def omegaconf_message(exc: OmegaConfBaseException) -> str:
    """``<full.key>: <first line of the message>`` for an omegaconf error."""
    msg = getattr(exc, "msg", None) or str(exc)
    first = fold(str(msg).split("\n    full_key:")[0])
    key = getattr(exc, "full_key", None)
    return f"{key}: {first}" if key else first


# --------------------------------------------------------------------------- job fields


def job_name_for(command: Sequence[str]) -> str:
    """``hydra.job.name`` for a project's command, as Hydra derives it from the script that
    holds ``@hydra.main``: ``python3 train.py`` -> ``train``, ``python -m pkg.train`` ->
    ``train``; ``app`` (the compose API's default) when the command names no Python script.
    """
    args = list(command)
    for index, arg in enumerate(args):
        if arg == "-m" and index + 1 < len(args):
            return args[index + 1].rsplit(".", 1)[-1]
        if arg.endswith(".py"):
            return Path(arg).stem
    return "app"


def _hydra_spelling(override: Override) -> str:
    """An override as Hydra's BasicSweeper hands it to a job: ``key=value`` re-rendered,
    a deletion as ``~key=null``."""
    return f"{override.get_key_element()}={override.get_value_element_as_str()}"


@dataclass(frozen=True)
class JobSettings:
    """What the job fields of a point depend on besides its overrides (from the hydra node
    of its defaults list)."""

    name: Any
    kv_sep: str
    item_sep: str
    exclude_keys: frozenset[str]
    choices: dict[str, Any]

    @classmethod
    def of(cls, hydra: DictConfig) -> JobSettings:
        dirname = hydra.job.config.override_dirname
        return cls(
            name=OmegaConf.select(hydra, "job.name", throw_on_missing=False),
            kv_sep=dirname.kv_sep,
            item_sep=dirname.item_sep,
            exclude_keys=frozenset(dirname.exclude_keys),
            choices=cast(dict[str, Any], OmegaConf.to_container(hydra.runtime.choices)),
        )

    def values(self, parsed: Sequence[Override], num: int) -> tuple[list[str], dict[str, Any]]:
        """The task overrides as job ``num`` receives them, and the mapped hydra values."""
        task = [o for o in parsed if not o.is_hydra_override()]
        lines = [_hydra_spelling(o) for o in task]
        # hydra's get_overrides_dirname, on the lines as the job receives them
        named = sorted(
            line for o, line in zip(task, lines, strict=True)
            if o.key_or_group not in self.exclude_keys
        )
        values: dict[str, Any] = {f"hydra.{key}": value for key, value in HYDRA_RUNTIME.items()}
        values["hydra.job.name"] = self.name
        values["hydra.job.num"] = num
        values["hydra.job.id"] = str(num)
        values["hydra.job.override_dirname"] = re.sub(
            "[=]", self.kv_sep, self.item_sep.join(named)
        )
        values["hydra.runtime.choices"] = dict(self.choices)
        return lines, values


def set_job(cfg: DictConfig, parsed: Sequence[Override], num: int) -> dict[str, Any]:
    """Set what Hydra's launcher sets for job ``num`` of a multirun; return the values."""
    hydra = cfg.hydra
    lines, values = JobSettings.of(hydra).values(parsed, num)
    with open_dict(hydra), read_write(hydra):
        for key, value in HYDRA_RUNTIME.items():
            OmegaConf.update(hydra, key, value, force_add=True)
        hydra.mode = RunMode.MULTIRUN
        hydra.job.num = num
        hydra.job.id = num
        hydra.overrides.task = lines
        hydra.job.override_dirname = values["hydra.job.override_dirname"]
    return values


# --------------------------------------------------------------------------- resolution


def finalize(
    cfg: DictConfig, env: Mapping[str, str] | None = None
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Resolved plain containers, and the keys deferred to the run (see :func:`run_env`);
    a missing value or a broken interpolation names its key."""
    try:
        with run_env_set(env):
            deferred: list[str] = []
            try:
                data = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
            except OmegaConfBaseException as exc:
                if not is_deferred(exc):
                    raise
                data = None
            if data is None:  # the rare config that reads the run's environment: key by key
                data = resolve_partially(cfg, "", deferred)
    except OmegaConfBaseException as exc:
        message = omegaconf_message(exc)
        if "Missing mandatory value" in message:
            key = getattr(exc, "full_key", None) or "?"
            message = f"{key}: missing mandatory value '???' (set it with {key}=VALUE)"
        raise ConfigError(message) from exc
    if not isinstance(data, dict):
        raise ConfigError("the composed config is not a mapping")
    _check_keys(data, "")
    return cast(dict[str, Any], data), tuple(deferred)


def resolve_partially(
    node: DictConfig | ListConfig, path: str, deferred: list[str], *, lenient: bool = False
) -> Any:
    """``node`` as plain containers, resolved except where resolution needs a deferred
    variable: such a value keeps its interpolation text and its key goes to ``deferred``.
    ``lenient`` (Hydra's own node, which Hydra never resolves as a whole either): a value
    that cannot be resolved, or is missing, keeps its text too."""
    keys: Sequence[Any] = list(node.keys()) if isinstance(node, DictConfig) else range(len(node))
    out: dict[Any, Any] | list[Any] = {} if isinstance(node, DictConfig) else []
    for key in keys:
        if isinstance(node, ListConfig):
            where = f"{path}[{key}]"
        else:
            where = f"{path}.{key}" if path else str(key)
        child = node._get_node(key)
        assert isinstance(child, Node)  # one key listed by keys()
        try:
            if isinstance(child, DictConfig | ListConfig) and not (
                child._is_none() or child._is_missing() or child._is_interpolation()
            ):
                value = resolve_partially(child, where, deferred, lenient=lenient)
            else:
                value = node[key]  # a missing '???' raises, as to_container would
                if isinstance(value, DictConfig | ListConfig):
                    value = OmegaConf.to_container(value, resolve=True, throw_on_missing=True)
        except OmegaConfBaseException as exc:
            if not (lenient or is_deferred(exc)):
                raise
            if is_deferred(exc):
                deferred.append(where)
            value = OmegaConf.to_container(child) if isinstance(
                child, DictConfig | ListConfig) else child._value()
        if isinstance(value, enum.Enum):
            value = value.name
        if isinstance(out, dict):
            out[key] = value
        else:
            out.append(value)
    return out


def _check_keys(value: Any, path: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                where = f" under '{path}'" if path else ""
                raise ConfigError(f"config key {key!r}{where} is not a string: quote it")
            _check_keys(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_keys(item, f"{path}[{index}]")
