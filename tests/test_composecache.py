"""The compose cache: a hit gives exactly what a fresh composition gives, and any change to
the config tree misses it."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from orchestrator.compose import config as configmod
from orchestrator.compose.cache import ComposeCache
from orchestrator.compose.config import Composed, Composer, run_env
from orchestrator.compose.overrides import expand_sweep

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
#: The lightning-hydra-template's documented environment (see test_hydra_differential).
LHT_ENV = {"PROJECT_ROOT": "/workspace/project", "COMET_API_TOKEN": "t", "NEPTUNE_API_TOKEN": "t"}

#: (tree, primary config, keep the hydra node, environment, sweeps)
PROJECTS: dict[str, tuple[Path, str, bool, dict[str, str], list[list[str]]]] = {
    "demo": (REPO / "configs", "config", False, {}, [
        [],
        ["optimizer=SGD,adam", "training_settings.seed=1,2"],
        ["model=glob(*)", "+extra.note=${model.name}"],
        ["~training_settings.epochs", "dataset.test_fraction=0.25"],
    ]),
    "demo, as a Hydra application": (REPO / "configs", "config", True, {}, [
        ["optimizer=SGD,adam", "+run_dir=${hydra:runtime.output_dir}"],
    ]),
    "lightning-hydra-template": (
        FIXTURES / "lightning-hydra-template" / "configs", "train", True, LHT_ENV, [
            [],
            ["trainer=glob(*)"],
            ["experiment=example", "seed=1,2", "model.optimizer.lr=0.01,0.002"],
            ["debug=fdr", "model=mnist", "tags=[a,b]"],
        ],
    ),
    "hydra app fixture": (FIXTURES / "hydra-app" / "configs", "train", True, {}, [
        [],
    ]),
}


def typed(value: Any) -> Any:
    """``value`` with every leaf's type beside it, and dict order kept: equal only when
    equal exactly (1 is not 1.0 nor True; a tuple is not a list)."""
    if isinstance(value, dict):
        return ("dict", [(key, typed(item)) for key, item in value.items()])
    if isinstance(value, list | tuple):
        return (type(value).__name__, [typed(item) for item in value])
    return (type(value).__name__, repr(value))


def as_plain(composed: list[Composed]) -> list[Any]:
    return [typed([c.config, c.hydra, c.node, c.deferred]) for c in composed]


def composer(tree: Path, name: str, keep: bool, env: dict[str, str],
             cache: ComposeCache | None) -> Composer:
    return Composer(tree, name, "train", env=run_env(env), keep_hydra=keep, cache=cache)


def sweep_of(tree: Path, name: str, keep: bool, env: dict[str, str], args: list[str],
             cache: ComposeCache | None) -> tuple[list[Any], tuple[Path, ...]]:
    made = composer(tree, name, keep, env, cache)
    points = expand_sweep(args, made)
    return as_plain(made.compose_points(points)), made.files_read()


@pytest.mark.parametrize("project", list(PROJECTS))
def test_a_hit_gives_what_a_fresh_composition_gives(project: str, tmp_path: Path) -> None:
    source, name, keep, env, sweeps = PROJECTS[project]
    tree = tmp_path / "configs"
    shutil.copytree(source, tree)
    cache = ComposeCache(tmp_path / "cache")
    for args in sweeps:
        fresh = sweep_of(tree, name, keep, env, args, None)
        first = sweep_of(tree, name, keep, env, args, cache)  # a miss: composed, stored
        stored = len(list(cache.root.glob("*.json")))
        hit = sweep_of(tree, name, keep, env, args, cache)
        assert len(list(cache.root.glob("*.json"))) == stored  # nothing new: it was a hit
        assert first == fresh
        assert hit == fresh
    assert len(list(cache.root.glob("*.json"))) == len(sweeps)


@pytest.mark.parametrize(("project", "first", "then"), [
    ("demo", ["training_settings.seed=1"], ["training_settings.seed=2,3", "+x=${model.name}"]),
    ("demo, as a Hydra application", ["optimizer=adam"],
     ["optimizer=adam", "training_settings.seed=4,5"]),
    ("lightning-hydra-template", ["experiment=example"],
     ["experiment=example", "seed=3", "trainer.max_epochs=2"]),
])
def test_a_defaults_list_from_the_cache_gives_what_hydra_gives(
    project: str, first: list[str], then: list[str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another sweep with the same group choices composes its points on the defaults list
    an earlier process composed (only the plain values differ)."""
    source, name, keep, env, _ = PROJECTS[project]
    tree = tmp_path / "configs"
    shutil.copytree(source, tree)
    cache = ComposeCache(tmp_path / "cache")
    sweep_of(tree, name, keep, env, first, cache)
    (base,) = cache.root.glob("*.base")
    calls: list[Any] = []
    compose = configmod.hydra_compose
    monkeypatch.setattr(configmod, "hydra_compose", lambda **kw: calls.append(kw) or compose(**kw))
    cached = sweep_of(tree, name, keep, env, then, cache)
    assert calls == []  # Hydra composed nothing: the defaults list came from the cache
    assert list(cache.root.glob("*.base")) == [base]
    assert cached == sweep_of(tree, name, keep, env, then, None)
    assert calls  # (the spy sees Hydra's compositions)


