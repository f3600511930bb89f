"""Bad input at scale: every malformed input is refused the same way.

Each input below is fed to the real CLI in-process (click's CliRunner). The contract for
every one of them: exit code 2, exactly one line on stderr starting ``error: `` that names
the input, no traceback, and nothing changed on disk (the workspace holding the project and
its populated directory store is snapshotted before and after).

Inputs come from explicit lists (the cases people actually type) and from hypothesis
strategies that only generate inputs malformed by construction. The number tried is
recorded as the user property ``bad_inputs_tried``; tests/faults/conftest.py adds it up
for the ``make faults`` summary.

A second part checks that ids and keys never escape the store: ``..`` in a run id, a store
key, an artifact path or a tar member is refused or dropped.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from helpers import copy_demo
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from orchestrator.cli import cli

pytestmark = pytest.mark.faults

IMAGE_ID = "sha256:" + "c" * 64
HEX64 = "a" * 64
SWEEP_ID = "5eed5eed5eed"
RUN_A = "aaaa00000001"
RUN_B = "bbbb00000002"
ORCH_YAML = f"name: proj\nbase_image: {IMAGE_ID}\ncommand: [python3, train.py]\n"

#: Deterministic, database-free hypothesis runs: the same inputs on every machine and run.
GENERATED = settings(
    max_examples=40,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


# --------------------------------------------------------------------------- workspace


def _record(run_id: str, overrides: list[str], lr: float, accuracy: float) -> dict[str, Any]:
    return {
        "schema": 1,
        "run_id": run_id,
        "sweep_id": SWEEP_ID,
        "project": "proj",
        "status": "succeeded",
        "reason": None,
        "overrides": overrides,
        "config": {"optimizer": {"name": overrides[0].split("=")[1], "lr": lr}},
        "image_id": "sha256:" + hashlib.sha256(run_id.encode()).hexdigest(),
        "repo_digest": None,
        "base_image": IMAGE_ID,
        "command": ["python3", "train.py"],
        "git_commit": "0" * 40,
        "dirty": False,
        "exit_code": 0,
        "started_at": "2026-01-01T00:00:00.000Z",
        "ended_at": "2026-01-01T00:00:01.000Z",
        "duration_s": 1.0,
        "host": "test",
        "node": None,
        "gpus": [],
        "metrics": {"accuracy": accuracy, "loss": 1 - accuracy},
        "artifacts": [],
        "layers": {"base": [IMAGE_ID], "env": IMAGE_ID, "code": IMAGE_ID, "config": IMAGE_ID},
    }


def populate_store(root: Path) -> None:
    """A small but complete store: one sweep with two finished runs."""
    from orchestrator.schema.record import RunRecord, SweepDoc
    from orchestrator.store import DirStore, RunStore

    runs = RunStore(DirStore(root))
    records = [
        RunRecord.from_json(_record(RUN_A, ["optimizer=SGD"], 0.1, 0.75)),
        RunRecord.from_json(_record(RUN_B, ["optimizer=adam"], 0.01, 0.5)),
    ]
    runs.write_sweep(SweepDoc.from_json({
        "schema": 1, "sweep_id": SWEEP_ID, "project": "proj",
        "created_at": "2026-01-01T00:00:00.000Z", "args": ["optimizer=SGD,adam"],
        "runs": [{"run_id": r.run_id, "overrides": list(r.overrides)} for r in records],
    }))
    for record in records:
        runs.commit_run(record, {
            "config.yaml": yaml.safe_dump(record.config).encode(),
            "stdout.log": b"ok\n", "stderr.log": b"",
            "metrics.json": b"{}\n", "output/model.json": b"{}\n",
        })
    runs.write_sweep_index(SWEEP_ID, records)


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under ``root``: files by content, links by target, dirs by name."""
    state: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                state[rel] = "link:" + os.readlink(path)
            elif path.is_file():
                state[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                state[rel] = "dir"
    return state


class Workspace:
    """A project with a populated store, and the one check every bad input must pass."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.project = base / "proj"
        self.store = self.project / ".orch"
        self.tried = 0
        demo = copy_demo(self.project)
        (self.project / "orch.yaml").write_text(ORCH_YAML + yaml.safe_dump(demo))
        populate_store(self.store)
        self.pristine = {
            p.relative_to(self.project).as_posix(): p.read_bytes()
            for p in self.project.rglob("*") if p.is_file() and ".orch" not in p.parts
        }

    def restore(self) -> None:
        """Undo edits to the project's files (not the store: that must never change)."""
        for entry in list(self.project.iterdir()):
            if entry.name == ".orch":
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        for rel, data in self.pristine.items():
            path = self.project / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

    def write(self, rel: str, content: str | bytes | None) -> None:
        path = self.project / rel
        if content is None:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")

    def refused(self, args: list[str], *fragments: str, env: dict[str, str] | None = None) -> str:
        """Run the CLI; assert the bad-input contract; return the error line."""
        self.tried += 1
        before = snapshot(self.base)
        result = CliRunner().invoke(cli, args, env=env)
        after = snapshot(self.base)
        err = result.stderr
        context = (f"args={args!r}\nexit={result.exit_code}\nstderr={err!r}\n"
                   f"stdout={result.stdout!r}")
        assert result.exit_code == 2, context
        assert "Traceback" not in err + result.stdout, context
        lines = err.splitlines()
        assert len(lines) == 1, context
        line = lines[0]
        assert line.startswith("error: "), context
        assert "internal error" not in line, context
        for fragment in fragments:
            assert fragment in line, f"{fragment!r} not named in the error\n{context}"
        assert after == before, f"the workspace changed\n{context}"
        return line


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
       record_property: Callable[[str, object], None]) -> Iterator[Workspace]:
    workspace = Workspace(tmp_path / "ws")
    # relative paths (--store x, -p x) land in the workspace, where the snapshot sees them
    monkeypatch.chdir(workspace.base)
    for name in ("AWS_ENDPOINT_URL", "ORCH_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    yield workspace
    record_property("bad_inputs_tried", workspace.tried)


def shown(text: str) -> str:
    """How the error line shows a repr'd input: whitespace runs fold to one space."""
    return " ".join(repr(text).split())


# --------------------------------------------------------------------------- overrides

#: (override, fragment the error must contain). Each is tried with compose and sweep.
BAD_OVERRIDES = [
    ("optimizer.lr=[1,2", "optimizer.lr=[1,2"),
    ("optimizer.lr={a:", "optimizer.lr={a:"),
    ("optimizer.lr=}", "optimizer.lr=}"),
    ("optimizer.lr='unterminated", "unterminated"),
    ('optimizer.lr="x', 'optimizer.lr="x'),
    ("optimizer.lr", "optimizer.lr"),
    ("a b=1", "a b=1"),
    ("key.=1", "key.=1"),
    (".key=1", ".key=1"),
    ("optimizer..lr=1", "optimizer..lr=1"),
    ("=5", "=5"),
    ("@=1", "@=1"),
    ("+", "+"),
    ("++", "++"),
    ("~", "~"),
    ("optimizer=", "optimizer"),
    ("optimizer=nosuch", "nosuch"),
    ("optimizer=5", "optimizer"),
    ("model=/etc/passwd", "passwd"),
    ("nosuchkey=1", "nosuchkey"),
    ("optimizer/x=1", "optimizer/x"),
    ("optimizer.nosuch.deeper=1", "optimizer.nosuch"),
    ("defaults=[]", "defaults"),
    ("+optimizer.lr=1", "optimizer.lr"),
    ("~nosuch", "nosuch"),
    ("~optimizer.nosuch", "optimizer.nosuch"),
    ("optimizer@=x", "optimizer@"),
    ("optimizer.lr=${nope}", "nope"),
    ("optimizer.lr=${optimizer.nope}", "optimizer.nope"),
    ("optimizer.lr=${oc.env:ORCH_TEST_NOT_SET}", "ORCH_TEST_NOT_SET"),
    ("optimizer.lr=${oc.nosuchresolver:1}", "oc.nosuchresolver"),
    ("optimizer.lr=${optimizer.lr", "optimizer.lr"),
    ("training_settings.seed=${training_settings.seed}", "training_settings.seed"),
    ("optimizer.lr=nosuchfn(1)", "nosuchfn"),
    ("optimizer.lr=extend_list(1)", "extend_list"),
    ("optimizer.lr=choice()", "choice()"),
    ("optimizer.lr=choice(1,2", "choice(1,2"),
    ("optimizer.lr=range()", "range()"),
    ("optimizer.lr=range(1,2,3,4)", "range(1,2,3,4)"),
    ("optimizer.lr=range(a,b)", "range(a,b)"),
    ("optimizer.lr=int(abc)", "int(abc)"),
    ("optimizer.lr=float(x)", "float(x)"),
    ("optimizer.lr=sort(1,2,reverse=maybe)", "reverse"),
    ("optimizer.lr=tag(a,1,2)", "tag(a,1,2)"),
    ("optimizer.lr=1,,2", "optimizer.lr=1,,2"),
    ("optimizer.lr=,", "optimizer.lr=,"),
    ("optimizer.lr=1\x00", "optimizer.lr=1"),
    ("hydra.sweeper.params=x", "hydra.sweeper.params"),
    ("hydra/launcher=nosuch", "nosuch"),
]

#: Sweep syntax: wrong only as a sweep (compose refuses any sweep anyway).
BAD_SWEEPS = [
    ("optimizer.lr=interval(0,1)", "optimizer.lr=interval(0,1)"),
    ("optimizer.lr=shuffle(1,2)", "shuffle"),
    ("optimizer.lr=range(1,0)", "optimizer.lr=range(1,0)"),
    ("optimizer.lr=range(0,1,-1)", "optimizer.lr=range(0,1,-1)"),
    ("optimizer.lr=range(0.0,1.0,0.0)", "optimizer.lr=range(0.0,1.0,0.0)"),
    ("optimizer.lr=glob(*)", "optimizer.lr"),
    ("model=glob(nomatch*)", "model=glob(nomatch*)"),
    ("optimizer=glob(*,exclude=[SGD,adam])", "optimizer=glob"),
    ("optimizer=SGD,nosuch", "nosuch"),
    ("model=lstm,5", "model"),
    ("nosuch=1,2", "nosuch"),
    ("+optimizer.lr=1,2", "optimizer.lr"),
    ("~optimizer=SGD,adam", "optimizer"),
]

#: Refused, but without naming the input: bugs (see the reasons).
BAD_SWEEPS_BUGGY = [
    pytest.param(
        "optimizer.lr=range(0,1,0)",
    ),
    pytest.param(
        "optimizer.lr=range(0,nan)",
    ),
]


@pytest.mark.parametrize(("override", "fragment"), BAD_OVERRIDES,
                         ids=[repr(o) for o, _ in BAD_OVERRIDES])
def test_bad_override(ws: Workspace, override: str, fragment: str) -> None:
    ws.refused(["compose", "-p", "proj", override], fragment)
    ws.refused(["sweep", "--dry-run", "-p", "proj", "optimizer=SGD,adam", override], fragment)


@pytest.mark.parametrize(("override", "fragment"), BAD_SWEEPS,
                         ids=[repr(o) for o, _ in BAD_SWEEPS])
def test_bad_sweep_syntax(ws: Workspace, override: str, fragment: str) -> None:
    ws.refused(["sweep", "--dry-run", "-p", "proj", override], fragment)
    ws.refused(["sweep", "--dry-run", "--json", "-p", "proj", "model=lstm,bi_lstm", override],
               fragment)


@pytest.mark.parametrize("override", BAD_SWEEPS_BUGGY)
def test_bad_sweep_values_name_the_override(ws: Workspace, override: str) -> None:
    ws.refused(["sweep", "--dry-run", "-p", "proj", override], override)


def test_huge_sweep_is_refused_quickly(ws: Workspace) -> None:
    import resource
    import subprocess
    import sys

    def limit_memory() -> None:  # so that the bug costs this test, not the machine
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    override = "optimizer.lr=range(0,1000000000)"
    ws.tried += 1
    before = snapshot(ws.base)
    try:
        proc = subprocess.run(
            [str(Path(sys.executable).with_name("orch")), "sweep", "--dry-run", "-p", "proj",
             override], capture_output=True, text=True, timeout=10, preexec_fn=limit_memory)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{override}: no answer within 10 s")
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("error: ")
    assert override in proc.stderr and "internal error" not in proc.stderr
    assert snapshot(ws.base) == before


def test_group_option_cannot_leave_the_config_dir(ws: Workspace) -> None:
    ws.refused(["compose", "-p", "proj", "model=../../orch"], "model=../../orch")


_IDENT = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True)


