"""Every bad input: one `error:` line on stderr, exit code 2, no traceback, nothing stored."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.cli import cli

REPO = Path(__file__).resolve().parent.parent
IMAGE_ID = "sha256:" + "c" * 64


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    shutil.copytree(REPO / "configs", root / "configs")
    (root / "orch.yaml").write_text(
        f"name: proj\nbase_image: {IMAGE_ID}\ncommand: [python3, train.py]\n"
    )
    return root


def run(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str, str]:
    runner = CliRunner()
    result = runner.invoke(cli, args, env=env)
    return result.exit_code, result.stdout, result.stderr


def assert_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def test_unknown_group_option_lists_valid_ones(project: Path) -> None:
    code, _, err = run(["compose", "optimizer=adamw", "-p", str(project)])
    assert_error(code, err, "adamw", "SGD", "adam")


def test_bad_override_is_shown(project: Path) -> None:
    code, _, err = run(["compose", "optimizer.lr=[1,2", "-p", str(project)])
    assert_error(code, err, "optimizer.lr=[1,2")


def test_unknown_key_suggests_plus(project: Path) -> None:
    code, _, err = run(["compose", "nosuchkey=1", "-p", str(project)])
    assert_error(code, err, "+nosuchkey")


def test_malformed_yaml_names_file_and_line(project: Path) -> None:
    (project / "configs" / "model" / "lstm.yaml").write_text("name: lstm\nhidden_size: [32\n")
    # checked when composition loads it, as Hydra reads only the files it composes
    code, _, err = run(["compose", "model=lstm", "-p", str(project)])
    assert_error(code, err, "lstm.yaml:3")


def test_missing_project_file(tmp_path: Path) -> None:
    code, _, err = run(["compose", "-p", str(tmp_path)])
    assert_error(code, err, "orch.yaml")


def test_unpinned_base_is_refused_with_how_to_pin(project: Path) -> None:
    (project / "orch.yaml").write_text("name: proj\nbase_image: debian:12\ncommand: [x]\n")
    code, _, err = run(["sweep", "-p", str(project), "--dry-run"])
    assert_error(code, err, "not pinned", "docker inspect", "--allow-unpinned")


def test_dry_run_composes_every_point_and_builds_nothing(project: Path) -> None:
    code, out, err = run(["sweep", "-p", str(project), "optimizer=SGD,adam", "model=lstm,bi_lstm",
                          "--dry-run"])
    assert code == 0, err
    assert len(out.strip().splitlines()) == 4
    assert not (project / ".orch").exists()


def test_dry_run_surfaces_an_error_of_any_point(project: Path) -> None:
    code, _, err = run(["sweep", "-p", str(project), "optimizer=SGD,adamw", "--dry-run"])
    assert_error(code, err, "adamw")


def test_no_daemon_says_how_to_start_one(project: Path) -> None:
    code, _, err = run(["sweep", "-p", str(project), "optimizer=SGD"],
                       env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert_error(code, err, "cannot reach the Docker daemon", "dockerd")


def test_bad_store_uri(project: Path) -> None:
    code, _, err = run(["results", "abc123", "-p", str(project), "--store", "ftp://host/x"])
    assert_error(code, err, "ftp://host/x")


@pytest.mark.parametrize("bad", ["../etc", "abc/../../x", "ZZZ", "a b"])
def test_bad_run_ids(project: Path, bad: str) -> None:
    code, _, err = run(["show", bad, "-p", str(project)])
    assert_error(code, err, repr(bad))


def test_unknown_sweep(project: Path) -> None:
    code, _, err = run(["results", "abcdef123456", "-p", str(project)])
    assert_error(code, err, "abcdef123456")
    assert not (project / ".orch" / "sweeps").exists() or not list(
        (project / ".orch" / "sweeps").iterdir())


@pytest.mark.parametrize(
    "args",
    [
        ["sweep", "--jobs", "0"],
        ["sweep", "--backend", "slurm"],
        ["nosuchcommand"],
        ["report", "abc"],
        ["results", "abc", "--format", "xml"],
        ["sweep", "--registry", "not a registry", "x=1"],
    ],
)
def test_usage_errors_are_one_line(project: Path, args: list[str]) -> None:
    code, _, err = run([*args, "-p", str(project)] if args[0] != "nosuchcommand" else args)
    assert_error(code, err)


def test_bad_base_image_option(project: Path) -> None:
    code, _, err = run(["sweep", "-p", str(project), "--base-image", "debian:12", "x=1"])
    assert_error(code, err, "--base-image")
