"""Config composition: Hydra's semantics, orch's errors, and a fast path for sweeps.

Composition is delegated to hydra-core (``initialize_config_dir`` + ``compose`` and its
override parser) so that defaults lists, groups, ``_self_``, ``@package``, interpolation
and the ``+``/``++``/``~`` override prefixes mean exactly what they mean in Hydra.

What is added on top:

* errors: every hydra/omegaconf/yaml error is translated into one :class:`ConfigError`
  line that points at the input (file:line:col, the override, the key). A file is checked
  when composition loads it, as Hydra reads it (OmegaConf's YAML loader), never before:
  a broken file no config uses does not stop the tree, as it does not stop Hydra;
* ``${hydra:...}``: a run under orch is one job of a Hydra multirun, so the hydra node is
  composed with every point and ``${hydra:...}`` reads it, with the values of
  :data:`HYDRA_RUNTIME` (the run's directories inside its container) and the job fields
  Hydra's launcher sets (``job.num``, ``job.id``, ``job.override_dirname``, ...). The
  node itself is not part of a run's config, exactly as in a ``@hydra.main`` task;
* plugins: a ``hydra/<group>`` option that only Hydra's own defaults name (a logging
  plugin such as hydra-colorlog, installed where the runs train, not beside orch) stands
  in as an empty config, since it only shapes the hydra node;
* speed: :meth:`Composer.compose_many` composes each distinct *defaults list* once with
  Hydra and applies the plain value overrides of every point on a copy with Hydra's own
  ``ConfigLoaderImpl._apply_overrides_to_config`` - the very function Hydra calls at that
  step, on a config that has its hydra node as in Hydra - so the result is identical to a
  full compose at a fraction of the cost.

Hydra's ``GlobalHydra``, ``HydraConfig``, ``ConfigStore`` and sources registry are
process-wide; every use goes through one lock and leaves whatever state it found behind.

What is not here: the override syntax and sweep expansion (:mod:`.overrides`, which asks
a Composer only for a group's options and its first compose), reading and writing config
YAML/JSON (:mod:`.configio`), the cache of composed sweeps (:mod:`.cache`), and
what the run sees at run time (its directories, its job fields, ``oc.env`` deferred and
the resolution of a composed config: :mod:`.runtime`).
Why one module of this size: what stays works inside one Hydra loader session and shares
its private state (the group repository, the fast path's composed bases, the error
translation that needs the loader to name a file).
"""

from __future__ import annotations

import copy
import os
import pickle
import re
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import yaml
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.core_plugins.file_config_source import FileConfigSource
from hydra._internal.sources_registry import SourcesRegistry
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.object_type import ObjectType
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.core.singleton import Singleton
from hydra.errors import (
    ConfigCompositionException,
    HydraException,
    MissingConfigException,
    OverrideParseException,
)
from hydra.plugins.config_source import ConfigResult
from hydra.types import RunMode
from hydra.version import VersionBase
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from ..errors import ConfigError
from . import runtime
from .cache import ComposeCache
from .configio import (
    MAX_CONFIG_BYTES,
    MAX_NESTING,
    check_config_file,
    config_digest,
    defaults_entries,
    fold,
    load_bounded_yaml,
    to_json,
    to_yaml,
    yaml_loader,
)
from .overrides import (
    DEFAULT_MAX_POINTS,
    bad_override,
    check_nesting,
    expand_sweep,
    parse_overrides,
)
from .runtime import HYDRA_RUNTIME, job_name_for, run_env

# Re-exported: callers that compose also expand sweeps and write configs (see the modules).
__all__ = [
    "DEFAULT_MAX_POINTS",
    "HYDRA_RUNTIME",
    "MAX_CONFIG_BYTES",
    "MAX_NESTING",
    "Composed",
    "Composer",
    "PointConfig",
    "config_digest",
    "expand_sweep",
    "job_name_for",
    "load_bounded_yaml",
    "parse_overrides",
    "run_env",
    "to_json",
    "to_yaml",
    "yaml_loader",
]

# GlobalHydra (and hydra's version base) are process-global and not thread-safe.
_HYDRA_LOCK = threading.RLock()

