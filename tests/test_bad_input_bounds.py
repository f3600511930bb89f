"""Hostile config trees and overrides: bounded work, one error line naming the input.

Same contract as tests/test_bad_input.py (exit 2, one ``error:`` line, nothing changed on
disk), for inputs built to make composition read the host, run forever or exhaust the
stack: a config option that is a link out of the project, a YAML alias bomb, a recursive
alias, a huge file, YAML or override values nested thousands of levels deep.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_bad_input import Workspace

from orchestrator.cli import cli
from orchestrator.compose.config import MAX_CONFIG_BYTES, MAX_NESTING

pytestmark = pytest.mark.faults


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
       record_property: Callable[[str, object], None]) -> Iterator[Workspace]:
    workspace = Workspace(tmp_path / "ws")
    monkeypatch.chdir(workspace.base)
    for name in ("AWS_ENDPOINT_URL", "ORCH_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    yield workspace
    record_property("bad_inputs_tried", workspace.tried)


def _both(ws: Workspace, chosen: list[str], *fragments: str) -> None:
    ws.refused(["compose", "-p", "proj", *chosen], *fragments)
    ws.refused(["sweep", "--dry-run", "-p", "proj", *chosen, "training_settings.seed=1,2"],
               *fragments)


# --------------------------------------------------------------------------- links (item 14)


def test_config_option_linked_out_of_the_project_is_refused(ws: Workspace) -> None:
    secret = ws.base / "host-secret.yaml"
    secret.write_text("token: s3cr3t-host-value\n")
    os.symlink(secret, ws.project / "configs" / "model" / "leak.yaml")
    _both(ws, ["model=leak"], "configs/model/leak.yaml", "outside the config directory")


def test_config_group_linked_out_of_the_project_is_refused(ws: Workspace) -> None:
    outside = ws.base / "elsewhere"
    outside.mkdir()
    (outside / "x.yaml").write_text("token: s3cr3t-host-value\n")
    os.symlink(outside, ws.project / "configs" / "leaked")
    _both(ws, ["+leaked=x"], "configs/leaked/x.yaml", "outside the config directory")


def test_primary_config_linked_out_of_the_project_is_refused(ws: Workspace) -> None:
    secret = ws.base / "host-config.yaml"
    secret.write_text("token: s3cr3t-host-value\n")
    primary = ws.project / "configs" / "config.yaml"
    primary.unlink()
    os.symlink(secret, primary)
    _both(ws, [], "configs/config.yaml", "outside the config directory")


def test_a_link_inside_the_config_directory_still_composes(ws: Workspace) -> None:
    os.symlink("lstm.yaml", ws.project / "configs" / "model" / "alias.yaml")
    plain = CliRunner().invoke(cli, ["compose", "-p", "proj", "model=lstm"])
    linked = CliRunner().invoke(cli, ["compose", "-p", "proj", "model=alias"])
    assert linked.exit_code == 0, linked.stderr
    assert linked.stdout == plain.stdout


# --------------------------------------------------------------------------- YAML (item 17)


def _alias_bomb(levels: int = 10, width: int = 9) -> str:
    lines = ["a0: &a0 [" + ", ".join(["x"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "name: lstm\n" + "\n".join(lines) + "\n"


@pytest.mark.parametrize(("content", "fragments"), [
    (_alias_bomb(), ("lstm.yaml", "expands to more than")),
    ("name: lstm\nloop: &l [1, *l]\n", ("lstm.yaml", "recursive")),
    ("name: lstm\nx: &m {k: 1, self: *m}\n", ("lstm.yaml", "recursive")),
], ids=["alias-bomb", "recursive-list", "recursive-map"])
def test_yaml_expansion_is_bounded(ws: Workspace, content: str,
                                   fragments: tuple[str, ...]) -> None:
    ws.write("configs/model/lstm.yaml", content)
    _both(ws, ["model=lstm"], *fragments)


def test_huge_config_file_is_refused_unread(ws: Workspace) -> None:
    line = "k" * 60 + ": " + "v" * 60 + "\n"
    ws.write("configs/model/lstm.yaml",
             "name: lstm\n" + line * (MAX_CONFIG_BYTES // len(line) + 10))
    _both(ws, ["model=lstm"], "lstm.yaml", "larger than")


# --------------------------------------------------------------------------- nesting (item 21)


@pytest.mark.parametrize("depth", [MAX_NESTING + 5, 5000])
def test_deeply_nested_yaml_is_one_error(ws: Workspace, depth: int) -> None:
    ws.write("configs/model/lstm.yaml", "name: lstm\nx: " + "[" * depth + "]" * depth + "\n")
    _both(ws, ["model=lstm"], "lstm.yaml", "nested")
    block = min(depth, 1500)  # indentation grows with depth: stay under the size limit
    ws.write("configs/model/lstm.yaml",
             "name: lstm\nx:\n" + "".join(" " * (i + 1) + f"k{i}:\n" for i in range(block)))
    _both(ws, ["model=lstm"], "lstm.yaml", "nested")


def test_deeply_nested_orch_yaml_is_one_error(ws: Workspace) -> None:
    text = (ws.project / "orch.yaml").read_text()
    ws.write("orch.yaml", text + "deep: " + "[" * 5000 + "]" * 5000 + "\n")
    ws.refused(["compose", "-p", "proj"], "orch.yaml", "nested too deeply")
    ws.refused(["sweep", "--dry-run", "-p", "proj", "training_settings.seed=1,2"],
               "orch.yaml", "nested too deeply")


@pytest.mark.parametrize("depth", [MAX_NESTING + 1, 3000])
def test_deeply_nested_override_is_one_error(ws: Workspace, depth: int) -> None:
    value = "[" * depth + "]" * depth
    override = f"+deep={value}"
    ws.refused(["compose", "-p", "proj", override], "+deep=[[[", "nested deeper")
    ws.refused(["sweep", "--dry-run", "-p", "proj", "optimizer=SGD,adam", override],
               "+deep=[[[", "nested deeper")
    ws.refused(["sweep", "--dry-run", "-p", "proj", f"+deep={value},1"], "nested deeper")


def test_moderate_nesting_still_composes(ws: Workspace) -> None:
    depth = MAX_NESTING // 2
    ws.write("configs/model/lstm.yaml", "name: lstm\nx: " + "[" * depth + "]" * depth + "\n")
    result = CliRunner().invoke(cli, ["compose", "-p", "proj", "model=lstm",
                                      "+y=" + "[" * depth + "]" * depth])
    assert result.exit_code == 0, result.stderr


# --------------------------------------------------------------------------- output (item 21)


def test_runs_clips_a_huge_override(ws: Workspace) -> None:
    """A sweep's arguments are stored whole; `orch runs` prints one short line per sweep."""
    from test_bad_input import RUN_A

    from orchestrator.schema.record import SweepDoc
    from orchestrator.store import DirStore, RunStore

    huge = "+blob='" + "x" * (120 << 10) + "'"
    RunStore(DirStore(ws.store)).write_sweep(SweepDoc.from_json({
        "schema": 1, "sweep_id": "b16b16b16b16", "project": "proj\x1b[31m",
        "created_at": "2026-01-02T00:00:00.000Z", "args": [huge, "x=\x1b]0;pwned\x07"],
        "runs": [{"run_id": RUN_A, "overrides": [huge]}],
    }))
    result = CliRunner().invoke(cli, ["runs", "-p", "proj"])
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3, result.stdout[:500]
    assert all(len(line) < 400 for line in lines), [len(line) for line in lines]
    (line,) = [line for line in lines if line.startswith("b16b16b16b16")]
    assert "more characters" in line
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout


