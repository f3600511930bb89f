"""Locks that pin an sdist: orch builds the wheel itself, isolated, pinned and deterministic.

``data/sdist/requirements.lock`` is pip-compile's lock of ``omegaconf==2.3.0`` (its header
says how it was made): omegaconf depends on ``antlr4-python3-runtime==4.9.3``, which PyPI
has only as an sdist, so the lock pins that ``.tar.gz`` by its hash. The wheel is built in
a container of the base image without network (:mod:`orchestrator.image.sdist`); the same
lock gives the same environment layers on an empty second daemon with an empty cache.
Sdists that cannot be built there (a C extension, another build backend) and sdists whose
hash is not the locked one are refused in one line, from tiny sdists made here.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import time
from pathlib import Path

import pytest
from helpers import REPO

from orchestrator.errors import ImageError
from orchestrator.image.sdist import BUILD_TOOLS, SdistBuilder
from orchestrator.image.wheels import ensure_wheels, read_lock

pytestmark = pytest.mark.docker

FIRST_DAEMON = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
LOCK = REPO / "tests" / "data" / "sdist" / "requirements.lock"
ANTLR_SDIST = "f224469b4168294902bb1efa80a8bf7855f24c99aef99cbefc1bcd3cce77881b"
PYTHON = "3.11.2"  # the base image's
USES_ANTLR = """
import importlib.metadata, json, os
import antlr4, omegaconf
from antlr4 import InputStream
out = os.environ["ORCH_OUTPUT"]
cfg = omegaconf.OmegaConf.create({"n": len(InputStream("abc").strdata)})
json.dump({
    "chars": cfg.n,
    "antlr4_in_site": int(antlr4.__file__.startswith("/usr/local/lib/python3.11/dist-packages/")),
    "antlr4_4_9_3": int(importlib.metadata.version("antlr4-python3-runtime") == "4.9.3"),
}, open(os.path.join(out, "metrics.json"), "w"))
"""
C_MODULE = """#include <Python.h>
static struct PyModuleDef m = {PyModuleDef_HEAD_INIT, "orch_test_cext"};
PyMODINIT_FUNC PyInit_orch_test_cext(void) { return PyModule_Create(&m); }
"""


def make_sdist(folder: Path, name: str, files: dict[str, str], version: str = "0.1") -> Path:
    """A source distribution ``<name>-<version>.tar.gz`` of ``files`` (plus its PKG-INFO)."""
    base = f"{name.replace('-', '_')}-{version}"
    files = {"PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", **files}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{base}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for rel, text in sorted(files.items()):
            data = text.encode()
            info = tarfile.TarInfo(f"{base}/{rel}")
            info.size, info.mode, info.mtime = len(data), 0o644, 1_600_000_000
            tar.addfile(info, io.BytesIO(data))
    return path


def lock_for(folder: Path, sdist: Path, name: str, digest: str = "") -> Path:
    """A lock that pins ``sdist`` by its sha256 (or by ``digest``), found with --find-links."""
    digest = digest or hashlib.sha256(sdist.read_bytes()).hexdigest()
    lock = folder / "requirements.lock"
    lock.write_text(f"--find-links {sdist.parent}\n{name}==0.1 \\\n    --hash=sha256:{digest}\n")
    return lock


def sweep(orch, root: Path, env: dict[str, str], *args: str) -> dict:
    proc = orch("sweep", "-p", str(root), "optimizer=SGD", "--json", *args, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def run_json(root: Path, run_id: str, store: Path | None = None) -> dict:
    folder = (store or root / ".orch") / "runs" / run_id
    return json.loads((folder / "run.json").read_text())


def antlr_project(make_project) -> Path:
    return make_project(
        "antlr", files={"requirements.lock": LOCK.read_text(), "uses_antlr.py": USES_ANTLR},
        requirements="requirements.lock", command=["python3", "uses_antlr.py"],
    )


# -- the wheelhouse ------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(docker_client, base_image: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The lock's wheels fetched into an empty cache, antlr4's built: what was said, how long."""
    cache = tmp_path_factory.mktemp("sdist-cache")
    said: list[str] = []
    lock = read_lock(LOCK, PYTHON)
    builder = SdistBuilder(docker_client, base_image)
    started = time.monotonic()
    paths = ensure_wheels(lock.requirements, cache, PYTHON, sdists=builder, say=said.append)
    cold = time.monotonic() - started
    return {"cache": cache, "paths": paths, "said": said, "cold": cold, "builder": builder}


