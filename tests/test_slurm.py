"""``--backend slurm`` on a real two-node SLURM cluster on this machine (tests/slurmcluster.py).

Both nodes declare 2 GPUs as generic resources backed by device nodes; this machine has no
GPU, so the tasks run with ``ORCH_FAKE_GPUS=1``: SLURM's allocation (``SLURM_JOB_GPUS``) is
recorded and shown to the container, and no device request reaches Docker (the exact
request is checked separately). Both nodes use this machine's Docker daemon.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import DEMO_INPUTS, copy_demo, git_commit_all, sleeper_project
from slurmcluster import SlurmCluster, slurm_cluster, slurm_installed

from orchestrator.backends.slurm.commands import ClusterConfig, _indices
from orchestrator.backends.slurm.script import ArrayRequest, array_script
from orchestrator.backends.slurm.task import slurm_gpu_ids
from orchestrator.compose.project import ProjectError, SlurmOptions, parse_slurm
from orchestrator.schema.record import RunResources

pytestmark = [pytest.mark.docker, pytest.mark.slurm]

RESTORE_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execvp(sys.argv[1], sys.argv[1:])"
)


def orch_exe() -> str:
    return str(Path(sys.executable).with_name("orch"))


def records(store: Path) -> dict[str, dict[str, Any]]:
    found = (json.loads(p.read_text()) for p in store.glob("runs/*/run.json"))
    return {r["run_id"]: r for r in found}


def ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def overlapping(runs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    pairs = []
    for i, a in enumerate(runs):
        for b in runs[i + 1 :]:
            if ts(a["started_at"]) < ts(b["ended_at"]) and ts(b["started_at"]) < ts(a["ended_at"]):
                pairs.append((a, b))
    return pairs


def run_containers(cluster: SlurmCluster) -> list[str]:
    """The containers of the cluster's tasks (another cluster may share the daemon)."""
    out = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=slurm_cluster={cluster.name}"],
                         capture_output=True, text=True, check=True).stdout
    return out.split()


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@pytest.fixture(scope="module")
def cluster() -> Iterator[SlurmCluster]:
    assert slurm_installed(), "make setup installs SLURM (slurm-wlm, munge)"
    with slurm_cluster() as running:
        yield running


@pytest.fixture
def env(cluster: SlurmCluster) -> dict[str, str]:
    return {**os.environ, **cluster.env, "ORCH_FAKE_GPUS": "1"}


