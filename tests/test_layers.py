"""The import graph of ``orchestrator`` runs one way: no module imports a layer above it.

Layers, lowest first (a module may import its own layer and those below)::

    0  errors ids canonical files settings record job engine docker_api stopping live git pool
    1  spec project config configio overrides composecache runtime hydra_app inputs space scaffold
                                (inputs: takes the store's blobs as a parameter)
    2  store request labels workspace  (knows nothing of Docker or Ray; workspace connects
                                        lazily, through docker_api)
    3  image images                (takes a store's blobs as a parameter, not a store)
    4  container outputs checkpoint execute
    5  backends (local, ray, slurm; never the CLI, never the commands)
    6  drivers (grid, search, rerun) verify logs detached results watch
       catalog frame query gc export_mlflow api    (api: the library the CLI calls)
       testing                     (a fake backend and image builder for fast tests)
    7  cli

Function-level imports count as much as module-level ones: a lazy import is still a
dependency. The map is exact: every top-level unit under ``orchestrator/`` has a layer
and every name in it is a unit, so a removed or renamed module cannot leave a stale entry.
"""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import REPO

PACKAGE = REPO / "orchestrator"

LAYERS: dict[str, int] = {
    **dict.fromkeys(
        ["errors", "ids", "canonical", "files", "settings", "record", "job", "engine",
         "docker_api", "stopping", "live", "git", "pool"], 0
    ),
    **dict.fromkeys(["spec", "project", "config", "configio", "overrides", "composecache",
                     "runtime", "hydra_app", "inputs", "space", "scaffold"], 1),
    **dict.fromkeys(["store", "request", "labels", "workspace"], 2),
    **dict.fromkeys(["image", "images"], 3),
    **dict.fromkeys(["container", "outputs", "checkpoint", "execute"], 4),
    "backends": 5,
    **dict.fromkeys(
        ["drivers", "verify", "logs", "detached", "results", "watch",
         "catalog", "frame", "query", "gc", "export_mlflow", "api", "testing"],
        6,
    ),
    "cli": 7,
    "__init__": 7,
}


def _unit(module: str) -> str:
    """``orchestrator.store.dir`` -> ``store``; the top-level name under the package."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1] if len(parts) > 2 else parts
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = (alias.name for alias in node.names)
            found.update(name for name in names if name.startswith("orchestrator"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
                if node.module is None:
                    found.update(f"{name}.{alias.name}" for alias in node.names)
                else:
                    found.add(name)
            elif node.module and node.module.startswith("orchestrator"):
                found.add(node.module)
    return found


def test_every_module_has_a_layer() -> None:
    units = {_unit(_module_name(p)) for p in PACKAGE.rglob("*.py")}
    assert units - set(LAYERS) == set(), "give these a layer"
    assert set(LAYERS) - units == set(), "no such module: drop these from LAYERS"


def test_no_import_runs_back_up() -> None:
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = _module_name(path)
        if source == "orchestrator.__init__" or path == PACKAGE / "__init__.py":
            continue
        here = LAYERS[_unit(source)]
        for target in sorted(_imports(path)):
            unit = _unit(target)
            if unit in LAYERS and LAYERS[unit] > here and unit != _unit(source):
                upward.append(f"{source} -> {target}")
    assert upward == []
