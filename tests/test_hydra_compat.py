"""Hydra projects work unchanged: ``${hydra:...}``, files checked as Hydra reads them, run
YAML that reads back exactly, Hydra's own errors as config errors, absent ``hydra/``
plugins, and the grids ``hydra -m`` refuses. The differential test against a real
``@hydra.main`` application is tests/test_hydra_differential.py."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from orchestrator.cli import cli
from orchestrator.compose import config as configmod
from orchestrator.compose import configio
from orchestrator.compose.config import (
    HYDRA_RUNTIME,
    Composer,
    expand_sweep,
    job_name_for,
    to_json,
    to_yaml,
)
from orchestrator.errors import ConfigError

TreeFactory = Callable[[dict[str, str]], Path]
IMAGE_ID = "sha256:" + "c" * 64


@pytest.fixture
def tree(tmp_path: Path) -> TreeFactory:
    """Writes ``{relative path: text}`` under ``tmp_path/conf`` and returns that dir."""

    def make(files: dict[str, str]) -> Path:
        root = tmp_path / "conf"
        for name, text in files.items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        return root

    return make


def error_of(action: Callable[[], object]) -> str:
    with pytest.raises(ConfigError) as info:
        action()
    message = str(info.value)
    assert "\n" not in message, message
    return message


def cli_error(project: Path, *args: str) -> str:
    """The CLI's one error line for ``args`` (exit 2, never an internal error)."""
    result = CliRunner().invoke(cli, [args[0], "-p", str(project), *args[1:]])
    lines = result.stderr.splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "internal error" not in lines[0], lines[0]
    return lines[0]


def project_of(config_dir: Path) -> Path:
    """An orch project around a config tree written by ``tree`` (``conf/``)."""
    root = config_dir.parent
    (root / "orch.yaml").write_text(
        f"name: proj\nbase_image: {IMAGE_ID}\nconfig_dir: conf\ncommand: [python3, train.py]\n"
    )
    return root


BASE = {
    "config.yaml": "defaults:\n  - db: mysql\n  - _self_\nx: 1\n",
    "db/mysql.yaml": "driver: mysql\nport: 3306\n",
    "db/postgres.yaml": "driver: postgres\nport: 5432\n",
}


# --------------------------------------------------------------------------- 1. ${hydra:...}

READS_HYDRA = {
    **BASE,
    "config.yaml": (
        "defaults:\n  - db: mysql\n  - _self_\nx: 1\n"
        "paths:\n"
        "  output_dir: ${hydra:runtime.output_dir}\n"
        "  work_dir: ${hydra:runtime.cwd}\n"
        "  run_dir: ${hydra:run.dir}\n"
        "job:\n"
        "  name: ${hydra:job.name}\n"
        "  num: ${hydra:job.num}\n"
        "  id: ${hydra:job.id}\n"
        "  dirname: ${hydra:job.override_dirname}\n"
        "  db: ${hydra:runtime.choices.db}\n"
    ),
}


def test_hydra_interpolations_resolve_to_the_run(tree: TreeFactory) -> None:
    composer = Composer(tree(READS_HYDRA), job_name="train")
    cfg = composer.compose(["db=postgres", "x=2"])
    assert cfg["paths"] == {
        "output_dir": "/orch/output",
        "work_dir": "/orch/code",
        "run_dir": "/orch/output",
    }
    assert cfg["job"] == {
        "name": "train",
        "num": 0,
        "id": "0",
        "dirname": "db=postgres,x=2",
        "db": "postgres",
    }


def test_each_point_is_one_job_of_a_multirun(tree: TreeFactory) -> None:
    composer = Composer(tree(READS_HYDRA), job_name="train")
    points = expand_sweep(["db=mysql,postgres", "x=1,2"], composer)
    configs = composer.compose_many(points)
    assert [c["job"]["num"] for c in configs] == [0, 1, 2, 3]
    assert [c["job"]["dirname"] for c in configs] == [
        "db=mysql,x=1",
        "db=mysql,x=2",
        "db=postgres,x=1",
        "db=postgres,x=2",
    ]
    # the fast path gives what a full compose gives for the same job
    assert configs[0] == composer.compose(list(points[0]))
    # a deletion is spelled as Hydra's sweeper hands it to the job
    assert composer.compose(["~x"])["job"]["dirname"] == "~x=null"