# Errors hydra-core lets escape from composition; anything else is a bug and propagates.
# TypeError and AssertionError are hydra's answers to some malformed inputs (a group chosen
# with a list of numbers, an ``override`` whose value is a list): only hydra_compose and
# the loader calls are wrapped with them.
_COMPOSE_ERRORS = (HydraException, OmegaConfBaseException, yaml.YAMLError, ValueError, OSError)
_HYDRA_INPUT_ERRORS = (*_COMPOSE_ERRORS, TypeError, AssertionError)


#: How many absent ``hydra/`` plugin options one composition may stand in for.
_MAX_PLACEHOLDERS = 32


# --------------------------------------------------------------------------- helpers


class _CheckedFileSource(FileConfigSource):
    """Hydra's ``file://`` config source; each file is checked the moment it is loaded.

    A subclass per :class:`Composer` carries its cache of checked files (path -> mtime and
    size, so an edited file is checked again) and the trail of files one composition
    loaded, which names the file when hydra fails without saying where.
    """

    checked: dict[str, tuple[int, int]] = {}
    trail: list[str] = []
    loaded: list[str] = []  # every load, as real paths

    def load_config(self, config_path: str) -> ConfigResult:
        relative = self._normalize_file_name(config_path)
        full = Path(os.path.realpath(os.path.join(self.path, relative)))
        shown = (Path(Path(self.path).name) / relative).as_posix()
        top = Path(os.path.realpath(self.path))
        if full != top and top not in full.parents:
            # a link out of the config tree: its target would be composed, baked into the
            # image and stored, whatever host file it is
            raise ConfigError(f"{shown}: a link to {full}, outside the config directory "
                              "(copy the file into the project instead)")
        try:
            stat = full.stat()
        except OSError:
            stat = None  # hydra's own "not found" follows
        if stat is not None:
            type(self).trail.append(shown)
            type(self).loaded.append(str(full))
            stamp = (stat.st_mtime_ns, stat.st_size)
            if self.checked.get(str(full)) != stamp:
                check_config_file(full, shown)
                self.checked[str(full)] = stamp
        return super().load_config(config_path)


class _Base:
    """A composed defaults list, copied once per point: with its hydra node, and without it
    for points whose config never reads it.

    Unpickling is ~10x faster than ``copy.deepcopy`` on a DictConfig and, like it, keeps
    flags (struct), node types and metadata; unpicklable configs fall back to deepcopy.
    """

    def __init__(self, cfg: DictConfig) -> None:
        self._cfg = cfg
        self._pickled = _pickled(cfg)
        self.job = runtime.JobSettings.of(cfg.hydra)
        task = _copy_config(cfg, self._pickled)
        with open_dict(task):
            del task["hydra"]
        self._task = task
        self._task_pickled = _pickled(task)
        # Whether anything outside the hydra node can read it: if not, the point is applied
        # and resolved without it (cheaper), and no value override can see the difference.
        self.reads_hydra = "hydra" in OmegaConf.to_yaml(task)

    @property
    def pickled(self) -> bytes | None:
        """The composition as pickled bytes (None: it cannot be pickled)."""
        return self._pickled

    def copy(self) -> DictConfig:
        return _copy_config(self._cfg, self._pickled)

    def copy_task(self) -> DictConfig:
        return _copy_config(self._task, self._task_pickled)


