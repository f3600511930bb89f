"""The import graph of ``orchestrator`` runs one way: no package imports a layer above it.

Layers, lowest first (a package may import its own layer and those below)::

    0  errors settings _util schema daemon   (identifiers, typed records and specs, the
                                              container engine's client)
    1  compose inputs                        (orch.yaml, Hydra composition, sweep expansion;
                                              inputs take the store's blobs as a parameter)
    2  store                                 (knows nothing of Docker or Ray)
    3  image                                 (takes a store's blobs as a parameter, not a store)
    4  runner                                (one attempt of one run: container, checkpoint,
                                              live metrics, logs, commit)
    5  backends                              (local, ray, slurm; never the CLI, never a driver)
    6  drivers db results api testing        (api: the library the CLI calls)
    7  cli
    8  resident                              (the ``orch`` entry point: a resident driver
                                              forks each command from imported modules)

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
    **dict.fromkeys(["errors", "settings", "_util", "schema", "daemon"], 0),
    **dict.fromkeys(["compose", "inputs"], 1),
    "store": 2,
    "image": 3,
    "runner": 4,
    "backends": 5,
    **dict.fromkeys(["drivers", "db", "results", "api", "testing"], 6),
    "cli": 7,
    "__init__": 7,
    "resident": 8,
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


def test_the_top_level_holds_packages_that_say_what_they_own() -> None:
    """The folder tree is the map: a handful of modules at the top, every package saying
    what it owns and what it must not import."""
    modules = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
    assert modules == ["errors", "settings", "testing"]
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert len(doc.split()) >= 12, f"{init.parent.name}/__init__.py: say what it owns"
        rule = ("never", "must not", "imports only", "nothing")
        assert any(word in doc.lower() for word in rule), (
            f"{init.parent.name}/__init__.py: say what it must not import"
        )


def test_a_long_module_says_why() -> None:
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        if text.count("\n") > 400:
            doc = ast.get_docstring(ast.parse(text)) or ""
            if "Why one module of this size" not in " ".join(doc.split()):
                long.append(str(path.relative_to(PACKAGE)))
    assert long == [], "split these, or say why they are one module"
