"""The base image's Python, as the environment needs to know it.

Wheels are installed where the base image's own ``pip install`` would put them (its
default install scheme: ``/usr/local/lib/python3.11/dist-packages`` on Debian), so that
``site`` processes their ``.pth`` files and any ``python3`` of the image sees them without
``PYTHONPATH``. Bytecode must be compiled by this very interpreter (a ``.pyc`` made by
another patch release may differ byte for byte), so its build string keys the layers.

Everything here is asked of the image once, in a container without network, and kept
under ``<cache>/python/<image hex>.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .._util.files import atomic_write
from ..daemon.client import DockerClient, describe
from ..errors import ImageError
from . import cache

# Prints what the environment layer needs, as one JSON object.
_PROBE = r"""
import importlib.util, json, site, sys, sysconfig
paths = sysconfig.get_paths()
print(json.dumps({
    "version": "%d.%d.%d" % sys.version_info[:3],
    "build": sys.version,
    "magic": importlib.util.MAGIC_NUMBER.hex(),
    "cache_tag": sys.implementation.cache_tag or "",
    "executable": sys.executable,
    "stdlib": paths["stdlib"],
    "purelib": paths["purelib"],
    "platlib": paths["platlib"],
    "scripts": paths["scripts"],
    "include": paths["include"],
    "data": paths["data"],
    "site_dirs": [p for p in site.getsitepackages() if p in sys.path],
}))
"""


@dataclass(frozen=True)
class Interpreter:
    """The facts of a base image's ``python3`` that the environment layer depends on."""

    version: str  # "3.11.2"
    build: str  # sys.version: which build compiles the bytecode
    magic: str  # importlib.util.MAGIC_NUMBER, hex
    cache_tag: str  # "cpython-311": names the __pycache__ files
    executable: str  # scripts' shebang
    stdlib: str
    purelib: str
    platlib: str
    scripts: str
    include: str
    data: str
    site_dirs: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["site_dirs"] = list(self.site_dirs)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Interpreter:
        values = {name: data[name] for name in cls.__dataclass_fields__}
        values["site_dirs"] = tuple(values["site_dirs"])
        if not all(isinstance(values[n], str) for n in values if n != "site_dirs"):
            raise ValueError("interpreter facts must be strings")
        return cls(**values)

    def check(self, image: str) -> None:
        """Refuse an interpreter whose install scheme ``site`` would not process."""
        for name in ("purelib", "platlib"):
            where = getattr(self, name)
            if where not in self.site_dirs:
                raise ImageError(
                    f"the Python of {image} installs packages into {where}, which is not one of "
                    f"its site directories ({', '.join(self.site_dirs) or 'none'}): .pth files "
                    "would be ignored there; use a base image whose python3 has a site-packages "
                    "directory on sys.path"
                )
        if not self.cache_tag:
            raise ImageError(f"the Python of {image} has no bytecode cache tag: use CPython")


def probe(client: DockerClient, image_id: str, cache_root: Path) -> Interpreter:
    """The :class:`Interpreter` of ``image_id``, asked once per image and cached."""
    marker = cache.interpreters(cache_root) / (image_id.split(":")[-1] + ".json")
    try:
        return Interpreter.from_json(json.loads(marker.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    import docker.errors

    try:
        out = client.containers.run(
            image_id, ["python3", "-I", "-c", _PROBE], remove=True, network_mode="none"
        )
    except docker.errors.DockerException as exc:
        raise ImageError(
            f"cannot run python3 in the base image {image_id}: {describe(exc)}"
        ) from exc
    try:
        interpreter = Interpreter.from_json(json.loads(out.decode().strip().splitlines()[-1]))
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise ImageError(f"unexpected answer from python3 in {image_id}: {out[:200]!r}") from exc
    interpreter.check(image_id)
    atomic_write(marker, json.dumps(interpreter.to_json(), sort_keys=True).encode())
    return interpreter
