"""``engine: apptainer`` up to the boundary (Apptainer itself cannot run here): the exact
argv of ``apptainer build`` and ``apptainer exec``, the env file read back by a shell, and
the conversion input, a complete docker-archive from a real sweep's store, which an empty
Docker daemon loads as the very image the run recorded."""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import tarfile
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from orchestrator.backends.slurm import apptainer
from orchestrator.backends.slurm.apptainer import SifImage, exec_invocation
from orchestrator.errors import BackendError, ImageError
from orchestrator.image.imageconfig import make_config
from orchestrator.image.tarball import Entry, layer_bytes
from orchestrator.image.transport import store_layer
from orchestrator.runner.container import RunDirs, create_kwargs
from orchestrator.schema.record import InputRef, RunPlan, RunResources
from orchestrator.store import DirStore, RunStore

IMAGE_ID = "sha256:" + "ab" * 32
INPUT = "sha256:" + "cd" * 32


def _plan(network: str = "none", gpus: int = 2) -> RunPlan:
    return RunPlan(
        run_id="a6f03eaedf2a",
        image_id=IMAGE_ID,
        command=("python3", "train.py"),
        env={"HOME": "/tmp", "ORCH_CONFIG": "/orch/config.yaml", "ORCH_OUTPUT": "/orch/output",
             "ORCH_RUN_ID": "a6f03eaedf2a"},
        network=network,
        resources=RunResources(cpus=1.0, gpus=gpus),
        inputs={"canadian": InputRef(INPUT, 1, 4245, "data/canadian.tsv")},
    )


#: The image config's Env of the demo's run images (the default base adds PATH and LANG).
IMAGE_ENV = (
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8",
    "HOME=/tmp", "ORCH_CONFIG=/orch/config.yaml", "ORCH_OUTPUT=/orch/output",
    "ORCH_RUN_ID=a6f03eaedf2a",
)
#: What execute() passes create_kwargs as the run's env for this plan.
RUN_ENV = {"ORCH_INPUT_CANADIAN": "/orch/inputs/canadian", "ORCH_ATTEMPT": "1"}
MOUNTS = [("/orch/inputs/canadian", "/var/cache/orch/inputs/cd/canadian.tsv")]


def _sif(tmp_path: Path) -> SifImage:
    return SifImage(tmp_path / "cache" / f"{'ab' * 32}.sif", IMAGE_ID, "sha256:" + "ef" * 32,
                    "docker-archive", IMAGE_ENV)


def test_the_exec_argv_of_a_demo_like_run_with_inputs_gpus_and_no_network(
    tmp_path: Path,
) -> None:
    dirs = RunDirs(tmp_path / "work" / "orch-a6f03eaedf2a-1")
    call = exec_invocation(_plan(), _sif(tmp_path), dirs, env=RUN_ENV, mounts=MOUNTS,
                           gpu_ids=["0", "1"], uid=1000)
    root = dirs.root
    assert list(call.argv) == [
        "apptainer", "exec", "--containall", "--cleanenv", "--no-eval", "--no-umask",
        "--no-mount", "hostfs,bind-paths",
        "--pwd", "/orch/code",
        "--workdir", f"{root}/apptainer",
        "--env-file", f"{root}/apptainer.env",
        "--net", "--network", "none",
        "--nv",
        "--bind", f"{root}/output:/orch/output",
        "--bind", f"{root}/checkpoint:/orch/checkpoint",
        "--bind", "/var/cache/orch/inputs/cd/canadian.tsv:/orch/inputs/canadian:ro",
        f"{tmp_path}/cache/{'ab' * 32}.sif", "python3", "train.py",
    ]
    assert call.env_text.splitlines()[1:] == [
        "CUDA_VISIBLE_DEVICES=0,1",
        "LANG=C.UTF-8",  # --cleanenv's LANG=C would otherwise win over the image's
        "ORCH_ATTEMPT=1",
        "ORCH_CHECKPOINT=/orch/checkpoint",
        "ORCH_CONFIG=/orch/config.yaml",
        "ORCH_INPUT_CANADIAN=/orch/inputs/canadian",
        "ORCH_OUTPUT=/orch/output",
        "ORCH_RUN_ID=a6f03eaedf2a",
    ]
    assert call.run_as is None  # a cluster user runs as themself

    # As root (orch's test cluster): the run gets uid 65534, never root; no GPU, bridge.
    call = exec_invocation(_plan("bridge", 0), _sif(tmp_path), dirs, env=RUN_ENV, uid=0)
    argv = list(call.argv)
    assert argv[argv.index("--security") + 1] == "uid:65534,gid:65534"
    assert call.run_as == 65534
    assert "--net" not in argv and "--nv" not in argv  # bridge: the host's network
    assert "CUDA_VISIBLE_DEVICES" not in call.env_text


