"""Sweep expansion: Hydra's sweep grammar to a deterministic grid, in BasicSweeper's order."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hydra import initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator._util.canonical import digest
from orchestrator.compose.config import Composer, config_digest, expand_sweep
from orchestrator.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "configs"


@pytest.fixture(scope="module")
def demo() -> Composer:
    return Composer(DEMO)


def basic_sweeper_grid(overrides: list[str]) -> list[tuple[str, ...]]:
    """The jobs Hydra's own BasicSweeper would launch for these arguments."""
    with initialize_config_dir(config_dir=str(DEMO), version_base=None):
        loader = GlobalHydra.instance().config_loader()
        parsed = OverridesParser.create(config_loader=loader).parse_overrides(overrides)
        (batch,) = BasicSweeper.split_arguments(parsed, None)
    return [tuple(job) for job in batch]


def hydra_spelling(point: tuple[str, ...]) -> tuple[str, ...]:
    """orch writes a bare deletion as ``~key``; Hydra as ``~key=null`` (same meaning)."""
    return tuple(o + "=null" if o.startswith("~") and "=" not in o else o for o in point)


# --------------------------------------------------------------------------- grids


@pytest.mark.parametrize(
    "overrides",
    [
        ["optimizer=SGD,adam", "model=lstm,bi_lstm", "optimizer.lr=range(0,5)"],
        ["a=1,2", "b=choice(x,y)", "a=3,4"],  # a repeated key keeps its first position
        ["+x=1", "x=2,3", "++x=4"],  # prefixes make different keys
        ["optimizer=glob(*)", "model=glob(*,exclude=bi_*)"],
        ["model=glob([lstm,bi_lstm])", "embeddings=glob(*character)"],
        ["lr=range(0.1,0.5,0.1)", "steps=range(10,0,-3)"],
        ["x=[1,2],[3]", "y='a,b'", r"z=a\,b", "w={a: 1}", "v=null,true,1.5,'q'"],
        ["~data_loader.shuffle", "+extra=1,2", "dataset=all"],
        ["training_settings.seed=range(3)"],
    ],
)
def test_grid_equals_basic_sweepers(demo: Composer, overrides: list[str]) -> None:
    grid = expand_sweep(overrides, demo)
    assert [hydra_spelling(p) for p in grid] == basic_sweeper_grid(overrides)


def test_demo_1000_point_grid(demo: Composer) -> None:
    grid = expand_sweep(
        ["optimizer=SGD,adam", "model=lstm,bi_lstm", "optimizer.lr=range(0,250)"], demo
    )
    assert len(grid) == 1000 and len(set(grid)) == 1000
    assert grid[0] == ("optimizer=SGD", "model=lstm", "optimizer.lr=0")
    assert grid[1] == ("optimizer=SGD", "model=lstm", "optimizer.lr=1")  # last axis fastest
    assert grid[250] == ("optimizer=SGD", "model=bi_lstm", "optimizer.lr=0")
    assert grid[-1] == ("optimizer=adam", "model=bi_lstm", "optimizer.lr=249")


def test_plain_overrides_are_one_point(demo: Composer) -> None:
    assert expand_sweep([], demo) == [()]
    assert expand_sweep(["optimizer=adam", "~model", "x=[1, 2]"], demo) == [
        ("optimizer=adam", "~model", "x=[1,2]")
    ]


def test_range_choice_glob(demo: Composer) -> None:
    assert expand_sweep(["a=range(1,4)"], demo) == [("a=1",), ("a=2",), ("a=3",)]
    # inside a sweep Hydra unquotes strings and escapes instead: same value
    assert expand_sweep(["a=choice('x y',2)"], demo) == [("a=x\\ y",), ("a=2",)]
    assert _PARSER.parse_override("a=x\\ y").value() == "x y"
    assert expand_sweep(["optimizer=glob(*)"], demo) == [("optimizer=SGD",), ("optimizer=adam",)]
    assert expand_sweep(["model=glob(*,exclude=[bi_*,*bidirectionnal])"], demo) == [("model=lstm",)]


def test_choice_function_refuses_null(demo: Composer) -> None:
    # a Hydra quirk worth knowing: a=null,1 sweeps, a=choice(null,1) does not parse
    assert expand_sweep(["a=null,1"], demo) == [("a=null",), ("a=1",)]
    with pytest.raises(ConfigError, match=r"^bad override 'a=choice\(null,1\)': "):
        expand_sweep(["a=choice(null,1)"], demo)


def test_sweep_errors_are_one_line(demo: Composer) -> None:
    cases = {
        "optimizer.lr=interval(0,1)": "a grid takes only discrete sweeps",
        "optimizer.lr=shuffle(1,2,3)": "shuffle() is random",
        "a=shuffle(range(3))": "shuffle() is random",
        "scheduler=glob(*)": "scheduler=glob(*): no config group 'scheduler'",
        "model=glob(gru*)": "model=glob(gru*): the sweep has no values",
        "optimizer.lr==1,2": "bad override 'optimizer.lr==1,2'",
    }
    for override, expected in cases.items():
        with pytest.raises(ConfigError) as info:
            expand_sweep([override], demo)
        assert expected in str(info.value) and "\n" not in str(info.value), override


