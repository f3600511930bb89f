"""orch.yaml validation: every mistake names the file, the key and what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.compose.project import Resources, is_pinned, load_project
from orchestrator.errors import ProjectError

IMAGE_ID = "sha256:" + "a" * 64


def write(root: Path, text: str) -> Path:
    (root / "orch.yaml").write_text(text)
    return root


def test_minimal_project(tmp_path: Path) -> None:
    project = load_project(
        write(tmp_path, f"name: p1\nbase_image: {IMAGE_ID}\ncommand: [python3, t.py]\n")
    )
    assert project.name == "p1"
    assert project.command == ("python3", "t.py")
    assert project.config_dir == tmp_path / "configs"
    assert project.config_name == "config"
    assert project.network == "none"
    assert project.resources == Resources(cpus=1.0, gpus=0, memory=None)
    assert project.pinned


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("name: Bad_Name\nbase_image: {id}\ncommand: [x]\n", "name: 'Bad_Name' must match"),
        ("name: p\nbase_image: debian:12\ncommand: [x]\n", "base_image: 'debian:12' is not pinned"),
        ("name: p\nbase_image: {id}\ncommand: python3 t.py\n", "command: must be a non-empty list"),
        ("name: p\nbase_image: {id}\ncommand: [x]\nnetwork: host\n", "network: 'host' must be"),
        ("name: p\nbase_image: {id}\ncommand: [x]\nbogus: 1\n", "bogus: unknown key"),
        ("name: p\nbase_image: {id}\ncommand: [x]\nresources: {{gpus: -1}}\n", "resources.gpus"),
        (
            "name: p\nbase_image: {id}\ncommand: [x]\nresources: {{tpus: 1}}\n",
            "resources.tpus: unknown",
        ),
        ("name: p\nbase_image: {id}\ncommand: [x]\nresources: {{pids: 0}}\n", "resources.pids"),
        ("name: p\nbase_image: {id}\ncommand: [x]\nresources: {{pids: 1.5}}\n", "resources.pids"),
        (
            "name: p\nbase_image: {id}\ncommand: [x]\nresources: {{tmp: '1g,exec'}}\n",
            "resources.tmp: must look like",
        ),
        (
            "name: p\nbase_image: {id}\ncommand: [x]\nconfig_dir: ../elsewhere\n",
            "must be inside the project",
        ),
        ("name: p\nbase_image: {id}\ncommand: [x]\ntimeout: -5\n", "timeout: must be a positive"),
        ("name: p\nbase_image: {id}\ncommand: [x]\nrequirements: missing.lock\n", "does not exist"),
        ("name: p\nbase_image: {id}\ncommand: [x]\nenv: {{ORCH_X: 1}}\n", "reserved"),
        ("- just\n- a list\n", "expected a mapping"),
        ("name: p\n  base_image: [\n", "invalid YAML"),
    ],
)
def test_invalid_project_files(tmp_path: Path, body: str, fragment: str) -> None:
    write(tmp_path, body.format(id=IMAGE_ID))
    with pytest.raises(ProjectError) as info:
        load_project(tmp_path)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message
    assert str(tmp_path / "orch.yaml") in message


def test_yaml_error_names_the_line(tmp_path: Path) -> None:
    write(tmp_path, "name: p\nbase_image: [\n")
    with pytest.raises(ProjectError, match=r"orch.yaml:3:1: invalid YAML"):
        load_project(tmp_path)


def test_unpinned_allowed_on_request(tmp_path: Path) -> None:
    write(tmp_path, "name: p\nbase_image: orch/base:bookworm\ncommand: [x]\n")
    project = load_project(tmp_path, allow_unpinned=True)
    assert not project.pinned


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ProjectError, match="orch.yaml not found"):
        load_project(tmp_path)


@pytest.mark.parametrize(
    ("ref", "pinned"),
    [
        (IMAGE_ID, True),
        ("127.0.0.1:5000/base@sha256:" + "b" * 64, True),
        ("debian:12", False),
        ("sha256:abc", False),
        ("base@sha256:" + "B" * 64, False),
    ],
)
def test_is_pinned(ref: str, pinned: bool) -> None:
    assert is_pinned(ref) is pinned


def test_process_and_scratch_limits_are_settable_and_default_to_orchs(tmp_path: Path) -> None:
    from orchestrator.runner.container import PIDS_LIMIT, TMP_SIZE, create_kwargs

    base = f"name: p1\nbase_image: {IMAGE_ID}\ncommand: [x]\n"
    project = load_project(write(tmp_path, base + "resources: {pids: 256, tmp: 64M}\n"))
    assert (project.resources.pids, project.resources.tmp) == (256, "64m")
    kwargs = create_kwargs(image_id=IMAGE_ID, command=["x"], run_id="r", cpus=1, memory=None,
                           network="none", gpu_ids=[], env={}, name="n",
                           pids=project.resources.pids, tmp=project.resources.tmp)
    assert kwargs["pids_limit"] == 256
    assert kwargs["tmpfs"] == {"/tmp": "size=64m,mode=1777", "/var/tmp": "size=64m,mode=1777"}
    default = load_project(write(tmp_path, base))
    assert (default.resources.pids, default.resources.tmp) == (None, None)
    kwargs = create_kwargs(image_id=IMAGE_ID, command=["x"], run_id="r", cpus=1, memory=None,
                           network="none", gpu_ids=[], env={}, name="n")
    assert kwargs["pids_limit"] == PIDS_LIMIT
    assert kwargs["tmpfs"]["/tmp"] == f"size={TMP_SIZE},mode=1777"