@st.composite
def malformed_override(draw: st.DrawFn) -> tuple[str, str]:
    """(override, fragment): every family is malformed by construction."""
    kind = draw(st.sampled_from(
        ["unknown_key", "open_bracket", "bad_option", "open_quote", "bad_interp", "bad_char"]))
    ident = draw(_IDENT)
    if kind == "unknown_key":
        key = f"zz_{ident}"
        value = draw(st.integers(-10**6, 10**6))
        return f"{key}={value}", key
    if kind == "open_bracket":
        items = draw(st.lists(st.integers(0, 99), max_size=4))
        return "optimizer.lr=[" + ",".join(map(str, items)), "optimizer.lr=["
    if kind == "bad_option":
        option = f"no_{ident}"
        group = draw(st.sampled_from(["optimizer", "model", "dataset", "embeddings"]))
        return f"{group}={option}", option
    if kind == "open_quote":
        text = draw(st.text(st.characters(codec="ascii", categories=["L", "N"]), max_size=10))
        quote = draw(st.sampled_from(["'", '"']))
        return f"optimizer.lr={quote}{text}", f"{quote}{text}"
    if kind == "bad_interp":
        return f"optimizer.lr=${{zz_{ident}}}", f"zz_{ident}"
    char = draw(st.sampled_from(list("!#%&*;<>?|`^")))
    key = f"{ident}{char}{ident}"
    return f"{key}=1", key