def test_the_same_mounts_command_and_environment_as_the_docker_run(tmp_path: Path) -> None:
    dirs = RunDirs(tmp_path / "run")
    plan = _plan()
    kwargs = create_kwargs(
        image_id=plan.image_id, command=list(plan.command), run_id=plan.run_id, cpus=1.0,
        memory=None, network=plan.network, gpu_ids=[], env=RUN_ENV, name="n", dirs=dirs,
        mounts=MOUNTS,
    )
    call = exec_invocation(plan, _sif(tmp_path), dirs, env=RUN_ENV, mounts=MOUNTS, uid=1000)
    argv = list(call.argv)
    binds = {argv[i + 1] for i, arg in enumerate(argv) if arg == "--bind"}
    docker = {
        f"{m['Source']}:{m['Target']}" + (":ro" if m.get("ReadOnly") else "")
        for m in kwargs["mounts"]
    }
    assert binds == docker
    assert argv[-2:] == kwargs["command"]
    # The container's environment under Docker: the image's Env, then the create request's.
    docker_env = dict(item.split("=", 1) for item in IMAGE_ENV) | kwargs["environment"]
    ours = apptainer.container_env(plan, RUN_ENV, image_env=IMAGE_ENV)
    assert ours == {k: v for k, v in docker_env.items() if k not in ("PATH", "HOME")}


NASTY = {
    "SPACES": "a b  c",
    "COMMAS": "x=1,y=2",
    "QUOTES": "it's \"quoted\" 'twice'",
    "SHELL": "$HOME `id` $(id) ${X:-y} \\ ; | & > <",
    "NEWLINES": "line one\nline two\n\nend\n",
    "EMPTY": "",
    "UNICODE": "gr\u00fc\u00df \u2603",
}


@pytest.mark.parametrize("shell", ["/bin/sh", "bash"])
def test_env_file_values_survive_a_shell_byte_for_byte(tmp_path: Path, shell: str) -> None:
    """Apptainer reads the env file with its embedded POSIX shell (mvdan/sh) under ``set -a``;
    dash and bash read it here the same way."""
    call = exec_invocation(_plan(), _sif(tmp_path), RunDirs(tmp_path / "run"),
                           env={**RUN_ENV, **NASTY}, gpu_ids=["2", "3"], uid=1000)
    (tmp_path / "run").mkdir()
    call.prepare()
    assert call.env_file.stat().st_mode & 0o777 == 0o600
    assert (call.workdir / "tmp").stat().st_mode & 0o7777 == 0o1777
    proc = subprocess.run(
        ["env", "-i", shell, "-c", 'set -a; . "$1"; exec env -0', "sh", str(call.env_file)],
        capture_output=True, check=True,
    )
    seen = dict(item.split("=", 1) for item in proc.stdout.decode().split("\0") if item)
    expected = apptainer.container_env(_plan(), {**RUN_ENV, **NASTY}, image_env=IMAGE_ENV,
                                       gpu_ids=["2", "3"])
    assert {name: seen[name] for name in expected} == expected
    assert expected["COMMAS"] == "x=1,y=2" and expected["CUDA_VISIBLE_DEVICES"] == "2,3"


