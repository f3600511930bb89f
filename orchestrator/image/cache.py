"""The build cache: everything orch can rebuild, under one root.

::

    <root>/layers/<hex>.tar              layer tars by diff ID (base rootfs, exported bases)
    <root>/layers/pkg-<key>.tar, .json   environment layers (one per package or group) and
                                         their diff IDs and file lists (envlayer)
    <root>/layers/*.tar.gz               a layer's compressed copy, once uploaded (compress)
    <root>/wheels/                       the wheelhouse (wheels)
    <root>/python/<hex>.json             the Python of a base image, by image ID (interpreter)
    <root>/checked/<hex>                 environment keys whose lock was found complete
    <root>/base/<suite>/                 the base rootfs, its cached image IDs, a build lock

Functions that touch the cache take the root as ``cache_root``; None means
:func:`orchestrator.settings.default_cache_root` (ORCH_CACHE, else $XDG_CACHE_HOME/orch,
else ~/.cache/orch), read when called. The CLI passes :attr:`Settings.cache_root
<orchestrator.settings.Settings.cache_root>`, so only one place decides where the cache is.
"""

from __future__ import annotations

from pathlib import Path

from ..settings import default_cache_root


def root(cache_root: Path | None = None) -> Path:
    return default_cache_root() if cache_root is None else Path(cache_root)


def layers(cache_root: Path | None = None) -> Path:
    return root(cache_root) / "layers"


def wheels(cache_root: Path | None = None) -> Path:
    return root(cache_root) / "wheels"


def interpreters(cache_root: Path | None = None) -> Path:
    return root(cache_root) / "python"


def image_layers(cache_root: Path | None = None) -> Path:
    return root(cache_root) / "image-layers"


def base(suite: str, cache_root: Path | None = None) -> Path:
    return root(cache_root) / "base" / suite