def test_generated_overrides(ws: Workspace) -> None:
    @GENERATED
    @given(case=malformed_override(), command=st.sampled_from(["compose", "sweep"]))
    def check(case: tuple[str, str], command: str) -> None:
        override, fragment = case
        if command == "compose":
            ws.refused(["compose", "-p", "proj", override], fragment)
        else:
            ws.refused(["sweep", "--dry-run", "-p", "proj", "model=lstm,bi_lstm", override],
                       fragment)

    check()


# --------------------------------------------------------------------------- config files

#: (file, content or None to delete, fragments). Each is tried with compose and sweep.
BAD_CONFIG_FILES: list[tuple[str, str | bytes | None, tuple[str, ...]]] = [
    ("configs/model/lstm.yaml", "name: lstm\nhidden_size: [32\n", ("lstm.yaml:3",)),
    ("configs/model/lstm.yaml", "name: lstm\n\thidden_size: 8\n", ("lstm.yaml",)),
    ("configs/model/lstm.yaml", "name: a\nname: b\n", ("lstm.yaml", "duplicate key")),
    ("configs/model/lstm.yaml", "- a\n- b\n", ("lstm.yaml", "mapping")),
    ("configs/model/lstm.yaml", "just a string\n", ("lstm.yaml", "mapping")),
    ("configs/model/lstm.yaml", "42\n", ("lstm.yaml",)),
    ("configs/model/lstm.yaml", b"name: \xff\xfe\n", ("lstm.yaml", "UTF-8")),
    ("configs/model/lstm.yaml", "name: 'lstm\n", ("lstm.yaml",)),
    ("configs/model/lstm.yaml", "name: *nope\n", ("lstm.yaml",)),
    ("configs/model/lstm.yaml", "<<: *base\nname: x\n", ("lstm.yaml",)),
    ("configs/model/lstm.yaml", "name: !!python/object/apply:os.system ['id']\n",
     ("lstm.yaml",)),
    ("configs/model/lstm.yaml", "? [a, b]\n: c\n", ("lstm.yaml",)),
    ("configs/model/lstm.yaml", "name: a\x00b\n", ("lstm.yaml",)),
    ("configs/model/lstm.yaml", "name: [a, b\nhidden_size: 8\n", ("lstm.yaml",)),
    ("configs/model/lstm.yaml", "a: b: c\n", ("lstm.yaml",)),
    ("configs/model/bi_lstm.yaml", "name: bi\ninput_size: ${nope.dim}\n", ("nope.dim",)),
    ("configs/model/bi_lstm.yaml", "name: bi\nhidden_size: ???\n", ("model.hidden_size",)),
    ("configs/model/bi_lstm.yaml", "name: bi\ninput_size: ${embeddings.dim\n",
     ("input_size",)),
    ("configs/model/bi_lstm.yaml", "name: bi\nx: ${model.x}\n", ("model.x",)),
    ("configs/model/bi_lstm.yaml", "name: bi\n1: a\n", ("1",)),
    ("configs/model/bi_lstm.yaml", "name: bi\nlayers:\n  true: 1\n", ("True",)),
    ("configs/config.yaml", "defaults:\n  - optimizer: nosuch\n", ("nosuch",)),
    ("configs/config.yaml", "defaults:\n  - nosuchgroup: x\n", ("nosuchgroup",)),
    ("configs/config.yaml", "defaults: 5\n", ("defaults",)),
    ("configs/config.yaml", "defaults:\n  - {optimizer: SGD, model: lstm}\n", ("optimizer",)),
    ("configs/config.yaml", "defaults:\n  - optimizer: SGD\n  - optimizer: adam\n",
     ("optimizer",)),
    ("configs/config.yaml", "defaults:\n  - 5\n", ("defaults",)),
    ("configs/config.yaml", "defaults:\n  - ../../orch\n", ("orch",)),
    ("configs/config.yaml", "defaults:\n  - _self_\n  - _self_\n", ("_self_",)),
    ("configs/config.yaml", None, ("config.yaml",)),
    ("configs", None, ("configs",)),
]


