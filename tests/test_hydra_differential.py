"""orch against a real ``@hydra.main`` application over the lightning-hydra-template.

The template's ``configs/`` tree (tests/fixtures/lightning-hydra-template, verbatim) is
composed two ways:

* by hydra-core itself: a ``train.py`` with ``@hydra.main`` runs each grid with ``-m`` in
  a subprocess and prints, per job, the resolved config and the job's overrides;
* by orch, in this process: ``orch compose``, ``orch sweep --dry-run`` and the sweep's
  own composition (``sweep.compose_points``), where hydra-colorlog is not installed.

They must be equal, ``${hydra:...}`` values included, once the run has resolved what
orch leaves to it (``${oc.env:PROJECT_ROOT}``, the loggers' tokens: see "Environment
variables in configs" in the README). The application runs as a run runs
inside its container, in a directory that stands for the container's root: its working
directory is ``<root>/orch/code`` and its output directory ``<root>/orch/output``, so
that with ``<root>`` cut out of its paths it reports exactly orch's documented mapping.
The template selects ``hydra/job_logging: colorlog``; the subprocess gets a stand-in
for the hydra-colorlog plugin (the same two options, with Hydra's default logging),
since what those options configure is Hydra's logging, not the task's config.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hydra
import pytest
from click.testing import CliRunner
from omegaconf import OmegaConf

from orchestrator.cli import cli
from orchestrator.compose.project import load_project
from orchestrator.drivers import grid as sweepmod

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "lightning-hydra-template" / "configs"
IMAGE_ID = "sha256:" + "c" * 64
MARK = "ORCH-DIFFERENTIAL "

#: The template's documented environment: PROJECT_ROOT, and the loggers' API tokens.
ENV = {
    "PROJECT_ROOT": "/workspace/project",
    "COMET_API_TOKEN": "comet-token",
    "NEPTUNE_API_TOKEN": "neptune-token",
}

#: The grids: every option of the groups the issue names, one group per multirun (their
#: cross product would only cost time: Hydra takes most of a second per job here), and
#: hparams_search excluded (it configures Optuna's sweeper, which is Hydra's, not a run's).
GRIDS: dict[str, list[str]] = {
    "defaults": [],
    "trainer": ["trainer=glob(*)"],
    "logger": ["logger=glob(*)"],
    # early_stopping alone leaves its monitor '???': see test_a_value_left_unset_is_refused
    "callbacks": ["callbacks=glob(*,exclude=early_stopping)", "data=mnist"],
    "debug": ["debug=glob(*)", "model=mnist"],
    "experiment": [
        "experiment=example",
        "seed=1,2",
        "model.optimizer.lr=0.01,0.002",
        "+trainer.accumulate_grad_batches=2",
        "tags=[a,b]",
        "~callbacks.early_stopping",
    ],
}

APP = f'''
import json

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg):
    job = {{"overrides": list(HydraConfig.get().overrides.task),
           "config": OmegaConf.to_container(cfg, resolve=True)}}
    print({MARK!r} + json.dumps(job), flush=True)


if __name__ == "__main__":
    main()
'''

STAND_IN = '''
from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class ColorlogStandIn(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append("colorlog-stand-in", "file://" + str(Path(__file__).parent / "conf"))
'''


def stand_in_plugin(root: Path) -> Path:
    """A ``hydra_plugins`` dir whose plugin provides ``colorlog`` in both logging groups."""
    package = root / "hydra_plugins" / "orch_colorlog_stand_in"
    hydra_conf = Path(hydra.__file__).parent / "conf" / "hydra"
    for group in ("job_logging", "hydra_logging"):
        (package / "conf" / "hydra" / group).mkdir(parents=True)
        shutil.copy(hydra_conf / group / "default.yaml",
                    package / "conf" / "hydra" / group / "colorlog.yaml")
    (package / "__init__.py").write_text(STAND_IN)
    return root


def hydra_jobs(root: Path, code: Path, plugins: Path, args: list[str]) -> subprocess.Popen[str]:
    """``python train.py -m ARGS`` with the run's directories under ``root``."""
    hydra_args = [
        f"hydra.sweep.dir={root}/orch",
        "hydra.sweep.subdir=output",
        f"hydra.run.dir={root}/orch/output",
    ]
    env = {**os.environ, **ENV, "PYTHONPATH": str(plugins), "HYDRA_FULL_ERROR": "1"}
    return subprocess.Popen(
        [sys.executable, "train.py", "-m", *args, *hydra_args],
        cwd=code, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@pytest.fixture(scope="module")
def hydra_says(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """Per grid, the jobs a real Hydra multirun runs: overrides and resolved config."""
    base = tmp_path_factory.mktemp("hydra-app")
    plugins = stand_in_plugin(base / "plugins")
    procs: dict[str, tuple[Path, subprocess.Popen[str]]] = {}
    for name, args in GRIDS.items():  # in parallel: each is a Python start-up plus its jobs
        root = base / name.replace(" ", "-")
        code = root / "orch" / "code"
        shutil.copytree(FIXTURE, code / "configs")
        (code / "train.py").write_text(APP)
        procs[name] = (root, hydra_jobs(root, code, plugins, args))
    results: dict[str, list[dict[str, Any]]] = {}
    for name, (root, proc) in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        # the container's paths: <root>/orch/... is /orch/... inside a run
        lines = [line[len(MARK):].replace(str(root), "") for line in out.splitlines()
                 if line.startswith(MARK)]
        results[name] = [json.loads(line) for line in lines]
        assert results[name], out[-2000:]
    return results


def colorlog_installed() -> bool:
    try:
        return importlib.util.find_spec("hydra_plugins.hydra_colorlog") is not None
    except ModuleNotFoundError:  # no hydra_plugins namespace at all
        return False


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An orch project on the template's tree, with orch's process environment."""
    assert not colorlog_installed(), "hydra-colorlog must not be installed beside orch"
    root = tmp_path_factory.mktemp("orch-project") / "proj"
    shutil.copytree(FIXTURE, root / "configs")
    (root / "orch.yaml").write_text(
        f"name: template\nbase_image: {IMAGE_ID}\nconfig_name: train\n"
        "command: [python3, train.py]\n"
    )
    saved = {key: os.environ.get(key) for key in ENV}
    os.environ.update(ENV)
    try:
        yield root
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def in_the_run(config: dict[str, Any]) -> Any:
    """The config as the run resolves what orch left to it (``${oc.env:...}`` of variables
    only the run's environment holds: here the template's documented ENV)."""
    return OmegaConf.to_container(OmegaConf.create(json.loads(json.dumps(config))),
                                  resolve=True)


def orch(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("grid", list(GRIDS))
def test_sweep_equals_hydras_multirun(
    grid: str, project: Path, hydra_says: dict[str, list[dict[str, Any]]]
) -> None:
    jobs = hydra_says[grid]
    listing = json.loads(orch("sweep", "--dry-run", "--json", "-p", str(project), *GRIDS[grid]))
    points = [[o + "=null" if o.startswith("~") and "=" not in o else o for o in p["overrides"]]
              for p in listing["points"]]
    assert points == [job["overrides"] for job in jobs]
    composed = sweepmod.compose_points(load_project(project), GRIDS[grid])
    assert len(composed) == len(jobs)
    for (point, config), job in zip(composed, jobs, strict=True):
        assert in_the_run(config) == job["config"], point
        # what only the run's environment holds is left to the run, never baked
        assert config["paths"]["root_dir"] == "${oc.env:PROJECT_ROOT}"
        assert "paths.root_dir" in config.deferred


@pytest.mark.parametrize("grid", list(GRIDS))
def test_compose_equals_hydras_job(
    grid: str, project: Path, hydra_says: dict[str, list[dict[str, Any]]]
) -> None:
    # orch compose is job 0 of a one-point sweep; the template's values do not depend on
    # the job's number, so every job's config is also what compose prints for its point
    jobs = hydra_says[grid]
    picks = {0, len(jobs) - 1, len(jobs) // 2}
    for index in sorted(picks):
        job = jobs[index]
        config = json.loads(orch("compose", "--json", "-p", str(project), *job["overrides"]))
        assert in_the_run(config) == job["config"], job["overrides"]
    assert jobs[0]["config"]["paths"]["output_dir"] == "/orch/output"
    assert jobs[0]["config"]["paths"]["work_dir"] == "/orch/code"


def test_a_value_left_unset_is_refused(project: Path) -> None:
    """A deliberate difference (README, "Hydra compatibility"): Hydra starts the job with
    ``monitor: ???`` and fails only when the code reads it; orch refuses to bake it."""
    result = CliRunner().invoke(cli, ["compose", "-p", str(project), "callbacks=early_stopping"])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: callbacks.early_stopping.monitor: missing mandatory value '???' "
        "(set it with callbacks.early_stopping.monitor=VALUE)"
    )
    config = json.loads(orch("compose", "--json", "-p", str(project), "callbacks=early_stopping",
                             "callbacks.early_stopping.monitor=val/acc"))
    assert config["callbacks"]["early_stopping"]["monitor"] == "val/acc"