def test_the_locked_sdist_is_built_into_a_wheel_kept_by_its_hash(built: dict) -> None:
    cache, paths = built["cache"], built["paths"]
    assert [p.name for p in paths][:2] == [
        "antlr4_python3_runtime-4.9.3-py3-none-any.whl", "omegaconf-2.3.0-py3-none-any.whl",
    ]
    antlr = paths[0]
    assert antlr.parent.parent == cache / "sha256" / ANTLR_SDIST
    assert antlr.parent.name.startswith("built-")
    sdist = cache / "sha256" / ANTLR_SDIST / "antlr4-python3-runtime-4.9.3.tar.gz"
    assert hashlib.sha256(sdist.read_bytes()).hexdigest() == ANTLR_SDIST
    # orch's pinned build tools are in the wheelhouse by their hashes, like locked wheels
    for tool in BUILD_TOOLS:
        assert list((cache / "sha256" / tool.hex_digests()[0]).glob(f"{tool.name}-*.whl"))
    assert any(
        line.startswith("environment: building antlr4-python3-runtime==4.9.3 from its sdist")
        for line in built["said"]
    ), built["said"]
    assert any(line.startswith("environment: built antlr4_python3") for line in built["said"])


def test_a_warm_cache_builds_nothing_and_says_nothing(built: dict) -> None:
    said: list[str] = []
    started = time.monotonic()
    again = ensure_wheels(
        read_lock(LOCK, PYTHON).requirements, built["cache"], PYTHON,
        sdists=built["builder"], say=said.append,
    )
    warm = time.monotonic() - started
    assert again == built["paths"] and said == []
    print(f"antlr4 lock: cold {built['cold']:.1f} s (pip, sdist fetch, build), warm {warm:.3f} s")


def test_the_same_sdist_builds_the_same_wheel_bytes(
    built: dict, docker_client, base_image: str, tmp_path: Path
) -> None:
    """A second build from scratch (its own cache, a new container): identical wheel."""
    reqs = [r for r in read_lock(LOCK, PYTHON).requirements if r.name == "antlr4-python3-runtime"]
    [again] = ensure_wheels(reqs, tmp_path / "cache", PYTHON,
                            sdists=SdistBuilder(docker_client, base_image))
    assert again.read_bytes() == built["paths"][0].read_bytes()


# -- end to end ----------------------------------------------------------------------


def test_a_sweep_with_the_sdist_in_its_lock_imports_it(make_project, orch, tmp_path: Path) -> None:
    root = antlr_project(make_project)
    result = sweep(orch, root, {"ORCH_CACHE": str(tmp_path / "cache")})
    [run] = result["runs"]
    assert run["status"] == "succeeded"
    assert run["metrics"] == {"chars": 3, "antlr4_in_site": 1, "antlr4_4_9_3": 1}


@pytest.mark.slow
def test_a_second_empty_daemon_and_cache_build_the_same_layers(
    make_project, orch, base_image: str, second_docker_host: str, tmp_path: Path
) -> None:
    from services import copy_image

    root = antlr_project(make_project)
    first = sweep(orch, root, {"ORCH_CACHE": str(tmp_path / "cache1")})
    copy_image(FIRST_DAEMON, second_docker_host, base_image)
    store2 = tmp_path / "store2"
    second = sweep(
        orch, root, {"DOCKER_HOST": second_docker_host, "ORCH_CACHE": str(tmp_path / "cache2")},
        "--store", str(store2),
    )
    [a], [b] = first["runs"], second["runs"]
    assert a["status"] == b["status"] == "succeeded"
    layers_a = run_json(root, a["run_id"])["layers"]["env"]
    layers_b = run_json(root, b["run_id"], store2)["layers"]["env"]
    assert layers_a == layers_b and len(layers_a) >= 3
    assert (a["run_id"], a["image_id"]) == (b["run_id"], b["image_id"])
    wheels = [
        next((tmp_path / cache / "wheels" / "sha256" / ANTLR_SDIST).glob("built-*/*.whl"))
        for cache in ("cache1", "cache2")
    ]
    assert wheels[0].read_bytes() == wheels[1].read_bytes()


# -- what cannot be built ------------------------------------------------------------


