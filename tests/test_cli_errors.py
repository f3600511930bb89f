"""Every bad input: one `error:` line on stderr, exit code 2, no traceback, nothing stored."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from helpers import copy_demo

from orchestrator.cli import cli

IMAGE_ID = "sha256:" + "c" * 64


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    data = {"name": "proj", "base_image": IMAGE_ID, "command": ["python3", "train.py"],
            **copy_demo(root)}
    (root / "orch.yaml").write_text(yaml.safe_dump(data))
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


# --------------------------------------------------------------------------- dry runs


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--store", "ftp://x/y"], "ftp://x/y"),
        (["--registry", "not a registry"], "--registry"),
        (["--detach"], "--detach"),
        (["--detach", "--backend", "ray", "--ray-address", "127.0.0.1:1"], "--store"),
    ],
)
def test_dry_run_checks_every_option(project: Path, args: list[str], fragment: str) -> None:
    code, _, err = run(["sweep", "-p", str(project), "optimizer=SGD", "--dry-run", *args])
    assert_error(code, err, fragment)
    assert not (project / ".orch").exists()


def test_image_help_names_its_commands(project: Path) -> None:
    code, out, err = run(["image", "--help"])
    assert code == 0, err
    assert "verify, ls, prune" in out


# --------------------------------------------------------------------------- programmatic use


def test_programmatic_callers_get_the_exception(project: Path) -> None:
    from orchestrator.cli import main
    from orchestrator.errors import ProjectError, UsageError

    args = ["results", "abc123", "-p", str(project), "--store", "ftp://host/x"]
    with pytest.raises(UsageError, match="ftp://host/x"):
        cli.main(args, standalone_mode=False)
    with pytest.raises(UsageError, match="ftp://host/x"):
        main(args, standalone_mode=False)
    with pytest.raises(ProjectError) as raised:
        main(["compose", "-p", str(project.parent)], standalone_mode=False)
    assert raised.value.exit_code == 2
    import click

    with pytest.raises(click.UsageError):
        main(["nosuchcommand"], standalone_mode=False)


def test_result_errors_exit_1_after_one_error_line(project: Path, monkeypatch) -> None:
    from orchestrator.errors import NotReproduced

    def no(*args: object, **kwargs: object) -> None:
        raise NotReproduced("rerun 1234 did not reproduce abcd: metrics differ")

    monkeypatch.setattr("orchestrator.compose.project.load_project", no)
    code, _, err = run(["compose", "-p", str(project)])
    assert code == 1
    assert err.strip().splitlines() == ["error: rerun 1234 did not reproduce abcd: metrics differ"]


def test_ctrl_c_exits_130(project: Path, monkeypatch) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("orchestrator.compose.project.load_project", interrupted)
    code, _, err = run(["compose", "-p", str(project)])
    assert code == 130
    assert err.strip().splitlines() == ["error: interrupted"]


def test_bad_settings_are_a_usage_error_up_front(project: Path) -> None:
    code, _, err = run(["sweep", "-p", str(project), "--dry-run"], env={"ORCH_LEASE_S": "soon"})
    assert_error(code, err, "ORCH_LEASE_S")


# --------------------------------------------------------------------------- third-party noise

NOISY = """
import sys
import orchestrator.compose.project as project

real = project.find_project


def noisy(start):
    exec("import logging, warnings\\n"
         "warnings.warn('noise from a library')\\n"
         "logging.getLogger('somelib').warning('log noise from a library')",
         {"__name__": "somelib"})
    # installer.install warns with stacklevel=2: the warning names its caller, our module.
    exec("import warnings\\n"
         "warnings.warn('Skip installing x/__pycache__/y.pyc from x.', RuntimeWarning)",
         {"__name__": "orchestrator.image.envlayer"})
    return real(start)


project.find_project = noisy
from orchestrator.cli import main

main(sys.argv[1:])
"""


@pytest.mark.parametrize("debug", [False, True])
def test_third_party_warnings_stay_off_the_terminal(project: Path, debug: bool) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "ORCH_DEBUG"}
    if debug:
        env["ORCH_DEBUG"] = "1"
    proc = subprocess.run([sys.executable, "-c", NOISY, "compose", "-p", str(project)],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "optimizer" in proc.stdout
    noises = ("noise from a library", "log noise from a library", "Skip installing")
    if debug:
        assert all(noise in proc.stderr for noise in noises), proc.stderr
    else:
        assert proc.stderr == ""
