"""How a run's code receives its config: a plain script, or a Hydra application.

A plain script reads ``/orch/config.yaml`` (or ``.json``). A ``@hydra.main`` application
would compose its config tree again inside the container, from its own defaults, and
train whatever that gives: not the point orch composed and recorded. So orch starts it
the way Hydra's own launchers start a job, on the composed config:

* the run image holds ``/orch/hydra/<config_name>.yaml``: the run's config (exactly the
  recorded one) and the whole hydra node orch composed for the point (``job.name``,
  ``job.num``, ``job.id``, ``runtime.choices``, ``run.dir`` = ``/orch/output``, ...), with
  the ``hydra/*`` group choices as ``override`` entries of its defaults list so that Hydra
  selects the same logging and launcher configs;
* the command gets ``--config-path=/orch/hydra --config-name=<config_name>``: Hydra then
  composes nothing but that file, and writes ``.hydra/`` and its log under
  ``/orch/output``; nothing goes to the read-only code;
* Hydra's loader recomputes two fields from the command line (``job.override_dirname``
  from the overrides it was given: none, and ``mode``: a single run); a small Hydra
  callback baked beside the config (``hydra.callbacks.orch``) sets them back to orch's
  values before the job starts, so ``HydraConfig.get()`` holds what orch composed;
* after the run, the config Hydra saved (``.hydra/config.yaml``) is compared with the
  baked one: a difference fails the run and names the first differing keys. An
  application that still recomposes (a wrapper that drops the arguments, a script that
  calls ``compose()`` itself) is caught, never recorded as something it did not run.
  The same check runs on every run that leaves a ``.hydra/config.yaml``, so a Hydra
  application orch did not recognise is caught too.

Whether the command is a Hydra application: ``hydra_app: true|false`` in ``orch.yaml``
decides; without it, orch looks at the script the command runs (``python train.py``,
``python -m pkg.train``) for a ``@hydra.main`` decorator. A command it cannot see into
(a console script, a shell wrapper) is a plain script unless ``hydra_app: true`` says
otherwise, and the check above catches a wrong guess.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

#: Where the baked config and the callback live inside a run's image.
BAKED_DIR = "/orch/hydra"
#: The module of the callback (on PYTHONPATH through BAKED_DIR).
CALLBACK_MODULE = "orch_hydra_callback"
#: Hydra's task config as Hydra saved it, relative to the run's output directory.
SAVED_CONFIG = ".hydra/config.yaml"

CALLBACK_SOURCE = '''\
"""orch: puts back what orch composed for this run in Hydra's runtime config.

