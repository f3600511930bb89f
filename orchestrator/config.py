"""Config composition: Hydra's semantics, orch's errors, and a fast path for sweeps.

Composition is delegated to hydra-core (``initialize_config_dir`` + ``compose`` and its
override parser) so that defaults lists, groups, ``_self_``, ``@package``, interpolation
and the ``+``/``++``/``~`` override prefixes mean exactly what they mean in Hydra.

Two things are added on top:

* errors: every hydra/omegaconf/yaml error is translated into one :class:`ConfigError`
  line that points at the input (file:line:col, the override, the key);
* speed: :meth:`Composer.compose_many` composes each distinct *defaults list* once with
  Hydra and applies the plain value overrides of every point on a copy with Hydra's own
  ``ConfigLoaderImpl._apply_overrides_to_config`` - the very function Hydra calls at that
  step - so the result is identical to a full compose at a fraction of the cost.

Hydra's ``GlobalHydra`` is a process-wide singleton; every use goes through one lock and
leaves whatever state it found behind.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
import pickle
import re
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import yaml
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.global_hydra import GlobalHydra
from hydra.core.object_type import ObjectType
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, Override, RangeSweep
from hydra.core.singleton import Singleton
from hydra.errors import (
    ConfigCompositionException,
    HydraException,
    MissingConfigException,
    OverrideParseException,
)
from hydra.version import VersionBase
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from . import canonical
from .errors import ConfigError
from .inputs.decl import resolve_input

__all__ = [
    "Composer",
    "config_digest",
    "expand_sweep",
    "to_json",
    "to_yaml",
]

# GlobalHydra (and hydra's version base) are process-global and not thread-safe.
_HYDRA_LOCK = threading.RLock()

# Errors hydra-core lets escape from composition; anything else is a bug and propagates.
_COMPOSE_ERRORS = (HydraException, OmegaConfBaseException, yaml.YAMLError, ValueError, OSError)

_CARET_LINE = re.compile(r"^(\s*)\^\s*$")
_DOC_LINK = re.compile(r"^See https://hydra\.cc/\S+ for details$")


# --------------------------------------------------------------------------- resolvers

# ${orch.input:NAME} -> /orch/inputs/NAME: a config names the data input it reads, and the
# sweep makes that input's digest part of the run's identity (orchestrator.inputs).
if not OmegaConf.has_resolver("orch.input"):
    OmegaConf.register_new_resolver("orch.input", resolve_input)


# --------------------------------------------------------------------------- helpers


def _fold(message: str) -> str:
    """Hydra's multi-line messages as one line; a caret line becomes "(at column N)"."""
    parts: list[str] = []
    for raw in message.splitlines():
        caret = _CARET_LINE.match(raw)
        if caret and parts:
            # the caret sits under the previous line, which started at column 0
            parts[-1] += f" (at column {len(caret.group(1)) + 1})"
            continue
        line = raw.strip()
        if line:
            parts.append(line)
    return "; ".join(parts).replace("\t", " ")


def _omegaconf_message(exc: OmegaConfBaseException) -> str:
    """``<full.key>: <first line of the message>`` for an omegaconf error."""
    msg = getattr(exc, "msg", None) or str(exc)
    first = _fold(str(msg).split("\n    full_key:")[0])
    key = getattr(exc, "full_key", None)
    return f"{key}: {first}" if key else first


class _UniqueKeySafeLoader(yaml.SafeLoader):
    """yaml.safe_load, but a duplicate key is an error (as in OmegaConf's own loader)."""


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if isinstance(key_node, yaml.ScalarNode):
            key = loader.construct_object(key_node)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeySafeLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping
)


def _yaml_error(shown: str, exc: yaml.YAMLError) -> ConfigError:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    where = f"{shown}:{mark.line + 1}:{mark.column + 1}" if mark is not None else shown
    detail = _fold(str(problem))
    if context:
        context_mark = getattr(exc, "context_mark", None)
        detail += f" ({context}"
        if context_mark is not None:
            detail += f" at line {context_mark.line + 1}"
        detail += ")"
    return ConfigError(f"{where}: {detail} (fix the YAML)")