def test_every_change_to_the_tree_misses(tmp_path: Path) -> None:
    tree = tmp_path / "configs"
    shutil.copytree(REPO / "configs", tree)
    cache = ComposeCache(tmp_path / "cache")
    args = ["model=glob(*)"]

    def check(entries: int) -> list[Any]:
        composed, _ = sweep_of(tree, "config", False, {}, args, cache)
        assert composed == sweep_of(tree, "config", False, {}, args, None)[0]
        assert len(list(cache.root.glob("*.json"))) == entries
        return composed

    before = check(1)
    lstm = tree / "model" / "lstm.yaml"
    lstm.write_text(lstm.read_text().replace("hidden_size: ", "hidden_size: 1"))
    assert check(2) != before  # an edited option
    (tree / "model" / "gru.yaml").write_text("name: gru\nhidden_size: 3\n")
    assert len(check(3)) == len(before) + 1  # a new option in a group: glob() sees it
    (tree / "scheduler").mkdir()
    check(4)  # a new, empty group dir: whether a key is a group can change
    (tree / "scheduler" / "cosine.yaml").write_text("warmup: 1\n")
    check(5)
    # editing a file back gives the earlier entry again
    (tree / "scheduler" / "cosine.yaml").unlink()
    check(5)


def test_other_settings_miss(tmp_path: Path) -> None:
    cache = ComposeCache(tmp_path / "cache")
    tree = REPO / "configs"
    sweep_of(tree, "config", False, {}, [], cache)
    sweep_of(tree, "config", True, {}, [], cache)  # the hydra node kept
    sweep_of(tree, "config", False, {"A": "1"}, [], cache)  # another run environment
    sweep_of(tree, "config", False, {}, ["training_settings.seed=3"], cache)
    assert len(list(cache.root.glob("*.json"))) == 4


def test_a_corrupt_entry_is_a_miss(tmp_path: Path) -> None:
    cache = ComposeCache(tmp_path / "cache")
    tree = REPO / "configs"
    fresh = sweep_of(tree, "config", False, {}, [], None)
    sweep_of(tree, "config", False, {}, [], cache)
    (entry,) = cache.root.glob("*.json")
    for garbage in [b"", b"{not json", b"[]", json.dumps({"key": "other"}).encode(),
                    entry.read_bytes()[:-20]]:
        entry.write_bytes(garbage)
        assert sweep_of(tree, "config", False, {}, [], cache) == fresh
        assert json.loads(entry.read_bytes())["key"] == entry.stem  # written again


def test_a_defaults_list_another_user_could_have_written_is_not_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A cached defaults list is a pickle, which runs code when loaded: one that a group or
    others could write is composed again with Hydra, never unpickled."""
    tree = REPO / "configs"
    cache = ComposeCache(tmp_path / "cache")
    sweep_of(tree, "config", False, {}, ["optimizer=SGD"], cache)
    (base,) = cache.root.glob("*.base")
    assert cache.root.stat().st_mode & 0o777 == 0o700
    calls: list[Any] = []
    compose = configmod.hydra_compose
    monkeypatch.setattr(configmod, "hydra_compose", lambda **kw: calls.append(kw) or compose(**kw))
    for loose, point in ((base, ["optimizer=SGD", "optimizer.lr=0.5"]),
                         (cache.root, ["optimizer=SGD", "optimizer.lr=0.6"])):
        loose.chmod(0o666 if loose == base else 0o777)
        fresh = sweep_of(tree, "config", False, {}, point, cache)  # a new point: no result hit
        assert calls, f"{loose.name} writable by others, and its pickle was loaded"
        assert fresh == sweep_of(tree, "config", False, {}, point, None)
        loose.chmod(0o600 if loose == base else 0o700)
        calls.clear()


def test_the_clock_is_never_cached(tmp_path: Path) -> None:
    tree = tmp_path / "configs"
    tree.mkdir()
    (tree / "config.yaml").write_text("stamp: ${now:%H:%M:%S.%f}\nx: 1\n")
    cache = ComposeCache(tmp_path / "cache")
    sweep_of(tree, "config", False, {}, [], cache)
    assert not list(cache.root.glob("*.json"))
    # ${now:...} in Hydra's run directory, which orch replaces, is never read: cached
    (tree / "config.yaml").write_text("x: 1\nhydra:\n  run:\n    dir: out/${now:%H}\n")
    sweep_of(tree, "config", True, {}, [], cache)
    assert len(list(cache.root.glob("*.json"))) == 1


def test_the_cache_keeps_the_most_recent_entries(tmp_path: Path) -> None:
    cache = ComposeCache(tmp_path / "cache", max_entries=2)
    tree = REPO / "configs"
    for seed in range(5):
        sweep_of(tree, "config", False, {}, [f"training_settings.seed={seed}"], cache)
    assert len(list(cache.root.iterdir())) == 2  # the last sweep, its defaults list


def test_concurrent_writers_leave_one_whole_entry(tmp_path: Path) -> None:
    cache = ComposeCache(tmp_path / "cache")
    composed = [{"config": {"a": [1, 2.5, None, "x"]}, "hydra": {"hydra.job.num": 0},
                 "node": None, "deferred": []}]
    key = "0" * 64
    threads = [threading.Thread(target=cache.put, args=(key, composed, ["/f.yaml"]))
               for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [p.name for p in cache.root.iterdir()] == [f"{key}.json"]  # no temporary left
    hit = cache.get(key)
    assert hit is not None and hit.composed == composed and hit.files == ("/f.yaml",)