def choosing(rel: str) -> list[str]:
    """The override that makes composition load ``configs/<group>/<option>.yaml``: a file is
    checked when it is loaded, as Hydra reads only what it composes."""
    parts = Path(rel).relative_to("configs").with_suffix("").parts
    return [f"{'/'.join(parts[:-1])}={parts[-1]}"] if len(parts) > 1 else []


@pytest.mark.parametrize(("rel", "content", "fragments"), BAD_CONFIG_FILES,
                         ids=[f"{r}:{c!r}"[:60] for r, c, _ in BAD_CONFIG_FILES])
def test_bad_config_file(ws: Workspace, rel: str, content: str | bytes | None,
                         fragments: tuple[str, ...]) -> None:
    ws.write(rel, content)
    chosen = choosing(rel) if content is not None else []
    ws.refused(["compose", "-p", "proj", *chosen], *fragments)
    ws.refused(["sweep", "--dry-run", "-p", "proj", *chosen, "training_settings.seed=1,2"],
               *fragments)


#: Lines that are not YAML wherever they go in a block mapping.
_BROKEN_LINES = ["key: [unclosed", "key: {unclosed", "'unterminated: 1", "\tx: 1",
                 "a: b: c", "*undefined_alias", "@reserved: 1", "key: 'open", "- [x"]


def _loads_as_mapping(text: str) -> bool:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return False
    return data is None or isinstance(data, dict)


def test_generated_broken_config_files(ws: Workspace) -> None:
    files = sorted(p.relative_to(ws.project).as_posix()
                   for p in (ws.project / "configs").rglob("*.yaml"))

    @GENERATED
    @given(rel=st.sampled_from(files), data=st.data())
    def check(rel: str, data: st.DataObject) -> None:
        lines = (ws.project / rel).read_text().splitlines()
        at = data.draw(st.integers(0, len(lines)), label="line")
        broken = data.draw(st.sampled_from(_BROKEN_LINES), label="broken")
        text = "\n".join([*lines[:at], broken, *lines[at:]]) + "\n"
        assume(not _loads_as_mapping(text))
        try:
            ws.write(rel, text)
            ws.refused(["compose", "-p", "proj", *choosing(rel)], Path(rel).name)
        finally:
            ws.restore()

    check()


def test_generated_non_mapping_configs(ws: Workspace) -> None:
    scalars = st.one_of(st.integers(), st.floats(allow_nan=False), st.booleans(),
                        st.text(max_size=20))

    @GENERATED
    @given(value=st.one_of(scalars, st.lists(scalars, min_size=1, max_size=4)))
    def check(value: object) -> None:
        text = yaml.safe_dump(value)
        assume(yaml.safe_load(text) is not None)
        try:
            ws.write("configs/optimizer/adam.yaml", text)
            ws.refused(["sweep", "--dry-run", "-p", "proj", "optimizer=adam"], "adam.yaml")
        finally:
            ws.restore()

    check()


# --------------------------------------------------------------------------- orch.yaml

_PIN = f"base_image: {IMAGE_ID}\n"
_CMD = "command: [python3, train.py]\n"
_OK = f"name: proj\n{_PIN}{_CMD}"