# --------------------------------------------------------------------------- composer


class _GroupLister:
    """The one ConfigLoader method hydra's glob() sweep needs, backed by a Composer."""

    def __init__(self, composer: Composer) -> None:
        self._composer = composer

    def get_group_options(
        self, group_name: str, results_filter: ObjectType | None = ObjectType.CONFIG
    ) -> list[str]:
        return self._composer.group_options(group_name)


class _Base:
    """A composed defaults list, copied once per point.

    Unpickling is ~10x faster than ``copy.deepcopy`` on a DictConfig and, like it, keeps
    flags (struct), node types and metadata; unpicklable configs fall back to deepcopy.
    """

    def __init__(self, cfg: DictConfig) -> None:
        self._cfg = cfg
        try:
            self._pickled: bytes | None = pickle.dumps(cfg, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 - any pickling failure only costs speed
            self._pickled = None

    def copy(self) -> DictConfig:
        if self._pickled is not None:
            return cast(DictConfig, pickle.loads(self._pickled))  # noqa: S301 - our own bytes
        return copy.deepcopy(self._cfg)


class Composer:
    """Composes configs from a Hydra config tree (``config_dir/config_name.yaml`` + groups)."""

    def __init__(self, config_dir: Path, config_name: str = "config") -> None:
        self.config_dir = Path(config_dir).resolve()
        self.config_name = config_name
        # paths in messages are shown relative to the config dir's parent: configs/model/x.yaml
        self._shown_root = Path(Path(config_dir).resolve().name)
        self._parser = OverridesParser.create()
        self.validate()

    # -- validation ---------------------------------------------------------------------

    def _shown(self, path: Path) -> str:
        return (self._shown_root / path.relative_to(self.config_dir)).as_posix()

    def validate(self) -> None:
        """Check the tree: the primary config exists and every ``*.yaml`` parses to a mapping."""
        if not self.config_dir.is_dir():
            raise ConfigError(
                f"config directory {self.config_dir} does not exist: create it with a "
                f"{self.config_name}.yaml (the primary config) in it"
            )
        primary = self.config_dir / f"{self.config_name}.yaml"
        if not primary.is_file():
            raise ConfigError(
                f"no primary config {self._shown(primary)}: create it "
                f"(a YAML mapping, usually with a 'defaults:' list)"
            )
        for path in sorted(self.config_dir.rglob("*.yaml")):
            if not path.is_file():
                continue
            shown = self._shown(path)
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                raise ConfigError(f"{shown}: not UTF-8 text ({exc.reason})") from exc
            except OSError as exc:
                raise ConfigError(f"{shown}: cannot read it ({exc.strerror})") from exc
            try:
                data = yaml.load(text, Loader=_UniqueKeySafeLoader)  # noqa: S506 - a SafeLoader
            except yaml.YAMLError as exc:
                raise _yaml_error(shown, exc) from exc
            if data is not None and not isinstance(data, dict):
                raise ConfigError(
                    f"{shown}: a config must be a mapping of keys, got a {type(data).__name__}"
                )

    # -- hydra session --------------------------------------------------------------------

    @contextmanager
    def _session(self) -> Iterator[ConfigLoaderImpl]:
        """Hydra initialized on this config dir, for this thread only; state restored after."""
        with _HYDRA_LOCK, warnings.catch_warnings():
            # hydra warns (e.g. about a missing _self_) on stderr; orch prints nothing here
            warnings.simplefilter("ignore")
            saved = Singleton._instances.pop(GlobalHydra, None)
            saved_base = VersionBase.instance().version_base
            try:
                with initialize_config_dir(
                    config_dir=str(self.config_dir), job_name="orch", version_base=None
                ):
                    yield cast(ConfigLoaderImpl, GlobalHydra.instance().config_loader())
            finally:
                VersionBase.instance().version_base = saved_base
                if saved is not None:
                    Singleton._instances[GlobalHydra] = saved
                else:
                    Singleton._instances.pop(GlobalHydra, None)

    # -- public API -----------------------------------------------------------------------

    def compose(self, overrides: Sequence[str]) -> dict[str, Any]:
        """One point: Hydra's compose, resolved, as plain containers, without ``hydra:``."""
        overrides = list(overrides)
        self._check_group_values(overrides)
        with self._session() as loader:
            self._check_not_sweep(self._parse_all(overrides))
            return _finalize(self._compose_hydra(loader, overrides))

    def compose_many(self, points: Sequence[Sequence[str]]) -> list[dict[str, Any]]:
        """Many points, each equal to ``compose(point)``; the defaults list is composed once
        per distinct combination of group choices."""
        results: list[dict[str, Any]] = []
        with self._session() as loader:
            groups = self._group_repository(loader)
            bases: dict[tuple[str, ...], _Base] = {}
            parsed_cache: dict[str, Override] = {}
            done: dict[tuple[str, ...], dict[str, Any]] = {}
            for raw_point in points:
                point = tuple(raw_point)
                self._check_group_values(point)
                if point in done:
                    results.append(copy.deepcopy(done[point]))
                    continue
                result = self._compose_fast(loader, groups, bases, parsed_cache, point)
                if result is None:  # not provably equivalent, or an error: let Hydra decide
                    self._check_not_sweep(self._parse_all(list(point)))
                    result = _finalize(self._compose_hydra(loader, list(point)))
                done[point] = result
                results.append(result)
        return results

    def group_options(self, group: str) -> list[str]:
        """The options of a config group (sorted, as Hydra lists them)."""
        with self._session() as loader:
            try:
                if not self._group_repository(loader).group_exists(group):
                    raise ConfigError(self._no_group_message(loader, group))
                return self._options(loader, group)
            except _COMPOSE_ERRORS as exc:
                raise self._translate(loader, exc, []) from exc

    # -- internals ------------------------------------------------------------------------

    def _check_group_values(self, overrides: Sequence[str]) -> None:
        """A group option is a file name inside its group: never a path out of config_dir."""
        for line in overrides:
            key, sep, value = line.lstrip("+~").partition("=")
            if not sep or not (self.config_dir / key).is_dir():
                continue
            parts = value.strip().strip("'\"").replace("\\", "/").split("/")
            if value.strip().startswith("/") or ".." in parts:
                options = ", ".join(self.group_options(key))
                raise ConfigError(
                    f"{line}: a group option is a name in group '{key}', not a path "
                    f"(available: {options})"
                )

    def _parse_all(self, overrides: list[str]) -> list[Override]:
        parsed: list[Override] = []
        for line in overrides:
            parsed.append(self._parse(line))
        return parsed

    def _parse(self, line: str) -> Override:
        try:
            return self._parser.parse_overrides([line])[0]
        except OverrideParseException as exc:
            raise ConfigError(_bad_override(exc)) from exc

    @staticmethod
    def _check_not_sweep(parsed: list[Override]) -> None:
        for override in parsed:
            if override.is_sweep_override():
                raise ConfigError(
                    f"{override.input_line}: a sweep (several values) where one config is "
                    f"composed; sweep it with 'orch sweep', or write a list as key=[a,b] "
                    f"and a string with a comma as key='a,b'"
                )

    def _compose_hydra(self, loader: ConfigLoaderImpl, overrides: list[str]) -> DictConfig:
        try:
            return hydra_compose(config_name=self.config_name, overrides=overrides)
        except _COMPOSE_ERRORS as exc:
            raise self._translate(loader, exc, overrides) from exc

    def _group_repository(self, loader: ConfigLoaderImpl) -> Any:
        """The repository Hydra decides "is this key a config group?" with (honours
        ``hydra.searchpath`` in the primary config)."""
        try:
            _, repo = loader._parse_overrides_and_create_caching_repo(self.config_name, [])
        except _COMPOSE_ERRORS as exc:
            raise self._translate(loader, exc, []) from exc
        return repo

    def _compose_fast(
        self,
        loader: ConfigLoaderImpl,
        groups: Any,
        bases: dict[tuple[str, ...], _Base],
        parsed_cache: dict[str, Override],
        point: tuple[str, ...],
    ) -> dict[str, Any] | None:
        """The point composed from a cached defaults-list composition, or None when the
        shortcut does not provably give Hydra's result (the caller then composes fully)."""
        try:
            parsed: list[Override] = []
            for line in point:
                override = parsed_cache.get(line)
                if override is None:
                    override = self._parser.parse_overrides([line])[0]
                    parsed_cache[line] = override
                parsed.append(override)
            defaults_key: list[str] = []
            value_overrides: list[Override] = []
            for override in parsed:
                key = override.key_or_group
                if (
                    override.is_sweep_override()
                    or override.is_hydra_override()
                    or key == "hydra"
                    or key == "defaults"
                    or key.startswith("defaults.")
                ):
                    return None
                # the same test hydra's defaults_list.Overrides uses to split the overrides
                if isinstance(override.value(), dict) or not groups.group_exists(key):
                    value_overrides.append(override)
                else:
                    defaults_key.append(cast(str, override.input_line))
            base_key = tuple(defaults_key)
            base = bases.get(base_key)
            if base is None:
                base = _Base(hydra_compose(config_name=self.config_name, overrides=defaults_key))
                bases[base_key] = base
            cfg = base.copy()
            # the step hydra runs right after composing the defaults list, on the same cfg
            ConfigLoaderImpl._apply_overrides_to_config(value_overrides, cfg)
            return _finalize(cfg)
        except Exception:  # noqa: BLE001 - whatever went wrong, a full compose decides
            return None

    # -- error translation ----------------------------------------------------------------

    def _no_group_message(self, loader: ConfigLoaderImpl, group: str) -> str:
        try:
            parent, _, _ = group.rpartition("/")
            available = [
                g for g in loader.list_groups(parent) if not (parent == "" and g == "hydra")
            ]
        except _COMPOSE_ERRORS:
            available = []
        listing = ", ".join(f"{parent}/{g}" if parent else g for g in available) or "none"
        return f"no config group '{group}' in {self._shown_root.as_posix()} (groups: {listing})"

    def _translate(
        self, loader: ConfigLoaderImpl, exc: BaseException, overrides: Sequence[str]
    ) -> ConfigError:
        if isinstance(exc, ConfigError):
            return exc
        if isinstance(exc, OverrideParseException):
            return ConfigError(_bad_override(exc))
        if isinstance(exc, MissingConfigException):
            return ConfigError(self._missing_config_message(loader, exc, overrides))
        if isinstance(exc, yaml.YAMLError):
            # the tree changed since it was validated: validate again to name file:line:col
            self.validate()
            return ConfigError(f"{self._shown_root.as_posix()}: {_fold(str(exc))} (fix the YAML)")
        if isinstance(exc, ConfigCompositionException):
            cause = exc.__cause__
            if isinstance(cause, (ConfigAttributeError, ConfigKeyError)):
                match = re.match(r"Could not override '([^']+)'", str(exc))
                if match:
                    key = match.group(1)
                    line = _find_override(overrides, key) or f"{key}=..."
                    return ConfigError(
                        f"{line}: no key '{key}' in the config; use '+{line}' to add it "
                        f"(or '++{line}' to add or override it)"
                    )
            message = _fold(str(exc))
            if isinstance(cause, OmegaConfBaseException):
                message += f": {_omegaconf_message(cause)}"
            return ConfigError(_with_culprit(message, overrides))
        if isinstance(exc, OmegaConfBaseException):
            return ConfigError(_omegaconf_message(exc))
        message = _fold(str(exc)) or type(exc).__name__
        if isinstance(exc, ValueError) and message.startswith("Config group override"):
            # e.g. optimizer=5: a group choice must name an option
            culprit = next((o for o in overrides if self._is_group_choice(loader, o)), None)
            if culprit is not None:
                group = culprit.split("=", 1)[0].lstrip("+~").split("@")[0]
                options = ", ".join(self._options(loader, group))
                return ConfigError(
                    f"{culprit}: '{group}' is a config group, its value must name an option "
                    f"(available: {options})"
                )
        return ConfigError(message)

    def _is_group_choice(self, loader: ConfigLoaderImpl, line: str) -> bool:
        try:
            override = self._parser.parse_overrides([line])[0]
            value = override.value()
            return not isinstance(value, (str, list, dict)) and bool(
                self._group_repository(loader).group_exists(override.key_or_group)
            )
        except (ConfigError, *_COMPOSE_ERRORS):
            return False

    def _options(self, loader: ConfigLoaderImpl, group: str) -> list[str]:
        return list(
            loader.get_group_options(
                group, results_filter=ObjectType.CONFIG, config_name=self.config_name
            )
        )

    def _missing_config_message(
        self, loader: ConfigLoaderImpl, exc: MissingConfigException, overrides: Sequence[str]
    ) -> str:
        text = str(exc)
        missing = exc.missing_cfg_file
        if missing is None or text.startswith(("Primary config directory", "Cannot find primary")):
            primary = self.config_dir / f"{self.config_name}.yaml"
            return f"no primary config {self._shown(primary)}: create it"
        group, _, option = missing.rpartition("/")
        if not group:
            return _fold(text.split("\nConfig search path:")[0])
        # which input chose it: an override naming the group, else a defaults list
        where = None
        for line in overrides:
            try:
                override = self._parser.parse_overrides([line])[0]
            except OverrideParseException:
                continue
            value = override.value()
            chosen = value if isinstance(value, list) else [value]
            if override.key_or_group == group and option in chosen:
                where = line
        if where is None:
            parent = re.match(r"In '([^']+)':", text)
            name = parent.group(1) if parent else self.config_name
            where = f"{self._shown_root.as_posix()}/{name}.yaml: defaults list"
        if exc.options:
            return (
                f"{where}: no option '{option}' in group '{group}' "
                f"(available: {', '.join(exc.options)})"
            )
        return f"{where}: {self._no_group_message(loader, group)}"


def _bad_override(exc: OverrideParseException) -> str:
    """``bad override '<text>': <hydra's message>`` on one line, caret turned into a column."""
    lines = [line for line in exc.message.splitlines() if not _DOC_LINK.match(line.strip())]
    lexer = "LexerNoViableAltException: "
    if len(lines) >= 2 and lines[0].startswith(lexer) and _CARET_LINE.match(lines[1]):
        # hydra prints the override after the exception name and a caret under it
        column = len(lines[1]) - len(lexer)
        message = f"unexpected input at column {column}: {_quote(exc.override[column - 1 :])}"
    else:
        message = _fold("\n".join(lines))
        message = message.replace(f"Error parsing override '{exc.override}'; ", "")
    return f"bad override {_quote(exc.override)}: {message}"


def _quote(text: str) -> str:
    return f'"{text}"' if "'" in text else f"'{text}'"


def _with_culprit(message: str, overrides: Sequence[str]) -> str:
    """Prefix the message with the one override it is about, when that is unambiguous."""
    if any(line in message for line in overrides):
        return message
    culprits = [line for line in overrides if f"'{line.split('=', 1)[0].lstrip('+~')}'" in message]
    return f"{culprits[0]}: {message}" if len(culprits) == 1 else message


def _find_override(overrides: Sequence[str], key: str) -> str | None:
    """The override line whose key is ``key`` (prefix-free), if one is recognisable."""
    for line in overrides:
        head = line.split("=", 1)[0].lstrip("+~")
        if head == key:
            return line
    return None


def _finalize(cfg: DictConfig) -> dict[str, Any]:
    """Resolved plain containers; a missing value or a broken interpolation names its key."""
    try:
        data = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as exc:
        message = _omegaconf_message(exc)
        if "Missing mandatory value" in message:
            key = getattr(exc, "full_key", None) or "?"
            message = f"{key}: missing mandatory value '???' (set it with {key}=VALUE)"
        raise ConfigError(message) from exc
    if not isinstance(data, dict):
        raise ConfigError("the composed config is not a mapping")
    _check_keys(data, "")
    return cast(dict[str, Any], data)


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


# --------------------------------------------------------------------------- sweeps


#: The largest grid a sweep may expand to; a typo such as range(0,1e9) fails at once.
MAX_POINTS = int(os.environ.get("ORCH_MAX_POINTS") or 100_000)


def expand_sweep(overrides: Sequence[str], composer: Composer) -> list[tuple[str, ...]]:
    """Hydra's sweep syntax to the grid of plain overrides, in BasicSweeper's order.

    ``a=1,2``, ``choice(...)``, ``range(...)`` and ``glob(...)`` (config groups) expand;
    the last axis varies fastest; a key given twice keeps its first position and its last
    value (as in Hydra). ``~key`` stays ``~key`` (Hydra spells it ``~key=null``).
    """
    parser = OverridesParser.create(config_loader=cast(Any, _GroupLister(composer)))
    try:
        parsed = parser.parse_overrides(list(overrides))
    except OverrideParseException as exc:
        raise ConfigError(_bad_override(exc)) from exc
    axes: dict[str, list[str]] = {}
    lines: dict[str, str] = {}
    for override in parsed:
        key = override.get_key_element()
        line = override.input_line
        if override.is_sweep_override():
            if not override.is_discrete_sweep():
                kind = override.value_type.name.lower() if override.value_type else "unknown"
                raise ConfigError(
                    f"{line}: only discrete sweeps are supported (a,b,c / choice() / range() "
                    f"/ glob()), not {kind}"
                )
            value = override.value()
            if isinstance(value, (ChoiceSweep, RangeSweep)) and value.shuffle:
                raise ConfigError(f"{line}: shuffle() is random; list the values in an order")
            try:
                # Take at most one value past the cap, so range(0,1e12) stays cheap.
                items = itertools.islice(override.sweep_string_iterator(), MAX_POINTS + 1)
                values = [f"{key}={item}" for item in items]
            except ConfigError as exc:
                raise ConfigError(f"{line}: {exc}") from exc
            except HydraException as exc:
                raise ConfigError(f"{line}: {_fold(str(exc))}") from exc
            except (ValueError, ArithmeticError) as exc:
                raise ConfigError(f"{line}: invalid sweep: {_fold(str(exc))}") from exc
            if not values:
                raise ConfigError(f"{line}: the sweep has no values")
        elif override.is_delete() and override.value() is None:
            values = [key]
        else:
            values = [f"{key}={override.get_value_element_as_str()}"]
        axes[key] = values
        lines[key] = line or key
    size = math.prod(len(values) for values in axes.values())
    if size > MAX_POINTS:
        widest = max(axes, key=lambda k: len(axes[k]))
        raise ConfigError(
            f"{lines[widest]}: the sweep has more than {MAX_POINTS} points (set "
            f"ORCH_MAX_POINTS to raise the limit): split it into smaller sweeps"
        )
    return [tuple(point) for point in itertools.product(*axes.values())]


# --------------------------------------------------------------------------- serialization


def to_yaml(config: dict[str, Any]) -> str:
    """Deterministic YAML: sorted keys, block style, UTF-8 kept as is."""
    return cast(
        str,
        yaml.safe_dump(config, sort_keys=True, default_flow_style=False, allow_unicode=True),
    )


def to_json(config: dict[str, Any]) -> str:
    """Readable, deterministic JSON (sorted keys, 2-space indent, trailing newline)."""
    return json.dumps(config, sort_keys=True, indent=2) + "\n"


def config_digest(config: dict[str, Any]) -> str:
    """``sha256:<hex>`` of the canonical serialization of the config."""
    try:
        return canonical.digest(config)
    except ValueError as exc:
        raise ConfigError(f"config cannot be hashed: {exc}") from exc