def test_grid_composes(demo: Composer) -> None:
    grid = expand_sweep(["optimizer=glob(*)", "optimizer.lr=0.5,0.05"], demo)
    configs = demo.compose_many(grid)
    assert [(c["optimizer"]["name"], c["optimizer"]["lr"]) for c in configs] == [
        ("SGD", 0.5),
        ("SGD", 0.05),
        ("adam", 0.5),
        ("adam", 0.05),
    ]


# --------------------------------------------------------------------------- parsing round trips

_KEY = st.from_regex(r"[a-z][a-z0-9_]{0,6}(\.[a-z][a-z0-9_]{0,6}){0,2}", fullmatch=True)
_TEXT = st.text(
    alphabet=st.characters(
        codec="utf-8", exclude_categories=("Cs", "Cc"), exclude_characters="'\"\\"
    ),
    max_size=12,
)
_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=False, allow_infinity=False),
    _TEXT,
)
_VALUE = st.recursive(
    _LEAF,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,5}", fullmatch=True), inner, max_size=3),
    ),
    max_leaves=6,
)


def render(value: Any) -> str:
    """A value in Hydra's override grammar (strings always quoted)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, list):
        return "[" + ",".join(render(v) for v in value) + "]"
    return "{" + ",".join(f"{k}:{render(v)}" for k, v in value.items()) + "}"


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


_PARSER = OverridesParser.create()
_COMPOSER = Composer(DEMO)


@settings(max_examples=200, deadline=None)
@given(key=_KEY, value=_VALUE)
def test_plain_override_round_trips(key: str, value: Any) -> None:
    ((line,),) = expand_sweep([f"{key}={render(value)}"], _COMPOSER)
    assert line.startswith(f"{key}=")
    assert same(_PARSER.parse_override(line).value(), value)
    # the spelling orch stores is a fixed point
    assert expand_sweep([line], _COMPOSER) == [(line,)]


@settings(max_examples=100, deadline=None)
@given(key=_KEY, values=st.lists(_VALUE, min_size=2, max_size=4))
def test_choice_sweep_round_trips(key: str, values: list[Any]) -> None:
    # the simple form a=x,y,z: Hydra's choice() function refuses null arguments
    grid = expand_sweep([f"{key}={','.join(render(v) for v in values)}"], _COMPOSER)
    assert len(grid) == len(values)
    for (line,), value in zip(grid, values, strict=True):
        assert same(_PARSER.parse_override(line).value(), value)


@settings(max_examples=100, deadline=None)
@given(
    start=st.integers(-50, 50),
    length=st.integers(1, 20),
    step=st.integers(1, 7),
    prefix=st.sampled_from(["", "+", "++"]),
)
def test_range_sweep_round_trips(start: int, length: int, step: int, prefix: str) -> None:
    stop = start + length * step
    grid = expand_sweep([f"{prefix}n=range({start},{stop},{step})"], _COMPOSER)
    assert grid == [(f"{prefix}n={i}",) for i in range(start, stop, step)]


# --------------------------------------------------------------------------- canonical digests

_JSONISH = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=8),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


def reorder(value: Any, rng: random.Random) -> Any:
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: reorder(v, rng) for k, v in items}
    if isinstance(value, list):
        return [reorder(v, rng) for v in value]
    return value


@settings(max_examples=200, deadline=None)
@given(config=st.dictionaries(st.text(max_size=6), _JSONISH, max_size=6), seed=st.integers())
def test_digest_ignores_key_order(config: dict[str, Any], seed: int) -> None:
    shuffled = reorder(config, random.Random(seed))
    assert config_digest(shuffled) == config_digest(config) == digest(config)


@settings(max_examples=100, deadline=None)
@given(config=st.dictionaries(st.text(max_size=6), _JSONISH, max_size=6))
def test_digest_survives_a_json_round_trip(config: dict[str, Any]) -> None:
    assert config_digest(json.loads(json.dumps(config))) == config_digest(config)


def test_digest_is_pinned() -> None:
    value = {
        "optimizer": {"lr": 0.1, "name": "SGD"},
        "seed": 42,
        "tags": ["a", "é"],
        "none": None,
        "flag": True,
    }
    assert config_digest(value) == (
        "sha256:b670b353fb0dfce7b43c2ffdb6ea22b8666ad94ad1542ae4392735ebefe06fae"
    )


def test_composed_digest_is_stable_across_processes(demo: Composer) -> None:
    code = (
        "from pathlib import Path; from orchestrator.compose.config import Composer, config_digest;"
        f"print(config_digest(Composer(Path({str(DEMO)!r})).compose(['optimizer=adam'])))"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"},
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert outputs == {config_digest(demo.compose(["optimizer=adam"]))}