def test_hydra_values_are_returned_for_the_record(tree: TreeFactory) -> None:
    composer = Composer(tree(READS_HYDRA), job_name="train")
    (first, second) = composer.compose_points([["db=postgres"], ["x=3"]])
    assert first.hydra["hydra.job.num"] == 0 and second.hydra["hydra.job.num"] == 1
    assert first.hydra["hydra.runtime.output_dir"] == HYDRA_RUNTIME["runtime.output_dir"]
    assert first.hydra["hydra.job.override_dirname"] == "db=postgres"
    assert first.hydra["hydra.runtime.choices"]["db"] == "postgres"
    assert second.hydra["hydra.job.name"] == "train"
    assert "hydra" not in first.config


def test_the_config_can_set_the_job_name(tree: TreeFactory) -> None:
    files = dict(READS_HYDRA)
    files["config.yaml"] += "hydra:\n  job:\n    name: mine\n"
    cfg = Composer(tree(files), job_name="train").compose([])
    assert cfg["job"]["name"] == "mine" and "hydra" not in cfg


def test_job_name_for_commands() -> None:
    assert job_name_for(["python3", "train.py"]) == "train"
    assert job_name_for(["python", "src/fit.py", "--x"]) == "fit"
    assert job_name_for(["python", "-m", "pkg.train"]) == "train"
    assert job_name_for(["bash", "run.sh"]) == "app"


def test_configs_without_hydra_are_unchanged(tree: TreeFactory) -> None:
    cfg = Composer(tree(BASE)).compose(["db=postgres"])
    assert cfg == {"db": {"driver": "postgres", "port": 5432}, "x": 1}


# --------------------------------------------------------------------------- 2. what loads


def test_unused_bad_files_do_not_stop_the_tree(tree: TreeFactory) -> None:
    files = dict(BASE)
    files["db/broken.yaml"] = "driver: [unclosed\n"
    files["db/list.yaml"] = "- a\n- b\n"
    files["db/dup.yaml"] = "a: 1\na: 2\n"
    composer = Composer(tree(files))
    assert composer.compose([])["db"]["driver"] == "mysql"
    assert composer.compose_many([["db=postgres"]])[0]["db"]["driver"] == "postgres"
    # chosen, each is refused naming the file
    assert error_of(lambda: composer.compose(["db=broken"])).startswith("conf/db/broken.yaml:2:")
    assert "conf/db/list.yaml: a config must be a mapping" in error_of(
        lambda: composer.compose_many([["db=list"]])
    )
    assert "conf/db/dup.yaml:2:1: duplicate key 'a'" in error_of(
        lambda: composer.compose(["db=dup"])
    )


def test_dates_read_as_omegaconf_reads_them(tree: TreeFactory) -> None:
    files = dict(BASE)
    files["db/dated.yaml"] = "start: 2023-02-30\nwhen: 2023-02-28\n"
    composer = Composer(tree(files))
    assert composer.compose([])["x"] == 1  # unused: no "day is out of range for month"
    assert composer.compose(["db=dated"])["db"] == {"start": "2023-02-30", "when": "2023-02-28"}