def test_what_apptainer_cannot_take_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match=r"host path of /orch/inputs/a.*','.*ORCH_CACHE"):
        exec_invocation(_plan(), _sif(tmp_path), RunDirs(tmp_path / "run"), env={},
                        mounts=[("/orch/inputs/a", "/data/a,b")], uid=1000)
    with pytest.raises(BackendError, match="'BAD-NAME'"):
        exec_invocation(_plan(), _sif(tmp_path), RunDirs(tmp_path / "run"),
                        env={"BAD-NAME": "1"}, uid=1000)
    with pytest.raises(BackendError, match="APPTAINER"):
        exec_invocation(_plan(), _sif(tmp_path), RunDirs(tmp_path / "run"),
                        env={"APPTAINER_BIND": "/"}, uid=1000)
    with pytest.raises(ImageError, match="holds ':'"):
        apptainer.archive_source(Path("/tmp/a:b/x.tar"))
    with pytest.raises(ImageError, match="invalid repo digest"):
        apptainer.registry_source("registry/repo:latest")


def test_process_env_keeps_apptainers_own_dirs_and_drops_what_reaches_the_container() -> None:
    env = apptainer.process_env({
        "PATH": "/usr/bin", "HOME": "/home/u", "TERM": "xterm", "https_proxy": "http://p",
        "APPTAINERENV_FOO": "1", "APPTAINER_BIND": "/scratch", "SINGULARITY_NV": "1",
        "APPTAINER_CACHEDIR": "/local/cache", "SLURM_JOB_ID": "7",
    })
    assert env == {"PATH": "/usr/bin", "HOME": "/home/u", "APPTAINER_CACHEDIR": "/local/cache",
                   "SLURM_JOB_ID": "7"}


# -- conversion ----------------------------------------------------------------------------


def _tiny_image(runs: RunStore) -> tuple[str, list[str]]:
    """A two-layer image in the store's blobs: one layer gzip-encoded, one plain."""
    first, first_id = layer_bytes([Entry("orch/a.txt", data=b"a" * 100_000)])
    second, second_id = layer_bytes([Entry("orch/b.txt", data=b"b")])
    store_layer(runs.blobs, first_id, first)  # stored compressed, as sweeps store layers
    runs.blobs.put(second_id, second)  # stored plain, as older versions did
    config = make_config(architecture="amd64", os_name="linux", diff_ids=[first_id, second_id],
                         env=list(IMAGE_ENV), cmd=["true"])
    runs.blobs.put(config.image_id, config.raw)
    return config.image_id, [first_id, second_id]


class FakeApptainer:
    """Stands in for ``apptainer build``: checks its source, writes a SIF-like file."""

    def __init__(self, fail_registry: bool = False) -> None:
        self.calls: list[tuple[list[str], dict[str, str]]] = []
        self.fail_registry = fail_registry
        self.lock = threading.Lock()

    def __call__(self, argv: Sequence[str], env: Mapping[str, str]) -> None:
        with self.lock:
            self.calls.append((list(argv), dict(env)))
        source = argv[-1]
        if source.startswith("docker://") and self.fail_registry:
            raise ImageError("apptainer build failed: registry unreachable")
        if source.startswith("docker-archive:"):
            with tarfile.open(source.removeprefix("docker-archive:")) as tar:
                manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
            assert len(manifest) == 1
        Path(argv[-2]).write_bytes(b"SIF " + source.encode())


