"""``orch init``: an ``orch.yaml`` for a project that has none, from what the project holds.

What is looked for, and where:

* the entry point: a ``@hydra.main`` script (the detection of :mod:`.hydra_app`) among
  ``src/train.py``, ``train.py``, then the other ``src/*.py`` and ``*.py``; without one, a
  ``train.py`` is taken as a plain script (it reads ``$ORCH_CONFIG``);
* the config dir and name: what the decorator says (``config_path`` is relative to the
  script, as Hydra reads it), else a directory (``configs``, ``conf``, ``config``, then any
  top-level one) holding a YAML whose ``defaults:`` is a list, the mark of a Hydra primary
  config (``train``, ``config`` and ``main`` preferred);
* the lock: ``requirements.lock``, a ``requirements.txt`` with ``--hash`` lines,
  ``pylock.toml`` (or ``pylock.<name>.toml``); without one, the command that makes one;
* data: a ``data/`` directory git ignores becomes the input ``data``.

Nothing here talks to Docker: the caller picks the base image (the CLI takes the default
one, built when missing) and passes its ID to :func:`render`.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from .._util.git import git_try
from ..errors import ProjectError
from .hydra_app import detect as detect_hydra_app
from .project import PROJECT_FILE

#: Directories never searched for configs or scripts.
_SKIP_DIRS = {".git", ".orch", ".venv", "venv", "node_modules", "__pycache__", "outputs",
              "logs", "data", "tests", "build", "dist"}
_CONFIG_DIRS = ("configs", "conf", "config")
_CONFIG_NAMES = ("train", "config", "main")
#: What makes a lock from requirements, per tool (``{src}``: the requirements file).
PIP_COMPILE = ("pip-compile --generate-hashes --allow-unsafe --no-emit-index-url "
               "--no-emit-find-links {src} -o requirements.lock")
UV_COMPILE = "uv pip compile --generate-hashes {src} -o requirements.lock"


@dataclass(frozen=True)
class Found:
    """What :func:`find` found in a project, every path relative to its root."""

    root: Path
    name: str
    script: str
    hydra_app: bool
    config_dir: str
    config_name: str
    #: How the config was found: "@hydra.main in src/train.py" or "a defaults list".
    config_source: str
    lock: str | None
    #: The requirements a lock would be made from (when there is no lock).
    lock_source: str
    data_input: bool
    git_repo: bool
    #: A config key that looks like the data's path (``paths.data_dir``), if any.
    data_key: str | None = None

    @property
    def command(self) -> list[str]:
        return ["python3", self.script]

    def lock_commands(self) -> list[str]:
        """The commands that make the missing lock (pip-tools, uv)."""
        return [PIP_COMPILE.format(src=self.lock_source), UV_COMPILE.format(src=self.lock_source)]


def find(root: Path) -> Found:
    """Look at the project in ``root``; ProjectError naming what is missing."""
    root = root.resolve()
    if not root.is_dir():
        raise ProjectError(f"{root} is not a directory")
    script, hydra = _entry_script(root)
    config_dir: Path | None = None
    config_name: str | None = None
    source = "a Hydra primary config (a defaults list)"
    if hydra:
        config_dir, config_name = _decorator_config(root, script)
        source = f"@hydra.main in {script}"
    if config_dir is None:
        config_dir = _config_dir(root)
    if config_dir is None:
        raise ProjectError(
            f"no Hydra config directory in {root}: none of {', '.join(_CONFIG_DIRS)} (or another "
            "top-level directory) holds a YAML with a defaults: list, and the entry script's "
            "@hydra.main names none; write orch.yaml by hand (README, 'Experiment project')"
        )
    if config_name is None:
        config_name = _primary_config(config_dir)
        source = "a Hydra primary config (a defaults list)"
    if config_name is None:
        raise ProjectError(
            f"no primary config in {config_dir}: no YAML there has a defaults: list; "
            "write orch.yaml by hand (README, 'Experiment project')"
        )
    if not (config_dir / f"{config_name}.yaml").is_file():
        raise ProjectError(
            f"{script}'s @hydra.main names config {config_name!r}, but "
            f"{_rel(root, config_dir)}/{config_name}.yaml does not exist"
        )
    lock, lock_source = _lock(root)
    git_repo = git_try(root, "rev-parse", "--show-toplevel") is not None
    return Found(
        root=root,
        name=_project_name(root),
        script=script,
        hydra_app=hydra,
        config_dir=_rel(root, config_dir),
        config_name=config_name,
        config_source=source,
        lock=lock,
        lock_source=lock_source,
        data_input=git_repo and _ignored_data(root),
        git_repo=git_repo,
        data_key=_data_key(config_dir, config_name),
    )


def render(found: Found, base_image: str) -> str:
    """The text of ``orch.yaml`` for ``found``, with comments saying where each value came
    from and what to change."""
    lines = [
        "# Written by orch init: the entry point, the Hydra config and the lock it found.",
        f"name: {found.name}",
        "# The default base image (orch image base prints its ID).",
        f"base_image: {base_image}",
        f"config_dir: {json.dumps(found.config_dir)}   # from {found.config_source}",
        f"config_name: {json.dumps(found.config_name)}",
        f"command: {json.dumps(found.command)}"
        + ("   # a @hydra.main script: orch gives it each point's config" if found.hydra_app
           else "   # a plain script: it reads the run's config from $ORCH_CONFIG"),
    ]
    if found.lock is not None:
        lines.append(f"requirements: {json.dumps(found.lock)}")
    else:
        lines += [
            "# No lock yet: make one, then uncomment (a lock pins every package by hash):",
            f"#   {found.lock_commands()[0]}",
            "# requirements: requirements.lock",
        ]
    if found.data_input:
        lines += [
            "# data/ is gitignored: a data input, pinned by content and mounted read-only at",
            "# /orch/inputs/data. Point the config at it with ${orch.input:data}, e.g.:",
            f"#   overrides: ['{found.data_key or 'data_dir'}=${{orch.input:data}}']",
            "inputs:",
            "  data: data/",
        ]
    lines += [
        "# Only these paths make the code layer (default: every file git tracks):",
        "# code: [src, configs]",
    ]
    return "\n".join(lines) + "\n"


def write(root: Path, text: str, force: bool = False) -> Path:
    """Write ``root/orch.yaml``; an existing one is an error unless ``force``."""
    path = root / PROJECT_FILE
    if path.exists() and not force:
        raise ProjectError(f"{path} exists: orch init never overwrites it (--force replaces it)")
    path.write_text(text, encoding="utf-8")
    return path


# --- the entry point ---------------------------------------------------------------------


def _candidates(root: Path) -> list[str]:
    first = [rel for rel in ("src/train.py", "train.py") if (root / rel).is_file()]
    rest = sorted(p.relative_to(root).as_posix() for p in root.glob("src/*.py"))
    rest += sorted(p.name for p in root.glob("*.py"))
    return list(dict.fromkeys([*first, *rest]))


def _entry_script(root: Path) -> tuple[str, bool]:
    candidates = _candidates(root)
    for rel in candidates:
        if detect_hydra_app(root, ["python3", rel]) is not None:
            return rel, True
    for rel in ("train.py", "src/train.py"):
        if rel in candidates:
            return rel, False
    raise ProjectError(
        f"no entry point in {root}: no @hydra.main script among src/*.py and *.py, and no "
        "train.py; write orch.yaml by hand (README, 'Experiment project')"
    )


def _decorator_config(root: Path, script: str) -> tuple[Path | None, str | None]:
    """``config_path`` (resolved against the script's directory) and ``config_name`` as the
    ``@hydra.main`` call spells them, when they are plain strings."""
    path = root / script
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (OSError, SyntaxError, ValueError):
        return None, None
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for decorator in node.decorator_list:
            if not isinstance(decorator, ast.Call) or not _is_main(decorator.func):
                continue
            args = dict(zip(("config_path", "config_name"), decorator.args, strict=False))
            args.update({k.arg: k.value for k in decorator.keywords if k.arg})
            config_path = _string(args.get("config_path"))
            config_name = _string(args.get("config_name"))
            directory = None
            if config_path is not None and not config_path.startswith("pkg://"):
                directory = (path.parent / config_path).resolve()
                if not directory.is_dir() or not directory.is_relative_to(root):
                    directory = None
            if config_name is not None:
                config_name = config_name.removesuffix(".yaml")
            return directory, config_name
    return None, None


def _is_main(func: ast.expr) -> bool:
    return (isinstance(func, ast.Attribute) and func.attr == "main") or (
        isinstance(func, ast.Name) and func.id == "main")


def _string(node: ast.expr | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


# --- the config --------------------------------------------------------------------------


def _is_primary(path: Path) -> bool:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and isinstance(data.get("defaults"), list)


def _primary_config(directory: Path) -> str | None:
    names = [p.stem for p in sorted(directory.glob("*.yaml")) if _is_primary(p)]
    preferred = [n for n in _CONFIG_NAMES if n in names]
    return next(iter(preferred or names), None)


def _config_dir(root: Path) -> Path | None:
    named = [root / name for name in _CONFIG_DIRS]
    others = sorted(p for p in root.iterdir()
                    if p.is_dir() and p.name not in _SKIP_DIRS and not p.name.startswith("."))
    for directory in dict.fromkeys([*named, *others]):
        if directory.is_dir() and _primary_config(directory) is not None:
            return directory
    return None


# --- the lock, the data, the name --------------------------------------------------------


def _has_hashes(path: Path) -> bool:
    try:
        return "--hash=" in path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


def _lock(root: Path) -> tuple[str | None, str]:
    if (root / "requirements.lock").is_file():
        return "requirements.lock", "requirements.in"
    if _has_hashes(root / "requirements.txt"):
        return "requirements.txt", "requirements.in"
    pylocks = sorted(p.name for p in root.glob("pylock*.toml")
                     if re.fullmatch(r"pylock(\.[^.]+)?\.toml", p.name))
    if pylocks:
        return ("pylock.toml" if "pylock.toml" in pylocks else pylocks[0]), "requirements.in"
    for source in ("requirements.in", "requirements.txt", "pyproject.toml"):
        if (root / source).is_file():
            return None, source
    return None, "requirements.in"


def _ignored_data(root: Path) -> bool:
    if not (root / "data").is_dir():
        return False
    return git_try(root, "check-ignore", "-q", "data/") is not None


_DATA_KEYS = ("data_dir", "data_path", "data_root", "dataset_dir")


def _data_key(config_dir: Path, config_name: str) -> str | None:
    """The dotted key of a config value that names the data directory, when one is spelled
    like it: the primary config's own first, then a group's (``paths/default.yaml``)."""
    files = [config_dir / f"{config_name}.yaml",
             *sorted(p for p in config_dir.rglob("*.yaml") if p.parent != config_dir)]
    for path in files:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
        if not isinstance(data, dict):
            continue
        for key in _DATA_KEYS:
            # a key that only repeats another (${paths.data_dir}) is not where it is set
            if key in data and not re.fullmatch(r"\$\{[^}]*\}", str(data[key])):
                group = path.parent.relative_to(config_dir).parts
                return ".".join([*group, key])
    return None


def _project_name(root: Path) -> str:
    name = re.sub(r"[^a-z0-9]+", "-", root.name.lower()).strip("-")
    return name or "project"


def _rel(root: Path, path: Path) -> str:
    rel = path.resolve().relative_to(root).as_posix()
    return rel