def test_an_unused_bad_file_is_no_internal_error_on_the_cli(tree: TreeFactory) -> None:
    files = dict(BASE)
    files["db/dated.yaml"] = "start: 2023-02-30\n"
    files["db/broken.yaml"] = "driver: [\n"
    project = project_of(tree(files))
    result = CliRunner().invoke(cli, ["compose", "-p", str(project), "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["db"]["driver"] == "mysql"


def test_hydras_own_test_configs_compose() -> None:
    """hydra-core's test_utils/configs holds files that are not mappings; Hydra never
    loads them for ``compose.yaml``, so neither does orch."""
    root = Path(hydra.__file__).parent / "test_utils" / "configs"
    composer = Composer(root, "compose")
    assert composer.compose([]) == {"foo": 10, "bar": 100}
    assert composer.compose(["group1=file2"])["foo"] == 20


# --------------------------------------------------------------------------- 3. run YAML


def omegaconf_reads(text: str) -> Any:
    return OmegaConf.to_container(OmegaConf.load(io.StringIO(text)), resolve=True)


def same(a: Any, b: Any) -> bool:
    """Equal, including int/float/bool distinctions and -0.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def sorted_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: sorted_keys(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [sorted_keys(v) for v in value]
    return value


def test_run_yaml_keeps_strings_strings(tree: TreeFactory) -> None:
    composer = Composer(tree(BASE))
    cfg = composer.compose(["+f='1e-3'", "+g='1e5'", r"+lit='\${x}'", "+d='2023-02-30'"])
    assert cfg["f"] == "1e-3" and cfg["g"] == "1e5" and cfg["lit"] == "${x}"
    text = to_yaml(cfg)
    assert same(omegaconf_reads(text), sorted_keys(cfg)), text
    assert yaml.safe_load(text)["f"] == "1e-3" and yaml.safe_load(text)["d"] == "2023-02-30"
    assert json.loads(to_json(cfg)) == cfg


_TRICKY = st.sampled_from([
    "1e-3", "1e5", "-2E+7", ".5", "1_000", "0x1f", "0o17", "1:30", "2023-02-30", "2023-02-28",
    "2001-12-14t21:59:43.10-05:00", "yes", "No", "on", "OFF", "~", "null", "Null", "true",
    ".inf", "-.Inf", ".nan", "", " ", " lead", "trail ", "a: b", "- x", "#c", "'q'", '"q"',
    "${x}", "${", r"\${x}", "a\\${b}", "${x}\\", "$${y}", "}${", "${oc.env:HOME}", "\\",
    "line\nbreak", "tab\there", "é", "null\x85", "=", "[1]", "{a: 1}", "*a", "&a", "!t", "%",
    "@", "`", "|", ">", "?", "1.0", "-0", "+1", "0", "007", "12e", "e5",
])
_TEXT = st.one_of(_TRICKY, st.text(max_size=10).filter(lambda s: s != "???"))
_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**15), 10**15),
    st.floats(allow_nan=False),
    _TEXT,
)
_CONFIG = st.dictionaries(
    _TEXT,
    st.recursive(
        _LEAF,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(_TEXT, inner, max_size=3)
        ),
        max_leaves=8,
    ),
    max_size=5,
)


def pyyaml_view(value: Any) -> Any:
    """What a plain YAML reader sees: orch's escape of interpolation syntax, verbatim."""
    if isinstance(value, str):
        return configio.escape_interpolation(value) if "${" in value else value
    if isinstance(value, dict):
        return {k: pyyaml_view(v) for k, v in value.items()}
    if isinstance(value, list):
        return [pyyaml_view(v) for v in value]
    return value


@settings(max_examples=300, deadline=None)
@given(config=_CONFIG)
def test_run_yaml_reads_back_exactly(config: dict[str, Any]) -> None:
    text = to_yaml(config)
    assert same(omegaconf_reads(text), sorted_keys(config)), text
    assert same(yaml.safe_load(text) or {}, sorted_keys(pyyaml_view(config))), text


# --------------------------------------------------------------------------- 4. hydra's errors


def test_a_group_chosen_with_a_list_of_numbers(tree: TreeFactory) -> None:
    composer = Composer(tree(BASE))
    for action in (composer.compose, lambda o: composer.compose_many([o])):
        message = error_of(lambda a=action: a(["db=[1.0,1]"]))  # type: ignore[misc]
        assert message.startswith("db=[1.0,1]: 'db' is a config group"), message
        assert "available: mysql, postgres" in message
    assert "db=[1.0,1]" in cli_error(project_of(composer.config_dir), "compose", "db=[1.0,1]")


def test_an_override_before_its_group_names_the_file(tree: TreeFactory) -> None:
    files = dict(BASE)
    files["config.yaml"] = "defaults:\n  - override db: [postgres]\n  - db: mysql\nx: 1\n"
    composer = Composer(tree(files))
    message = error_of(lambda: composer.compose([]))
    assert message.startswith("conf/config.yaml: defaults list: "), message
    assert "'override' entry comes before the entry it overrides" in message
    line = cli_error(project_of(composer.config_dir), "sweep", "--dry-run", "x=1,2")
    assert "conf/config.yaml: defaults list" in line


# --------------------------------------------------------------------------- 5. fast path


def test_fast_path_applies_overrides_with_the_hydra_node(tree: TreeFactory) -> None:
    files = dict(BASE)
    files["config.yaml"] += (
        "sub: ${oc.select:hydra.output_subdir,null}\n"
        "label: ${oc.select:hydra.output_subdir,none}\n"
    )
    composer = Composer(tree(files))
    for point in (["+sub=1"], ["~label=none"]):
        full = error_of(lambda p=point: composer.compose(p))  # type: ignore[misc]
        assert error_of(lambda p=point: composer.compose_many([p])) == full  # type: ignore[misc]
    assert composer.compose_many([["x=5"]]) == [composer.compose(["x=5"])]


# --------------------------------------------------------------------------- 6. plugins


COLORLOG = {
    **BASE,
    "config.yaml": "defaults:\n  - db: mysql\n  - hydra: default\n  - _self_\nx: 1\n"
    "used: ${hydra:runtime.choices.hydra/job_logging}\n",
    "hydra/default.yaml": (
        "defaults:\n  - override hydra_logging: colorlog\n  - override job_logging: colorlog\n"
        "run:\n  dir: logs/${now:%Y-%m-%d}\n"
    ),
}


def test_absent_hydra_plugins_named_by_defaults_stand_in(tree: TreeFactory) -> None:
    composer = Composer(tree(COLORLOG))
    assert composer.compose([]) == {"db": {"driver": "mysql", "port": 3306}, "x": 1,
                                    "used": "colorlog"}
    assert composer.compose_many([["x=2"], ["db=postgres"]])[1]["db"]["driver"] == "postgres"
    # chosen by an override, an absent option is still the user's error
    message = error_of(lambda: composer.compose(["hydra/job_logging=nosuch"]))
    assert "no option 'nosuch' in group 'hydra/job_logging'" in message
    # and the stand-ins leave Hydra's ConfigStore as they found it
    from hydra.core.config_store import ConfigStore

    assert "colorlog.yaml" not in ConfigStore.instance().repo.get("hydra", {}).get(
        "job_logging", {}
    )


# --------------------------------------------------------------------------- 7. grids


def test_a_sweep_over_hydras_own_config_is_refused(tree: TreeFactory) -> None:
    composer = Composer(tree(BASE))
    message = error_of(lambda: expand_sweep(["hydra/launcher=basic,basic", "x=1,2"], composer))
    assert message.startswith("hydra/launcher=basic,basic: a sweep over Hydra's own"), message
    message = error_of(lambda: expand_sweep(["hydra.job.name=a,b"], composer))
    assert message.startswith("hydra.job.name=a,b: ")
    # set once, hydra's config is fine
    assert expand_sweep(["hydra.job.name=a", "x=1,2"], composer) == [
        ("hydra.job.name=a", "x=1"),
        ("hydra.job.name=a", "x=2"),
    ]


def test_the_same_plus_key_twice_is_refused_as_hydra_does(tree: TreeFactory) -> None:
    composer = Composer(tree(BASE))
    message = error_of(lambda: expand_sweep(["+y=1", "+y=2"], composer))
    assert message.startswith("+y=2: given more than once"), message
    assert "An item is already at 'y'" in message
    message = error_of(lambda: expand_sweep(["~x", "~x"], composer))
    assert message.startswith("~x: given more than once"), message
    # what hydra -m accepts stays: a sweep and a value, a group deleted twice, ++ after +
    assert expand_sweep(["+y=1,2", "+y=3"], composer) == [("+y=3",)]
    assert expand_sweep(["~db", "~db"], composer) == [("~db",)]
    assert expand_sweep(["+y=1", "++y=2"], composer) == [("+y=1", "++y=2")]


def test_max_points_is_a_parameter(tree: TreeFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    composer = Composer(tree(BASE))
    assert not hasattr(configmod, "MAX_POINTS")  # nothing read from the environment
    monkeypatch.setenv("ORCH_MAX_POINTS", "2")
    assert len(expand_sweep(["x=range(5)"], composer)) == 5
    message = error_of(lambda: expand_sweep(["x=range(5)"], composer, max_points=4))
    assert message == (
        "x=range(5): the sweep has more than 4 points (set ORCH_MAX_POINTS to raise the "
        "limit): split it into smaller sweeps"
    )


def test_a_stand_in_is_not_an_option_for_overrides(tree: TreeFactory) -> None:
    composer = Composer(tree(COLORLOG))
    composer.compose([])  # the defaults needed the stand-in: it is remembered
    message = error_of(lambda: composer.compose(["hydra/job_logging=colorlog"]))
    assert message.startswith(
        "hydra/job_logging=colorlog: no option 'colorlog' in group 'hydra/job_logging' "
        "(available: default, disabled, none, stdout)"
    ), message
    # the same answer as from a composer that never needed the stand-in
    fresh = Composer(composer.config_dir)
    assert error_of(lambda: fresh.compose_many([["hydra/job_logging=colorlog"]])) == message
