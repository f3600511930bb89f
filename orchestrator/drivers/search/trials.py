"""What a search is made of, before any trial runs: its id (the same from any machine
that submits the same search), its trials' stored objects, and a random search's points
(drawn up front, run as a grid)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..._util.canonical import short_id
from ...compose import config as configmod
from ...compose.space import Space, parse_space, random_points
from ...image.builder import Environment
from ...schema.spec import RUN_ID_LENGTH
from ..grid import compose_each, composer_for, point_inputs
from .study import SearchOptions


@dataclass
class Trial:
    """One trial of the search: its number, parameters and (once composed) run."""

    number: int
    params: dict[str, Any]
    run_id: str = ""
    overrides: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"number": self.number, "run_id": self.run_id, "params": self.params}

    def to_object(self) -> dict[str, Any]:
        """The stored trial object: what the document lists, and the run's overrides."""
        return {**self.to_json(), "overrides": list(self.overrides)}

    @classmethod
    def from_json(cls, item: Any) -> Trial | None:
        if not (isinstance(item, dict) and isinstance(item.get("params"), dict)
                and isinstance(item.get("number"), int) and isinstance(item.get("run_id"), str)):
            return None
        overrides = item.get("overrides")
        return cls(item["number"], item["params"], item["run_id"],
                   tuple(str(o) for o in overrides) if isinstance(overrides, list) else ())



def search_sweep_id(
    project: Any, env: Environment, args: Sequence[str], options: SearchOptions,
    digests: dict[str, str],
) -> str:
    identity = {
        "project": project.name,
        "env_key": env.env_key,
        "code_key": env.code_key,
        "command": list(project.command),
        "env": [list(pair) for pair in project.env],
        "gpus": project.resources.gpus,
        "inputs": dict(sorted(digests.items())),
        "args": list(args),
        "search": options.identity(),
    }
    return short_id(identity, RUN_ID_LENGTH)


def compose_space(project: Any, args: Sequence[str]) -> tuple[configmod.Composer, Space]:
    """The project's composer (keeping what it composed across the trials' calls) and the
    search space of ``args``."""
    composer = composer_for(project, reuse=True)
    return composer, parse_space(args, composer)


def random_search_points(
    project: Any, args: Sequence[str], options: SearchOptions
) -> tuple[Space, list[tuple[tuple[str, ...], dict[str, Any]]]]:
    """The space and the composed points of a seeded random search: a grid of
    ``--trials`` points drawn up front, run and skipped like any grid."""
    composer, space = compose_space(project, args)
    points = random_points(space, options.seed, options.trials)
    composed = compose_each(composer, points, project.overrides)
    point_inputs(project, composed)  # an unknown input is a config error, found up front
    return space, composed
