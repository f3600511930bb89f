"""Declared inputs (``inputs:`` in orch.yaml) and how configs name them.

::

    inputs:
      canadian: data/canadian.npz          # a file or a directory; relative to the project
      all: data/all/
      embeddings: s3://corpora/fasttext/   # an S3 object or prefix
      other: {source: s3://b/k, endpoint: http://127.0.0.1:8333}   # its own endpoint

A config names an input with ``${orch.input:NAME}``, which composes to
``/orch/inputs/NAME``; the run then sees it there (read-only) and in ``$ORCH_INPUT_NAME``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MOUNT_ROOT = "/orch/inputs"
ENV_PREFIX = "ORCH_INPUT_"
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
#: A name as it appears in a composed config (a resolved ``${orch.input:NAME}``).
_IN_CONFIG = re.compile(re.escape(MOUNT_ROOT) + r"/([A-Za-z_][A-Za-z0-9_]*)(?![A-Za-z0-9_])")
#: A name as it appears in the text of a config file.
_IN_TEXT = re.compile(
    r"\$\{\s*orch\.input\s*:\s*([^}\s]*)\s*\}|"
    + re.escape(MOUNT_ROOT)
    + r"/([A-Za-z_][A-Za-z0-9_]*)(?![A-Za-z0-9_])"
)


def mount_path(name: str) -> str:
    return f"{MOUNT_ROOT}/{name}"


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def resolve_input(name: object) -> str:
    """The ``orch.input`` resolver: ``${orch.input:canadian}`` -> ``/orch/inputs/canadian``."""
    text = str(name)
    if not NAME.match(text):
        raise ValueError(
            f"orch.input: {text!r} is not an input name (letters, digits, '_'; as declared "
            "under inputs: in orch.yaml)"
        )
    return mount_path(text)


@dataclass(frozen=True)
class InputDecl:
    """One entry of ``inputs:``; ``source`` exactly as written (a path or ``s3://...``)."""

    name: str
    source: str
    endpoint: str | None = None

    @property
    def is_s3(self) -> bool:
        return self.source.startswith("s3://")

    def local_path(self, root: Path) -> Path:
        """The path it names (relative ones are relative to the project root), unresolved."""
        path = Path(self.source).expanduser()
        return path if path.is_absolute() else root / path


def parse_inputs(value: Any, where: str) -> tuple[InputDecl, ...]:
    """Validate ``inputs:``; raises ValueError with ``inputs.NAME: ...`` (the caller adds
    the file name)."""
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise ValueError("inputs: must be a mapping of NAME: path or s3://bucket/key")
    decls = []
    upper: dict[str, str] = {}
    for raw_name, spec in value.items():
        name = str(raw_name)
        if not isinstance(raw_name, str) or not NAME.match(name):
            raise ValueError(
                f"inputs.{name}: {name!r} is not an identifier (letters, digits and '_', not "
                "starting with a digit): it becomes /orch/inputs/NAME and $ORCH_INPUT_NAME"
            )
        other = upper.setdefault(name.upper(), name)
        if other != name:
            raise ValueError(
                f"inputs.{name}: clashes with input {other!r} (both are ${env_name(name)})"
            )
        endpoint = None
        if isinstance(spec, Mapping):
            unknown = sorted(set(map(str, spec)) - {"source", "endpoint"})
            if unknown:
                raise ValueError(f"inputs.{name}.{unknown[0]}: unknown (valid: source, endpoint)")
            endpoint = spec.get("endpoint")
            spec = spec.get("source")
            if endpoint is not None and not (
                isinstance(endpoint, str) and re.match(r"^https?://[^\s/]+/?\Z", endpoint)
            ):
                raise ValueError(f"inputs.{name}.endpoint: expected http(s)://HOST[:PORT]")
        if not isinstance(spec, str) or not spec.strip():
            raise ValueError(f"inputs.{name}: must be a path or s3://bucket/key (a string)")
        if "\x00" in spec:
            raise ValueError(f"inputs.{name}: NUL in the path")
        if spec.startswith("s3://"):
            bucket, _, _ = spec[len("s3://") :].partition("/")
            if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]\Z", bucket):
                raise ValueError(f"inputs.{name}: invalid bucket {bucket!r} in {spec!r}")
        elif re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", spec):
            raise ValueError(f"inputs.{name}: {spec!r}: only paths and s3:// are supported")
        elif endpoint is not None:
            raise ValueError(f"inputs.{name}.endpoint: only for an s3:// source")
        decls.append(InputDecl(name, spec, endpoint))
    return tuple(decls)


def names_in_config(config: Any) -> set[str]:
    """The input names a composed config refers to (strings holding ``/orch/inputs/NAME``)."""
    found: set[str] = set()

    def visit(value: Any) -> None:
        if isinstance(value, str):
            if MOUNT_ROOT in value:
                found.update(_IN_CONFIG.findall(value))
        elif isinstance(value, Mapping):
            for item in value.values():
                visit(item)
        elif isinstance(value, list | tuple):
            for item in value:
                visit(item)

    visit(config)
    return found


def names_in_tree(config_dir: Path) -> set[str]:
    """Every input name any config file of the tree mentions (``${orch.input:NAME}`` or the
    mount path): the inputs *not* mentioned anywhere are mounted into every run."""
    found: set[str] = set()
    for path in sorted(Path(config_dir).rglob("*.yaml")):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue  # composition reports unreadable config files
        for resolver, literal in _IN_TEXT.findall(text):
            found.add(resolver or literal)
    return found


def run_inputs(decls: Iterable[InputDecl], config: Any, named_in_tree: set[str]) -> tuple[str, ...]:
    """The inputs one run depends on: those its config names, and those no config names.

    Raises ValueError naming an input the config refers to that orch.yaml lacks.
    """
    declared = {decl.name: decl for decl in decls}
    named = names_in_config(config)
    unknown = sorted(named - set(declared))
    if unknown:
        listing = ", ".join(sorted(declared)) or "none"
        raise ValueError(
            f"the config names input {unknown[0]!r} ({mount_path(unknown[0])}), which orch.yaml "
            f"does not declare under inputs: (declared: {listing})"
        )
    everywhere = {name for name in declared if name not in named_in_tree}
    return tuple(sorted(named | everywhere))
