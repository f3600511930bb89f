"""Config files as YAML: how orch reads them (checked, as OmegaConf reads them) and how it
writes a run's config (deterministic YAML and JSON that OmegaConf reads back exactly).

Nothing here composes: Hydra's composer (:mod:`.config`) checks each file it loads with
:func:`check_config_file`, and everything that writes or reads a run's config (the config
layer, a Hydra application's saved config) uses the serializers below without Hydra.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from pathlib import Path
from typing import Any, cast

import yaml
from omegaconf._utils import get_yaml_loader

from .._util import canonical
from ..errors import ConfigError

__all__ = [
    "MAX_CONFIG_BYTES",
    "MAX_CONFIG_NODES",
    "MAX_NESTING",
    "check_config_file",
    "config_digest",
    "escape_interpolation",
    "fold",
    "load_bounded_yaml",
    "to_json",
    "to_yaml",
    "yaml_loader",
]

_CARET_LINE = re.compile(r"^(\s*)\^\s*$")


def fold(message: str) -> str:
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


# OmegaConf's own reading of YAML (no timestamps, 1e-3 is a float), plus orch's message for
# a duplicate key. Hydra loads every config file with OmegaConf, so this is what it sees.
_OmegaConfLoader = cast(type[yaml.SafeLoader], get_yaml_loader())


class _UniqueKeyLoader(_OmegaConfLoader):  # type: ignore[misc,valid-type]
    """OmegaConf's YAML loader; a duplicate key names the key and its line."""


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


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping
)


def _yaml_error(shown: str, exc: yaml.YAMLError) -> ConfigError:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    where = f"{shown}:{mark.line + 1}:{mark.column + 1}" if mark is not None else shown
    detail = fold(str(problem))
    if context:
        context_mark = getattr(exc, "context_mark", None)
        detail += f" ({context}"
        if context_mark is not None:
            detail += f" at line {context_mark.line + 1}"
        detail += ")"
    return ConfigError(f"{where}: {detail} (fix the YAML)")


#: A config file larger than this is refused before it is parsed: configs are small, and
#: OmegaConf needs seconds and hundreds of MB per few MB of YAML.
MAX_CONFIG_BYTES = 4 << 20
#: Nodes a config file may stand for once its aliases are expanded (OmegaConf copies each
#: alias): ten levels of nine aliases are 9**10 nodes written in 300 bytes.
MAX_CONFIG_NODES = 200_000
#: Levels of nesting a config file, or an override's value, may have: deeper ones exhaust
#: Python's stack inside PyYAML, OmegaConf or Hydra's override parser.
MAX_NESTING = 100


def check_config_file(path: Path, shown: str) -> None:
    """The file is UTF-8 YAML that OmegaConf reads as a mapping (or an empty file), of
    bounded size, expansion and depth."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{shown}: cannot read it ({exc.strerror})") from exc
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{shown}: larger than {MAX_CONFIG_BYTES >> 20} MiB, the limit "
                          f"of a config file (keep data in an input, not in the config)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{shown}: not UTF-8 text ({exc.reason})") from exc
    try:
        loader = _UniqueKeyLoader(text)  # its reader refuses some characters at once
    except yaml.YAMLError as exc:
        raise _yaml_error(shown, exc) from exc
    try:
        node = loader.get_single_node()
        if node is not None:
            check_expansion(node, shown)
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        raise _yaml_error(shown, exc) from exc
    except RecursionError as exc:
        raise ConfigError(f"{shown}: nested too deeply (the limit is {MAX_NESTING} "
                          "levels)") from exc
    finally:
        loader.dispose()
    if data is not None and not isinstance(data, dict):
        raise ConfigError(
            f"{shown}: a config must be a mapping of keys, got a {type(data).__name__}"
        )


def check_expansion(root: yaml.Node, shown: str) -> None:
    """The node graph PyYAML composed (an alias is the same node object again) is no
    deeper than MAX_NESTING, has no cycle and expands to at most MAX_CONFIG_NODES nodes.
    Iterative, and each node is sized once: the check costs what the file holds, not what
    it expands to."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, children_done = stack.pop()
        key = id(node)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        if children_done:
            open_nodes.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in children)
            if sizes[key] > MAX_CONFIG_NODES:
                raise ConfigError(
                    f"{shown}: expands to more than {MAX_CONFIG_NODES} values (its aliases "
                    "repeat too much: an alias bomb?)"
                )
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise ConfigError(f"{shown}: an alias refers to a node that contains it "
                              "(a recursive structure)")
        if depth > MAX_NESTING:
            mark = node.start_mark
            raise ConfigError(f"{shown}:{mark.line + 1}:{mark.column + 1}: nested deeper "
                              f"than {MAX_NESTING} levels")
        open_nodes.add(key)
        stack.append((node, depth, True))
        stack.extend((child, depth + 1, False) for child in children if id(child) not in sizes)


