"""Sweep values are read in one place: a grid and a search refuse the same axis alike."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.compose.config import Composer
from orchestrator.compose.overrides import expand_sweep
from orchestrator.compose.space import parse_space
from orchestrator.errors import ConfigError

DEMO = Path(__file__).resolve().parent.parent / "configs"


@pytest.fixture(scope="module")
def demo() -> Composer:
    return Composer(DEMO)


def error_of(action: Callable[[], object]) -> str:
    with pytest.raises(ConfigError) as caught:
        action()
    return str(caught.value)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        # Hydra's own HydraException, raised while the values are taken
        ("x=range(0.5,1.5,0)", "x=range(0.5,1.5,0): Invalid range values (start:0.5, "
                               "stop:1.5, step:0)"),
        # Python's ValueError under range(): once an internal error in a search
        ("x=range(1,5,0)", "x=range(1,5,0): invalid sweep: range() arg 3 must not be zero"),
        # orch's own error, from the group listing glob() asks for
        ("x=glob(*)", "x=glob(*): no config group 'x' in configs (groups: dataset, "
                      "embeddings, model, optimizer)"),
        ("x=range(3,3)", "x=range(3,3): the sweep has no values"),
    ],
)
def test_a_search_refuses_an_axis_as_the_grid_does(
    demo: Composer, override: str, expected: str
) -> None:
    assert error_of(lambda: expand_sweep([override], demo)) == expected
    assert error_of(lambda: parse_space([override], demo)) == expected


def test_the_values_of_an_axis_are_the_same(demo: Composer) -> None:
    grid = expand_sweep(["model=glob(*,exclude=bi_*)"], demo)
    (param,) = parse_space(["model=glob(*,exclude=bi_*)"], demo).params
    assert [point[0] for point in grid] == [f"model={c}" for c in param.choices]