def orch(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([orch_exe(), *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


# -- without a cluster ---------------------------------------------------------------------


def test_array_script_asks_for_what_each_run_needs() -> None:
    options = parse_slurm({"partition": "gpu", "account": "lab", "time": "1-00:00:00",
                           "qos": "high", "sbatch": ["--constraint=a100"]}, "orch.yaml")
    request = ArrayRequest(
        store_uri="s3://bucket/runs", batch="abc-123", size=20,
        resources=RunResources(cpus=1.5, gpus=2, memory="3g"), job_name="orch-demo",
        python="/venv/bin/python3", log_dir=Path("/shared/logs"), throttle=2,
        s3_endpoint="http://10.0.0.5:8333", after=("41",), stop_grace_s=10,
    )
    assert array_script(request, options).splitlines() == [
        "#!/bin/sh",
        "#SBATCH --job-name=orch-demo",
        "#SBATCH --array=0-19%2",
        "#SBATCH --ntasks=1",
        "#SBATCH --cpus-per-task=2",
        "#SBATCH --mem=3072M",
        "#SBATCH --gres=gpu:2",
        "#SBATCH --requeue",
        "#SBATCH --open-mode=append",
        "#SBATCH --output=/shared/logs/%A_%a.out",
        "#SBATCH --dependency=afterany:41",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=lab",
        "#SBATCH --time=1-00:00:00",
        "#SBATCH --qos=high",
        "#SBATCH --constraint=a100",
        "exec /venv/bin/python3 -m orchestrator.backends.slurm.task s3://bucket/runs abc-123 "
        "--stop-grace 10 --s3-endpoint http://10.0.0.5:8333",
    ]
    gpus = SlurmOptions(gpu_request="gpus")
    assert "#SBATCH --gpus-per-task=2" in array_script(request, gpus)


@pytest.mark.parametrize("value, problem", [
    ({"partition": "gpu\n#SBATCH --uid=0"}, "slurm.partition"),
    ({"sbatch": ["--x\nrm -rf /"]}, "slurm.sbatch"),
    ({"sbatch": ["constraint=a100"]}, "slurm.sbatch"),
    ({"gpu_request": "cuda"}, "slurm.gpu_request"),
    ({"engine": "singularity"}, "slurm.engine"),
    ({"nodes": 2}, "slurm.nodes"),
])
def test_slurm_settings_that_would_break_the_script_are_refused(
    value: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ProjectError, match=problem):
        parse_slurm(value, "orch.yaml")


def test_task_gpus_are_the_nodes_device_ids() -> None:
    # Inside the task CUDA_VISIBLE_DEVICES counts from 0; the daemon outside needs the ids.
    environ = {"SLURM_JOB_GPUS": "1,3", "CUDA_VISIBLE_DEVICES": "0,1"}
    assert slurm_gpu_ids(environ) == ["1", "3"]
    assert slurm_gpu_ids({}) == []


def test_throttled_pending_tasks_are_one_line_of_indices() -> None:
    assert _indices("4-7%2") == [4, 5, 6, 7]
    assert _indices("1,3,5-6") == [1, 3, 5, 6]
    assert _indices("(null)") == []
    assert _indices("4294967294") == []  # the array's record once its pending tasks are gone


# -- on the cluster --------------------------------------------------------------------------


def test_demo_sweep_runs_on_both_nodes_with_distinct_gpus(
    tmp_path: Path, base_image: str, cluster: SlurmCluster, env: dict[str, str]
) -> None:
    root = tmp_path / "demo"
    root.mkdir()
    extra = copy_demo(root)
    # Each run takes a node's two CPUs and one of its GPUs: two at a time (--jobs 2) are
    # on both nodes.
    data = {"name": "demo", "base_image": base_image, "command": ["python3", "train.py"],
            "resources": {"cpus": 2, "gpus": 1}, **extra}
    (root / "orch.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    git_commit_all(root)
    store = tmp_path / "store"
    args = ("sweep", "-p", str(root), "--store", str(store), "--backend", "slurm",
            "optimizer=SGD,adam", "model=lstm,bi_lstm", "--json")
    proc = orch(*args, "--jobs", "2", env=env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert [r["status"] for r in result["runs"]] == ["succeeded"] * 4
    runs = list(records(store).values())
    assert {r["node"] for r in runs} == {"n1", "n2"}
    assert all(len(r["gpus"]) == 1 and r["gpus_simulated"] for r in runs)
    # The job and outcome objects of the arrays are gone once the runs are settled.
    assert not list(store.glob("slurm/*/*/*.json"))
    again = orch(*args, env=env)
    assert again.returncode == 0, again.stderr
    assert {r["status"] for r in json.loads(again.stdout)["runs"]} == {"skipped"}
    # The demo's data inputs were mounted on the nodes: the runs read them.
    assert all(r["inputs"] and set(r["inputs"]) <= set(DEMO_INPUTS) for r in runs)


def test_concurrent_runs_on_a_node_get_distinct_gpus(
    tmp_path: Path, base_image: str, cluster: SlurmCluster, env: dict[str, str]
) -> None:
    """Four runs of one GPU each at once: two per node, each with a GPU of its own."""
    root = sleeper_project(tmp_path / "gpus", base_image, sleep=3,
                           resources={"cpus": 1, "gpus": 1})
    store = tmp_path / "store"
    proc = orch("sweep", "-p", str(root), "--store", str(store), "--backend", "slurm",
                "--jobs", "4", "seed=range(0,4)", env=env)
    assert proc.returncode == 0, proc.stderr
    runs = list(records(store).values())
    assert len(runs) == 4 and {r["node"] for r in runs} == {"n1", "n2"}
    pairs = [(a, b) for a, b in overlapping(runs) if a["node"] == b["node"]]
    assert pairs  # two ran side by side on a node
    for a, b in pairs:
        assert a["gpus"] != b["gpus"], (a["run_id"], b["run_id"])
    # What the container was shown is what was recorded.
    for run in runs:
        shown = (store / "runs" / run["run_id"] / "output" / "gpus.txt").read_text()
        assert shown.split(",") == run["gpus"]


def test_detached_sweep_is_followed_by_watch_to_its_end(
    tmp_path: Path, base_image: str, cluster: SlurmCluster, env: dict[str, str]
) -> None:
    root = sleeper_project(tmp_path / "detached", base_image, sleep=2)
    store = tmp_path / "store"
    proc = orch("sweep", "-p", str(root), "--store", str(store), "--backend", "slurm",
                "--jobs", "2", "--detach", "seed=range(0,4)", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "4 run(s) submitted to SLURM" in proc.stdout
    sweep_id = proc.stdout.split()[1].rstrip(":")
    assert len(records(store)) < 4  # it returned before the runs ended
    watched = orch("watch", sweep_id, "--store", str(store), "--interval", "0.5", env=env,
                   timeout=120)
    assert watched.returncode == 0, watched.stderr
    assert "succeeded" in watched.stdout
    runs = list(records(store).values())
    assert [r["status"] for r in runs] == ["succeeded"] * 4
    # The sweep stayed open (its marker keeps its blobs from gc while tasks wait in the
    # queue) until its last job, after the array, wrote the index and closed it.
    wait_for(lambda: not list((store / "sweeps").glob("*.open-*")), 60, "the sweep closed")
    index = json.loads((store / "sweeps" / f"{sweep_id}.index.json").read_text())
    assert sorted(index["runs"]) == sorted(r["run_id"] for r in runs)
    assert not list((store / "slurm").rglob("*.json"))
    # --jobs 2 is the array's throttle: never more than two runs at once.
    for a, b in overlapping(runs):
        third = [c for c in runs if c not in (a, b)
                 and ts(c["started_at"]) < min(ts(a["ended_at"]), ts(b["ended_at"]))
                 and ts(c["ended_at"]) > max(ts(a["started_at"]), ts(b["started_at"]))]
        assert not third


def _start(root: Path, store: Path, env: dict[str, str], log: Path, *args: str) -> Any:
    argv = [orch_exe(), "sweep", "-p", str(root), "--store", str(store), "--backend", "slurm",
            *args]
    with log.open("wb") as out:
        return subprocess.Popen(["setsid", sys.executable, "-c", RESTORE_SIGINT, *argv],
                                stdout=out, stderr=subprocess.STDOUT, env=env)


def with_task_outputs(text: str) -> str:
    """A sweep's output, then the end of the output of each task it names (what failed on
    the node; the file is appended to by every task of that id)."""
    named = [Path(p) for p in re.findall(r"the task's output is (\S+)", text)]
    return "\n".join([text, *(f"--- {path}:\n" + "\n".join(
        path.read_text(errors="replace").splitlines()[-20:]) for path in named if path.is_file())])


def _running_claims(store: Path) -> int:
    return len(list(store.glob("runs/*/claim*")))


def test_a_run_deaf_to_sigterm_is_recorded_cancelled_before_slurm_kills_its_task(
    tmp_path: Path, base_image: str, cluster: SlurmCluster, env: dict[str, str]
) -> None:
    """orch's grace (10 s) is longer than the test cluster's KillWait (5 s): a task that
    waited it out would be SIGKILLed before its commit, and the run left without a record."""
    root = sleeper_project(tmp_path / "deaf", base_image, sleep=60)
    job = root / "job.py"
    job.write_text("import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                   "print('deaf to SIGTERM', flush=True)\n" + job.read_text())
    git_commit_all(root, "deaf")
    store = tmp_path / "store"
    log = tmp_path / "sweep.log"
    proc = _start(root, store, env, log, "seed=0")

    def deaf() -> bool:
        assert proc.poll() is None, log.read_text(errors="replace")
        return any("deaf" in subprocess.run(["docker", "logs", c], capture_output=True,
                                            text=True).stdout
                   for c in run_containers(cluster))

    wait_for(deaf, 120, "the run to ignore SIGTERM")
    cluster.run("scancel", *set(cluster.run("squeue", "-h", "-o", "%A").stdout.split()))
    code = proc.wait(timeout=120)
    text = with_task_outputs(log.read_text(errors="replace"))
    assert code == 1, text
    (run,) = records(store).values()
    assert run["status"] == "cancelled", text
    assert "deaf to SIGTERM" in (store / "runs" / run["run_id"] / "stdout.log").read_text()
    wait_for(lambda: not run_containers(cluster), 30, "the run's container to be gone")


@pytest.mark.parametrize("how", ["scancel", "ctrl-c twice"])
def test_cancel_mid_sweep_leaves_no_container_and_a_resubmit_completes(
    tmp_path: Path, base_image: str, cluster: SlurmCluster, env: dict[str, str], how: str
) -> None:
    root = sleeper_project(tmp_path / "cancel", base_image, sleep=6)
    store = tmp_path / "store"
    log = tmp_path / "sweep.log"
    proc = _start(root, store, env, log, "--jobs", "2", "seed=range(0,4)")
    wait_for(lambda: len(run_containers(cluster)) == 2, 120, "two runs in their containers")
    if how == "scancel":
        jobs = cluster.run("squeue", "-h", "-o", "%A").stdout.split()
        cluster.run("scancel", *sorted(set(jobs)))
    else:
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)
    code = proc.wait(timeout=120)
    text = with_task_outputs(log.read_text(errors="replace"))
    assert code == (130 if how == "ctrl-c twice" else 1), text
    wait_for(lambda: not run_containers(cluster), 30, "the cancelled runs' containers to be gone")
    wait_for(lambda: not cluster.run("squeue", "-h").stdout.strip(), 30, "no task left")
    statuses = [r["status"] for r in records(store).values()]
    assert statuses.count("cancelled") == 2 and "succeeded" not in statuses, text
    again = orch("sweep", "-p", str(root), "--store", str(store), "--backend", "slurm",
                 "--jobs", "4", "seed=range(0,4)", "--json", env=env)
    assert again.returncode == 0, again.stderr
    final = records(store)
    assert [r["status"] for r in final.values()] == ["succeeded"] * 4
    assert sorted(r["attempt"] for r in final.values()) == [1, 1, 2, 2]


def _task_pid(slurm_job_id: str) -> int | None:
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if (b"orchestrator.backends.slurm.task" in cmdline
                and f"SLURM_JOB_ID={slurm_job_id}".encode() in environ):
            return int(proc.name)
    return None


def _sweep_runs(store: Path) -> dict[str, tuple[str, ...]]:
    """Run id -> overrides, from the sweep's document."""
    (doc,) = [p for p in (store / "sweeps").glob("*.json") if "." not in p.stem]
    return {r["run_id"]: tuple(r["overrides"]) for r in json.loads(doc.read_text())["runs"]}


def _containers_by_run(cluster: SlurmCluster) -> dict[str, str]:
    """Run id -> the SLURM job id of the task whose container runs it."""
    out = subprocess.run(
        ["docker", "ps", "--filter", f"label=slurm_cluster={cluster.name}", "--format",
         '{{.Label "org.orch.run_id"}} {{.Label "slurm_job_id"}}'],
        capture_output=True, text=True, check=True,
    ).stdout
    return dict(line.split() for line in out.splitlines() if line.strip())


def test_lost_node_requeues_its_runs_each_committed_once(
    tmp_path: Path, base_image: str, cluster: SlurmCluster, env: dict[str, str]
) -> None:
    """n1's slurmd dies with two runs on it. One run's task and container die with it (the
    node is lost): its requeued task takes the stale claim over on n2 and resumes from the
    checkpoint. The other's first copy lives on as an orphan and finishes: its requeued
    task finds the run committed and runs nothing. One record each, attempt 1."""
    root = sleeper_project(tmp_path / "lost", base_image, sleep=1)
    store = tmp_path / "store"
    log = tmp_path / "sweep.log"
    fast = {**env, "ORCH_LEASE_S": "4", "ORCH_CHECKPOINT_S": "0.5"}
    cluster.drain("n2")
    try:
        proc = _start(root, store, fast, log, "sleep=15,8")
        wait_for(lambda: len(_containers_by_run(cluster)) == 2, 120, "both runs running on n1")
        runs = _sweep_runs(store)
        lost = next(r for r, o in runs.items() if "sleep=15" in o)
        orphan = next(r for r in runs if r != lost)
        wait_for(lambda: any((store / "runs" / lost).glob("checkpoint*")), 60,
                 "a checkpoint of the run on the lost node")
    finally:
        cluster.resume("n2")
    try:
        cluster.kill_node("n1")
        job_id = _containers_by_run(cluster)[lost]
        pid = _task_pid(job_id)
        assert pid is not None
        # The node is gone: its slurmstepd (the task's parent) too, so nothing reports the
        # task's end; the controller requeues it when the node times out.
        stepd = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        os.kill(stepd, signal.SIGKILL)
        os.kill(pid, signal.SIGKILL)
        subprocess.run(["docker", "rm", "-f", *run_containers_of(lost)], check=True,
                       capture_output=True)
        code = proc.wait(timeout=240)
        text = log.read_text(errors="replace")
        assert code == 0, text
        final = records(store)
        assert sorted(final) == sorted(runs), text
        assert all(r["status"] == "succeeded" and r["attempt"] == 1 for r in final.values())
        assert final[lost]["node"] == "n2" and final[lost]["resumed_from_attempt"] == 1
        resumed_at = (store / "runs" / lost / "output" / "resumed_at.txt").read_text()
        assert int(resumed_at) > 0  # tenths already slept on n1
        assert final[orphan]["node"] == "n1"  # committed by the orphaned first copy
        assert not list(store.glob("runs/*/attempts"))
    finally:
        cluster.start_node("n1")
        cluster.wait_idle(90)


def run_containers_of(run_id: str) -> list[str]:
    out = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=org.orch.run_id={run_id}"],
                         capture_output=True, text=True, check=True).stdout
    return out.split()


def test_a_store_the_nodes_do_not_see_is_one_clear_error(
    tmp_path: Path, base_image: str, cluster: SlurmCluster, env: dict[str, str]
) -> None:
    """The sweep's directory store lives on a filesystem only the submitter mounts (a
    tmpfs in a mount namespace of its own): the tasks do not find their jobs there."""
    root = sleeper_project(tmp_path / "private", base_image, sleep=0)
    private = Path(tempfile.mkdtemp(prefix="orchpriv", dir="/var/tmp"))
    try:
        script = (f"mount -t tmpfs none {private} && exec {orch_exe()} sweep -p {root} "
                  f"--store {private}/store --backend slurm seed=0,1")
        proc = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                              capture_output=True, text=True, env=env, timeout=120)
    finally:
        shutil.rmtree(private, ignore_errors=True)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "does not see the store" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


STANDIN = Path(__file__).parent / "fixtures" / "apptainer-standin"


def test_apptainer_engine_runs_each_run_through_apptainer_exec(
    tmp_path: Path, base_image: str, cluster: SlurmCluster, env: dict[str, str]
) -> None:
    """``engine: apptainer``: each task converts the run image from the store's blobs and
    runs ``apptainer exec``, driven by orch's own execute (claim, logs, commit). Apptainer
    is not installed here: a stand-in (tests/fixtures/apptainer-standin) loads the archive
    into Docker and runs exec's mounts, environment and command there. The runs record
    what the same project records on Docker."""
    root = sleeper_project(tmp_path / "sif", base_image, sleep=0.2,
                         slurm={"engine": "apptainer"})
    store = tmp_path / "store"
    cache = tmp_path / "cache"
    with_standin = {**env, "PATH": f"{STANDIN}:{env['PATH']}", "ORCH_CACHE": str(cache)}
    proc = orch("sweep", "-p", str(root), "--store", str(store), "--backend", "slurm",
                "--jobs", "2", "seed=3,4", "--json", env=with_standin)
    assert proc.returncode == 0, proc.stderr
    runs = json.loads(proc.stdout)["runs"]
    assert [r["status"] for r in runs] == ["succeeded"] * 2
    assert sorted(r["metrics"]["seed"] for r in runs) == [3, 4]
    sifs = sorted(cache.glob("sif/*.sif"))
    assert [p.read_text() for p in sifs] == sorted(r["image_id"] for r in runs)
    for run in runs:
        logs = (store / "runs" / run["run_id"] / "stderr.log").read_text()
        assert "Traceback" not in logs
        # what apptainer exec is held to: the task's cgroup, no tmpfs, a read-only image
        enforced = json.loads((store / "runs" / run["run_id"] / "run.json").read_text())[
            "enforced"]
        assert enforced["engine"] == "Apptainer" and enforced["tmpfs"] == {}
        assert enforced["read_only_root"] is True and "task's cgroup" in enforced["note"]


# -- the driver side against a scheduler of the test's own (no cluster) ---------------------


class _Scheduler:
    """Stands in for SLURM's commands: records each script, gives ids, runs nothing."""

    def __init__(self, max_array: int) -> None:
        self.max_array = max_array
        self.scripts: list[str] = []

    def config(self) -> ClusterConfig:
        return ClusterConfig(max_array_size=self.max_array, kill_wait_s=5)

    def submit(self, script: str, cwd: Path | None = None) -> str:
        self.scripts.append(script)
        return str(100 + len(self.scripts))

    def tasks(self, array_id: str) -> dict[int, Any]:
        return {}

    def cancel(self, job_ids: Any, *, pending_only: bool = False) -> None:
        pass


def _job(run_id: str, resources: RunResources) -> Any:
    from orchestrator.schema.job import Job
    from orchestrator.schema.record import RunPlan

    plan = RunPlan(run_id=run_id, sweep_id="ab12cd34ef56", project="p",
                   image_id="sha256:" + "0" * 64, command=("true",), resources=resources)
    return Job(plan=plan, owner="o" * 32)


def test_arrays_split_by_max_array_size_and_resources_follow_one_another(tmp_path: Path) -> None:
    from orchestrator.backends.slurm import SlurmBackend
    from orchestrator.store import MemoryStore, RunStore

    runs = RunStore(MemoryStore("file:///shared/store"))
    scheduler = _Scheduler(max_array=3)
    backend = SlurmBackend(runs, SlurmOptions(), log_dir=tmp_path, python="/py", jobs=2,
                           slurm=scheduler, detach=True)  # type: ignore[arg-type]
    small, big = RunResources(cpus=1), RunResources(cpus=4, gpus=1)
    futures = [backend.submit(_job(f"{i:012x}", small)) for i in range(7)]
    futures.append(backend.submit(_job("0" * 11 + "f", big)))
    for future in futures:
        future.exception(timeout=10)  # settled once submitted (detached)
    backend.close()
    arrays = [s for s in scheduler.scripts if "--array=" in s]
    assert [next(line for line in s.splitlines() if "--array=" in line) for s in arrays] == [
        "#SBATCH --array=0-2%2", "#SBATCH --array=0-2%2", "#SBATCH --array=0-0%2",
        "#SBATCH --array=0-0%2",
    ]
    # The splits of one group follow one another, so --jobs holds across them.
    assert "--dependency" not in arrays[0]
    assert "#SBATCH --dependency=afterany:101" in arrays[1]
    assert "#SBATCH --dependency=afterany:102" in arrays[2]
    assert "--gres=gpu:1" in arrays[3] and "--dependency" not in arrays[3]
    # KillWait=5: a cancelled run gets 2 s before its SIGKILL, the commit the rest.
    assert all(" --stop-grace 2" in s.splitlines()[-1] for s in arrays)
    # Each task's job is in the store; the closing job comes after every array.
    jobs = sorted(k for k in runs.store.list("slurm/") if k.endswith("/job.json"))
    assert len(jobs) == 8
    (closing,) = [s for s in scheduler.scripts if "--finish" in s]
    assert "#SBATCH --dependency=afterany:101:102:103:104" in closing


def test_a_cluster_orch_cannot_reach_is_one_error_line(tmp_path: Path, base_image: str) -> None:
    root = sleeper_project(tmp_path / "p", base_image, sleep=0)
    proc = subprocess.run(
        [orch_exe(), "sweep", "-p", str(root), "--backend", "slurm", "seed=1,2"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "SLURM_CONF": str(tmp_path / "missing" / "slurm.conf")},
    )
    assert proc.returncode == 2, proc.stderr
    # At once: SLURM's own commands would retry the missing file for 60 s first.
    missing = tmp_path / "missing" / "slurm.conf"
    assert proc.stderr.splitlines()[-1:] == [
        f"error: SLURM_CONF names {missing}, which does not exist: set SLURM_CONF to the "
        "cluster's slurm.conf, or submit from a login node"
    ]
