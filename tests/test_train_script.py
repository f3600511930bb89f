"""The demo train.py: stdlib only, reads /orch/config.json, deterministic metrics."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import DEMO_INPUTS

from orchestrator.compose.config import Composer, to_json, to_yaml

REPO = Path(__file__).resolve().parent.parent
TRAIN = REPO / "train.py"


@pytest.fixture(scope="module")
def composer() -> Composer:
    return Composer(REPO / "configs")


def run_train(
    tmp_path: Path, config: dict[str, Any], name: str, hash_seed: str = "0"
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Lay the run out as orch does inside the container, then run train.py.

    ``dataset.path`` (``/orch/inputs/NAME`` in a run) points at the demo's data, written
    under ``tmp_path/data`` as ``make setup`` writes it for the repository.
    """
    data = tmp_path / "data"
    if not data.exists():
        subprocess.run([sys.executable, str(REPO / "scripts" / "demo-data.py"), str(data)],
                       check=True, capture_output=True)
    mounted = Path(config.get("dataset", {}).get("path", ""))
    if mounted.parent == Path("/orch/inputs"):
        source = Path(DEMO_INPUTS[mounted.name]).relative_to("data")
        config = {**config, "dataset": {**config["dataset"], "path": str(data / source)}}
    orch = tmp_path / name
    output = orch / "output"
    output.mkdir(parents=True)
    (orch / "config.yaml").write_text(to_yaml(config))
    (orch / "config.json").write_text(to_json(config))
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "ORCH_CONFIG": str(orch / "config.yaml"),
        "ORCH_OUTPUT": str(output),
        "ORCH_RUN_ID": name,
        "PYTHONHASHSEED": hash_seed,
    }
    proc = subprocess.run(
        [sys.executable, str(TRAIN)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc, output


def test_only_the_standard_library() -> None:
    tree = ast.parse(TRAIN.read_text())
    modules = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert modules <= set(sys.stdlib_module_names) | {"__future__"}, modules


def test_same_config_same_metrics_bit_for_bit(tmp_path: Path, composer: Composer) -> None:
    config = composer.compose([])
    first, out1 = run_train(tmp_path, config, "one", hash_seed="1")
    second, out2 = run_train(tmp_path, config, "two", hash_seed="2")
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert (out1 / "metrics.json").read_bytes() == (out2 / "metrics.json").read_bytes()
    assert (out1 / "model.json").read_bytes() == (out2 / "model.json").read_bytes()
    assert first.stdout == second.stdout and "epoch 1/" in first.stdout

    metrics = json.loads((out1 / "metrics.json").read_text())
    assert {"loss", "accuracy", "test_loss", "test_accuracy", "epochs"} <= set(metrics)
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in metrics.values())
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert metrics["epochs"] == config["training_settings"]["epochs"]
    model = json.loads((out1 / "model.json").read_text())
    assert len(model["layers"]) == config["model"]["num_layers"] + 1


def test_different_configs_give_different_metrics(tmp_path: Path, composer: Composer) -> None:
    metrics = {}
    for name, overrides in {
        "sgd": [],
        "adam": ["optimizer=adam"],
        "lstm": ["model=lstm"],
        "seed": ["training_settings.seed=7"],
    }.items():
        proc, output = run_train(tmp_path, composer.compose(overrides), name)
        assert proc.returncode == 0, proc.stderr
        metrics[name] = (output / "metrics.json").read_text()
    assert len(set(metrics.values())) == len(metrics)


def test_missing_key_fails_clearly(tmp_path: Path, composer: Composer) -> None:
    config = composer.compose(["~optimizer.lr"])
    proc, output = run_train(tmp_path, config, "broken")
    assert proc.returncode != 0
    assert "missing required key 'optimizer.lr'" in proc.stderr
    assert not (output / "metrics.json").exists()


def test_missing_config_env_fails_clearly(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(TRAIN)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        timeout=60,
    )
    assert proc.returncode == 2 and "ORCH_CONFIG" in proc.stderr


def test_a_bad_dataset_line_names_the_file_and_line(tmp_path: Path, composer: Composer) -> None:
    config = composer.compose([])
    broken = tmp_path / "broken.tsv"
    broken.write_text("0\tw1 w2\n1\tw3 w4\n1\tw5 w6\nmaple syrup\n")
    config["dataset"]["path"] = str(broken)
    proc, output = run_train(tmp_path, config, "broken")
    assert proc.returncode == 2
    assert f"{broken}:4: expected LABEL<TAB>w1 w2 ..." in proc.stderr
    assert not (output / "metrics.json").exists()
