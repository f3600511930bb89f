"""``orch init``: an orch.yaml for a project that has none, on a few real layouts; and the
``code:`` allowlist of the code layer.

``--base-image`` is given, so no daemon is needed; ``orch sweep --dry-run`` must accept
what init wrote.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from helpers import git_commit_all

from orchestrator.cli import cli
from orchestrator.compose.project import load_project
from orchestrator.errors import ImageError, ProjectError
from orchestrator.image.code import snapshot

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "hydra-app"
IMAGE_ID = "sha256:" + "d" * 64


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def git_init(root: Path) -> None:
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)


def template_like(root: Path) -> Path:
    """src/train.py (@hydra.main(config_path="../configs", config_name="train")), configs/,
    a pip-compile lock, a gitignored data/: the lightning-hydra-template's shape."""
    shutil.copytree(FIXTURE, root)
    (root / "data").mkdir()
    (root / "data" / "points.txt").write_text("0.1 0.2 0.3\n")
    git_init(root)
    git_commit_all(root, "the project")
    return root


def test_a_template_like_project(tmp_path: Path) -> None:
    root = template_like(tmp_path / "My_Project")
    code, out, err = invoke("init", "-p", str(root), "--base-image", IMAGE_ID)
    assert code == 0, err
    assert "entry point: src/train.py, a @hydra.main application" in out
    assert "config: configs/train.yaml (from @hydra.main in src/train.py)" in out
    assert "lock: requirements.lock" in out
    assert "paths.data_dir=${orch.input:data}" in out
    assert out.strip().splitlines()[-1].startswith("next: git add orch.yaml")

    text = (root / "orch.yaml").read_text()
    assert "#   overrides: ['paths.data_dir=${orch.input:data}']" in text
    project = load_project(root)
    assert project.name == "my-project"
    assert project.base_image == IMAGE_ID
    assert project.command == ("python3", "src/train.py")
    assert project.hydra_app == "src/train.py"
    assert project.config_dir == root / "configs"
    assert project.config_name == "train"
    assert project.requirements == root / "requirements.lock"
    assert [(d.name, d.source) for d in project.inputs] == [("data", "data/")]

    code, out, err = invoke("sweep", "-p", str(root), "--dry-run", "model=small,big")
    assert code == 0, err
    assert "2 point(s)" in out + err


def test_a_flat_project_without_a_lock(tmp_path: Path) -> None:
    root = tmp_path / "flat"
    (root / "conf" / "db").mkdir(parents=True)
    (root / "train.py").write_text(
        "import hydra\n\n\n"
        "@hydra.main(version_base=None, config_path='conf', config_name='config')\n"
        "def app(cfg):\n    print(cfg)\n\n\nif __name__ == '__main__':\n    app()\n"
    )
    (root / "conf" / "config.yaml").write_text("defaults:\n  - db: mysql\n  - _self_\n")
    (root / "conf" / "db" / "mysql.yaml").write_text("driver: mysql\n")
    (root / "conf" / "db" / "sqlite.yaml").write_text("driver: sqlite\n")
    (root / "requirements.txt").write_text("hydra-core==1.3.8\n")  # no hashes: not a lock
    (root / "data").mkdir()  # not ignored by git: not an input
    git_init(root)
    code, out, err = invoke("init", "-p", str(root), "--base-image", IMAGE_ID)
    assert code == 0, err
    assert "entry point: train.py, a @hydra.main application" in out
    assert "config: conf/config.yaml" in out
    assert ("pip-compile --generate-hashes --allow-unsafe --no-emit-index-url "
            "--no-emit-find-links requirements.txt -o requirements.lock") in out
    assert "uv pip compile --generate-hashes requirements.txt -o requirements.lock" in out
    assert "data:" not in out

    data = yaml.safe_load((root / "orch.yaml").read_text())
    assert data["config_dir"] == "conf" and data["config_name"] == "config"
    assert data["command"] == ["python3", "train.py"]
    assert "requirements" not in data and "inputs" not in data
    code, out, err = invoke("sweep", "-p", str(root), "--dry-run", "db=mysql,sqlite")
    assert code == 0, err


@pytest.mark.parametrize("lock", ["requirements.txt", "pylock.toml"])
def test_a_hashed_requirements_txt_or_a_pylock_is_the_lock(tmp_path: Path, lock: str) -> None:
    root = template_like(tmp_path / "p")
    (root / "requirements.lock").rename(root / lock)
    code, out, err = invoke("init", "-p", str(root), "--base-image", IMAGE_ID)
    assert code == 0, err
    assert f"lock: {lock}" in out
    assert yaml.safe_load((root / "orch.yaml").read_text())["requirements"] == lock