def test_one_sif_per_image_per_node_built_from_the_complete_archive(tmp_path: Path) -> None:
    runs = RunStore(DirStore(tmp_path / "store"))
    image_id, _ = _tiny_image(runs)
    cache = tmp_path / "sif"
    fake = FakeApptainer()
    results: list[SifImage] = []
    workers = [
        threading.Thread(target=lambda: results.append(
            apptainer.ensure_sif(runs.blobs, image_id, cache, run=fake, environ={"PATH": "/b"})
        ))
        for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(fake.calls) == 1, "the tasks of a node convert an image once"
    argv, env = fake.calls[0]
    hexid = image_id.split(":")[1]
    assert argv == ["apptainer", "build", "--force", f"{cache}/{hexid}.sif",
                    f"docker-archive:{cache}/.{hexid}.docker-archive.tar"]
    assert env == {"PATH": "/b", "SOURCE_DATE_EPOCH": "946684800"}
    sif = results[0]
    assert all(result == sif for result in results) and len(results) == 4
    assert sif.sha256 == "sha256:" + hashlib.sha256(sif.path.read_bytes()).hexdigest()
    assert sif.source == "docker-archive" and sif.env == IMAGE_ENV
    assert sif.record_fields() == {"sif": {"sha256": sif.sha256, "source": "docker-archive"}}
    assert sorted(p.name for p in cache.iterdir()) == [
        f"{hexid}.lock", f"{hexid}.sif", f"{hexid}.sif.json"
    ], "the archive and staged layers are removed"
    assert apptainer.ensure_sif(runs.blobs, image_id, cache, run=fake) == sif
    assert len(fake.calls) == 1

    # A SIF without its sidecar (a build that died) is built again, with --force.
    apptainer.sidecar_path(sif.path).unlink()
    apptainer.ensure_sif(runs.blobs, image_id, cache, run=fake)
    assert len(fake.calls) == 2


def _task(store: str, image_id: str, cache: str, log: str) -> None:
    """One SLURM task of a node, in its own process: a stand-in build that takes a while."""
    import time

    def build(argv: Sequence[str], env: Mapping[str, str]) -> None:
        with open(log, "a") as handle:
            handle.write(argv[-1] + "\n")
        time.sleep(0.3)
        Path(argv[-2]).write_bytes(b"SIF")

    runs = RunStore(DirStore(Path(store)))
    apptainer.ensure_sif(runs.blobs, image_id, Path(cache), run=build, environ={})


def test_the_lock_is_shared_by_the_processes_of_a_node(tmp_path: Path) -> None:
    import multiprocessing

    runs = RunStore(DirStore(tmp_path / "store"))
    image_id, _ = _tiny_image(runs)
    log = tmp_path / "builds.log"
    context = multiprocessing.get_context("fork")
    tasks = [
        context.Process(target=_task, args=(str(tmp_path / "store"), image_id,
                                            str(tmp_path / "sif"), str(log)))
        for _ in range(3)
    ]
    for task in tasks:
        task.start()
    for task in tasks:
        task.join(30)
    assert [task.exitcode for task in tasks] == [0, 0, 0]
    assert len(log.read_text().splitlines()) == 1
    assert apptainer.cached_sif(tmp_path / "sif", image_id) is not None


def test_a_registry_digest_is_the_first_source_and_the_store_the_fallback(
    tmp_path: Path,
) -> None:
    runs = RunStore(DirStore(tmp_path / "store"))
    image_id, _ = _tiny_image(runs)
    digest = "127.0.0.1:5000/orch/demo@sha256:" + "12" * 32
    fake = FakeApptainer()
    sif = apptainer.ensure_sif(runs.blobs, image_id, tmp_path / "a", repo_digest=digest,
                               no_https=True, run=fake)
    assert fake.calls[0][0] == ["apptainer", "build", "--force", "--no-https", str(sif.path),
                                f"docker://{digest}"]
    assert sif.source == f"docker://{digest}"

    fake = FakeApptainer(fail_registry=True)
    sif = apptainer.ensure_sif(runs.blobs, image_id, tmp_path / "b", repo_digest=digest,
                               run=fake)
    assert [call[0][-1].split(":")[0] for call in fake.calls] == ["docker", "docker-archive"]
    assert sif.source == "docker-archive"


def test_a_corrupt_layer_blob_is_named(tmp_path: Path) -> None:
    runs = RunStore(DirStore(tmp_path / "store"))
    image_id, (first_id, _) = _tiny_image(runs)
    key = f"blobs/sha256/{first_id.split(':')[1]}"
    stored = runs.store.get(key)
    runs.store.put(key, stored[:-40] + bytes(40))
    with pytest.raises(ImageError, match=f"layer blob {first_id}.*corrupt.*delete {key}"):
        apptainer.write_archive(runs.blobs, image_id, tmp_path / "x.tar")
    assert not (tmp_path / "x.tar").exists()


def test_the_archive_of_a_real_sweep_loads_into_an_empty_daemon_as_the_recorded_image(
    make_project: Callable[..., Path],
    orch: Callable[..., subprocess.CompletedProcess[str]],
    second_client: Any,
    tmp_path: Path,
) -> None:
    """The conversion's input is the pinned image: the archive written from the store's
    blobs alone (base, environment, code and config layers) is, to a Docker daemon that has
    never seen any of them, exactly the image the run recorded."""
    project = make_project("apptainer")
    store = tmp_path / "store"
    done = orch("sweep", "training_settings.epochs=1", "-p", str(project), "--store",
                str(store), "--json")
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)["runs"][0]
    record = json.loads((store / "runs" / run["run_id"] / "run.json").read_text())
    image_id = record["image_id"]
    layers = record["layers"]
    diff_ids = [*layers["base"], *layers["env"], layers["code"], layers["config"]]

    archive = tmp_path / "run.docker-archive.tar"
    config = apptainer.write_archive(RunStore(DirStore(store)).blobs, image_id, archive)
    assert config.image_id == image_id and config.diff_ids == diff_ids
    with tarfile.open(archive) as tar:
        (manifest,) = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        assert manifest["Config"] == f"{image_id.split(':')[1]}.json"
        assert manifest["Layers"] == [f"{d.split(':')[1]}/layer.tar" for d in diff_ids]
        for diff_id, name in zip(diff_ids, manifest["Layers"], strict=True):
            member = tar.extractfile(name)
            assert member is not None
            assert "sha256:" + hashlib.file_digest(member, "sha256").hexdigest() == diff_id

    # The fixture is a fresh node, empty when the session starts; an image an earlier test
    # left there with one of these layers would let the daemon skip that layer's file.
    for image in second_client.images.list(all=True):
        if set(image.attrs["RootFS"]["Layers"]) & set(diff_ids):
            second_client.images.remove(image.id, force=True)
    assert not any(set(i.attrs["RootFS"]["Layers"]) & set(diff_ids)
                   for i in second_client.images.list(all=True))
    try:
        with archive.open("rb") as body:
            second_client.images.load(body)
        loaded = second_client.api.inspect_image(image_id)
        assert loaded["Id"] == image_id
        assert loaded["RootFS"]["Layers"] == diff_ids
        assert loaded["Config"]["User"] == "65534:65534"
        assert loaded["Config"]["WorkingDir"] == "/orch/code"
    finally:
        with contextlib.suppress(Exception):  # absent when the load failed
            second_client.images.remove(image_id, force=True)