#: (orch.yaml content, fragments). orch.yaml is always named too.
BAD_ORCH_YAML: list[tuple[str | bytes | None, tuple[str, ...]]] = [
    (None, ()),
    ("", ("mapping",)),
    ("- a\n- b\n", ("mapping",)),
    ("just text\n", ("mapping",)),
    ("name: [unclosed\n", ("orch.yaml:",)),
    (f"name: proj\n{_PIN}{_CMD}\tbad: tab\n", ("orch.yaml:",)),
    (f"{_OK}nosuch: 1\n", ("nosuch",)),
    (f"{_OK}Name: x\n", ("Name",)),
    (f"{_PIN}{_CMD}", ("name",)),
    (f"name: Bad_Name\n{_PIN}{_CMD}", ("name", "Bad_Name")),
    (f"name: -x\n{_PIN}{_CMD}", ("name",)),
    (f"name: ''\n{_PIN}{_CMD}", ("name",)),
    (f"name: 5\n{_PIN}{_CMD}", ("name",)),
    (f"name: [a]\n{_PIN}{_CMD}", ("name",)),
    (f"name: a--b\n{_PIN}{_CMD}", ("name",)),
    (f"name: proj\n{_CMD}", ("base_image",)),
    (f"name: proj\nbase_image: debian:12\n{_CMD}", ("base_image", "not pinned")),
    (f"name: proj\nbase_image: sha256:abc\n{_CMD}", ("base_image",)),
    (f"name: proj\nbase_image: sha256:{'A' * 64}\n{_CMD}", ("base_image",)),
    (f"name: proj\nbase_image: sha256:{'a' * 63}\n{_CMD}", ("base_image",)),
    (f"name: proj\nbase_image: sha256:{'g' * 64}\n{_CMD}", ("base_image",)),
    (f"name: proj\nbase_image: 'x@sha256:abc'\n{_CMD}", ("base_image",)),
    (f"name: proj\nbase_image: 'UP@sha256:{HEX64}'\n{_CMD}", ("base_image",)),
    (f"name: proj\nbase_image: '@sha256:{HEX64}'\n{_CMD}", ("base_image",)),
    (f"name: proj\nbase_image: 5\n{_CMD}", ("base_image",)),
    (f"name: proj\nbase_image: ''\n{_CMD}", ("base_image",)),
    (f"name: proj\n{_PIN}", ("command",)),
    (f"name: proj\n{_PIN}command: python3 train.py\n", ("command",)),
    (f"name: proj\n{_PIN}command: []\n", ("command",)),
    (f"name: proj\n{_PIN}command: [python3, 5]\n", ("command",)),
    (f"name: proj\n{_PIN}command: null\n", ("command",)),
    (f"name: proj\n{_PIN}command: {{a: b}}\n", ("command",)),
    (f"{_OK}config_dir: ../outside\n", ("config_dir",)),
    (f"{_OK}config_dir: /etc\n", ("config_dir",)),
    (f"{_OK}config_dir: ''\n", ("config_dir",)),
    (f"{_OK}config_dir: 5\n", ("config_dir",)),
    (f"{_OK}config_dir: orch.yaml\n", ("orch.yaml",)),
    (f"{_OK}config_name: ''\n", ("config_name",)),
    (f"{_OK}config_name: [a]\n", ("config_name",)),
    (f"{_OK}requirements: nosuch.lock\n", ("requirements",)),
    (f"{_OK}requirements: ../../etc/passwd\n", ("requirements",)),
    (f"{_OK}requirements: 5\n", ("requirements",)),
    (f"{_OK}resources: 4\n", ("resources",)),
    (f"{_OK}resources: {{cpus: -1}}\n", ("resources.cpus",)),
    (f"{_OK}resources: {{cpus: 0}}\n", ("resources.cpus",)),
    (f"{_OK}resources: {{cpus: lots}}\n", ("resources.cpus",)),
    (f"{_OK}resources: {{cpus: true}}\n", ("resources.cpus",)),
    (f"{_OK}resources: {{gpus: -1}}\n", ("resources.gpus",)),
    (f"{_OK}resources: {{gpus: 1.5}}\n", ("resources.gpus",)),
    (f"{_OK}resources: {{gpus: two}}\n", ("resources.gpus",)),
    (f"{_OK}resources: {{memory: lots}}\n", ("resources.memory",)),
    (f"{_OK}resources: {{memory: 1t}}\n", ("resources.memory",)),
    (f"{_OK}resources: {{memory: 512}}\n", ("resources.memory",)),
    (f"{_OK}resources: {{memory: -5m}}\n", ("resources.memory",)),
    (f"{_OK}resources: {{disk: 1g}}\n", ("resources.disk",)),
    (f"{_OK}network: host\n", ("network",)),
    (f"{_OK}network: 'container:abc'\n", ("network",)),
    (f"{_OK}network: true\n", ("network",)),
    (f"{_OK}exclude: data\n", ("exclude",)),
    (f"{_OK}exclude: [1]\n", ("exclude",)),
    (f"{_OK}timeout: 0\n", ("timeout",)),
    (f"{_OK}timeout: -1\n", ("timeout",)),
    (f"{_OK}timeout: soon\n", ("timeout",)),
    (f"{_OK}timeout: true\n", ("timeout",)),
    (f"{_OK}env: [A=1]\n", ("env",)),
    (f"{_OK}env: {{ORCH_RUN_ID: x}}\n", ("env",)),
    (f"{_OK}env: {{A: [1]}}\n", ("env",)),
    (f"{_OK}env: {{A: null}}\n", ("env",)),
]


def _orch_yaml_id(content: str | bytes | None) -> str:
    return "missing" if content is None else repr(content[-40:])


@pytest.mark.parametrize(("content", "fragments"), BAD_ORCH_YAML,
                         ids=[_orch_yaml_id(c) for c, _ in BAD_ORCH_YAML])
def test_bad_orch_yaml(ws: Workspace, content: str | bytes | None,
                       fragments: tuple[str, ...]) -> None:
    ws.write("orch.yaml", content)
    ws.refused(["sweep", "--dry-run", "-p", "proj"], "orch.yaml", *fragments)


@pytest.mark.parametrize(("setting", "fragment"), [
    ("config_dir: nosuchdir", "nosuchdir"),
    ("config_name: nosuch", "nosuch.yaml"),
    ("config_dir: train.py", "train.py"),
])
def test_orch_yaml_naming_what_is_missing(ws: Workspace, setting: str, fragment: str) -> None:
    ws.write("orch.yaml", f"{_OK}{setting}\n")
    ws.write("train.py", "")
    ws.refused(["sweep", "--dry-run", "-p", "proj"], fragment)
    ws.refused(["compose", "-p", "proj"], fragment)


def test_non_utf8_orch_yaml(ws: Workspace) -> None:
    ws.write("orch.yaml", b"name: \xff\n" + _OK.encode())
    ws.refused(["compose", "-p", "proj"], "orch.yaml")


def test_base_image_with_trailing_newline(ws: Workspace) -> None:
    ws.write("orch.yaml", f"name: proj\nbase_image: \"{IMAGE_ID}\\n\"\n{_CMD}")
    ws.refused(["sweep", "--dry-run", "-p", "proj"], "base_image")


_NAME_OK = st.from_regex(r"[a-z0-9]+(-[a-z0-9]+)*", fullmatch=True)


def test_generated_orch_yaml_values(ws: Workspace) -> None:
    import re

    junk = st.one_of(st.text(max_size=12), st.integers(-5, 5), st.floats(allow_nan=False),
                     st.booleans(), st.none(), st.lists(st.integers(), max_size=2))

    @st.composite
    def bad_setting(draw: st.DrawFn) -> tuple[str, object]:
        key = draw(st.sampled_from(["name", "base_image", "command", "network", "timeout",
                                    "resources.cpus", "resources.gpus", "resources.memory"]))
        value = draw(junk)
        if key == "name":
            assume(not (isinstance(value, str) and re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*",
                                                                value)))
        elif key == "base_image":
            assume(not isinstance(value, str) or not value.startswith("sha256:"))
        elif key == "command":
            assume(not (isinstance(value, list) and value))
        elif key == "network":
            assume(value not in ("none", "bridge"))
        elif key == "timeout":
            assume(value is not None and (isinstance(value, bool)
                                          or not isinstance(value, int | float) or value <= 0))
        elif key == "resources.cpus":
            assume(isinstance(value, bool) or not isinstance(value, int | float) or value <= 0)
        elif key == "resources.gpus":
            assume(isinstance(value, bool) or not isinstance(value, int) or value < 0)
        else:
            assume(value is not None and not (
                isinstance(value, str) and re.match(r"^[0-9]+[bkmg]?$", value.lower())))
        return key, value

    @GENERATED
    @given(setting=bad_setting())
    def check(setting: tuple[str, object]) -> None:
        key, value = setting
        data: dict[str, Any] = {"name": "proj", "base_image": IMAGE_ID,
                                "command": ["python3", "train.py"]}
        if key.startswith("resources."):
            data["resources"] = {key.split(".")[1]: value}
        else:
            data[key] = value
        try:
            ws.write("orch.yaml", yaml.safe_dump(data))
            ws.refused(["sweep", "--dry-run", "-p", "proj"], "orch.yaml", key)
        finally:
            ws.restore()

    check()


