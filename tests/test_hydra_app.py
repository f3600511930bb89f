"""A ``@hydra.main`` application receives exactly the config orch composed and records.

The mechanism (orchestrator.compose.hydra_app) is checked here with real Hydra on this machine:
a tiny application is started on the files orch bakes into a run image, as the run's
container starts it, and reports its ``cfg`` and ``HydraConfig``; the end-to-end runs in
containers are in tests/test_real_project.py. Detection, the project settings, and the
check of what Hydra saved are tested beside it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.compose import config as configmod
from orchestrator.compose import hydra_app
from orchestrator.compose.project import load_project
from orchestrator.drivers import grid as sweepmod
from orchestrator.errors import ConfigError, ProjectError

IMAGE_ID = "sha256:" + "c" * 64

APP = '''\
import json, os, sys
import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg):
    h = HydraConfig.get()
    report = {
        "cfg": OmegaConf.to_container(cfg, resolve=True),
        "job": {k: h.job[k] for k in ("name", "num", "id", "override_dirname")},
        "choices": OmegaConf.to_container(h.runtime.choices),
        "output_dir": h.runtime.output_dir,
        "mode": str(h.mode.name),
        "cwd": os.getcwd(),
    }
    with open(os.environ["REPORT"], "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main()
'''

CONFIGS = {
    "configs/train.yaml": (
        "defaults:\n  - _self_\n  - model: small\n  - optimizer: sgd\n"
        "  - override hydra/job_logging: none\n  - override hydra/hydra_logging: none\n"
        "seed: 1\nroot: ${oc.env:PROJECT_ROOT}\ndata_dir: ${root}/data\n"
        "out: ${hydra:runtime.output_dir}\nname: ${hydra:job.name}\n"
        "stamp: ${now:%Y}\n"
    ),
    "configs/model/small.yaml": "hidden: 8\n",
    "configs/model/large.yaml": "hidden: 64\n",
    "configs/optimizer/sgd.yaml": "name: sgd\nlr: 0.1\n",
    "configs/optimizer/adam.yaml": "name: adam\nlr: 0.001\n",
}


def write_project(root: Path, command: str = "[python3, train.py]", extra: str = "") -> Path:
    for rel, text in {**CONFIGS, "train.py": APP}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "orch.yaml").write_text(
        f"name: hydraapp\nbase_image: {IMAGE_ID}\nconfig_name: train\ncommand: {command}\n"
        + extra
    )
    return root


# -- detection -----------------------------------------------------------------------------


@pytest.mark.parametrize("source", [
    "import hydra\n@hydra.main(config_path='c')\ndef f(cfg): pass\n",
    "import hydra as h\n@h.main()\ndef f(cfg): pass\n",
    "from hydra import main\n@main(config_path='c')\ndef f(cfg): pass\n",
    "from hydra import main as entry\n@entry(version_base=None)\ndef f(cfg): pass\n",
])
def test_a_hydra_main_script_is_detected(tmp_path: Path, source: str) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.py").write_text(source)
    assert hydra_app.detect(tmp_path, ["python3", "src/train.py", "x=1"]) == "src/train.py"


@pytest.mark.parametrize("source", [
    "import json\ndef main(cfg): pass\n",
    "def main(f):\n    return f\n@main\ndef g(cfg): pass\n",
    "import other as hydra_like\n@hydra_like.main()\ndef f(c): pass\n",
    "def broken(:\n",
])
def test_a_plain_script_is_not_a_hydra_app(tmp_path: Path, source: str) -> None:
    (tmp_path / "train.py").write_text(source)
    assert hydra_app.detect(tmp_path, ["python3", "train.py"]) is None


def test_a_module_command_is_looked_into(tmp_path: Path) -> None:
    (tmp_path / "pkg" / "app").mkdir(parents=True)
    (tmp_path / "pkg" / "app" / "__main__.py").write_text(
        "import hydra\n@hydra.main()\ndef f(c): pass\n")
    (tmp_path / "pkg" / "train.py").write_text("from hydra import main\n@main()\ndef f(c): pass\n")
    assert hydra_app.detect(tmp_path, ["python", "-m", "pkg.train"]) == "pkg/train.py"
    assert hydra_app.detect(tmp_path, ["python", "-m", "pkg.app"]) == "pkg/app/__main__.py"
    assert hydra_app.detect(tmp_path, ["train-console-script"]) is None


def test_orch_yaml_decides_over_detection(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p")
    detected = load_project(root)
    assert detected.hydra_app == "train.py"
    assert detected.run_command == (
        "python3", "train.py", "--config-path=/orch/hydra", "--config-name=train")
    (root / "orch.yaml").write_text((root / "orch.yaml").read_text() + "hydra_app: false\n")
    assert load_project(root).run_command == ("python3", "train.py")
    wrapper = write_project(tmp_path / "w", "[sh, run.sh]", "hydra_app: true\n")
    assert load_project(wrapper).hydra_app == "orch.yaml"
    (root / "orch.yaml").write_text((root / "orch.yaml").read_text().replace(
        "hydra_app: false", "hydra_app: maybe"))
    with pytest.raises(ProjectError, match="hydra_app: must be true or false"):
        load_project(root)


# -- composition ---------------------------------------------------------------------------


def test_environment_interpolations_are_left_to_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A variable only the container has is not needed on the host, and a host value is
    never baked: the record keeps the interpolation and names the keys."""
    monkeypatch.delenv("PROJECT_ROOT", raising=False)
    project = load_project(write_project(tmp_path / "p"))
    ((_, cfg),) = sweepmod.compose_points(project, [])
    assert cfg["root"] == "${oc.env:PROJECT_ROOT}"
    assert cfg["data_dir"] == "${root}/data"
    assert cfg.deferred == ("root", "data_dir")
    monkeypatch.setenv("PROJECT_ROOT", "/host/only")
    ((_, again),) = sweepmod.compose_points(project, [])
    assert again == cfg, "a host value must not reach the config"
    # the run's YAML keeps them as interpolations (not escaped): OmegaConf resolves them
    text = configmod.to_yaml(cfg, deferred=cfg.deferred)
    monkeypatch.setenv("PROJECT_ROOT", "/in/the/run")
    from omegaconf import OmegaConf
    assert OmegaConf.create(text).data_dir == "/in/the/run/data"


