"""A real project nobody here wrote runs unchanged: the lightning-hydra-template.

ashleve/lightning-hydra-template at a pinned commit (tests/fixtures/lightning-hydra-template,
laid out by tests/lht.py): its ``src/train.py`` and ``configs/`` unchanged, its lock written
by pip-compile from its requirements (hydra-core's sdist-only antlr4 included, built by
orch), and only an ``orch.yaml`` added, as the README's "Bringing a Hydra project" says.
A 4-point sweep (``model.optimizer.lr`` x ``data.batch_size``, ``trainer=cpu``, one epoch,
a small split) must train exactly each point: Lightning's own ``hparams.yaml`` of every run
equals its point, the metrics come from Lightning's CSVLogger, ``orch best`` names a run,
``orch pull`` fetches its checkpoint and ``orch rerun`` reproduces it.

Two things of this machine, not of orch, differ from upstream: MNIST cannot be downloaded
(a small synthetic set in torchvision's raw IDX format is the data input), and PyPI's
torchvision wheel is linked against CUDA torch and cannot import beside ``torch+cpu`` (the
datamodule's ``torchvision.datasets.MNIST`` is replaced by a small IDX reader: see the
fixture's README). The torch layer is the one tests/test_torch_stack.py builds (same wheel,
same layer), so this module adds the template's other packages, not torch again.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import git_commit_all
from lht import TRAIN_ENV, make_template_project

pytestmark = [pytest.mark.docker, pytest.mark.slow]

GRID = ["model.optimizer.lr=0.002,0.02", "data.batch_size=32,64"]
#: What the project's orch.yaml says, and nothing else is added to the template.
ORCH_YAML = {
    "name": "lht",
    "config_dir": "configs",
    "config_name": "train",
    "command": ["python3", "src/train.py"],
    "requirements": "requirements.lock",
    "inputs": {"mnist": "data/"},
    "overrides": [
        "paths.data_dir=${orch.input:mnist}",
        "trainer=cpu", "logger=csv", "trainer.max_epochs=1",
        "data.train_val_test_split=[500,100,100]", "seed=42",
    ],
    "env": TRAIN_ENV,
}


def orch(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    from helpers import REPO

    proc = subprocess.run([str(REPO / ".venv" / "bin" / "orch"), *args], cwd=root,
                          capture_output=True, text=True, timeout=1500)
    if check:
        assert proc.returncode == 0, (args, proc.stdout[-2000:], proc.stderr[-4000:])
    return proc


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, base_image: str) -> Iterator[Path]:
    root = make_template_project(tmp_path_factory.mktemp("lht") / "lightning-hydra-template")
    (root / "orch.yaml").write_text(yaml.safe_dump({**ORCH_YAML, "base_image": base_image},
                                                   sort_keys=False))
    git_commit_all(root)
    yield root


@pytest.fixture(scope="module")
def swept(template: Path) -> dict[str, Any]:
    proc = orch(template, "sweep", "--jobs", "2", "--json", *GRID)
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def test_every_run_trains_its_own_point(template: Path, swept: dict[str, Any],
                                        tmp_path: Path) -> None:
    runs = swept["runs"]
    assert len(runs) == 4 and {r["status"] for r in runs} == {"succeeded"}, runs
    points = set()
    for run in runs:
        # Lightning's own record of the hyperparameters it trained with
        out = tmp_path / run["run_id"]
        orch(template, "pull", run["run_id"], "csv/version_0/hparams.yaml", "-o", str(out))
        hparams = yaml.safe_load((out / "csv" / "version_0" / "hparams.yaml").read_text())
        lr = hparams["model"]["optimizer"]["lr"]
        batch = hparams["data"]["batch_size"]
        assert f"model.optimizer.lr={lr}" in run["overrides"], (run["overrides"], lr)
        assert f"data.batch_size={batch}" in run["overrides"], (run["overrides"], batch)
        assert hparams["trainer"]["max_epochs"] == 1
        points.add((lr, batch))
    assert points == {(0.002, 32), (0.002, 64), (0.02, 32), (0.02, 64)}


def test_hydra_saw_what_orch_recorded(template: Path, swept: dict[str, Any],
                                      tmp_path: Path) -> None:
    run = swept["runs"][3]
    record = json.loads(orch(template, "show", run["run_id"], "--json").stdout)
    assert record["command"] == ["python3", "src/train.py", "--config-path=/orch/hydra",
                                 "--config-name=train"]
    # PROJECT_ROOT is the container's (rootutils sets it there): left to the run
    assert record["config"]["paths"]["root_dir"] == "${oc.env:PROJECT_ROOT}"
    assert "paths.root_dir" in record["deferred"]
    orch(template, "pull", run["run_id"], ".hydra/*", "-o", str(tmp_path))
    hydra = yaml.safe_load((tmp_path / ".hydra" / "hydra.yaml").read_text())["hydra"]
    assert hydra["job"]["num"] == record["hydra"]["job"]["num"] == 3
    assert hydra["job"]["override_dirname"] == record["hydra"]["job"]["override_dirname"]
    assert hydra["mode"] == "MULTIRUN" and hydra["runtime"]["output_dir"] == "/orch/output"
    assert hydra["runtime"]["choices"]["trainer"] == "cpu"


def test_lightning_logs_are_the_metrics(template: Path, swept: dict[str, Any]) -> None:
    sweep_id = swept["sweep_id"]
    rows = json.loads(orch(template, "results", sweep_id, "--format", "json").stdout)
    assert all(0 <= row["metrics"]["val/acc"] <= 1 for row in rows), rows
    assert all("train/loss" in row["metrics"] for row in rows)
    # the learning curve, as Lightning logged it, in the store
    store = template / ".orch" / "runs" / rows[0]["run_id"]
    steps = [json.loads(line) for line in (store / "metrics.jsonl").read_text().splitlines()]
    assert any("val/acc" in step for step in steps) and all("step" in s for s in steps)
    best = json.loads(orch(template, "best", "val/acc", "--json").stdout)
    assert best["run_id"] in {row["run_id"] for row in rows}
    assert best["value"] == max(row["metrics"]["val/acc"] for row in rows)


def test_the_best_checkpoint_comes_out_and_the_run_reruns(
    template: Path, swept: dict[str, Any], tmp_path: Path
) -> None:
    best = json.loads(orch(template, "best", "val/acc", "--json").stdout)
    orch(template, "pull", best["run_id"], "**/*.ckpt", "-o", str(tmp_path))
    checkpoints = sorted(p.name for p in tmp_path.rglob("*.ckpt"))
    assert "last.ckpt" in checkpoints, checkpoints
    assert all(p.stat().st_uid == os.getuid() for p in tmp_path.rglob("*.ckpt"))
    rerun = json.loads(orch(template, "rerun", best["run_id"], "--json").stdout)
    assert rerun["identical"] is True, rerun["differences"]
    # and its image, baked Hydra config included, rebuilds to the same ID
    orch(template, "image", "verify", best["run_id"])


def test_a_hydra_app_that_recomposes_fails_with_the_reason(
    template: Path, swept: dict[str, Any], tmp_path: Path, base_image: str
) -> None:
    """An application that drops orch's arguments and composes its own defaults trains
    another config: the run fails, naming where Hydra's config differs from the record."""
    root = tmp_path / "recomposes"
    (root / "configs").mkdir(parents=True)
    (root / "configs" / "config.yaml").write_text("lr: 0.1\nepochs: 3\n")
    (root / "app.py").write_text(
        "import sys\nimport hydra\n\n\n"
        "@hydra.main(version_base=None, config_path='configs', config_name='config')\n"
        "def main(cfg):\n    print(cfg)\n\n\n"
        "if __name__ == '__main__':\n"
        "    sys.argv = sys.argv[:1] + ['hydra.run.dir=/orch/output']  # orch's args dropped\n"
        "    main()\n"
    )
    (root / "requirements.lock").write_bytes((template / "requirements.lock").read_bytes())
    (root / "orch.yaml").write_text(yaml.safe_dump({
        "name": "recomposes", "base_image": base_image, "command": ["python3", "app.py"],
        "requirements": "requirements.lock",
    }))
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    git_commit_all(root)
    proc = orch(root, "sweep", "--json", "lr=0.5", check=False)
    assert proc.returncode == 1, proc.stderr[-3000:]
    (run,) = json.loads(proc.stdout)["runs"]
    record = json.loads(orch(root, "show", run["run_id"], "--json").stdout)
    assert record["status"] == "failed"
    assert "differs at lr" in record["reason"], record["reason"]