def defaults_entries(path: Path) -> list[str]:
    """A config file's defaults list as ``"key: value"`` lines, for messages only."""
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []
    defaults = data.get("defaults") if isinstance(data, dict) else None
    entries: list[str] = []
    for entry in defaults if isinstance(defaults, list) else []:
        if isinstance(entry, dict):
            entries.extend(f"{k}: {v}" for k, v in entry.items())
        else:
            entries.append(str(entry))
    return entries


# --------------------------------------------------------------------------- serialization


class _RunYamlDumper(yaml.SafeDumper):
    """SafeDumper that quotes every string a YAML 1.1 reader *or OmegaConf* would read as
    something else: OmegaConf reads ``1e-3`` as a float where PyYAML keeps a string."""


for _first, _resolvers in _OmegaConfLoader.yaml_implicit_resolvers.items():
    for _tag, _regexp in _resolvers:
        if (_tag, _regexp) not in yaml.SafeDumper.yaml_implicit_resolvers.get(_first, []):
            _RunYamlDumper.add_implicit_resolver(_tag, _regexp, [_first])


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    # PyYAML writes the Unicode line breaks (NEL, LS, PS) raw inside single quotes, and its
    # reader then folds them into spaces: double quotes escape them.
    style = '"' if any(ch in text for ch in "\x85\u2028\u2029") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_RunYamlDumper.add_representer(str, _represent_str)

_INTERPOLATION = re.compile(r"(\\*)\$\{")


def escape_interpolation(text: str) -> str:
    """The string OmegaConf resolves back to ``text``: each ``${`` escaped as ``\\${``, and
    the backslashes right before it doubled (OmegaConf halves those)."""
    return _INTERPOLATION.sub(lambda m: m.group(1) * 2 + "\\${", text)


def _escaped(value: Any, path: str, keep: Collection[str]) -> Any:
    if path in keep:
        return value
    if isinstance(value, str):
        return escape_interpolation(value) if "${" in value else value
    if isinstance(value, dict):
        return {key: _escaped(item, f"{path}.{key}" if path else str(key), keep)
                for key, item in value.items()}
    if isinstance(value, list):
        return [_escaped(item, f"{path}[{index}]", keep) for index, item in enumerate(value)]
    return value


def to_yaml(config: dict[str, Any], *, deferred: Collection[str] = ()) -> str:
    """Deterministic YAML: sorted keys, block style, UTF-8 kept as is.

    OmegaConf (Hydra's reader) loads it back to exactly ``config``: strings that would read
    as numbers, booleans, nulls or dates are quoted, and interpolation syntax in a string is
    escaped (``\\${x}``) - except under the ``deferred`` keys (:attr:`Composed.deferred`),
    whose interpolation the run resolves. PyYAML loads it back to exactly ``config`` except
    for those escapes, which a plain YAML reader shows as written; config.json has them
    verbatim.
    """
    return yaml.dump(
        _escaped(config, "", frozenset(deferred)),
        Dumper=_RunYamlDumper,
        sort_keys=True,
        default_flow_style=False,
        allow_unicode=True,
    )


def yaml_loader() -> type[yaml.SafeLoader]:
    """The YAML loader OmegaConf (and so Hydra) reads config files with."""
    return _OmegaConfLoader


def load_bounded_yaml(text: str, shown: str) -> Any:
    """YAML text read as OmegaConf reads it, refused with a ConfigError naming ``shown``
    when it nests deeper than MAX_NESTING or expands past MAX_CONFIG_NODES (aliases): for
    YAML a run wrote, which orch reads after it."""
    loader = yaml_loader()(text)  # a YAMLError here is the caller's to report
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        check_expansion(node, shown)
        return loader.construct_document(node)
    except RecursionError as exc:
        raise ConfigError(f"{shown}: nested too deeply") from exc
    finally:
        loader.dispose()


def to_json(config: dict[str, Any]) -> str:
    """Readable, deterministic JSON (sorted keys, 2-space indent, trailing newline)."""
    return json.dumps(config, sort_keys=True, indent=2) + "\n"


def config_digest(config: dict[str, Any]) -> str:
    """``sha256:<hex>`` of the canonical serialization of the config."""
    try:
        return canonical.digest(config)
    except ValueError as exc:
        raise ConfigError(f"config cannot be hashed: {exc}") from exc