def test_orch_variables_and_orch_yaml_env_resolve_at_composition(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p", extra="env: {PROJECT_ROOT: /orch/code}\n")
    (root / "configs" / "train.yaml").write_text(
        CONFIGS["configs/train.yaml"] + "outdir: ${oc.env:ORCH_OUTPUT}\n")
    ((_, cfg),) = sweepmod.compose_points(load_project(root), [])
    assert cfg["root"] == "/orch/code" and cfg["data_dir"] == "/orch/code/data"
    assert cfg["outdir"] == "/orch/output" and cfg.deferred == ()
    (root / "configs" / "train.yaml").write_text(
        CONFIGS["configs/train.yaml"] + "bad: ${oc.env:ORCH_NO_SUCH}\n")
    with pytest.raises(ConfigError, match="ORCH_NO_SUCH"):
        sweepmod.compose_points(load_project(root), [])


def test_overrides_in_orch_yaml_start_every_point(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p", extra='overrides: ["model=large"]\n')
    points = sweepmod.compose_points(load_project(root), ["optimizer=sgd,adam"])
    assert [p for p, _ in points] == [("model=large", "optimizer=sgd"),
                                     ("model=large", "optimizer=adam")]
    assert all(cfg["model"]["hidden"] == 64 for _, cfg in points)


# -- the application, started as its container starts it ----------------------------------


def run_app(root: Path, project_root: str, point: tuple[str, ...], cfg: Any,
            tmp: Path) -> dict[str, Any]:
    """Start the app on the baked files, as the run image holds them (/orch/hydra is a
    directory here; only its path and the output dir differ from a container)."""
    baked = tmp / "baked"
    baked.mkdir(parents=True)
    for path, data in hydra_app.baked_files(cfg, hydra_app.node_for_run(cfg.node), "train",
                                            cfg.deferred):
        (baked / Path(path).name).write_bytes(data)
    argv = [a.replace(hydra_app.BAKED_DIR, str(baked))
            for a in load_project(root).run_command[1:]]
    report = tmp / "report.json"
    env = {**os.environ, "PROJECT_ROOT": project_root, "REPORT": str(report),
           "PYTHONPATH": str(baked)}
    proc = subprocess.run([sys.executable, *argv, f"hydra.run.dir={tmp / 'output'}"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(report.read_text())
    return result


def test_the_app_trains_the_recorded_point(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p")
    project = load_project(root)
    points = sweepmod.compose_points(project, ["optimizer=sgd,adam", "optimizer.lr=0.5"])
    point, cfg = points[1]
    seen = run_app(root, "/proj", point, cfg, tmp_path / "run")
    # cfg: exactly the recorded config, the deferred key resolved by the run
    expected = json.loads(json.dumps(cfg))
    expected["root"], expected["data_dir"] = "/proj", "/proj/data"
    assert seen["cfg"] == expected
    assert seen["cfg"]["optimizer"] == {"name": "adam", "lr": 0.5}
    # HydraConfig: what orch composed for the point, job 1 of the sweep
    assert seen["job"] == {"name": "train", "num": 1, "id": "1",
                           "override_dirname": "optimizer.lr=0.5,optimizer=adam"}
    assert seen["mode"] == "MULTIRUN"
    assert seen["choices"]["optimizer"] == "adam" and seen["choices"]["model"] == "small"
    assert seen["choices"] == cfg.node["runtime"]["choices"]
    # Hydra saved exactly the baked config: the run check passes
    assert hydra_app.check_run(tmp_path / "run" / "output", cfg, cfg.deferred, cfg.node) is None


def test_a_recomposed_config_fails_the_check(tmp_path: Path) -> None:
    """An app that recomposed its own defaults saves another config: the check names the
    first differing keys."""
    root = write_project(tmp_path / "p")
    ((_, cfg),) = sweepmod.compose_points(load_project(root), ["optimizer=adam"])
    saved = tmp_path / "out" / ".hydra"
    saved.mkdir(parents=True)
    theirs = yaml.safe_load(configmod.to_yaml(cfg, deferred=cfg.deferred))
    theirs["optimizer"] = {"name": "sgd", "lr": 0.1}
    (saved / "config.yaml").write_text(yaml.safe_dump(theirs))
    reason = hydra_app.check_run(tmp_path / "out", cfg, cfg.deferred, cfg.node)
    assert reason is not None and "optimizer.lr, optimizer.name" in reason
    # a Hydra app that saved nothing did not run on orch's config either
    (saved / "config.yaml").unlink()
    assert "saved no .hydra/config.yaml" in (
        hydra_app.check_run(tmp_path / "out", cfg, cfg.deferred, cfg.node) or "")
    # a plain script that saved nothing is fine
    assert hydra_app.check_run(tmp_path / "out", cfg, cfg.deferred, None) is None


def test_the_baked_node_does_not_depend_on_the_machine(tmp_path: Path) -> None:
    """Two checkouts in different places bake the same bytes (config sources' paths and
    the host's Hydra version are Hydra's to set in the run)."""
    baked = []
    for where in ("a", "b/c"):
        root = write_project(tmp_path / where)
        ((_, cfg),) = sweepmod.compose_points(load_project(root), ["model=large"])
        files = hydra_app.baked_files(cfg, hydra_app.node_for_run(cfg.node), "train",
                                      cfg.deferred)
        assert str(tmp_path) not in files[0][1].decode()
        baked.append(files)
    assert baked[0] == baked[1]


# -- a config file git does not track ------------------------------------------------------


def test_an_ignored_config_file_the_composition_reads_is_dirty(tmp_path: Path) -> None:
    """The template's ``optional local: default``: a gitignored file that changes the
    configs is refused like an uncommitted change, named; --allow-dirty bakes it."""
    from helpers import git_commit_all

    from orchestrator.errors import ImageError
    from orchestrator.image.code import snapshot

    root = write_project(tmp_path / "p")
    train = root / "configs" / "train.yaml"
    train.write_text(train.read_text().replace(
        "  - _self_\n", "  - _self_\n  - optional local: default\n"))
    (root / ".gitignore").write_text("configs/local/\n")
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    git_commit_all(root)
    project = load_project(root)
    points = sweepmod.compose_points(project, [])
    assert snapshot(root, config_files=sweepmod.config_files(points)).dirty is False
    (root / "configs" / "local").mkdir()
    (root / "configs" / "local" / "default.yaml").write_text("# @package _global_\nseed: 7\n")
    points = sweepmod.compose_points(project, [])
    assert points[0][1]["seed"] == 7
    read = sweepmod.config_files(points)
    with pytest.raises(ImageError, match=r"^configs/local/default.yaml: read by the config"):
        snapshot(root, config_files=read)
    code = snapshot(root, allow_dirty=True, config_files=read)
    assert code.dirty and "orch/code/configs/local/default.yaml" in code.files
    assert b"configs/local/default.yaml" in code.diff
    # an ignored file the composition does not read changes nothing
    (root / "configs" / "local" / "other.yaml").write_text("# @package _global_\nseed: 8\n")
    (root / "configs" / "local" / "default.yaml").unlink()
    points = sweepmod.compose_points(load_project(root), [])
    assert snapshot(root, config_files=sweepmod.config_files(points)).dirty is False