def test_an_sdist_with_a_c_extension_is_one_error_line(
    make_project, orch, tmp_path: Path
) -> None:
    setup = (
        "from setuptools import Extension, setup\n"
        "setup(name='orch-test-cext', version='0.1',\n"
        "      ext_modules=[Extension('orch_test_cext', ['orch_test_cext.c'])])\n"
    )
    sdist = make_sdist(tmp_path / "dist", "orch-test-cext", {
        "setup.py": setup, "orch_test_cext.c": C_MODULE,
        "pyproject.toml": '[build-system]\nrequires = ["setuptools"]\n'
                          'build-backend = "setuptools.build_meta"\n',
    })
    lock = lock_for(tmp_path, sdist, "orch-test-cext")
    root = make_project("cext", files={"requirements.lock": lock.read_text()},
                        requirements="requirements.lock")
    proc = orch("sweep", "-p", str(root), "optimizer=SGD")
    assert proc.returncode == 2
    # The error is stderr's one error line, its last (progress may come before it).
    lines = proc.stderr.splitlines()
    assert lines[-1].startswith(
        "error: cannot build 'orch-test-cext==0.1' from its sdist: it compiles C extensions "
        "and the base image has no C compiler: lock a version of 'orch-test-cext' that has a wheel"
    ), proc.stderr
    assert [line for line in lines if line.startswith("error")] == lines[-1:]
    assert "Traceback" not in proc.stderr


def test_an_sdist_needing_another_build_backend_is_refused_before_building(
    docker_client, base_image: str, tmp_path: Path
) -> None:
    sdist = make_sdist(tmp_path / "dist", "orch-test-hatch", {
        "pyproject.toml": '[build-system]\nrequires = ["hatchling>=1.20"]\n'
                          'build-backend = "hatchling.build"\n',
        "orch_test_hatch.py": "",
    })
    lock = read_lock(lock_for(tmp_path, sdist, "orch-test-hatch"), PYTHON)
    with pytest.raises(ImageError) as info:
        ensure_wheels(lock.requirements, tmp_path / "cache", PYTHON, pip_options=lock.pip_options,
                      sdists=SdistBuilder(docker_client, base_image))
    assert str(info.value) == (
        "cannot build 'orch-test-hatch==0.1' from its sdist: it needs 'hatchling>=1.20' to "
        f"build, and orch builds sdists with {BUILD_TOOLS[0].pin()} and {BUILD_TOOLS[1].pin()} "
        "only: lock a version of 'orch-test-hatch' that has a wheel for the target"
    )


def test_an_sdist_with_another_hash_is_refused_before_building(
    docker_client, base_image: str, tmp_path: Path
) -> None:
    sdist = make_sdist(tmp_path / "dist", "orch-test-pure", {
        "setup.py": "from setuptools import setup\nsetup(name='orch-test-pure', version='0.1')\n",
    })
    lock = read_lock(lock_for(tmp_path, sdist, "orch-test-pure", digest="0" * 64), PYTHON)
    with pytest.raises(ImageError) as info:
        ensure_wheels(lock.requirements, tmp_path / "cache", PYTHON, pip_options=lock.pip_options,
                      sdists=SdistBuilder(docker_client, base_image))
    actual = hashlib.sha256(sdist.read_bytes()).hexdigest()
    assert str(info.value).startswith(
        f"hash mismatch for 'orch-test-pure==0.1': the lock expects sha256:{'0' * 64}, "
        f"the index's sdist {sdist.name} has sha256:{actual}"
    )
    assert not list((tmp_path / "cache").glob("sha256/*/built-*"))


def test_a_pure_python_sdist_of_ones_own_builds_offline_and_installs(
    make_project, orch, tmp_path: Path
) -> None:
    """A legacy setup.py-only sdist (no pyproject.toml), like antlr4's, from --find-links."""
    sdist = make_sdist(tmp_path / "dist", "orch-test-pure", {
        "setup.py": "from setuptools import setup\n"
                    "setup(name='orch-test-pure', version='0.1', py_modules=['orch_test_pure'])\n",
        "orch_test_pure.py": "ANSWER = 42\n",
    })
    lock = lock_for(tmp_path, sdist, "orch-test-pure")
    script = (
        "import json, os, orch_test_pure\n"
        "json.dump({'answer': orch_test_pure.ANSWER},\n"
        "          open(os.path.join(os.environ['ORCH_OUTPUT'], 'metrics.json'), 'w'))\n"
    )
    root = make_project("pure", files={"requirements.lock": lock.read_text(), "pure.py": script},
                        requirements="requirements.lock", command=["python3", "pure.py"])
    [run] = sweep(orch, root, {"ORCH_CACHE": str(tmp_path / "cache")})["runs"]
    assert run["status"] == "succeeded" and run["metrics"] == {"answer": 42}
