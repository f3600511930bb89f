"""The environment layers: site-packages layout, one layer per package, bytecode
(orchestrator.image.envlayer, envplan, envbuild, envinstall / bytecode / interpreter)."""

from __future__ import annotations

import json
import shutil
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import git_commit_all, make_wheel

from orchestrator.daemon.client import DockerClient
from orchestrator.errors import ImageError
from orchestrator.image import bytecode, envinstall, envlayer, envplan, interpreter
from orchestrator.image.envlayer import env_layer_entries, plan_layers, write_env_layers
from orchestrator.image.interpreter import Interpreter
from orchestrator.image.wheels import ensure_wheels, read_lock

LOCKS = Path(__file__).parent / "data" / "lock"
SITE = "usr/local/lib/python3.11/dist-packages"
DEBIAN = Interpreter(
    version="3.11.2", build="3.11.2 (test)", magic="a70d0d0a", cache_tag="cpython-311",
    executable="/usr/bin/python3", stdlib="/usr/lib/python3.11", purelib=f"/{SITE}",
    platlib=f"/{SITE}",
    scripts="/usr/local/bin", include="/usr/local/include/python3.11", data="/usr/local",
    site_dirs=(f"/{SITE}", "/usr/lib/python3/dist-packages"),
)


def no_compile(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Compile nothing (no Docker); returns the sizes of the groups it was asked for."""
    calls: list[int] = []

    def fake(client, image_id, interp, groups, stage, stop=None):  # type: ignore[no-untyped-def]
        calls.append(len(groups))
        return [[] for _ in groups]

    monkeypatch.setattr(bytecode, "compile_groups", fake)
    return calls


def write(wheels: list[Path], cache: Path) -> list[envlayer.EnvLayer]:
    """write_env_layers without Docker (see no_compile) and without the stdlib layer."""
    return write_env_layers(None, "base", DEBIAN, wheels, cache, stdlib=False)  # type: ignore[arg-type]


def members(path: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(path) as tar:
        return {member.name: member for member in tar.getmembers()}


# -- layout, without Docker --------------------------------------------------------------


def test_scripts_data_headers_and_modes(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "demo", {
        "demo/__init__.py": (b"def main():\n    print('demo')\n", 0o644),
        "demo/run.sh": (b"#!/bin/sh\necho hi\n", 0o755),
        "demo.pth": (b"demo_extra\n", 0o644),
        "demo-1.0.data/scripts/demo-tool": (b"#!python\nprint('tool')\n", 0o644),
        "demo-1.0.data/headers/demo.h": (b"int demo;\n", 0o644),
        "demo-1.0.data/data/share/demo/notes.txt": (b"notes\n", 0o644),
        "demo-1.0.dist-info/entry_points.txt": (b"[console_scripts]\ndemo = demo:main\n", 0o644),
    })
    entries = {entry.path: entry for entry in env_layer_entries([wheel], DEBIAN)}
    assert entries[f"{SITE}/demo/__init__.py"].mode == 0o644
    assert entries[f"{SITE}/demo/run.sh"].mode == 0o755
    assert entries[f"{SITE}/demo.pth"].data == b"demo_extra\n"  # in the site dir: processed
    tool = entries["usr/local/bin/demo-tool"]
    assert tool.mode == 0o755 and tool.data == b"#!/usr/bin/python3\nprint('tool')\n"
    launcher = entries["usr/local/bin/demo"].data
    assert launcher is not None and launcher.startswith(b"#!/usr/bin/python3\n")
    assert entries["usr/local/include/python3.11/demo/demo.h"].data == b"int demo;\n"
    assert entries["usr/local/share/demo/notes.txt"].data == b"notes\n"
    record = entries[f"{SITE}/demo-1.0.dist-info/RECORD"].data
    assert record is not None
    lines = record.decode().splitlines()
    assert any(line.startswith("../../../bin/demo,sha256=") for line in lines)
    assert env_layer_entries([wheel], DEBIAN) == list(entries.values())


def test_path_escaping_the_prefix_is_refused(tmp_path: Path) -> None:
    evil = make_wheel(tmp_path, "evil", {"evil-1.0.data/data/../../../etc/passwd": (b"x", 0o644)})
    with pytest.raises(ImageError, match="evil-1.0-py3-none-any.whl"):
        env_layer_entries([evil], DEBIAN)


def test_layers_heaviest_first_and_capped(tmp_path: Path) -> None:
    small = make_wheel(tmp_path, "small", {"small.py": (b"x = 1\n", 0o644)})
    big = make_wheel(tmp_path, "big", {"big.py": (b"# " + b"x" * 50_000 + b"\n", 0o644)})
    mid = make_wheel(tmp_path, "mid", {"mid.py": (b"# " + b"y" * 5_000 + b"\n", 0o644)})
    assert plan_layers([small, big, mid]) == [[big], [mid], [small]]
    assert plan_layers([small, big, mid], max_layers=2) == [[big], [mid, small]]


def test_conflicts_are_refused_across_layers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_compile(monkeypatch)
    one = make_wheel(tmp_path, "one", {"shared/x.py": (b"a = 1\n", 0o644)})
    same = make_wheel(tmp_path, "three", {"shared/x.py": (b"a = 1\n", 0o644)})
    two = make_wheel(tmp_path, "two", {"shared/x.py": (b"a = 2\n", 0o644)})
    write([one, same], tmp_path / "c")
    # two's layer is new, one's is cached: the check still sees both.
    with pytest.raises(ImageError, match="one-1.0-py3-none-any.whl and two-1.0-py3-none-any.whl"):
        write([one, two], tmp_path / "c")


def test_one_package_change_rebuilds_one_layer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = no_compile(monkeypatch)
    big = make_wheel(tmp_path, "big", {"big.py": (b"# " + b"x" * 50_000 + b"\n", 0o644)})
    (tmp_path / "v2").mkdir()
    small1 = make_wheel(tmp_path, "small", {"small.py": (b"x = 1\n", 0o644)})
    small2 = make_wheel(tmp_path / "v2", "small", {"small.py": (b"x = 2\n", 0o644)}, version="2.0")
    first = write([big, small1], tmp_path / "c")
    second = write([big, small2], tmp_path / "c")
    assert calls == [2, 1]
    assert first[0] == second[0] and first[1].diff_id != second[1].diff_id
    assert second[1].wheels == ("small-2.0-py3-none-any.whl",)
    # Warm: nothing unpacked, nothing compiled.
    monkeypatch.setattr(envinstall, "install_group", lambda *a: pytest.fail("unpacked again"))
    assert write([big, small2], tmp_path / "c") == second
    assert calls == [2, 1]


def test_big_files_of_several_packages_keep_their_own_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files over the in-memory limit are staged on disk while the layers are written; each
    package's must end up in its own layer (they once shared staged names)."""
    no_compile(monkeypatch)
    one = make_wheel(tmp_path, "one", {"one/blob.bin": (b"1" * (3 << 20), 0o644)})
    two = make_wheel(tmp_path, "two", {"two/blob.bin": (b"2" * (2 << 20), 0o644)})
    layers = write([one, two], tmp_path / "c")
    for layer, name, byte in ((layers[0], "one", b"1"), (layers[1], "two", b"2")):
        with tarfile.open(layer.path) as tar:
            data = tar.extractfile(f"{SITE}/{name}/blob.bin").read()  # type: ignore[union-attr]
        assert set(data) == set(byte), name


def split_wheels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A package big enough for a payload layer (thresholds lowered) and a small one."""
    monkeypatch.setattr(envplan, "SPLIT_BYTES", 1 << 20)
    monkeypatch.setattr(envplan, "SPLIT_SOURCE_BYTES", 1 << 10)
    big = make_wheel(tmp_path, "big", {
        "big/__init__.py": (b"# " + b"x" * 4_000 + b"\nVALUE = 1\n", 0o644),
        "big/lib.so": (bytes(range(256)) * (8 << 10), 0o755),  # 2 MiB
        "big/data/table.bin": (b"t" * 100, 0o644),
    })
    small = make_wheel(tmp_path, "small", {"small.py": (b"x = 1\n", 0o644)})
    return big, small


def test_a_big_package_gets_a_payload_layer_at_the_bottom(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_compile(monkeypatch)
    big, small = split_wheels(tmp_path, monkeypatch)
    prefixes: list[list[envlayer.EnvLayer]] = []
    layers = write_env_layers(
        None, "base", DEBIAN, [small, big], tmp_path / "c", stdlib=False,  # type: ignore[arg-type]
        on_ready=prefixes.append,
    )
    assert [(layer.wheels, layer.payload) for layer in layers] == [
        (("big-1.0-py3-none-any.whl",), True),
        (("big-1.0-py3-none-any.whl",), False),
        (("small-1.0-py3-none-any.whl",), False),
    ]
    payload, sources = members(layers[0].path), members(layers[1].path)
    assert {n for n in payload if payload[n].isfile()} == {f"{SITE}/big/lib.so",
                                                          f"{SITE}/big/data/table.bin"}
    assert payload[f"{SITE}/big/lib.so"].mode == 0o755
    assert f"{SITE}/big/__init__.py" in sources and f"{SITE}/big-1.0.dist-info/RECORD" in sources
    assert f"{SITE}/big/lib.so" not in sources
    # Told as the bottom grew, the payload before the rest; at the end, every layer.
    assert prefixes[0][0] == layers[0] and prefixes[-1] == layers
    assert all(len(a) < len(b) for a, b in zip(prefixes, prefixes[1:], strict=False))
    # Warm: the same layers from the cache, nothing unpacked.
    install = envinstall.install_group
    monkeypatch.setattr(envinstall, "install_group", lambda *a: pytest.fail("unpacked again"))
    assert write([small, big], tmp_path / "c") == layers
    # A payload layer lost from the cache: its package is built again, same bytes.
    layers[0].path.unlink()
    monkeypatch.setattr(envinstall, "install_group", install)
    assert write([small, big], tmp_path / "c") == layers


def test_interpreter_without_site_dir_is_refused() -> None:
    odd = Interpreter(**{**DEBIAN.to_json(), "site_dirs": ()})  # type: ignore[arg-type]
    with pytest.raises(ImageError, match=r"installs packages into /usr/local/lib/python3.11/"):
        odd.check("sha256:abc")


# -- with the base image's interpreter ------------------------------------------------------


@pytest.fixture(scope="session")
def base_python(
    docker_client: DockerClient, base_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Interpreter:
    return interpreter.probe(docker_client, base_image, tmp_path_factory.mktemp("probe"))


@pytest.fixture(scope="session")
def small_wheels(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The five packages of tests/data/lock/uv.txt, downloaded once."""
    lock = read_lock(LOCKS / "uv.txt", "3.11.2")
    return ensure_wheels(lock.requirements, tmp_path_factory.mktemp("wheels"), "3.11.2")


@pytest.mark.docker
def test_probe_reads_the_base_python(base_python: Interpreter) -> None:
    assert base_python.version.startswith("3.11.")
    assert base_python.purelib == f"/{SITE}" and base_python.purelib in base_python.site_dirs
    assert base_python.executable == "/usr/bin/python3"
    assert base_python.cache_tag == "cpython-311"


@pytest.mark.docker
def test_layers_with_bytecode_are_reproducible(
    docker_client: DockerClient, base_image: str, base_python: Interpreter,
    small_wheels: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    a = write_env_layers(docker_client, base_image, base_python, small_wheels, tmp_path / "a")
    # In reverse order, into another cache, cut into other chunks (so other processes
    # compile each file), the sources sent to the daemon as a remote one gets them, not
    # mounted: the same bytes.
    monkeypatch.setattr(bytecode, "CHUNK_FILES", 7)
    monkeypatch.setattr(bytecode, "_is_local", lambda client: False)
    b = write_env_layers(docker_client, base_image, base_python, small_wheels[::-1], tmp_path / "b")
    assert [layer.diff_id for layer in a] == [layer.diff_id for layer in b]
    assert all(x.path.read_bytes() == y.path.read_bytes() for x, y in zip(a, b, strict=True))
    # A local socket whose daemon sees other files (another mount namespace): the mounted
    # folder lacks orch's token, and the sources are sent instead.
    import docker.types

    real_mount, elsewhere = docker.types.Mount, tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setattr(bytecode, "_is_local", lambda client: True)
    monkeypatch.setattr(docker.types, "Mount", lambda target, source, type: real_mount(
        target, str(elsewhere), type=type))
    c = write_env_layers(docker_client, base_image, base_python, small_wheels, tmp_path / "c")
    assert [layer.diff_id for layer in c] == [layer.diff_id for layer in a]
    # The standard library's bytecode at the bottom, then the packages, heaviest first.
    assert a[0].wheels == () and a[1].wheels[0].startswith("setuptools-")
    stdlib = members(a[0].path)
    assert "usr/lib/python3.11/__pycache__/typing.cpython-311.pyc" in stdlib
    assert not [name for name in stdlib if not name.endswith(".pyc") and stdlib[name].isfile()]
    six = next(layer for layer in a[1:] if layer.wheels[0].startswith("six-"))
    names = members(six.path)
    pyc = f"{SITE}/__pycache__/six.cpython-311.pyc"
    assert names[pyc].mode == 0o644 and names[pyc].mtime == names[f"{SITE}/six.py"].mtime
    with tarfile.open(six.path) as tar:
        data = tar.extractfile(pyc).read()  # type: ignore[union-attr]
    assert data[:4] == bytes.fromhex(base_python.magic)
    assert int.from_bytes(data[4:8], "little") == 0b01  # PEP 552: hash-based, unchecked
    packaging = next(layer for layer in a[1:] if layer.wheels[0].startswith("packaging-"))
    sources = [n for n in members(packaging.path) if n.endswith(".py")]
    compiled = [n for n in members(packaging.path) if n.endswith(".pyc")]
    assert len(sources) == len(compiled) > 10


def bytecode_containers(client: DockerClient) -> list[dict[str, Any]]:
    # the low-level listing: containers.list() inspects each one, and one removed in
    # between (the build ending) would raise NotFound
    return client.api.containers(all=True, filters={"label": "org.orch.role=bytecode"})


@pytest.mark.docker
def test_a_cancel_kills_the_compile_container_and_leaves_nothing_half_written(
    docker_client: DockerClient, base_image: str, base_python: Interpreter,
    small_wheels: list[Path], tmp_path: Path,
) -> None:
    """Ctrl-C twice (or SIGTERM) while the bytecode compiles: the container is killed, not
    waited for; nothing half-written is left, and the next build into the same cache makes
    the same layers as a build never cancelled."""
    import threading

    from orchestrator._util.stopping import Stop
    from orchestrator.errors import BuildCancelled

    assert bytecode_containers(docker_client) == []
    stop, said = Stop(), []

    def cancel_once_compiling() -> None:
        deadline = time.monotonic() + 120
        while not bytecode_containers(docker_client) and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.cancel()

    canceller = threading.Thread(target=cancel_once_compiling)
    canceller.start()
    cache = tmp_path / "cancelled"
    with pytest.raises(BuildCancelled, match="a re-submission builds the rest"):
        write_env_layers(docker_client, base_image, base_python, small_wheels, cache,
                         stop=stop, say=said.append)
    canceller.join()
    assert said == ["environment: building 5 of 5 package layers and the standard library's "
                    "bytecode"]
    assert bytecode_containers(docker_client) == []
    layers = cache / "layers"
    assert list(layers.glob(".stage-*")) == []  # staged sources and bytecode gone
    for meta in layers.glob("pkg-*.json"):  # a layer is recorded only once it is whole
        assert meta.with_suffix(".tar").stat().st_size == json.loads(meta.read_text())["size"]
    finished = write_env_layers(docker_client, base_image, base_python, small_wheels, cache)
    reference = write_env_layers(
        docker_client, base_image, base_python, small_wheels, tmp_path / "reference"
    )
    assert [layer.diff_id for layer in finished] == [layer.diff_id for layer in reference]


TINY_PTH = {
    # As cmeel packages (eigenpy) do: the code lives in a prefix that a .pth puts on sys.path.
    "tiny.pth": (b"tiny.prefix/lib/python3.11/site-packages\n", 0o644),
    "tiny.prefix/lib/python3.11/site-packages/tinymod/__init__.py": (b"ANSWER = 42\n", 0o644),
}
CHECK = """
import json, os, subprocess, sys
import distutils, six, tinymod
SITE = "/usr/local/lib/python3.11/dist-packages"
print(distutils.__file__)
verbose = subprocess.run([sys.executable, "-v", "-c", "import six"], capture_output=True, text=True)
found = {
    "answer": tinymod.ANSWER,
    "distutils_from_setuptools": distutils.__file__ == SITE + "/setuptools/_distutils/__init__.py",
    "six_cached": os.path.exists(six.__cached__),
    "six_from_pyc": "code object from '" + six.__cached__ + "'" in verbose.stderr,
    "dont_write_bytecode": sys.flags.dont_write_bytecode,
}
json.dump({k: int(v) for k, v in found.items()},
          open(os.path.join(os.environ["ORCH_OUTPUT"], "metrics.json"), "w"))
"""


@pytest.mark.docker
def test_pth_files_are_processed_and_bytecode_used(make_project, orch, tmp_path: Path) -> None:
    """setuptools' distutils-precedence.pth and a cmeel-style prefix .pth, as pip has them."""
    import hashlib

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    tiny = make_wheel(wheels, "tiny", TINY_PTH)
    digest = hashlib.sha256(tiny.read_bytes()).hexdigest()
    lock = (LOCKS / "pip-compile.txt").read_text() + f"tiny==1.0 --hash=sha256:{digest}\n"
    root = make_project("pth", files={"requirements.txt": lock, "check.py": CHECK},
                        requirements="requirements.txt", command=["python3", "check.py"])
    shutil.copytree(wheels, root / "wheels")  # the lock's --find-links wheels
    git_commit_all(root, "wheels")
    proc = orch("sweep", "-p", str(root), "--json", env={"ORCH_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr
    run = json.loads(proc.stdout)["runs"][0]
    assert run["status"] == "succeeded", run
    metrics = run["metrics"]
    assert metrics == {"answer": 42, "distutils_from_setuptools": 1, "six_cached": 1,
                       "six_from_pyc": 1, "dont_write_bytecode": 0}


@pytest.mark.docker
def test_incomplete_lock_is_refused_before_building(make_project, orch, tmp_path: Path) -> None:
    text = (LOCKS / "uv.txt").read_text()
    start = text.index("zipp==")
    root = make_project("incomplete", files={"requirements.txt": text[:start]},
                        requirements="requirements.txt")
    cache = tmp_path / "cache"
    proc = orch("sweep", "-p", str(root), env={"ORCH_CACHE": str(cache)})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(
        f"error: {root}/requirements.txt is incomplete: importlib-metadata==8.5.0 requires "
        "'zipp>=3.20', which the lock does not pin"
    )
    assert not list(cache.glob("layers/pkg-*"))  # nothing was built


@pytest.mark.docker
def test_a_payload_goes_to_the_daemon_while_the_sources_compile(
    make_project, docker_client: DockerClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The build loads the payload as an image of its own while the sources compile,
    then the environment image; no prefix image is left behind, and the run works."""
    import hashlib

    from orchestrator.compose.project import load_project
    from orchestrator.image import archive, builder, preload

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    big, _ = split_wheels(wheels, monkeypatch)
    digest = hashlib.sha256(big.read_bytes()).hexdigest()
    lock = f"--find-links wheels\nbig==1.0 --hash=sha256:{digest}\n"
    check = "import big, os\nassert big.VALUE == 1\n"
    check += "assert os.path.getsize(os.path.dirname(big.__file__) + '/lib.so') == 2 << 20\n"
    root = make_project("payload", files={"requirements.txt": lock, "check.py": check},
                        requirements="requirements.txt", command=["python3", "check.py"])
    shutil.copytree(wheels, root / "wheels")
    git_commit_all(root, "wheels")
    loads: list[list[str]] = []
    load = preload.Preloader._load

    def traced(self, prefix):  # type: ignore[no-untyped-def]
        loads.append([layer.diff_id for layer in prefix])
        return load(self, prefix)

    monkeypatch.setattr(preload.Preloader, "_load", traced)
    env = builder.prepare(docker_client, load_project(root), cache_root=tmp_path / "cache")
    try:
        assert [layer.payload for layer in env.env_layers] == [True, False, False]
        # First the payload alone (the stdlib and big's sources were still compiling).
        assert loads[0] == [env.env_layers[0].diff_id]
        attrs = docker_client.api.inspect_image(env.tag("env", env.env_key))
        assert attrs["Id"] == env.env_image.image_id
        assert attrs["RootFS"]["Layers"] == list(env.env_image.diff_ids)
        labels = [archive.ENV_LABEL, "org.orch.project=payload"]
        left = docker_client.api.images(quiet=True, all=True, filters={"label": labels})
        assert left == [env.env_image.image_id]
        output = docker_client.containers.run(
            env.env_image.image_id, ["python3", "-c", check], remove=True, network_mode="none"
        )
        assert output == b""
        # A build killed after loading its payload leaves that prefix image (untagged);
        # `orch image prune` removes it, since the env image holds its layers.
        from orchestrator.image.on_daemon import prune_plan, remove_image
        from orchestrator.schema.record import SweepDoc
        from orchestrator.store import RunStore
        from orchestrator.store.dir import DirStore

        payload = env.env_layers[0]
        prefix = env.settings.config([*env.settings.base.diff_ids, payload.diff_id], {},
                                     ["python3"], {"org.orch.project": "payload",
                                                   "org.orch.kind": "env"})
        killed = archive.ThinArchive()  # what Preloader._load sends
        killed.add_layer(payload.diff_id, path=payload.path)
        killed.add_image(prefix)
        killed.load(docker_client)
        leftover = set(docker_client.api.images(quiet=True, all=True, filters={"label": labels}))
        leftover -= {env.env_image.image_id}
        assert len(leftover) == 1
        runs = RunStore(DirStore(tmp_path / "store"))
        runs.write_sweep(SweepDoc(sweep_id="ab" * 6, project="payload"))
        plan = prune_plan(docker_client, runs, lease_s=60)
        assert [image.image_id for image in plan.remove] == sorted(leftover)
        for image in plan.remove:
            remove_image(docker_client, image.image_id)
        left = docker_client.api.images(quiet=True, all=True, filters={"label": labels})
        assert left == [env.env_image.image_id]
        assert docker_client.containers.run(
            env.env_image.image_id, ["python3", "-c", check], remove=True, network_mode="none"
        ) == b""
    finally:
        docker_client.api.remove_image(env.env_image.image_id, force=True)