# --------------------------------------------------------------------------- records (item 13)


@pytest.mark.docker
@pytest.mark.parametrize(("field", "value", "fragment"), [
    ("network", "host", "network"),
    ("network", "container:abc", "network"),
    ("resources", {"cpus": -2, "gpus": 0, "memory": None, "timeout": None}, "cpus"),
    ("resources", {"cpus": 1, "gpus": 0, "memory": "lots", "timeout": None}, "memory"),
    ("resources", {"cpus": 1, "gpus": -1, "memory": None, "timeout": None}, "gpus"),
    ("resources", {"cpus": 1, "gpus": 0, "memory": None, "timeout": -5}, "timeout"),
    ("pass_env", ["ORCH_STORE_TOKEN"], "ORCH_STORE_TOKEN"),
    ("pass_env", ["A=B"], "A=B"),
    ("command", [], "command"),
], ids=lambda v: str(v)[:20])
def test_rerun_refuses_a_record_orch_yaml_could_not_have_asked_for(
        ws: Workspace, field: str, value: object, fragment: str) -> None:
    """A record comes from a store others may write: its run settings are checked as
    orch.yaml's are before anything is pulled or started."""
    import json

    from test_bad_input import RUN_A

    from orchestrator.daemon.client import connect
    from orchestrator.errors import BackendError

    try:
        connect().close()
    except BackendError:
        pytest.skip("no Docker daemon")
    path = ws.store / "runs" / RUN_A / "run.json"
    record = json.loads(path.read_text())
    record[field] = value
    path.write_text(json.dumps(record))
    ws.refused(["rerun", "-p", "proj", RUN_A], RUN_A, fragment)
