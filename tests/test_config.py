"""Config composition: Hydra's semantics, orch's one-line errors, the compose_many fast path."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.version import VersionBase
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from orchestrator.compose import config as configmod
from orchestrator.compose.config import Composer, config_digest, expand_sweep, to_json, to_yaml
from orchestrator.errors import ConfigError
from orchestrator.results.table import flatten

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "configs"

TreeFactory = Callable[[dict[str, str]], Path]


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


@pytest.fixture(scope="module")
def demo() -> Composer:
    return Composer(DEMO)


def hydra_reference(config_dir: Path, overrides: list[str], name: str = "config") -> dict[str, Any]:
    """What hydra-core itself composes, resolved, for comparison."""
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        cfg = hydra_compose(config_name=name, overrides=overrides)
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def error_of(action: Callable[[], object]) -> str:
    with pytest.raises(ConfigError) as info:
        action()
    message = str(info.value)
    assert "\n" not in message, message
    return message


SMALL = {
    "config.yaml": (
        "defaults:\n  - db: mysql\n  - server: apache\n  - _self_\n"
        "app:\n  name: demo\n  url: http://${server.host}:${server.port}/${db.name}\n"
        "db:\n  timeout: 30\n"
    ),
    "db/mysql.yaml": "driver: mysql\nname: main\ntimeout: 10\nport: 3306\n",
    "db/postgres.yaml": "driver: postgres\nname: main\ntimeout: 10\nport: 5432\n",
    "server/apache.yaml": "host: localhost\nport: 80\n",
    "server/nginx.yaml": "host: example.org\nport: 8080\n",
}


# --------------------------------------------------------------------------- semantics


def test_defaults_list_and_self_order(tree: TreeFactory) -> None:
    composer = Composer(tree(SMALL))
    cfg = composer.compose([])
    assert cfg["db"] == {"driver": "mysql", "name": "main", "timeout": 30, "port": 3306}
    assert cfg["app"]["url"] == "http://localhost:80/main"  # interpolation resolved
    assert "hydra" not in cfg


def test_self_first_lets_groups_win(tree: TreeFactory) -> None:
    files = dict(SMALL)
    files["config.yaml"] = "defaults:\n  - _self_\n  - db: mysql\ndb:\n  timeout: 30\n"
    assert Composer(tree(files)).compose([])["db"]["timeout"] == 10


def test_group_selection_override(tree: TreeFactory) -> None:
    cfg = Composer(tree(SMALL)).compose(["db=postgres", "server=nginx"])
    assert cfg["db"]["driver"] == "postgres"
    assert cfg["db"]["timeout"] == 30  # _self_ is last: the primary config still wins
    assert cfg["app"]["url"] == "http://example.org:8080/main"


def test_package_header_and_package_override(tree: TreeFactory) -> None:
    files = dict(SMALL)
    files["config.yaml"] = (
        "defaults:\n  - db: mysql\n  - db@backup: postgres\n  - extras: tuning\n  - _self_\n"
    )
    files["extras/tuning.yaml"] = "# @package _global_\ntuning:\n  level: 3\n"
    files["db/sqlite.yaml"] = "# @package storage.local\ndriver: sqlite\n"
    composer = Composer(tree(files))
    cfg = composer.compose(["+db@cache=sqlite"])
    assert cfg["backup"]["driver"] == "postgres"
    assert cfg["tuning"] == {"level": 3}
    assert cfg["cache"]["driver"] == "sqlite"  # an explicit @package beats the header
    assert composer.compose(["+db@_global_=sqlite"])["driver"] == "sqlite"


def test_value_overrides_and_types(tree: TreeFactory) -> None:
    composer = Composer(tree(SMALL))
    cfg = composer.compose(
        [
            "db.timeout=5",
            "db.port=1.5",
            "+db.tags=[a,b]",
            "+app.note='hello, world'",
            "+app.nothing=null",
            "++app.name=other",
            "++app.fresh=true",
            "~server.port",
            "app.url=${db.driver}",
        ]
    )
    assert cfg["db"]["timeout"] == 5 and isinstance(cfg["db"]["timeout"], int)
    assert cfg["db"]["port"] == 1.5
    assert cfg["db"]["tags"] == ["a", "b"]
    assert cfg["app"]["note"] == "hello, world"
    assert cfg["app"]["nothing"] is None
    assert cfg["app"]["name"] == "other" and cfg["app"]["fresh"] is True
    assert "port" not in cfg["server"]
    assert cfg["app"]["url"] == "mysql"


def test_group_deletion_and_addition(tree: TreeFactory) -> None:
    files = dict(SMALL)
    files["config.yaml"] = "defaults:\n  - db: mysql\n  - _self_\nx: 1\n"
    composer = Composer(tree(files))
    assert "db" not in composer.compose(["~db"])
    assert composer.compose(["+server=nginx"])["server"]["port"] == 8080


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["db=postgres"],
        ["server=nginx", "db.timeout=1", "+extra.k=[1,2,{a: 3}]"],
        ["~db.port", "++app.name=x", "app.url='${db.name}'"],
    ],
)
def test_equals_hydras_own_compose(tree: TreeFactory, overrides: list[str]) -> None:
    root = tree(SMALL)
    assert Composer(root).compose(overrides) == hydra_reference(root, overrides)


def test_demo_tree_composes_like_hydra(demo: Composer) -> None:
    for overrides in ([], ["optimizer=adam", "model=lstm", "embeddings=fast_text_character"]):
        assert demo.compose(overrides) == hydra_reference(DEMO, overrides)
    cfg = demo.compose(["embeddings=fast_text_character"])
    assert cfg["model"]["input_size"] == cfg["embeddings"]["dim"] == 12


def test_group_options(demo: Composer) -> None:
    assert demo.group_options("optimizer") == ["SGD", "adam"]
    assert demo.group_options("model") == [
        "bi_lstm",
        "bi_lstm_bidirectionnal",
        "lstm",
        "lstm_bidirectionnal",
    ]
    message = error_of(lambda: demo.group_options("scheduler"))
    assert "no config group 'scheduler'" in message and "optimizer" in message


def test_other_config_name(tree: TreeFactory) -> None:
    files = dict(SMALL)
    files["alt.yaml"] = "defaults:\n  - db: postgres\n"
    assert Composer(tree(files), "alt").compose([])["db"]["driver"] == "postgres"


# --------------------------------------------------------------------------- errors


# A file is checked when composition loads it (as Hydra reads it), so each bad file below
# is chosen by an override; test_unused_bad_files_do_not_stop_the_tree is the other half.


def test_malformed_yaml_names_file_line_column(tree: TreeFactory) -> None:
    files = dict(SMALL)
    files["db/broken.yaml"] = "driver: x\nname: main\nport: [1, 2\ntimeout: 3\n"
    root = tree(files)
    message = error_of(lambda: Composer(root).compose(["db=broken"]))
    assert message.startswith("conf/db/broken.yaml:4:8: "), message
    assert message.endswith("(fix the YAML)")


def test_malformed_yaml_mapping_value(tree: TreeFactory) -> None:
    files = dict(SMALL)
    files["server/bad.yaml"] = "host: a\n  port: 3: 4\n"
    message = error_of(lambda: Composer(tree(files)).compose_many([["server=bad"]]))
    assert message.startswith("conf/server/bad.yaml:2:"), message
    assert "mapping values are not allowed here" in message


def test_duplicate_key_is_malformed(tree: TreeFactory) -> None:
    files = dict(SMALL)
    files["server/dup.yaml"] = "host: a\nport: 1\nhost: b\n"
    message = error_of(lambda: Composer(tree(files)).compose(["server=dup"]))
    assert message.startswith("conf/server/dup.yaml:3:1: duplicate key 'host'"), message


def test_non_mapping_config(tree: TreeFactory) -> None:
    files = dict(SMALL)
    files["server/list.yaml"] = "- a\n- b\n"
    assert "conf/server/list.yaml: a config must be a mapping" in error_of(
        lambda: Composer(tree(files)).compose(["server=list"])
    )


def test_missing_dir_and_primary(tmp_path: Path, tree: TreeFactory) -> None:
    message = error_of(lambda: Composer(tmp_path / "nope"))
    assert "does not exist" in message and "config.yaml" in message
    root = tree({"db/mysql.yaml": "a: 1\n"})
    message = error_of(lambda: Composer(root))
    assert message.startswith("no primary config conf/config.yaml: create it"), message


def test_unknown_group_option_lists_the_valid_ones(demo: Composer) -> None:
    assert error_of(lambda: demo.compose(["optimizer=adamw"])) == (
        "optimizer=adamw: no option 'adamw' in group 'optimizer' (available: SGD, adam)"
    )
    assert error_of(lambda: demo.compose_many([["optimizer=adamw"]])) == (
        "optimizer=adamw: no option 'adamw' in group 'optimizer' (available: SGD, adam)"
    )


def test_unknown_option_in_defaults_list(tree: TreeFactory) -> None:
    files = dict(SMALL)
    files["config.yaml"] = "defaults:\n  - db: oracle\n"
    message = error_of(lambda: Composer(tree(files)).compose([]))
    assert message == (
        "conf/config.yaml: defaults list: no option 'oracle' in group 'db' "
        "(available: mysql, postgres)"
    )


def test_bad_override_shows_it(demo: Composer) -> None:
    message = error_of(lambda: demo.compose(["optimizer.lr==1"]))
    assert message.startswith("bad override 'optimizer.lr==1': "), message
    assert "extraneous input '='" in message
    message = error_of(lambda: demo.compose(["x='open"]))
    assert message == 'bad override "x=\'open": unexpected input at column 3: "\'open"'


def test_unknown_key_says_to_use_plus(demo: Composer) -> None:
    for action in (demo.compose, lambda o: demo.compose_many([o])):
        message = error_of(lambda a=action: a(["optimizer.nesterov=true"]))  # type: ignore[misc]
        assert message.startswith("optimizer.nesterov=true: no key 'optimizer.nesterov'")
        assert "use '+optimizer.nesterov=true' to add it" in message


def test_missing_interpolation_names_the_key(demo: Composer) -> None:
    message = error_of(lambda: demo.compose(["+report.title=${experiment.name}"]))
    assert message == "report.title: Interpolation key 'experiment.name' not found"
    # deleting the group an interpolation points into
    message = error_of(lambda: demo.compose_many([["~embeddings"]]))
    assert message == "model.input_size: Interpolation key 'embeddings.dim' not found"


def test_missing_mandatory_value(tree: TreeFactory) -> None:
    files = dict(SMALL)
    files["config.yaml"] = "defaults:\n  - db: mysql\ntoken: ???\n"
    composer = Composer(tree(files))
    assert error_of(lambda: composer.compose([])) == (
        "token: missing mandatory value '???' (set it with token=VALUE)"
    )
    assert composer.compose(["token=abc"])["token"] == "abc"


def test_other_hydra_errors_are_one_line(demo: Composer) -> None:
    cases = {
        "+optimizer.lr=1": "An item is already at 'optimizer.lr'",
        "~nothing": "~nothing: Could not delete from config. 'nothing' does not exist.",
        "++optimizer=adam": "force-add of config groups is not supported",
        "optimizer=5": "optimizer=5: 'optimizer' is a config group",
        "optimizer.lr=1,2": "optimizer.lr=1,2: a sweep (several values)",
        "foo@bar=1": "config group 'foo' does not exist",
    }
    for override, expected in cases.items():
        assert expected in error_of(lambda o=override: demo.compose([o])), override  # type: ignore[misc]
        assert expected in error_of(lambda o=override: demo.compose_many([[o]])), override  # type: ignore[misc]


def test_yaml_broken_after_validation(tree: TreeFactory) -> None:
    root = tree(SMALL)
    composer = Composer(root)
    (root / "db" / "mysql.yaml").write_text("driver: [\n")
    assert error_of(lambda: composer.compose([])).startswith("conf/db/mysql.yaml:2:1: ")


# --------------------------------------------------------------------------- process state


def test_many_composers_in_one_process_leave_hydra_as_found(tree: TreeFactory) -> None:
    small = Composer(tree(SMALL))
    demo = Composer(DEMO)
    base_before = VersionBase.instance().getbase()
    for _ in range(3):
        assert small.compose([])["db"]["driver"] == "mysql"
        assert demo.compose([])["optimizer"]["name"] == "SGD"
    assert not GlobalHydra.instance().is_initialized()
    assert VersionBase.instance().getbase() == base_before
    with initialize_config_dir(config_dir=str(DEMO), version_base=None):
        before = GlobalHydra.instance()
        assert small.compose(["db=postgres"])["db"]["driver"] == "postgres"
        assert GlobalHydra.instance() is before and before.is_initialized()
        assert hydra_compose(config_name="config")["optimizer"]["name"] == "SGD"


def test_threads_are_serialized(tree: TreeFactory) -> None:
    composer = Composer(tree(SMALL))
    results: list[str] = []
    errors: list[BaseException] = []

    def work(choice: str) -> None:
        try:
            results.append(composer.compose([f"db={choice}"])["db"]["driver"])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(c,)) for c in ["mysql", "postgres"] * 4]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sorted(results) == ["mysql"] * 4 + ["postgres"] * 4


def test_prints_nothing(demo: Composer, capfd: pytest.CaptureFixture[str]) -> None:
    demo.compose(["optimizer=adam"])
    demo.compose_many([["model=lstm"], ["optimizer.lr=2"]])
    with pytest.raises(ConfigError):
        demo.compose(["optimizer=nope"])
    assert capfd.readouterr() == ("", "")


# --------------------------------------------------------------------------- fast path


def test_compose_many_composes_each_defaults_list_once(
    demo: Composer, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []
    real = configmod.hydra_compose

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(list(kwargs.get("overrides", [])))
        return real(*args, **kwargs)

    monkeypatch.setattr(configmod, "hydra_compose", counting)
    points = expand_sweep(
        ["optimizer=SGD,adam", "model=lstm,bi_lstm", "optimizer.lr=range(0,10)"], demo
    )
    configs = demo.compose_many(points)
    assert len(configs) == 40
    assert len(calls) == 4
    assert configs[0]["optimizer"]["lr"] == 0 and configs[-1]["optimizer"]["lr"] == 9
    assert configs[-1]["optimizer"]["name"] == "adam"
    assert configs[-1]["model"]["name"] == "bi_lstm"


def test_compose_many_handles_duplicates_and_empty(demo: Composer) -> None:
    assert demo.compose_many([]) == []
    a, b = demo.compose_many([["optimizer.lr=3"], ["optimizer.lr=3"]])
    assert a == b and a is not b


def test_compose_many_falls_back_for_defaults_and_hydra(demo: Composer) -> None:
    for point in (["hydra.job.name=x"], ["optimizer={lr: 5}"], ["optimizer.lr=1"]):
        assert demo.compose_many([point]) == [demo.compose(point)]


# hypothesis: random points on the demo tree, fast path == full compose (result or error)

_SCALARS = st.one_of(
    st.integers(-1000, 1000).map(str),
    st.floats(-10, 10, allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(
        [
            "true",
            "false",
            "null",
            "word",
            "'quoted, text'",
            "[1,2]",
            "[]",
            "{a: 1}",
            "'${optimizer.lr}'",
        ]
    ),
)
_INTERPOLATIONS = st.sampled_from(
    [
        "${optimizer.lr}",
        "${training_settings.seed}",
        "${model.input_size}",
        "${embeddings}",
        "${optimizer.momentum}",
        "lr_${optimizer.lr}",
    ]
)
_EXISTING = st.sampled_from(
    [
        "optimizer.lr",
        "optimizer.momentum",
        "optimizer.betas",
        "model.hidden_size",
        "model.dropout",
        "embeddings.dim",
        "dataset.num_samples",
        "training_settings.seed",
        "data_loader.batch_size",
        "training_settings",
    ]
)
_GROUP_CHOICES = st.sampled_from(
    [
        "optimizer=adam",
        "optimizer=SGD",
        "model=lstm",
        "model=bi_lstm_bidirectionnal",
        "dataset=all",
        "embeddings=fast_text_character",
        "~embeddings",
        "~dataset",
    ]
)
_NEW = st.sampled_from(
    ["extra", "extra.nested", "training_settings.patience", "optimizer.nesterov"]
)
_DELETABLE = st.sampled_from(
    [
        "data_loader.shuffle",
        "training_settings.device",
        "optimizer.momentum",
        "optimizer.betas",
        "model",
        "nothing.here",
    ]
)
_OVERRIDE = st.one_of(
    _GROUP_CHOICES,
    st.builds(lambda k, v: f"{k}={v}", _EXISTING, st.one_of(_SCALARS, _INTERPOLATIONS)),
    st.builds(lambda k, v: f"+{k}={v}", _NEW, st.one_of(_SCALARS, _INTERPOLATIONS)),
    st.builds(lambda k, v: f"++{k}={v}", st.one_of(_NEW, _EXISTING), _SCALARS),
    st.builds(lambda k: f"~{k}", _DELETABLE),
)
_POINT = st.lists(_OVERRIDE, max_size=5)


def _outcome(action: Callable[[], dict[str, Any]]) -> tuple[str, Any]:
    try:
        return ("ok", action())
    except ConfigError as exc:
        return ("error", str(exc))


_PROPERTY_COMPOSER = Composer(DEMO)


# each example costs a few full Hydra composes (~0.1 s each): keep the count modest
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(points=st.lists(_POINT, min_size=1, max_size=2))
def test_fast_path_equals_full_compose(points: list[list[str]]) -> None:
    composer = _PROPERTY_COMPOSER
    try:
        fast = composer.compose_many(points)
    except ConfigError as exc:
        # the first failing point must fail the same way on its own
        outcomes = [_outcome(lambda p=p: composer.compose(p)) for p in points]  # type: ignore[misc]
        first_error = next(o for o in outcomes if o[0] == "error")
        assert first_error == ("error", str(exc))
        return
    for point, result in zip(points, fast, strict=True):
        assert result == composer.compose(point), point


# --------------------------------------------------------------------------- serialization


def test_to_yaml_and_to_json_are_deterministic(demo: Composer) -> None:
    cfg = demo.compose([])
    shuffled = dict(reversed(list(cfg.items())))
    assert to_yaml(cfg) == to_yaml(shuffled)
    assert to_yaml(cfg).startswith("data_loader:\n  batch_size: 2048\n")
    assert to_json(cfg) == to_json(shuffled) and to_json(cfg).endswith("}\n")
    assert to_yaml({"name": "café"}) == "name: café\n"


def test_digest_and_flatten(demo: Composer) -> None:
    cfg = demo.compose([])
    assert config_digest(cfg) == config_digest(demo.compose_many([[]])[0])
    assert config_digest(cfg).startswith("sha256:")
    assert config_digest(cfg) != config_digest(demo.compose(["optimizer.lr=0.2"]))
    flat = flatten(cfg)
    assert flat["optimizer.lr"] == 0.1
    assert flat["training_settings.seed"] == 42
    assert flatten({"a": {"b": [1, {"c": 2}], "e": {}}}) == {"a.b": [1, {"c": 2}], "a.e": {}}
    with pytest.raises(ConfigError):
        config_digest({"x": float("nan")})