def test_without_a_decorator_the_defaults_list_finds_the_config(tmp_path: Path) -> None:
    """A plain train.py (reads $ORCH_CONFIG, like the demo) and a Hydra config tree."""
    root = tmp_path / "plain"
    (root / "experiments").mkdir(parents=True)
    (root / "train.py").write_text("import os\nprint(open(os.environ['ORCH_CONFIG']).read())\n")
    (root / "experiments" / "base.yaml").write_text("lr: 0.1\n")
    (root / "experiments" / "main.yaml").write_text("defaults:\n  - base\n  - _self_\n")
    code, out, err = invoke("init", "-p", str(root), "--base-image", IMAGE_ID)
    assert code == 0, err
    assert "a plain script (no @hydra.main)" in out
    assert "next: git init" in out
    data = yaml.safe_load((root / "orch.yaml").read_text())
    assert (data["config_dir"], data["config_name"]) == ("experiments", "main")


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"README.md": "nothing here\n"}, "no entry point in"),
        ({"train.py": "print(1)\n", "notes/a.yaml": "x: 1\n"}, "no Hydra config directory in"),
        ({"src/train.py": "import hydra\n@hydra.main(config_path='../configs', "
          "config_name='missing')\ndef f(c): pass\n", "configs/config.yaml": "defaults: []\n"},
         "configs/missing.yaml does not exist"),
    ],
)
def test_nothing_found_is_one_clear_error(
    tmp_path: Path, files: dict[str, str], message: str
) -> None:
    root = tmp_path / "p"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    code, out, err = invoke("init", "-p", str(root), "--base-image", IMAGE_ID)
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith("error: ") and message in line, line
    assert not (root / "orch.yaml").exists()


def test_an_existing_orch_yaml_is_never_overwritten(tmp_path: Path) -> None:
    root = template_like(tmp_path / "p")
    (root / "orch.yaml").write_text("name: mine\n")
    code, out, err = invoke("init", "-p", str(root), "--base-image", IMAGE_ID)
    assert code == 2
    assert "orch.yaml exists: orch init never overwrites it (--force replaces it)" in err
    assert (root / "orch.yaml").read_text() == "name: mine\n"
    code, out, err = invoke("init", "-p", str(root), "--base-image", IMAGE_ID, "--force")
    assert code == 0, err
    assert load_project(root).name == "p"


def test_an_unpinned_base_image_is_refused(tmp_path: Path) -> None:
    root = template_like(tmp_path / "p")
    code, out, err = invoke("init", "-p", str(root), "--base-image", "python:3.11")
    assert code == 2 and "is not pinned" in err
    assert not (root / "orch.yaml").exists()


# --- code: the allowlist of the code layer -----------------------------------------------


def code_project(root: Path) -> Path:
    for rel, text in {"train.py": "print(1)\n", "configs/config.yaml": "lr: 1\n",
                      "configs/model/a.yaml": "n: 1\n", "README.md": "# demo\n",
                      "tools/lint.py": "pass\n"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    git_init(root)
    git_commit_all(root, "initial")
    return root


def test_code_names_what_makes_the_layer(tmp_path: Path) -> None:
    root = code_project(tmp_path / "p")
    snap = snapshot(root, code=["train.py", "configs"])
    assert sorted(snap.files) == ["orch/code/configs/config.yaml",
                                  "orch/code/configs/model/a.yaml", "orch/code/train.py"]
    # a file outside it changes nothing, and does not make the tree dirty
    (root / "CHANGELOG.md").write_text("new\n")
    (root / "README.md").write_text("# changed\n")
    again = snapshot(root, code=["train.py", "configs"])
    assert (again.diff_id, again.dirty) == (snap.diff_id, False)
    # exclude still narrows it; globs are fnmatch's, as exclude's ("*" crosses "/")
    assert snapshot(root, ["configs/model"], code=["train.py", "configs/"]).files == (
        "orch/code/configs/config.yaml", "orch/code/train.py")
    assert "orch/code/tools/lint.py" in snapshot(root, code=["*.py"]).files
    # without code: every tracked file, as before
    assert "orch/code/tools/lint.py" in snapshot(root, allow_dirty=True).files


def test_a_code_entry_that_names_nothing_is_an_error(tmp_path: Path) -> None:
    root = code_project(tmp_path / "p")
    with pytest.raises(ImageError, match="code: 'trian.py' names no file"):
        snapshot(root, code=["trian.py", "configs"])


def test_code_in_orch_yaml(tmp_path: Path) -> None:
    root = code_project(tmp_path / "p")
    base = f"name: p\nbase_image: {IMAGE_ID}\ncommand: [python3, train.py]\n"
    (root / "orch.yaml").write_text(base + "code: [train.py, configs/]\n")
    assert load_project(root).code == ("train.py", "configs")
    for bad in ("code: train.py", "code: [../x]", "code: [/etc]", "code: ['']"):
        (root / "orch.yaml").write_text(base + bad + "\n")
        with pytest.raises(ProjectError, match="code: must be a list of paths"):
            load_project(root)
