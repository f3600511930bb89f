"""End to end on the real Docker engine: sweep, store, skip, show, rerun, fail."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from pathlib import Path

import pytest
import yaml
from helpers import git_commit_all

pytestmark = pytest.mark.docker

RECORD_FIELDS = {
    "run_id", "sweep_id", "status", "overrides", "config", "image_id", "repo_digest",
    "base_image", "command", "git_commit", "dirty", "exit_code", "started_at", "ended_at",
    "host", "node", "gpus", "metrics",
}


def hydra_compose(config_dir: Path, overrides: list[str]) -> dict:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    import orchestrator.compose.config  # noqa: F401  (registers orch's ${orch.input:NAME} resolver)

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        cfg = compose(config_name="config", overrides=overrides)
    GlobalHydra.instance().clear()
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def baked_file(image_id: str, path: str) -> str:
    out = subprocess.run(["docker", "run", "--rm", image_id, "cat", path],
                         capture_output=True, text=True, check=True)
    return out.stdout


@pytest.fixture(scope="module")
def demo_sweep(tmp_path_factory: pytest.TempPathFactory, base_image: str) -> dict:
    """One 4-point sweep of the demo, shared by the tests that only read its results."""
    import sys

    from helpers import copy_demo

    root = tmp_path_factory.mktemp("demo") / "demo"
    (root / "orch.yaml").write_text(yaml.safe_dump(
        {"name": "demo", "base_image": base_image, "command": ["python3", "train.py"],
         **copy_demo(root)}))
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    git_commit_all(root)
    orch = Path(sys.executable).with_name("orch")
    proc = subprocess.run(
        [str(orch), "sweep", "-p", str(root), "optimizer=SGD,adam", "model=lstm,bi_lstm",
         "--jobs", "2", "--json"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return {"root": root, "result": json.loads(proc.stdout), "stderr": proc.stderr}


def test_sweep_runs_every_point(demo_sweep: dict) -> None:
    result = demo_sweep["result"]
    assert len(result["runs"]) == 4
    assert {r["status"] for r in result["runs"]} == {"succeeded"}
    assert sorted(tuple(r["overrides"]) for r in result["runs"]) == sorted(
        (f"optimizer={o}", f"model={m}") for o in ("SGD", "adam") for m in ("lstm", "bi_lstm"))
    assert len({r["image_id"] for r in result["runs"]}) == 4
    for run in result["runs"]:
        assert run["image_id"].startswith("sha256:")
        assert {"loss", "accuracy"} <= set(run["metrics"])


def test_each_run_image_is_named_by_its_project_and_run(demo_sweep: dict) -> None:
    """Named after the load, beside the runs: by the sweep's end every image has its name."""
    for run in demo_sweep["result"]["runs"]:
        out = subprocess.run(["docker", "image", "inspect", "-f", "{{json .RepoTags}}",
                              run["image_id"]], capture_output=True, text=True, check=True)
        assert f"orch/demo:{run['run_id'][:12]}" in json.loads(out.stdout)


def test_baked_config_equals_hydra_compose(demo_sweep: dict) -> None:
    root = demo_sweep["root"]
    for run in demo_sweep["result"]["runs"]:
        expected = hydra_compose(root / "configs", run["overrides"])
        assert yaml.safe_load(baked_file(run["image_id"], "/orch/config.yaml")) == expected
        assert json.loads(baked_file(run["image_id"], "/orch/config.json")) == expected


def test_store_layout(demo_sweep: dict) -> None:
    store = demo_sweep["root"] / ".orch"
    sweep_id = demo_sweep["result"]["sweep_id"]
    assert (store / "sweeps" / f"{sweep_id}.json").is_file()
    for run in demo_sweep["result"]["runs"]:
        run_dir = store / "runs" / run["run_id"]
        for name in ("run.json", "config.yaml", "metrics.json", "stdout.log", "stderr.log"):
            assert (run_dir / name).is_file(), name
        assert list((run_dir / "output").iterdir()), "the artifact is kept"
        record = json.loads((run_dir / "run.json").read_text())
        assert json.loads((run_dir / "metrics.json").read_text()) == record["metrics"]
        hex_id = record["image_id"].split(":")[1]
        assert (store / "blobs" / "sha256" / hex_id).is_file()
        assert (store / "blobs" / "sha256" / record["layers"]["config"].split(":")[1]).is_file()