def test_apptainer_records_the_limits_of_the_tasks_cgroup(tmp_path: Path) -> None:
    """apptainer exec sets no limits: what holds the run is the task's cgroup, the
    tightest value along its path, v2 and v1 alike."""
    from orchestrator.backends.slurm.apptainer_client import cgroup_limits

    v2 = tmp_path / "v2"
    job = v2 / "slurm" / "job_7" / "step_0"
    job.mkdir(parents=True)
    (v2 / "cgroup.controllers").write_text("cpu memory pids\n")
    (v2 / "slurm" / "pids.max").write_text("max\n")
    (v2 / "slurm" / "job_7" / "pids.max").write_text("512\n")
    (v2 / "slurm" / "job_7" / "memory.max").write_text("1073741824\n")
    (job / "memory.max").write_text("max\n")
    (job / "cpu.max").write_text("200000 100000\n")
    (tmp_path / "self.v2").write_text("0::/slurm/job_7/step_0\n")
    assert cgroup_limits(tmp_path / "self.v2", v2) == (512, 1 << 30, 2.0)

    v1 = tmp_path / "v1"
    (v1 / "pids" / "slurm").mkdir(parents=True)
    (v1 / "memory" / "slurm").mkdir(parents=True)
    (v1 / "pids" / "slurm" / "pids.max").write_text("max\n")
    (v1 / "memory" / "slurm" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    (tmp_path / "self.v1").write_text("8:pids:/slurm\n4:memory:/slurm\n0::/\n")
    assert cgroup_limits(tmp_path / "self.v1", v1) == (None, None, None)
    assert cgroup_limits(tmp_path / "missing", v1) == (None, None, None)
