"""The environment layers: locked wheels installed without running pip, one layer per package.

Each wheel is unpacked by pypa's ``installer`` into a destination that collects layer
entries instead of writing a file system, at the paths the base image's own
``pip install`` would use (see :mod:`.interpreter`; on Debian)::

    /usr/local/lib/python3.11/dist-packages   purelib and platlib: a site directory, so
                                              ``site`` processes the packages' .pth files
    /usr/local/bin                            scripts (on PATH), shebang /usr/bin/python3
    /usr/local/include/python3.11/<name>      headers
    /usr/local                                data

Bytecode is compiled into the layers by the base image's interpreter (:mod:`.bytecode`),
hash-based, so importing needs no writable cache and the bytes stay reproducible.
RECORD is the one installer writes (sorted, so deterministic) and INSTALLER says ``orch``.

**Layers.** Every wheel gets a layer of its own, keyed by the wheel's sha256, the
interpreter and these rules, and cached under ``<cache>/layers/pkg-<key>.tar``: a lock
that changes one package rebuilds one layer, and two projects that pin the same wheel
share its layer in the store. Layers are stacked heaviest first, so that the big ones
sit at the bottom (Docker identifies a layer on a node by the layers below it too: a
change to a small package leaves the chain of the big ones intact). Below them is the
bytecode of the base interpreter's standard library, one layer per base image, and below
that the payload layers: a big package's files other than its Python sources
(``<cache>/layers/pkg-<key>-payload.tar``, see :func:`.envplan.split_payload`), which need no
bytecode and so reach the daemon while the sources compile (:class:`.envbuild.Build`). Past
:data:`.envplan.MAX_LAYERS` packages the smallest share one layer (Docker allows 127 layers in
all, and the base, code and config layers need theirs).

The work is split by what it is: :mod:`.envplan` plans the layers (grouping, cache keys,
order, the cache read back), :mod:`.envbuild` is the engine that builds the missing ones,
:mod:`.envinstall` the installer destination that unpacks a wheel into layer entries.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .._util.stopping import Stop
from ..daemon.client import DockerClient
from . import cache
from .envbuild import Build, OnReady
from .envinstall import env_layer_entries as env_layer_entries
from .envplan import (
    EnvLayer,
    Package,
    check_conflicts,
    group_names,
    layer_key,
    ordered,
    plan_layers,
    read_layer,
    read_package,
    stdlib_key,
)
from .interpreter import Interpreter

__all__ = ["EnvLayer", "OnReady", "env_image_settings", "env_layer_entries", "plan_layers",
           "write_env_layers"]


def env_image_settings() -> dict[str, str]:
    """Environment variables the image needs for the layers: none (the site dir is Python's)."""
    return {}


def write_env_layers(
    client: DockerClient,
    image_id: str,
    interpreter: Interpreter,
    wheels: Sequence[Path],
    cache_root: Path,
    *,
    stdlib: bool = True,
    on_ready: OnReady | None = None,
    stop: Stop | None = None,
    say: Callable[[str], None] | None = None,
) -> list[EnvLayer]:
    """Write (or reuse) the layers of ``wheels`` for the base image ``image_id``, bottom first.

    The order: the payload layers (a big package's files other than its Python sources,
    see :func:`split_payload`; they need no bytecode), then with ``stdlib`` the bytecode
    of the interpreter's standard library (the base recipe ships none, and a run's user
    cannot write it, so without it every run would compile what it imports), then one
    layer per package, heaviest first. Layers already in the cache are neither unpacked
    nor compiled again. Files that two packages install with different content are
    refused, across all layers. ``on_ready`` is given the longest written prefix of the
    layers whenever it grows, while the rest are still built (see :class:`Build`).
    ``say`` is told what is built and how long it took; a cancelled ``stop`` ends the build
    with :class:`~orchestrator.errors.Interrupted`, the layers written so far cached.
    """
    groups = plan_layers(wheels)
    keys = [layer_key(g, interpreter).removeprefix("sha256:") for g in groups]
    names = [group_names(g) for g in groups]
    layers_dir = cache.layers(cache_root)
    known: dict[int, Package] = {}
    for index, key in enumerate(keys):
        found = read_package(layers_dir, key, names[index])
        if found is not None:
            known[index] = found
    std_key = stdlib_key(image_id, interpreter).removeprefix("sha256:") if stdlib else None
    std = read_layer(layers_dir, f"pkg-{std_key}", ()) if std_key else None
    missing = [index for index in range(len(groups)) if index not in known]
    if not missing and (std_key is None or std is not None):
        check_conflicts([(names[i], known[i].files) for i in range(len(groups))])
        return ordered([known[i] for i in range(len(groups))], std)
    say = say or (lambda line: None)
    stdlib_too = " and the standard library's bytecode" if std_key and std is None else ""
    say(f"environment: building {len(missing)} of {len(groups)} package layers{stdlib_too}")
    started = time.monotonic()
    layers_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=layers_dir, prefix=".stage-") as tmp:
        build = Build(client, image_id, interpreter, layers_dir, Path(tmp), on_ready, stop)
        layers = build.run(groups, keys, names, known, std_key, std)
    size = sum(layer.size for layer in layers)
    say(
        f"environment: {len(layers)} layers ({size / 1e6:.0f} MB) built in "
        f"{time.monotonic() - started:.1f} s"
    )
    return layers