def test_resubmit_skips_everything(demo_sweep: dict, orch) -> None:
    proc = orch("sweep", "-p", str(demo_sweep["root"]), "optimizer=SGD,adam",
                "model=lstm,bi_lstm", "--json")
    assert proc.returncode == 0, proc.stderr
    again = json.loads(proc.stdout)
    assert again["sweep_id"] == demo_sweep["result"]["sweep_id"]
    assert {r["status"] for r in again["runs"]} == {"skipped"}
    first = {r["run_id"]: r["metrics"] for r in demo_sweep["result"]["runs"]}
    assert {r["run_id"]: r["metrics"] for r in again["runs"]} == first


def test_show_has_the_whole_record(demo_sweep: dict, orch) -> None:
    run = demo_sweep["result"]["runs"][0]
    proc = orch("show", run["run_id"], "-p", str(demo_sweep["root"]), "--json")
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert RECORD_FIELDS <= set(record)
    assert record["exit_code"] == 0 and record["dirty"] is False
    assert len(record["git_commit"]) == 40
    assert record["command"] == ["python3", "train.py"]


def test_results_json_has_configs(demo_sweep: dict, orch) -> None:
    proc = orch("results", demo_sweep["result"]["sweep_id"], "-p", str(demo_sweep["root"]),
                "--format", "json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert len(rows) == 4
    assert all("config" in row and row["status"] == "succeeded" for row in rows)


def test_rerun_reproduces_metrics(demo_sweep: dict, orch) -> None:
    run = demo_sweep["result"]["runs"][1]
    proc = orch("rerun", run["run_id"], "-p", str(demo_sweep["root"]), "--json")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    result = json.loads(proc.stdout)
    assert result["identical"] is True
    assert result["rerun_of"] == run["run_id"]
    assert result["metrics"] == run["metrics"]
    stored = json.loads((demo_sweep["root"] / ".orch" / "runs" / result["run_id"] / "run.json")
                        .read_text())
    assert stored["rerun_of"] == run["run_id"]


PROBE = """
import json, os, socket, sys
cfg = json.load(open(os.environ["ORCH_CONFIG"].replace(".yaml", ".json")))
out = os.environ["ORCH_OUTPUT"]
try:
    socket.create_connection(("1.1.1.1", 53), timeout=1)
    network = "reachable"
except OSError:
    network = "none"
print(json.dumps({"uid": os.getuid(), "network": network, "cwd": os.getcwd(),
                  "run_id": os.environ["ORCH_RUN_ID"]}))
if cfg["x"] == 2:
    print("boom: x must not be 2", file=sys.stderr)
    sys.exit(3)
json.dump({"square": cfg["x"] ** 2}, open(os.path.join(out, "metrics.json"), "w"))
"""


def test_failed_run_is_recorded_and_sweep_goes_on(make_project, orch) -> None:
    root = make_project("probe", files={"probe.py": PROBE, "configs/config.yaml": "x: 1\n"},
                        command=["python3", "probe.py"])
    proc = orch("sweep", "-p", str(root), "x=1,2,3", "--json")
    assert proc.returncode == 1, proc.stderr
    runs = json.loads(proc.stdout)["runs"]
    assert [r["status"] for r in runs] == ["succeeded", "failed", "succeeded"]
    assert [r["metrics"] for r in runs] == [{"square": 1}, {}, {"square": 9}]
    failed = runs[1]["run_id"]
    record = json.loads((root / ".orch" / "runs" / failed / "run.json").read_text())
    assert record["exit_code"] == 3 and record["reason"] == "exit code 3"
    assert "boom" in (root / ".orch" / "runs" / failed / "stderr.log").read_text()
    probe = json.loads((root / ".orch" / "runs" / runs[0]["run_id"] / "stdout.log").read_text())
    assert probe == {"uid": 65534, "network": "none", "cwd": "/orch/code",
                     "run_id": runs[0]["run_id"]}


def test_resubmitted_sweep_with_a_failed_run_still_fails(make_project, orch) -> None:
    root = make_project("refail", files={"probe.py": PROBE, "configs/config.yaml": "x: 1\n"},
                        command=["python3", "probe.py"])
    assert orch("sweep", "-p", str(root), "x=1,2", "--json").returncode == 1
    kept = orch("sweep", "-p", str(root), "x=1,2", "--json", "--retry", "none")
    assert kept.returncode == 1, kept.stderr
    assert [r["status"] for r in json.loads(kept.stdout)["runs"]] == ["skipped", "failed"]
    retried = orch("sweep", "-p", str(root), "x=1,2", "--json")  # --retry failed: the default
    assert retried.returncode == 1, retried.stderr
    assert [r["status"] for r in json.loads(retried.stdout)["runs"]] == ["skipped", "failed"]
    assert "retrying its failed attempt 1" in retried.stderr
    failed_id = json.loads(retried.stdout)["runs"][1]["run_id"]
    record = json.loads((root / ".orch" / "runs" / failed_id / "run.json").read_text())
    assert record["attempt"] == 2
    first = root / ".orch" / "runs" / failed_id / "attempts" / "1"
    assert json.loads((first / "run.json").read_text())["status"] == "failed"
    assert "boom" in (first / "stderr.log").read_text()


def test_rerun_of_a_simulated_gpu_run_does_not_inherit_what_it_observed(
    demo_sweep: dict, orch
) -> None:
    """A record written on a node with ORCH_FAKE_GPUS=1 says gpus_simulated; a rerun here
    ran on no simulated GPU and must not say so (nor inherit the node or GPU ids)."""
    root = demo_sweep["root"]
    run_id = demo_sweep["result"]["runs"][2]["run_id"]
    path = root / ".orch" / "runs" / run_id / "run.json"
    original = path.read_text()
    record = json.loads(original)
    record.update(gpus_simulated=True, gpus=["0"], node="a" * 56)
    path.write_text(json.dumps(record))
    try:
        proc = orch("rerun", run_id, "-p", str(root), "--json")
    finally:
        path.write_text(original)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    rerun_id = json.loads(proc.stdout)["run_id"]
    stored = json.loads((root / ".orch" / "runs" / rerun_id / "run.json").read_text())
    assert stored["rerun_of"] == run_id
    assert "gpus_simulated" not in stored
    assert stored["gpus"] == [] and stored["node"] is None


def test_code_change_gives_new_run_ids(make_project, orch) -> None:
    root = make_project("codechange")
    first = json.loads(orch("sweep", "-p", str(root), "optimizer=SGD", "--json").stdout)
    (root / "train.py").write_text((root / "train.py").read_text() + "\n# a change\n")
    dirty = orch("sweep", "-p", str(root), "optimizer=SGD", "--json")
    assert dirty.returncode == 2
    assert dirty.stderr.startswith("error: uncommitted changes") and "train.py" in dirty.stderr
    git_commit_all(root, "change")
    second = json.loads(orch("sweep", "-p", str(root), "optimizer=SGD", "--json").stdout)
    assert first["runs"][0]["run_id"] != second["runs"][0]["run_id"]
    assert second["runs"][0]["status"] == "succeeded"


def test_results_formats_and_options(demo_sweep: dict, orch) -> None:
    root, sweep_id = str(demo_sweep["root"]), demo_sweep["result"]["sweep_id"]
    table = orch("results", sweep_id, "-p", root, "--sort", "-accuracy")
    assert table.returncode == 0, table.stderr
    assert "optimizer.name" in table.stdout and "accuracy" in table.stdout
    # the sweep's results list its runs and the reruns of them that other tests made
    listed = json.loads(orch("results", sweep_id, "-p", root, "--format", "json").stdout)
    originals = {r["run_id"] for r in demo_sweep["result"]["runs"]}
    for extra in {r["run_id"] for r in listed} - originals:
        record = json.loads((demo_sweep["root"] / ".orch" / "runs" / extra / "run.json")
                            .read_text())
        assert record["rerun_of"] in originals
    assert originals <= {r["run_id"] for r in listed}
    csv_out = orch("results", sweep_id, "-p", root, "--format", "csv", "--sort", "loss")
    rows = list(csv.DictReader(io.StringIO(csv_out.stdout)))
    assert len(rows) == len(listed) and list(rows[0])[:2] == ["run_id", "status"]
    losses = [float(row["loss"]) for row in rows]
    assert losses == sorted(losses)
    markdown = orch("results", sweep_id, "-p", root, "--format", "markdown",
                    "--where", "optimizer.name=adam")
    assert markdown.returncode == 0, markdown.stderr
    rows = [line for line in markdown.stdout.splitlines() if line.startswith("|")]
    adam = sum(1 for r in listed if r["config"]["optimizer"]["name"] == "adam")
    assert adam >= 2 and len(rows) == 2 + adam  # header, separator, the adam runs
    bad = orch("results", sweep_id, "-p", root, "--sort", "nosuchmetric")
    assert bad.returncode == 2 and bad.stderr.startswith("error: ")


def test_compare_shows_only_differences(demo_sweep: dict, orch) -> None:
    runs = {tuple(r["overrides"]): r["run_id"] for r in demo_sweep["result"]["runs"]}
    a = runs[("optimizer=SGD", "model=lstm")]
    b = runs[("optimizer=adam", "model=lstm")]
    proc = orch("compare", a, b, "-p", str(demo_sweep["root"]), "--json")
    assert proc.returncode == 0, proc.stderr
    diff = json.loads(proc.stdout)
    text = json.dumps(diff)
    assert "optimizer.name" in text and "model.name" not in text
    human = orch("compare", a, b, "-p", str(demo_sweep["root"]))
    assert "optimizer.lr" in human.stdout and "config" in human.stdout


def test_report_runs_and_logs(demo_sweep: dict, orch, tmp_path: Path) -> None:
    root, sweep_id = str(demo_sweep["root"]), demo_sweep["result"]["sweep_id"]
    out = tmp_path / "report.html"
    proc = orch("report", sweep_id, "-p", root, "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    html = out.read_text()
    assert sweep_id in html and "<svg" in html
    assert "src=\"http" not in html and "href=\"http" not in html
    listing = orch("runs", "-p", root)
    assert sweep_id in listing.stdout
    run_id = demo_sweep["result"]["runs"][0]["run_id"]
    logs = orch("logs", run_id[:6], "-p", root)
    assert logs.returncode == 0, logs.stderr
    stored = (demo_sweep["root"] / ".orch" / "runs" / run_id / "stdout.log").read_text()
    assert logs.stdout == stored and stored


def test_image_ls_and_prune_keep_referenced_images(demo_sweep: dict, orch) -> None:
    root = str(demo_sweep["root"])
    listing = orch("image", "ls", "-p", root)
    assert listing.returncode == 0
    for run in demo_sweep["result"]["runs"]:
        assert run["image_id"] in listing.stdout
    prune = orch("image", "prune", "-p", root, "--dry-run")
    assert prune.returncode == 0, prune.stderr
    for run in demo_sweep["result"]["runs"]:
        assert run["image_id"] not in prune.stdout


def test_image_ls_lists_the_projects_images_or_all(demo_sweep: dict, make_project, orch) -> None:
    other = make_project("lsother")
    proc = orch("sweep", "-p", str(other), "optimizer=SGD", "model=lstm", "--json")
    assert proc.returncode == 0, proc.stderr
    other_image = json.loads(proc.stdout)["runs"][0]["image_id"]
    demo_images = [run["image_id"] for run in demo_sweep["result"]["runs"]]
    mine = orch("image", "ls", "-p", str(other))
    assert mine.returncode == 0, mine.stderr
    assert other_image in mine.stdout
    assert not any(image in mine.stdout for image in demo_images)
    every = orch("image", "ls", "--all", "-p", str(other))
    assert every.returncode == 0, every.stderr
    assert all(image in every.stdout for image in [other_image, *demo_images])


SLOW = """
import json, os, time
time.sleep(8)
json.dump({"slept": 8}, open(os.path.join(os.environ["ORCH_OUTPUT"], "metrics.json"), "w"))
"""


def test_runs_counts_a_running_run(make_project, orch) -> None:
    import sys
    import time

    root = make_project("slow", files={"slow.py": SLOW}, command=["python3", "slow.py"])
    exe = Path(sys.executable).with_name("orch")
    sweeping = subprocess.Popen([str(exe), "sweep", "-p", str(root), "optimizer=SGD", "--json"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not list((root / ".orch" / "runs").glob("*/claim.json")):
            assert sweeping.poll() is None, sweeping.communicate()
            assert time.monotonic() < deadline, "the run never started"
            time.sleep(0.1)
        listing = orch("runs", "-p", str(root))
        assert listing.returncode == 0, listing.stderr
        header, row = listing.stdout.splitlines()
        assert header.split()[-4:] == ["OK", "FAILED", "RUNNING", "ARGS"]
        assert row.split()[-4:] == ["0", "0", "1", "optimizer=SGD"], listing.stdout
        out, err = sweeping.communicate(timeout=60)
    finally:
        if sweeping.poll() is None:
            sweeping.kill()
            sweeping.communicate()
    assert sweeping.returncode == 0, err
    assert json.loads(out)["runs"][0]["metrics"] == {"slept": 8}
    done = orch("runs", "-p", str(root)).stdout.splitlines()[1]
    assert done.split()[-4:] == ["1", "0", "0", "optimizer=SGD"]


def test_shell_completion_offers_commands_and_run_ids(demo_sweep: dict, orch) -> None:
    run_id = demo_sweep["result"]["runs"][0]["run_id"]
    words = orch(env={"_ORCH_COMPLETE": "bash_complete", "COMP_WORDS": "orch res",
                      "COMP_CWORD": "1"})
    assert "plain,results" in words.stdout.splitlines()
    ids = orch(cwd=demo_sweep["root"], env={
        "_ORCH_COMPLETE": "bash_complete", "COMP_WORDS": f"orch show {run_id[:4]}",
        "COMP_CWORD": "2"})
    assert f"plain,{run_id}" in ids.stdout.splitlines()