# --------------------------------------------------------------------------- ids, digests

BAD_IDS = [
    "../etc", "abc/../../x", "..", ".", "", " ", "ZZZ", "a b", "ABCDEF", "abc\x00",
    "-x", "--help", "g" * 5, "a" * 65, "abc;rm -rf /", "$(id)", "`id`", "%2e%2e%2f",
    "abc/", "/abs", "\u0661\u0662", "\uff41\uff42\uff43", "0x12", "abc*", "a\tb", "\\x",
    "runs/abc", "abc\r",
]


@pytest.mark.parametrize("bad", BAD_IDS, ids=[repr(b) for b in BAD_IDS])
def test_bad_run_and_sweep_ids(ws: Workspace, bad: str) -> None:
    name = shown(bad)
    ws.refused(["show", "-p", "proj", "--", bad], name)
    ws.refused(["logs", "-p", "proj", "--", bad], name)
    ws.refused(["compare", "-p", "proj", "--", bad, RUN_A], name)
    ws.refused(["compare", "-p", "proj", "--", RUN_A, bad], name)
    ws.refused(["image", "verify", "-p", "proj", "--", bad], name)
    ws.refused(["results", "-p", "proj", "--", bad], name)
    ws.refused(["report", "-p", "proj", "-o", "r.html", "--", bad], name)


def test_unknown_but_wellformed_ids(ws: Workspace) -> None:
    ws.refused(["show", "-p", "proj", "cafe"], "cafe")
    ws.refused(["compare", "-p", "proj", RUN_A, "cafe"], "cafe")
    ws.refused(["results", "-p", "proj", "cafe"], "cafe")
    ws.refused(["report", "-p", "proj", "-o", "r.html", "cafe"], "cafe")
    ws.refused(["logs", "-p", "proj", "cafe"], "cafe")


def test_generated_bad_ids(ws: Workspace) -> None:
    import re

    @GENERATED
    @given(bad=st.text(max_size=70), command=st.sampled_from(["show", "results", "compare"]))
    def check(bad: str, command: str) -> None:
        assume(not re.fullmatch(r"[0-9a-f]{1,64}", bad))
        assume(not re.fullmatch(r"[0-9a-f]{1,64}\n", bad))  # a known bug, see above
        args = {"show": ["show", "-p", "proj", "--", bad],
                "results": ["results", "-p", "proj", "--", bad],
                "compare": ["compare", "-p", "proj", "--", RUN_A, bad]}[command]
        ws.refused(args, shown(bad))

    check()


BAD_BASE_IMAGES = [
    "debian:12", "debian", "sha256:abc", "sha256:" + "g" * 64, "sha256:" + "A" * 64,
    "sha256:" + "a" * 63, "sha256:" + "a" * 65, "x@sha256:abc", "UP@sha256:" + HEX64,
    "@sha256:" + HEX64, "sha512:" + "a" * 128, "x@sha256:" + HEX64 + "@sha256:" + HEX64,
    "../x@sha256", " sha256:" + HEX64,
]


@pytest.mark.parametrize("ref", BAD_BASE_IMAGES)
def test_bad_base_image_option(ws: Workspace, ref: str) -> None:
    ws.refused(["sweep", "--dry-run", "-p", "proj", "--base-image", ref], "--base-image")


def test_empty_base_image_option(ws: Workspace) -> None:
    ws.refused(["sweep", "--dry-run", "-p", "proj", "--base-image", ""], "--base-image")


def test_generated_bad_digests(ws: Workspace) -> None:
    import re

    @GENERATED
    @given(ref=st.one_of(
        st.text(max_size=80),
        st.from_regex(r"sha256:[0-9a-zA-Z]{0,70}", fullmatch=True),
        st.from_regex(r"[a-z]{1,8}@sha256:[0-9a-fA-F]{0,70}", fullmatch=True),
    ))
    def check(ref: str) -> None:
        assume(not re.fullmatch(r"sha256:[0-9a-f]{64}\n?", ref))
        assume(not re.fullmatch(r"[a-z0-9][a-z0-9._/:-]*@sha256:[0-9a-f]{64}\n?", ref))
        ws.refused(["sweep", "--dry-run", "-p", "proj", "--base-image", ref], "--base-image")

    check()


@pytest.mark.docker
@pytest.mark.parametrize("target", [
    "sha256:zz", "nothex", "repo@sha256:short", "../x", "sha256:" + "A" * 64, "",
    "sha256:" + "0" * 64, "cafe",
])
def test_bad_rerun_targets(ws: Workspace, target: str) -> None:
    from orchestrator.daemon.client import connect
    from orchestrator.errors import BackendError

    try:
        connect().close()
    except BackendError:
        pytest.skip("no Docker daemon")
    ws.refused(["rerun", "-p", "proj", "--", target], shown(target).strip("'"))


# --------------------------------------------------------------------------- store URIs