def _pickled(cfg: DictConfig) -> bytes | None:
    try:
        return pickle.dumps(cfg, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001 - any pickling failure only costs speed
        return None


def _copy_config(cfg: DictConfig, pickled: bytes | None = None) -> DictConfig:
    if pickled is None:
        pickled = _pickled(cfg)
    if pickled is None:
        return copy.deepcopy(cfg)
    return cast(DictConfig, pickle.loads(pickled))  # noqa: S301 - our own bytes


@dataclass(frozen=True)
class Composed:
    """One composed point: the run's config and what its ``${hydra:...}`` read.

    ``hydra`` holds the documented mapping for this point (dotted keys under ``hydra.``):
    the values a record keeps to say what Hydra-shaped code inside the run saw. ``node`` is
    the whole hydra node, resolved, when the composer keeps it (a Hydra application gets it
    baked into its run, see :mod:`orchestrator.compose.hydra_app`). ``deferred`` names the keys
    whose value only the run's environment can give (see :func:`run_env`): they keep their
    interpolation text.
    """

    config: dict[str, Any]
    hydra: dict[str, Any] = field(default_factory=dict)
    node: dict[str, Any] | None = None
    deferred: tuple[str, ...] = ()


class PointConfig(dict[str, Any]):
    """A composed point's config, the plain mapping that is recorded, carrying what its run
    also needs from the composition: the hydra node baked for a Hydra application, and the
    keys deferred to the run. It is a dict so that everything reading points reads it as
    before; a copy made with ``dict()`` drops the extras on purpose."""

    node: dict[str, Any] | None = None
    deferred: tuple[str, ...] = ()
    #: The config files the composition of the points read (see Composer.files_read).
    files: tuple[Path, ...] = ()

    @classmethod
    def of(cls, composed: Composed, files: tuple[Path, ...] = ()) -> PointConfig:
        point = cls(composed.config)
        point.node, point.deferred, point.files = composed.node, composed.deferred, files
        return point


_R = TypeVar("_R")


# --------------------------------------------------------------------------- composer


class Composer:
    """Composes configs from a Hydra config tree (``config_dir/config_name.yaml`` + groups).

    ``job_name`` is ``hydra.job.name`` unless the config sets it: Hydra derives it from the
    script that holds ``@hydra.main`` (see :func:`job_name_for`).
    """

    def __init__(
        self, config_dir: Path, config_name: str = "config", job_name: str = "app", *,
        reuse: bool = False, env: Mapping[str, str] | None = None, keep_hydra: bool = False,
        cache: ComposeCache | None = None,
    ) -> None:
        self.config_dir = Path(config_dir).resolve()
        #: What ``${oc.env:...}`` may read at composition (:func:`run_env`).
        self.env = run_env({}) if env is None else dict(env)
        #: Keep each point's whole hydra node (:attr:`Composed.node`), for a Hydra app.
        self.keep_hydra = keep_hydra
        # ``reuse``: one composer asked for many points one call at a time (a search asks
        # a trial, then composes it) keeps each defaults-list composition across calls, as
        # one compose_many call does, instead of composing it again for every trial; the
        # config tree must then not change while the composer is in use.
        self._bases: dict[tuple[str, ...], _Base] | None = {} if reuse else None
        self.config_name = config_name
        self.job_name = job_name
        # paths in messages are shown relative to the config dir's parent: configs/model/x.yaml
        self._shown_root = Path(Path(config_dir).resolve().name)
        self._parser = OverridesParser.create()
        # named as hydra's class: hydra's plugin scan re-registers "file" only by that name
        self._source = cast(
            type[_CheckedFileSource],
            type("FileConfigSource", (_CheckedFileSource,),
                 {"checked": {}, "trail": [], "loaded": []}),
        )
        # hydra/<group>/<option> configs named by Hydra's defaults but not installed here
        self._placeholders: set[tuple[str, str]] = set()
        # per open session (they nest), how to take its placeholders out of the ConfigStore
        self._undo_stack: list[list[Callable[[], None]]] = []
        #: Composed sweeps from earlier processes (:mod:`.cache`), and the files the
        #: compositions read that came from it.
        self._cache = cache
        self._cached_files: set[str] = set()
        self._tree: str | None = None  # the tree's digest while compose_points runs
        self.validate()

    def files_read(self) -> tuple[Path, ...]:
        """Every config file this composer's compositions have read, as real paths (a
        link is followed to what was read)."""
        return tuple(sorted(Path(path) for path in {*self._source.checked, *self._cached_files}))

    # -- validation ---------------------------------------------------------------------

    def _shown(self, path: Path) -> str:
        return (self._shown_root / path.relative_to(self.config_dir)).as_posix()

    def validate(self) -> None:
        """Check the tree's root: the config dir and the primary config exist.

        Files are checked when composition loads them: Hydra never reads a file no config
        uses, so such a file, broken or not, does not stop the tree here either.
        """
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

    # -- hydra session --------------------------------------------------------------------

    @contextmanager
    def _session(self) -> Iterator[ConfigLoaderImpl]:
        """Hydra initialized on this config dir, for this thread only; state restored after."""
        with _HYDRA_LOCK, warnings.catch_warnings():
            # hydra warns (e.g. about a missing _self_) on stderr; orch prints nothing here
            warnings.simplefilter("ignore")
            saved = Singleton._instances.pop(GlobalHydra, None)
            saved_hydra_config = Singleton._instances.pop(HydraConfig, None)
            saved_base = VersionBase.instance().version_base
            registry = SourcesRegistry.instance()
            saved_file_source = registry.types.get("file")
            registry.types["file"] = self._source
            undo_placeholders = [self._store_placeholder(*p) for p in sorted(self._placeholders)]
            self._undo_stack.append(undo_placeholders)
            try:
                with initialize_config_dir(
                    config_dir=str(self.config_dir), job_name=self.job_name, version_base=None
                ):
                    # Hydra's own ``now`` (set up by initialize), noting that it was read
                    OmegaConf.register_new_resolver(
                        "now", runtime.clock_now, use_cache=True, replace=True
                    )
                    yield cast(ConfigLoaderImpl, GlobalHydra.instance().config_loader())
            finally:
                self._undo_stack.pop()
                for undo in reversed(undo_placeholders):
                    undo()
                if saved_file_source is not None:
                    registry.types["file"] = saved_file_source
                VersionBase.instance().version_base = saved_base
                for key, value in ((GlobalHydra, saved), (HydraConfig, saved_hydra_config)):
                    if value is not None:
                        Singleton._instances[key] = value
                    else:
                        Singleton._instances.pop(key, None)

    @staticmethod
    def _store_placeholder(group: str, option: str) -> Callable[[], None]:
        """An empty ``group/option`` in Hydra's ConfigStore; returns how to take it out."""
        store = ConfigStore.instance()
        created: list[tuple[dict[str, Any], str]] = []
        node: dict[str, Any] = store.repo
        for part in group.split("/"):
            if part not in node:
                node[part] = {}
                created.append((node, part))
            node = node[part]
        name = f"{option}.yaml"
        if name in node:  # installed after all, or stored by the user's code: keep theirs
            return lambda: None
        store.store(name=option, node={}, group=group, provider="orch")

        def undo() -> None:
            node.pop(name, None)
            for parent, part in reversed(created):
                if not parent.get(part):
                    parent.pop(part, None)

        return undo

    def _with_placeholders(
        self, overrides: Sequence[str], action: Callable[[], _R]
    ) -> _R:
        """``action()``, standing in for ``hydra/`` options only Hydra's defaults name.

        Such an option shapes the hydra node alone (logging, launcher, sweeper plugins), and
        the hydra node is not part of a run's config; an option chosen by an override is
        the user's explicit choice and stays an error when it is absent.
        """
        self._check_not_placeholder(overrides)
        for _ in range(_MAX_PLACEHOLDERS):
            try:
                return action()
            except MissingConfigException as exc:
                placeholder = self._placeholder_for(exc, overrides)
                if placeholder is None or placeholder in self._placeholders:
                    raise
                self._placeholders.add(placeholder)
                self._undo_stack[-1].append(self._store_placeholder(*placeholder))
        return action()

    def _check_not_placeholder(self, overrides: Sequence[str]) -> None:
        """An override choosing an option that is only a stand-in: absent, as it was before
        a defaults list needed the stand-in."""
        for line in overrides:
            try:
                override = self._parser.parse_overrides([line])[0]
            except OverrideParseException:
                continue  # hydra reports it
            group, option = override.key_or_group, override.value()
            if isinstance(option, str) and (group, option) in self._placeholders:
                try:
                    loader = GlobalHydra.instance().config_loader()
                    options = loader.get_group_options(group)
                except _COMPOSE_ERRORS:
                    options = []
                real = [o for o in options if (group, o) not in self._placeholders]
                raise ConfigError(
                    f"{line}: no option '{option}' in group '{group}' "
                    f"(available: {', '.join(real) or 'none'})"
                )

    def _placeholder_for(
        self, exc: MissingConfigException, overrides: Sequence[str]
    ) -> tuple[str, str] | None:
        missing = exc.missing_cfg_file or ""
        group, _, option = missing.rpartition("/")
        if not group.startswith("hydra/") or not option or exc.options is None:
            return None
        for line in overrides:
            try:
                if self._parser.parse_overrides([line])[0].key_or_group == group:
                    return None
            except OverrideParseException:
                continue
        return group, option

    # -- public API -----------------------------------------------------------------------

    def compose(self, overrides: Sequence[str]) -> dict[str, Any]:
        """One point: Hydra's compose, resolved, as plain containers, without ``hydra:``.

        The point is job 0 of a multirun, the same config ``orch sweep`` gives it alone.
        """
        overrides = list(overrides)
        check_nesting(overrides)
        self._check_group_values(overrides)
        with self._session() as loader:
            parsed = self._parse_all(overrides)
            self._check_not_sweep(parsed)
            cfg = self._compose_hydra(loader, overrides)
            return self._finalize_point(cfg, parsed, 0).config

    def compose_many(self, points: Sequence[Sequence[str]]) -> list[dict[str, Any]]:
        """Many points, each equal to ``compose(point)`` as job ``i`` of one multirun; the
        defaults list is composed once per distinct combination of group choices."""
        return [composed.config for composed in self.compose_points(points)]

    def compose_points(self, points: Sequence[Sequence[str]]) -> list[Composed]:
        """:meth:`compose_many`, with each point's ``${hydra:...}`` values alongside; from
        the composer's cache when it holds this composition of this tree."""
        if self._cache is None:
            return self._compose_points(points)
        self._tree = self._cache.tree(self.config_dir)
        try:
            return self._compose_cached(points, self._cache, self._tree)
        finally:
            self._tree = None

    def _compose_cached(
        self, points: Sequence[Sequence[str]], cache: ComposeCache, tree: str | None
    ) -> list[Composed]:
        key = cache.key(
            self.config_dir, tree, config_name=self.config_name, job_name=self.job_name,
            env=self.env, keep_hydra=self.keep_hydra, points=points, versions=_versions(),
        )
        hit = cache.get(key) if key is not None else None
        if hit is not None:
            self._cached_files.update(hit.files)
            return [Composed(c["config"], c["hydra"], c["node"], tuple(c["deferred"]))
                    for c in hit.composed]
        with _HYDRA_LOCK:
            runtime.clear_clock()
            results = self._compose_points(points)
            read_clock = runtime.read_clock(results)
        if key is not None and not read_clock:
            cache.put(
                key,
                [{"config": r.config, "hydra": r.hydra, "node": r.node,
                  "deferred": list(r.deferred)} for r in results],
                [str(path) for path in self.files_read()],
            )
        return results

    def _compose_points(self, points: Sequence[Sequence[str]]) -> list[Composed]:
        results: list[Composed] = []
        with self._session() as loader:
            groups = self._group_repository(loader)
            bases: dict[tuple[str, ...], _Base] = self._bases if self._bases is not None else {}
            parsed_cache: dict[str, Override] = {}
            done: dict[tuple[str, ...], Composed] = {}
            for num, raw_point in enumerate(points):
                point = tuple(raw_point)
                check_nesting(point)
                self._check_group_values(point)
                if point in done:
                    results.append(copy.deepcopy(done[point]))
                    continue
                result, reusable = self._compose_fast(
                    loader, groups, bases, parsed_cache, point, num
                )
                if result is None:  # not provably equivalent, or an error: let Hydra decide
                    parsed = self._parse_all(list(point))
                    self._check_not_sweep(parsed)
                    cfg = self._compose_hydra(loader, list(point))
                    result = self._finalize_point(cfg, parsed, num)
                    reusable = False
                if reusable:  # nothing in it depends on the job's number
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

    def check_first_compose(self, overrides: Sequence[str]) -> None:
        """What a Hydra multirun composes before it launches a job: the primary config with
        every non-sweep override at once. It fails where the jobs alone would not (the
        same ``+key`` twice)."""
        lines = list(overrides)
        check_nesting(lines)
        with self._session() as loader:
            try:
                self._with_placeholders(
                    lines,
                    lambda: loader.load_configuration(
                        config_name=self.config_name, overrides=lines, run_mode=RunMode.MULTIRUN
                    ),
                )
            except _HYDRA_INPUT_ERRORS as exc:
                raise self._translate(loader, exc, lines) from exc

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
        check_nesting([line])
        try:
            return self._parser.parse_overrides([line])[0]
        except OverrideParseException as exc:
            raise ConfigError(bad_override(exc)) from exc

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
        """Hydra's compose of one point, its hydra node included."""
        self._source.trail.clear()
        try:
            return self._with_placeholders(
                overrides,
                lambda: hydra_compose(
                    config_name=self.config_name, overrides=overrides, return_hydra_config=True
                ),
            )
        except _HYDRA_INPUT_ERRORS as exc:
            raise self._translate(loader, exc, overrides) from exc

    def _finalize_point(self, cfg: DictConfig, parsed: Sequence[Override], num: int) -> Composed:
        """The job fields Hydra's launcher sets for job ``num``, then the task config
        resolved with ``${hydra:...}`` reading that node - and the node dropped."""
        hydra_values = runtime.set_job(cfg, parsed, num)
        task = _copy_config(cfg)
        with read_write(task), open_dict(task):
            del task["hydra"]
        try:
            HydraConfig.instance().set_config(cfg)
        except (AssertionError, OmegaConfBaseException) as exc:
            # a hydra node the config itself replaced with something else than Hydra's
            raise ConfigError(f"hydra: not Hydra's configuration node ({exc})") from exc
        config, deferred = runtime.finalize(task, self.env)
        node = None
        if self.keep_hydra:
            with runtime.run_env_set(self.env):
                node = cast(dict[str, Any], runtime.resolve_partially(cfg.hydra, "hydra", [],
                                                               lenient=True))
        return Composed(config, hydra_values, node, deferred)

    def _cached_base(self, defaults: Sequence[str]) -> _Base | None:
        """A defaults list's composition from the cache (an earlier process composed it
        from this very tree), or None. Its stand-in options and the files it read are
        this composer's again, as if it had composed it."""
        if self._cache is None or self._tree is None:
            return None
        found = self._cache.get_base(self._base_key(defaults, self._tree))
        if found is None:
            return None
        pickled, files, placeholders = found
        try:
            cfg = cast(DictConfig, pickle.loads(pickled))  # noqa: S301 - see composecache
        except Exception:  # noqa: BLE001 - a damaged entry is a miss
            return None
        if not isinstance(cfg, DictConfig):
            return None
        for placeholder in placeholders:
            if placeholder not in self._placeholders:
                self._placeholders.add(placeholder)
                self._undo_stack[-1].append(self._store_placeholder(*placeholder))
        self._cached_files.update(files)
        return _Base(cfg)

    def _store_base(self, defaults: Sequence[str], base: _Base, files: Sequence[str]) -> None:
        if self._cache is None or self._tree is None or base.pickled is None:
            return
        self._cache.put_base(self._base_key(defaults, self._tree), base.pickled,
                             sorted(set(files)), sorted(self._placeholders))

    def _base_key(self, defaults: Sequence[str], tree: str) -> str:
        assert self._cache is not None
        return self._cache.base_key(self.config_dir, tree, config_name=self.config_name,
                                    job_name=self.job_name, defaults=defaults,
                                    versions=_versions())

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
        num: int,
    ) -> tuple[Composed | None, bool]:
        """The point composed from a cached defaults-list composition, or None when the
        shortcut does not provably give Hydra's result (the caller then composes fully).
        The flag says whether the result is the same for any job number."""
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
                    return None, False
                # the same test hydra's defaults_list.Overrides uses to split the overrides
                if isinstance(override.value(), dict) or not groups.group_exists(key):
                    value_overrides.append(override)
                else:
                    defaults_key.append(cast(str, override.input_line))
            base_key = tuple(defaults_key)
            base = bases.get(base_key) or self._cached_base(defaults_key)
            if base is None:
                loaded = len(self._source.loaded)
                base = _Base(
                    self._with_placeholders(
                        defaults_key,
                        lambda: hydra_compose(
                            config_name=self.config_name,
                            overrides=defaults_key,
                            return_hydra_config=True,
                        ),
                    )
                )
                self._store_base(defaults_key, base, self._source.loaded[loaded:])
            bases[base_key] = base
            reads_hydra = (
                self.keep_hydra or base.reads_hydra or any("hydra" in line for line in point)
            )
            if reads_hydra and any(_reads_current_value(o) for o in value_overrides):
                # +key and ~key=VALUE read the current value first; when that may read the
                # hydra node, only a full compose reads it in the state Hydra has then
                return None, False
            cfg = base.copy() if reads_hydra else base.copy_task()
            # the step hydra runs right after composing the defaults list, on the same cfg
            ConfigLoaderImpl._apply_overrides_to_config(value_overrides, cfg)
            if reads_hydra:
                return self._finalize_point(cfg, parsed, num), False
            _, hydra_values = base.job.values(parsed, num)
            config, deferred = runtime.finalize(cfg, self.env)
            return Composed(config, hydra_values, None, deferred), True
        except Exception:  # noqa: BLE001 - whatever went wrong, a full compose decides
            return None, False

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
        chained: BaseException | None = exc
        for _ in range(16):  # orch's own check, raised from inside hydra's loading
            if chained is None:
                break
            if isinstance(chained, ConfigError):
                return chained
            chained = chained.__cause__ or chained.__context__
        if isinstance(exc, OverrideParseException):
            return ConfigError(bad_override(exc))
        if isinstance(exc, MissingConfigException):
            return ConfigError(self._missing_config_message(loader, exc, overrides))
        if isinstance(exc, yaml.YAMLError):
            # a file outside orch's checked sources (a package's configs)
            return ConfigError(f"{self._shown_root.as_posix()}: {fold(str(exc))} (fix the YAML)")
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
            message = fold(str(exc))
            if isinstance(cause, OmegaConfBaseException):
                message += f": {runtime.omegaconf_message(cause)}"
            return ConfigError(_with_culprit(message, overrides))
        if isinstance(exc, OmegaConfBaseException):
            return ConfigError(runtime.omegaconf_message(exc))
        message = fold(str(exc)) or type(exc).__name__
        is_group_choice_error = isinstance(exc, TypeError) or (
            isinstance(exc, ValueError) and message.startswith("Config group override")
        )
        if is_group_choice_error:
            # e.g. optimizer=5 or optimizer=[1.0,1]: a group choice must name options
            culprit = next((o for o in overrides if self._is_group_choice(loader, o)), None)
            if culprit is not None:
                group = culprit.split("=", 1)[0].lstrip("+~").split("@")[0]
                options = ", ".join(self._options(loader, group))
                return ConfigError(
                    f"{culprit}: '{group}' is a config group, its value must name an option "
                    f"or a list of options (available: {options})"
                )
        if isinstance(exc, (TypeError, AssertionError)):
            return ConfigError(self._defaults_list_message(exc))
        return ConfigError(message)

    def _defaults_list_message(self, exc: BaseException) -> str:
        """Hydra failed inside a defaults list without a message: name the file it was in."""
        trail = self._source.trail
        where = trail[-1] if trail else f"{self._shown_root.as_posix()}/{self.config_name}.yaml"
        hint = ""
        entries = defaults_entries(self.config_dir.parent / where)
        overrides_at = [i for i, e in enumerate(entries) if e.startswith("override ")]
        if overrides_at and any(
            not e.startswith("override ") and e != "_self_" for e in entries[overrides_at[0] :]
        ):
            hint = " an 'override' entry comes before the entry it overrides (put overrides last);"
        elif any(e.startswith("override ") and "[" in e for e in entries):
            hint = " an 'override' entry names a list;"
        raised = type(exc).__name__
        detail = fold(str(exc))
        if detail:
            raised += f": {detail}"
        return f"{where}: defaults list: Hydra cannot compose it;{hint} (hydra raised {raised})"

    def _is_group_choice(self, loader: ConfigLoaderImpl, line: str) -> bool:
        try:
            override = self._parser.parse_overrides([line])[0]
            value = override.value()
            if isinstance(value, list):
                is_bad = not all(isinstance(item, str) for item in value)
            else:
                is_bad = not isinstance(value, (str, dict))
            return is_bad and bool(
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
            return fold(text.split("\nConfig search path:")[0])
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


def _versions() -> dict[str, str]:
    """The versions of what composes, for the cache's key."""
    import hydra
    import omegaconf

    return {"hydra-core": hydra.__version__, "omegaconf": omegaconf.__version__,
            "python": sys.version}


def _reads_current_value(override: Override) -> bool:
    """Whether Hydra reads the key's current value before applying the override."""
    return bool(override.is_add() or override.is_delete())


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