Hydra's loader recomputes hydra.job.override_dirname from the command line (orch passes
no overrides: the config is already composed) and hydra.mode (a single run); this
callback sets both to the values orch composed and recorded, before the job starts.
"""
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import open_dict, read_write


class Restore(Callback):
    def __init__(self, override_dirname: str, mode: str) -> None:
        self.override_dirname = override_dirname
        self.mode = mode

    def on_run_start(self, config, **kwargs):
        with read_write(config.hydra), open_dict(config.hydra):
            config.hydra.job.override_dirname = self.override_dirname
            config.hydra.mode = RunMode[self.mode]
'''


def detect(root: Path, command: Sequence[str]) -> str | None:
    """The project-relative script of ``command`` that holds ``@hydra.main``, or None."""
    script = entry_script(root, command)
    if script is None:
        return None
    try:
        tree = ast.parse(script.read_bytes(), filename=str(script))
    except (OSError, SyntaxError, ValueError):
        return None
    return script.relative_to(root).as_posix() if _has_hydra_main(tree) else None


def entry_script(root: Path, command: Sequence[str]) -> Path | None:
    """The Python file ``command`` runs from the project (the working directory of a run
    is the code's root): ``python3 src/train.py`` or ``python -m src.train``."""
    args = list(command)
    for index, arg in enumerate(args):
        if arg == "-m" and index + 1 < len(args):
            base = root.joinpath(*args[index + 1].split("."))
            for candidate in (base.with_suffix(".py"), base / "__main__.py"):
                if candidate.is_file():
                    return candidate
            return None
        if arg.endswith(".py"):
            candidate = root / arg
            return candidate if candidate.is_file() else None
    return None


def _has_hydra_main(tree: ast.Module) -> bool:
    """A function decorated with ``hydra.main(...)`` (under any import alias of ``hydra``)
    or with ``main(...)`` imported from ``hydra``."""
    modules: set[str] = {"hydra"}
    functions: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(a.asname or a.name for a in node.names if a.name == "hydra")
        elif isinstance(node, ast.ImportFrom) and node.module == "hydra":
            functions.update(a.asname or a.name for a in node.names if a.name == "main")
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for decorator in node.decorator_list:
            target = decorator.func if isinstance(decorator, ast.Call) else decorator
            if isinstance(target, ast.Attribute) and target.attr == "main" and isinstance(
                target.value, ast.Name) and target.value.id in modules:
                return True
            if isinstance(target, ast.Name) and target.id in functions:
                return True
    return False


def command_args(config_name: str) -> tuple[str, ...]:
    """What a Hydra application's command gets appended."""
    return (f"--config-path={BAKED_DIR}", f"--config-name={config_name}")


def image_env(*envs: dict[str, str]) -> dict[str, str]:
    """What a Hydra application's image adds to the environment: the callback's directory
    first on ``PYTHONPATH`` (before whatever the base image or orch.yaml put there)."""
    existing = next((env["PYTHONPATH"] for env in reversed(envs) if env.get("PYTHONPATH")), "")
    return {"PYTHONPATH": f"{BAKED_DIR}:{existing}" if existing else BAKED_DIR}


def baked_files(
    config: dict[str, Any], node: dict[str, Any], config_name: str,
    deferred: Sequence[str] = (),
) -> list[tuple[str, bytes]]:
    """(path inside the image, bytes) of the Hydra application's config and callback."""
    return [
        (f"{BAKED_DIR}/{config_name}.yaml", primary_config(config, node, deferred).encode()),
        (f"{BAKED_DIR}/{CALLBACK_MODULE}.py", CALLBACK_SOURCE.encode()),
    ]


def primary_config(
    config: dict[str, Any], node: dict[str, Any], deferred: Sequence[str] = ()
) -> str:
    """The config file Hydra loads in the run: the run's config, the hydra node on top of
    Hydra's defaults (``_self_`` last), the same ``hydra/*`` options selected."""
    from . import configio as configmod  # OmegaConf's YAML: imported only when needed

    node = json.loads(json.dumps(node))  # a copy
    choices = node.get("runtime", {}).get("choices", {})
    defaults: list[Any] = [
        {f"override {group}": option}
        for group, option in sorted(choices.items())
        if group.startswith("hydra/") and option is not None
    ]
    defaults.append("_self_")
    job = node.setdefault("job", {})
    node["callbacks"] = {
        **(node.get("callbacks") or {}),
        "orch": {
            "_target_": f"{CALLBACK_MODULE}.Restore",
            "override_dirname": job.get("override_dirname", ""),
            "mode": node.get("mode") or "MULTIRUN",
        },
    }
    # Hydra runs a single job here: the mode it starts with must be RUN (the callback
    # then puts orch's value back)
    node["mode"] = "RUN"
    head = yaml.safe_dump({"defaults": defaults}, sort_keys=False)
    # the node's text is Hydra's own (kept unescaped, like the deferred keys): what was left
    # unresolved, Hydra resolves in the run
    body = configmod.to_yaml({**config, "hydra": node}, deferred=[*deferred, "hydra"])
    return f"# The run's config, composed by orch (orchestrator/compose/hydra_app.py)\n{head}{body}"


def node_for_run(node: dict[str, Any]) -> dict[str, Any]:
    """The hydra node as a run receives it: without what describes the machine that composed
    it (its config sources' paths, its Hydra version), which Hydra sets again in the run
    and which must not make the image depend on where it was built."""
    node = json.loads(json.dumps(node))
    runtime = node.get("runtime")
    if isinstance(runtime, dict):
        for key in ("config_sources", "version", "version_base"):
            runtime.pop(key, None)
    return node


def check_run(
    output_dir: Path, config: dict[str, Any], deferred: Sequence[str] = (),
    node: dict[str, Any] | None = None,
) -> str | None:
    """Why a finished run did not run its recorded config, by what Hydra saved in its
    output directory; None when it did, or when nothing says otherwise (a plain script).
    ``node`` is the hydra node of a Hydra application: it must have saved its config,
    unless that node turned saving off (``hydra.output_subdir: null``)."""
    from ..errors import ConfigError
    from . import configio as configmod  # OmegaConf's YAML: imported only when needed

    saved = output_dir / SAVED_CONFIG
    if node is not None and node.get("output_subdir") is not None and not (
        saved.is_file() and not saved.is_symlink() and not saved.parent.is_symlink()
    ):
        return (
            f"the Hydra application saved no {SAVED_CONFIG} under /orch/output: it did not "
            "run on the config orch gave it (does the command pass its arguments on to the "
            "@hydra.main script?)"
        )
    try:
        if saved.parent.is_symlink() or not saved.is_file() or saved.is_symlink() or (
            saved.stat().st_size > 64 << 20
        ):
            return None
        theirs = configmod.load_bounded_yaml(saved.read_text(encoding="utf-8"), SAVED_CONFIG)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ConfigError) as exc:
        return f"the Hydra application's {SAVED_CONFIG} cannot be read: {exc}"
    ours = yaml.load(configmod.to_yaml(config, deferred=deferred), Loader=configmod.yaml_loader())  # noqa: S506
    differences = list(_differences(ours, theirs, ""))
    if not differences:
        return None
    shown = ", ".join(differences[:5]) + (f" and {len(differences) - 5} more"
                                         if len(differences) > 5 else "")
    fix = (
        "does the command pass its arguments on to the @hydra.main script?" if node is not None
        else "set hydra_app: true in orch.yaml, so that orch gives it the config"
    )
    return (
        f"the Hydra application ran another config than the recorded one ({SAVED_CONFIG} "
        f"differs at {shown}): it composed its own ({fix})"
    )


def _differences(ours: Any, theirs: Any, path: str) -> Iterator[str]:
    if isinstance(ours, dict) and isinstance(theirs, dict):
        for key in sorted(set(ours) | set(theirs), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in ours or key not in theirs:
                yield where
            else:
                yield from _differences(ours[key], theirs[key], where)
    elif isinstance(ours, list) and isinstance(theirs, list) and len(ours) == len(theirs):
        for index, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            yield from _differences(a, b, f"{path}[{index}]")
    elif ours != theirs or type(ours) is not type(theirs):
        yield path or "(the whole config)"
