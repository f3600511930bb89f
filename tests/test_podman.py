"""The demo on Podman through its Docker-compatible socket, rootful and rootless.

Same run ids and image IDs as on Docker, ``orch rerun`` identical, Ctrl-C twice leaves no
container. Rootless, orch runs as a user who is not root (Debian's python3 with this
checkout, as such a user would), against that user's own Podman service: the runs write
their outputs, orch stores and removes them, and the one warning says that cgroup v1
leaves the runs unlimited. Rootless sweeps stay small: Podman 4.3 keeps a copy of every
run image it maps onto the user (about 160 MB each here).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from helpers import copy_demo, git_commit_all
from podman import Podman, copy_base_image, ensure_user, podman_service

from orchestrator.runner.container import PIDS_LIMIT, TMP_SIZE

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ORCH = str(Path(sys.executable).with_name("orch"))
USER = "orchpodman"
DEMO = ["optimizer=SGD,adam", "model=lstm,bi_lstm"]
SMALL = ["optimizer=SGD,adam", "model=lstm"]
#: Each epoch of the demo sleeps this long: a run is still going when Ctrl-C comes.
SLOW = "+training_settings.epoch_sleep=2"
LIMITS_WARNING = "on cgroup v1 ignores the runs' CPU and memory limits"
RESTORE_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execvp(sys.argv[1], sys.argv[1:])"
)


def _needs_podman() -> None:
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (make setup installs it)")
    if os.geteuid() != 0:
        pytest.skip("the services' storage is a tmpfs mounted here, and the rootless one "
                    "runs as a user this test makes: needs root")


@pytest.fixture(scope="session")
def rootful(tmp_path_factory: pytest.TempPathFactory, base_image: str) -> Iterator[Podman]:
    _needs_podman()
    with podman_service(tmp_path_factory.mktemp("podman")) as podman:
        copy_base_image(podman, base_image)
        yield podman


@pytest.fixture(scope="session")
def rootless(tmp_path_factory: pytest.TempPathFactory, base_image: str) -> Iterator[Podman]:
    _needs_podman()
    user = ensure_user(USER)
    with podman_service(tmp_path_factory.mktemp("podman-rootless"), user=user) as podman:
        copy_base_image(podman, base_image)  # root, through the user's socket
        yield podman


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, base_image: str) -> Path:
    """The demo project, committed (each engine's sweep uses this tree or a copy)."""
    root = tmp_path_factory.mktemp("podman-demo") / "demo"
    (root / "orch.yaml").write_text(yaml.safe_dump(
        {"name": "demo", "base_image": base_image, "command": ["python3", "train.py"],
         **copy_demo(root)}))
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    git_commit_all(root)
    return root


@pytest.fixture(scope="module")
def on_docker(demo: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """The demo sweep on Docker: what every Podman sweep is compared with, by run id."""
    store = tmp_path_factory.mktemp("docker-store")
    proc = subprocess.run([ORCH, "sweep", "-p", str(demo), *DEMO, "--jobs", "2", "--json",
                           "--store", str(store)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return {run["run_id"]: run for run in json.loads(proc.stdout)["runs"]}


def same_as_docker(result: dict, on_docker: dict[str, dict]) -> None:
    runs = result["runs"]
    assert {r["status"] for r in runs} == {"succeeded"}
    assert {r["run_id"] for r in runs} <= set(on_docker)
    for run in runs:
        docker_run = on_docker[run["run_id"]]
        assert run["image_id"] == docker_run["image_id"], run["run_id"]
        assert run["metrics"] == docker_run["metrics"], run["run_id"]


def records(store: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in store.glob("runs/*/run.json")}


def wait_for(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def ctrl_c_twice(proc: subprocess.Popen[bytes], podman: Podman, store: Path) -> None:
    """Two runs in flight, then Ctrl-C twice as a terminal sends it (to the process group)."""
    wait_for(lambda: len(list(store.glob("runs/*/live.json"))) == 2, 120, "two runs in flight")
    time.sleep(1.0)
    assert len(podman.containers()) == 2
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    assert podman.containers() == []
    assert sorted(r["status"] for r in records(store).values()) == ["cancelled", "cancelled"]


# -- the engine ------------------------------------------------------------------------


def test_the_engine_behind_each_socket_is_detected(rootful: Podman, rootless: Podman) -> None:
    from orchestrator.daemon.client import connect

    docker, podman, user_podman = connect().engine, connect(rootful.docker_host).engine, \
        connect(rootless.docker_host).engine
    assert (docker.name, docker.rootless) == ("docker", False)
    assert (podman.name, podman.rootless) == ("podman", False)
    assert (user_podman.name, user_podman.rootless) == ("podman", True)
    assert podman.userns_mode("65534:65534") is None
    assert user_podman.userns_mode("65534:65534") == "keep-id:uid=65534,gid=65534"
    assert user_podman.userns_mode("0:0") is None  # its root is the user already


def test_without_docker_host_docker_then_rootless_then_rootful_podman() -> None:
    from orchestrator.daemon.engine import default_sockets

    assert default_sockets({"XDG_RUNTIME_DIR": "/run/user/1000"}) == [
        "/var/run/docker.sock", "/run/user/1000/podman/podman.sock", "/run/podman/podman.sock"]
    assert default_sockets({}) == ["/var/run/docker.sock", "/run/podman/podman.sock"]


@pytest.mark.parametrize("engine", ["docker", "podman"])
def test_a_layer_the_engine_lacks_and_did_not_get_is_named(
    engine: str, request: pytest.FixtureRequest, base_image: str
) -> None:
    """Every layer not sent is an empty file in the archive (Podman wants one per layer):
    an engine that lacks one says so in its own words, and orch says what it means."""
    from orchestrator.daemon.client import connect
    from orchestrator.errors import ImageError
    from orchestrator.image.archive import ThinArchive, _loaded_names
    from orchestrator.image.imageconfig import make_config
    from orchestrator.image.tarball import Entry, layer_bytes

    client = connect(request.getfixturevalue("rootful").docker_host if engine == "podman"
                     else None)
    base = client.api.inspect_image(base_image)["RootFS"]["Layers"]
    data, diff_id = layer_bytes([Entry("new.txt", data=os.urandom(16).hex().encode())])
    config = make_config(architecture="amd64", os_name="linux", diff_ids=[*base, diff_id],
                         env=[], cmd=None)
    missing = ThinArchive()
    missing.add_image(config, [f"orch/podman-test:{engine}"])
    with pytest.raises(ImageError, match="a layer the engine lacks was not sent"):
        missing.load(client)
    corrupt = ThinArchive()
    corrupt.add_image(config, [f"orch/podman-test:{engine}"])
    other, _ = layer_bytes([Entry("new.txt", data=os.urandom(16).hex().encode())])
    corrupt.add_layer(diff_id, data=other)  # a sound tar, not the one its digest names
    with pytest.raises(ImageError, match="a layer blob is corrupt") as raised:
        corrupt.load(client)
    assert "oci-archive" not in str(raised.value)  # Podman's other formats are left out
    sound = ThinArchive()
    sound.add_image(config, [f"orch/podman-test:{engine}"])
    sound.add_layer(diff_id, data=data)
    # The engine's reply names the image: Docker one line per name, Podman all in one
    # line under "localhost/"; so no image list is asked for to confirm the load.
    replies = [m["stream"] for m in client.api.load_image(sound._body(), quiet=True)
               if isinstance(m, dict) and "stream" in m]
    assert f"orch/podman-test:{engine}" in _loaded_names("".join(replies)), replies
    assert client.api.inspect_image(config.image_id)["Id"] == config.image_id
    client.api.remove_image(config.image_id, force=True)


# -- rootful ---------------------------------------------------------------------------


def test_rootful_podman_runs_the_demo_as_docker_does(
    rootful: Podman, demo: Path, on_docker: dict[str, dict], tmp_path: Path
) -> None:
    env = {**os.environ, "DOCKER_HOST": rootful.docker_host}
    store = tmp_path / "store"
    proc = subprocess.run([ORCH, "sweep", "-p", str(demo), *DEMO, "--jobs", "2", "--json",
                           "--store", str(store)], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert len(result["runs"]) == 4
    same_as_docker(result, on_docker)
    assert LIMITS_WARNING not in proc.stderr
    for record in records(store).values():  # what Podman reported it holds each run to
        enforced = record["enforced"]
        assert enforced["engine"].startswith("Podman ")
        assert (enforced["pids"], enforced["read_only_root"], enforced["note"]) == (
            PIDS_LIMIT, True, "")
        assert enforced["tmpfs"]["/tmp"].startswith(f"size={TMP_SIZE}")
    run_id = result["runs"][0]["run_id"]
    rerun = subprocess.run([ORCH, "rerun", run_id, "--store", str(store), "--json"],
                           capture_output=True, text=True, env=env, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert json.loads(rerun.stdout)["identical"] is True
    assert rootful.containers() == []


def test_rootful_ctrl_c_twice_leaves_no_container(
    rootful: Podman, demo: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    with (tmp_path / "out").open("wb") as out, (tmp_path / "err").open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", RESTORE_SIGINT, ORCH, "sweep", "-p", str(demo), *SMALL, SLOW,
             "--jobs", "2", "--json", "--store", str(store)],
            stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, "DOCKER_HOST": rootful.docker_host})
    ctrl_c_twice(proc, rootful, store)


# -- rootless, as a user who is not root -------------------------------------------------


@pytest.fixture(scope="module")
def user_demo(rootless: Podman, demo: Path) -> Path:
    """The demo tree in a directory of the user's own (the same files, so the same ids)."""
    copy = rootless.home / "demo"
    shutil.copytree(demo, copy, symlinks=True)
    rootless.chown(copy)
    return copy


def test_rootless_podman_runs_the_demo_as_docker_does(
    rootless: Podman, user_demo: Path, on_docker: dict[str, dict]
) -> None:
    home = rootless.home
    store, work = home / "store", home / "work"
    proc = rootless.run_as_user(
        rootless.orch_as_user(["sweep", "-p", str(user_demo), *SMALL, "--jobs", "2", "--json",
                               "--store", str(store)]),
        cwd=home, ORCH_WORK_DIR=str(work))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert len(result["runs"]) == 2
    same_as_docker(result, on_docker)
    assert proc.stderr.count(LIMITS_WARNING) == 1, proc.stderr
    for record in records(store).values():  # accepted, not enforced: recorded as such
        enforced = record["enforced"]
        assert enforced["engine"].startswith("rootless Podman ")
        assert (enforced["pids"], enforced["memory"], enforced["cpus"]) == (None, None, None)
        assert "does not enforce" in enforced["note"] and enforced["read_only_root"] is True
    uid = rootless.user.pw_uid  # type: ignore[union-attr]
    for run in result["runs"]:
        outputs = list((store / "runs" / run["run_id"] / "output").iterdir())
        assert outputs, "the run wrote its artifact to /orch/output"
        assert {p.stat().st_uid for p in outputs} == {uid}
    assert list(work.iterdir()) == []  # what the runs wrote, orch could remove

    run_id = result["runs"][0]["run_id"]
    rerun = rootless.run_as_user(
        rootless.orch_as_user(["rerun", run_id, "--store", str(store), "--json"]),
        cwd=home, ORCH_WORK_DIR=str(work))
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert json.loads(rerun.stdout)["identical"] is True
    assert rootless.containers() == []
    assert list(work.iterdir()) == []


def test_rootless_ctrl_c_twice_leaves_no_container(
    rootless: Podman, user_demo: Path, tmp_path: Path
) -> None:
    home = rootless.home
    store, work = home / "cancel-store", home / "cancel-work"
    proc = rootless.popen_as_user(
        rootless.orch_as_user(["sweep", "-p", str(user_demo), *SMALL, SLOW, "--jobs", "2",
                               "--json", "--store", str(store)]),
        cwd=home, log=tmp_path, ORCH_WORK_DIR=str(work))
    ctrl_c_twice(proc, rootless, store)
    assert list(work.iterdir()) == []