BAD_STORE_URIS = [
    ("ftp://host/x", "ftp://host/x"),
    ("http://127.0.0.1/x", "http://127.0.0.1/x"),
    ("S3://bucket/x", "S3://bucket/x"),
    ("gs://bucket", "gs://bucket"),
    ("s3://", "s3://"),
    ("s3://a", "s3://a"),
    ("s3://-bad-/x", "-bad-"),
    ("s3://bad_/x", "bad_"),
    ("s3://b!ucket/x", "b!ucket"),
    ("s3://" + "a" * 64, "a" * 64),
    ("s3://bucket/../x", "../x"),
    ("s3://bucket/a/../b", "a/../b"),
    ("s3://bucket/./a", "./a"),
    ("s3://bucket/a\\b", "a\\\\b"),
    ("s3://bucket/a//b", "a//b"),
    ("s3://bucket/a\x00b", "bucket"),
    ("file://", "file://"),
    ("file:///etc/passwd", "/etc/passwd"),
    ("/etc/passwd", "/etc/passwd"),
    ("proj/orch.yaml", "orch.yaml"),
]


@pytest.mark.parametrize(("uri", "fragment"), BAD_STORE_URIS, ids=[u for u, _ in BAD_STORE_URIS])
def test_bad_store_uri(ws: Workspace, uri: str, fragment: str) -> None:
    ws.refused(["results", "-p", "proj", "--store", uri, SWEEP_ID], fragment)
    ws.refused(["show", "-p", "proj", "--store", uri, RUN_A], fragment)
    ws.refused(["runs", "-p", "proj", "--store", uri], fragment)


def test_store_path_with_nul(ws: Workspace) -> None:
    ws.refused(["results", "-p", "proj", "--store", "st\x00ore", SWEEP_ID], "--store")


def test_empty_store_dirs_are_not_created(ws: Workspace) -> None:
    for uri in ("newstore", "file://" + str(ws.base / "newstore2"), "a/b/c"):
        ws.refused(["results", "-p", "proj", "--store", uri, SWEEP_ID], SWEEP_ID)
        ws.refused(["show", "-p", "proj", "--store", uri, RUN_A], RUN_A)


def test_bad_s3_endpoint(ws: Workspace) -> None:
    env = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y", "AWS_DEFAULT_REGION": "x"}
    ws.refused(["results", "-p", "proj", "--store", "s3://bucket/x", "--s3-endpoint",
                "not a url", SWEEP_ID], "not a url", env=env)


def test_generated_bad_store_uris(ws: Workspace) -> None:
    @GENERATED
    @given(uri=st.one_of(
        st.from_regex(r"[a-rt-z][a-z0-9+.-]{0,6}://[ -~]{0,20}", fullmatch=True).filter(
            lambda u: not u.startswith("file://")),
        st.builds(lambda b: f"s3://{b}/x", st.one_of(
            st.from_regex(r"[a-z0-9]{0,2}", fullmatch=True),
            st.from_regex(r"[a-z0-9]{64,70}", fullmatch=True),
            st.from_regex(r"[a-z0-9]{1,5}[!~ *'()\[\]{}^`][a-z0-9]{1,5}", fullmatch=True),
            st.from_regex(r"[_.-][a-z0-9]{2,6}", fullmatch=True),
        )),
        st.builds(lambda p: f"s3://bucket/{p}", st.lists(
            st.sampled_from(["a", "b", "..", ".", ""]), min_size=1, max_size=5).map("/".join)
            .filter(lambda p: any(part in ("..", ".") for part in p.strip("/").split("/"))
                    or "//" in p.strip("/"))),
    ))
    def check(uri: str) -> None:
        ws.refused(["results", "-p", "proj", "--store", uri, SWEEP_ID])

    check()


# --------------------------------------------------------------------------- CLI options

BAD_OPTIONS: list[tuple[list[str], tuple[str, ...]]] = [
    (["sweep", "--jobs", "0"], ("--jobs",)),
    (["sweep", "--jobs", "-1"], ("--jobs",)),
    (["sweep", "--jobs", "abc"], ("--jobs",)),
    (["sweep", "--jobs", "1.5"], ("--jobs",)),
    (["sweep", "--jobs"], ("--jobs",)),
    (["sweep", "--backend", "kubernetes"], ("--backend", "kubernetes")),
    (["sweep", "--partition", "gpu", "optimizer=SGD"], ("--partition", "--backend slurm")),
    (["sweep", "--backend", "slurm", "--partition", "a b", "optimizer=SGD"],
     ("slurm.partition", "a b")),
    (["sweep", "--backend", "slurm", "--sbatch", "constraint=a100", "optimizer=SGD"],
     ("slurm.sbatch",)),
    (["sweep", "--backend", ""], ("--backend",)),
    (["sweep", "--nope"], ("--nope",)),
    (["sweep", "--registry", "not a registry", "optimizer=SGD"], ("--registry",)),
    (["sweep", "--registry", "http://127.0.0.1:5000/x", "optimizer=SGD"], ("--registry",)),
    (["sweep", "--registry", "127.0.0.1:5000", "optimizer=SGD"], ("--registry",)),
    (["sweep", "--registry", "host:port/repo", "optimizer=SGD"], ("--registry",)),
    (["sweep", "--registry", "127.0.0.1:5000/UPPER", "optimizer=SGD"], ("--registry",)),
    (["sweep", "-p", "proj", "--dry-run", "--base-image"], ("--base-image",)),
    (["results", SWEEP_ID, "--format", "xml"], ("--format", "xml")),
    (["results", SWEEP_ID, "--sort", "nosuch"], ("nosuch",)),
    (["results", SWEEP_ID, "--sort", "-"], ("--sort",)),
    (["results", SWEEP_ID, "--where", "nonsense"], ("nonsense",)),
    (["results", SWEEP_ID, "--where", "nosuch=1"], ("nosuch",)),
    (["results", SWEEP_ID, "--where", "accuracy<abc"], ("accuracy<abc",)),
    (["results", SWEEP_ID, "--where", "=1"], ("=1",)),
    (["show"], ("RUN_ID",)),
    (["compare", RUN_A], ("RUN_B",)),
    (["report", SWEEP_ID], ("--output",)),
    (["report", SWEEP_ID, "-o", "proj"], ("proj",)),
    (["report", SWEEP_ID, "-o", "nodir/sub/r.html"], ("nodir/sub/r.html",)),
    (["rerun"], ("TARGET",)),
    (["image", "nosuch"], ("nosuch",)),
    (["image", "verify"], ("RUN_ID",)),
    (["nosuchcommand"], ("nosuchcommand",)),
    (["show", RUN_A, "extra"], ("extra",)),
    (["results", SWEEP_ID, "--format"], ("--format",)),
    (["compose", "--json", "--nope"], ("--nope",)),
]


