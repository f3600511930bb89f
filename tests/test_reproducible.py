"""Pinned inputs give bit-for-bit identical images, and orch proves it on demand."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import REPO, git_commit_all

pytestmark = pytest.mark.docker

FIRST_DAEMON = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
LOCK = (REPO / "tests" / "data" / "lock" / "requirements.lock").read_text()
USES_DEPS = """
import json, os
import packaging.version, six
out = os.environ["ORCH_OUTPUT"]
cfg = json.load(open("/orch/config.json"))
assert packaging.version.Version("1.10") > packaging.version.Version("1.9")
json.dump({"six_major": int(six.__version__.split(".")[0]), "lr": cfg["optimizer"]["lr"]},
          open(os.path.join(out, "metrics.json"), "w"))
"""


def sweep(orch, root: Path, *args: str, env: dict[str, str] | None = None) -> dict:
    proc = orch("sweep", "-p", str(root), *args, "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def record(root: Path, run_id: str, store: str = ".orch") -> dict:
    return json.loads((root / store / "runs" / run_id / "run.json").read_text())


def test_verify_rebuilds_identical_images(make_project, orch) -> None:
    root = make_project("verify")
    result = sweep(orch, root, "optimizer=SGD,adam", "model=lstm,bi_lstm")
    for run in result["runs"]:
        proc = orch("image", "verify", run["run_id"], "-p", str(root))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert proc.stdout.strip() == f"identical: {run['image_id']}"


def test_verify_names_the_first_differing_layer(make_project, orch) -> None:
    root = make_project("tamper")
    run = sweep(orch, root, "optimizer=adam")["runs"][0]
    path = root / ".orch" / "runs" / run["run_id"] / "run.json"
    data = json.loads(path.read_text())
    data["config"]["optimizer"]["lr"] = 0.5  # the record no longer matches the image
    path.write_text(json.dumps(data))
    proc = orch("image", "verify", run["run_id"], "-p", str(root))
    assert proc.returncode == 1
    assert "first difference: config layer" in proc.stdout


def test_layers_change_only_where_inputs_change(make_project, orch) -> None:
    root = make_project("layers")
    a, b = sweep(orch, root, "optimizer=SGD,adam")["runs"]
    ra, rb = record(root, a["run_id"]), record(root, b["run_id"])
    assert ra["layers"]["base"] == rb["layers"]["base"]
    for shared in ("env", "code"):
        assert ra["layers"][shared] == rb["layers"][shared]
    assert ra["layers"]["config"] != rb["layers"]["config"]
    (root / "train.py").write_text((root / "train.py").read_text() + "\n# edited\n")
    git_commit_all(root, "edit")
    c = sweep(orch, root, "optimizer=SGD")["runs"][0]
    rc = record(root, c["run_id"])
    assert rc["layers"]["env"] == ra["layers"]["env"]
    assert rc["layers"]["code"] != ra["layers"]["code"]
    assert c["run_id"] != a["run_id"]


def test_dirty_tree_refused_then_baked_with_its_diff(make_project, orch) -> None:
    root = make_project("dirty")
    (root / "train.py").write_text((root / "train.py").read_text() + "\n# uncommitted\n")
    (root / "notes.txt").write_text("scratch\n")
    proc = orch("sweep", "-p", str(root), "optimizer=SGD")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: uncommitted changes")
    assert "notes.txt" in proc.stderr and "train.py" in proc.stderr
    run = sweep(orch, root, "optimizer=SGD", "--allow-dirty")["runs"][0]
    rec = record(root, run["run_id"])
    assert rec["dirty"] is True
    diff = (root / ".orch" / "runs" / run["run_id"] / "dirty.diff").read_text()
    assert "# uncommitted" in diff and "notes.txt" in diff
    verify = orch("image", "verify", run["run_id"], "-p", str(root))
    assert verify.returncode == 2 and "dirty" in verify.stderr


def test_tag_only_base_is_refused_unless_allowed(make_project, orch) -> None:
    root = make_project("unpinned", base_image="orch/base:bookworm")
    proc = orch("sweep", "-p", str(root), "optimizer=SGD")
    assert proc.returncode == 2
    assert "not pinned" in proc.stderr and "docker inspect" in proc.stderr
    run = sweep(orch, root, "optimizer=SGD", "--allow-unpinned")["runs"][0]
    assert record(root, run["run_id"])["pinned"] is False


@pytest.mark.slow
def test_second_empty_daemon_builds_identical_images(
    make_project, orch, base_image: str, second_docker_host: str, tmp_path: Path
) -> None:
    """Same sweep, a fresh daemon and a fresh cache: every image ID is the same."""
    from services import copy_image

    root = make_project(
        "twin", files={"requirements.lock": LOCK, "uses_deps.py": USES_DEPS},
        requirements="requirements.lock", command=["python3", "uses_deps.py"],
    )
    first = sweep(orch, root, "optimizer=SGD,adam", "model=lstm,bi_lstm")
    copy_image(FIRST_DAEMON, second_docker_host, base_image)
    second = sweep(
        orch, root, "optimizer=SGD,adam", "model=lstm,bi_lstm", "--store", str(tmp_path / "store2"),
        env={"DOCKER_HOST": second_docker_host, "ORCH_CACHE": str(tmp_path / "cache2")},
    )
    assert [(r["run_id"], r["image_id"]) for r in first["runs"]] == [
        (r["run_id"], r["image_id"]) for r in second["runs"]
    ]
    assert all(r["status"] == "succeeded" for r in first["runs"] + second["runs"])
    assert {r["metrics"]["six_major"] for r in second["runs"]} == {1}


LFS_POINTER = (
    "version https://git-lfs.github.com/spec/v1\n"
    "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
    "size 12345\n"
)


def test_git_lfs_files_are_refused_not_baked_as_pointers(make_project, orch) -> None:
    attributes = "*.bin filter=lfs diff=lfs merge=lfs -text\n"
    root = make_project("lfs", files={".gitattributes": attributes,
                                      "weights/model.bin": LFS_POINTER})
    proc = orch("sweep", "-p", str(root), "optimizer=SGD")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: weights/model.bin: tracked by git-lfs")
    assert "inputs" in proc.stderr and "Traceback" not in proc.stderr


def test_an_exclude_that_leaves_no_code_is_refused(make_project, orch) -> None:
    root = make_project("noexclude", exclude=["*"])
    proc = orch("sweep", "-p", str(root), "optimizer=SGD")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: orch.yaml exclude ['*'] leaves no file")