@pytest.mark.parametrize(("args", "fragments"), BAD_OPTIONS,
                         ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_bad_cli_options(ws: Workspace, args: list[str], fragments: tuple[str, ...]) -> None:
    if args[0] == "nosuchcommand" or args[:2] == ["image", "nosuch"] or "-p" in args:
        full = args
    elif args[0] == "image":
        full = [*args[:2], "-p", "proj", *args[2:]]
    else:
        full = [args[0], "-p", "proj", *args[1:]]
    ws.refused(full, *fragments)


@pytest.mark.parametrize("project", ["nosuchdir", "/nonexistent/x", "/"])
def test_bad_project_dir(ws: Workspace, project: str) -> None:
    ws.refused(["compose", "-p", project], "orch.yaml")
    ws.refused(["sweep", "--dry-run", "-p", project], "orch.yaml")


# --------------------------------------------------------------------------- keys stay inside


BAD_KEYS = ["../x", "runs/../../x", "/etc/passwd", "runs/a/../../../x", "a/./b", "a//b",
            "a\\..\\b", "a/", "", ".", "..", "a/..", "a\x00b"]


@pytest.mark.parametrize("key", BAD_KEYS, ids=[repr(k) for k in BAD_KEYS])
def test_store_keys_never_escape(tmp_path: Path, key: str,
                                 record_property: Callable[[str, object], None]) -> None:
    from orchestrator.errors import UsageError
    from orchestrator.store import DirStore, MemoryStore

    root = tmp_path / "store"
    before = snapshot(tmp_path)
    for store in (DirStore(root), MemoryStore()):  # (S3Store: same check_key, in _full)
        for op in (lambda s: s.put(key, b"x"), lambda s: s.get(key), lambda s: s.exists(key),
                   lambda s: s.create(key, b"x"), lambda s: s.delete(key)):
            with pytest.raises(UsageError):
                op(store)
    assert snapshot(tmp_path) == before
    record_property("bad_inputs_tried", 1)


def test_dir_store_scratch_space_is_not_a_key(tmp_path: Path) -> None:
    from orchestrator.errors import UsageError
    from orchestrator.store import DirStore

    with pytest.raises(UsageError):
        DirStore(tmp_path).put(".tmp/x", b"x")


def test_generated_keys_stay_under_the_root(tmp_path: Path,
                                            record_property: Callable[[str, object], None]) -> None:
    from orchestrator.errors import UsageError
    from orchestrator.store import DirStore

    root = (tmp_path / "store").resolve()
    store = DirStore(root)
    tried = 0

    @GENERATED
    @given(parts=st.lists(st.sampled_from(["..", ".", "", "a", "runs", "x.json", "/", "\\"]),
                          min_size=1, max_size=6))
    def check(parts: list[str]) -> None:
        nonlocal tried
        key = "/".join(parts)
        try:
            path = store._path(key)
        except UsageError:
            tried += 1
            return
        resolved = path.resolve()
        assert resolved != root and root in resolved.parents, key

    check()
    record_property("bad_inputs_tried", tried)


@pytest.mark.parametrize("name", ["../x", "output/../../x", "output/../run.json", "run.json",
                                  "claim.json", "/abs", "output//x"])
def test_run_files_never_escape(tmp_path: Path, name: str,
                                record_property: Callable[[str, object], None]) -> None:
    from orchestrator.errors import UsageError
    from orchestrator.schema.record import RunRecord
    from orchestrator.store import DirStore, RunStore

    runs = RunStore(DirStore(tmp_path / "store"))
    record = RunRecord.from_json(_record(RUN_A, ["optimizer=SGD"], 0.1, 0.5))
    with pytest.raises(UsageError):
        runs.commit_run(record, {name: b"x"})
    if name not in ("run.json", "claim.json"):  # reserved for writing, fine to read
        with pytest.raises(UsageError):
            runs.read_file(RUN_A, name)
    assert not (tmp_path / "store" / "runs" / RUN_A / "run.json").exists()
    assert not (tmp_path / "x").exists()
    record_property("bad_inputs_tried", 1)


#: What a run can leave in its output directory that must not be stored as it is: links
#: out of it or up from it, a FIFO, names that are not clean keys. (A run has no
#: CAP_MKNOD, so no device; the directory is a mount of its own, so no hard link to a
#: file outside it.)
EVIL_ENTRIES = {
    "passwd": lambda p: p.symlink_to("/etc/passwd"),
    "up": lambda p: p.symlink_to(".."),
    "etc": lambda p: p.symlink_to("/etc"),
    "fifo": lambda p: os.mkfifo(p),
    "back\\slash": lambda p: p.write_text("x"),
    "new\nline": lambda p: p.write_text("x"),
    "del\x7f": lambda p: p.write_text("x"),
}


@pytest.mark.parametrize("name", sorted(EVIL_ENTRIES))
def test_output_entries_never_escape(name: str, tmp_path: Path,
                                     record_property: Callable[[str, object], None]) -> None:
    from orchestrator.runner.outputs import collect_outputs
    from orchestrator.store import check_key

    record_property("bad_inputs_tried", 1)
    root = tmp_path / "output"
    root.mkdir()
    (root / "ok.txt").write_text("fine")
    EVIL_ENTRIES[name](root / name)
    outputs = collect_outputs(root)
    files = dict(outputs.items())
    for stored in files:  # contained whatever happens: a clean key under output/
        check_key(f"output/{stored}")
    assert {k: v.read_bytes() for k, v in files.items()} == {"ok.txt": b"fine"}
    assert name in outputs.dropped
