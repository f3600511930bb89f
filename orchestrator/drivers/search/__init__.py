"""Search beyond the grid: seeded random search and Optuna-driven adaptive search with
pruning, each trial an ordinary orch run (see :mod:`.driver` for the design)."""

from __future__ import annotations

from .driver import SearchDriver as SearchDriver
from .study import ADAPTIVE as ADAPTIVE
from .study import PRUNERS as PRUNERS
from .study import SAMPLERS as SAMPLERS
from .study import Objective as Objective
from .study import SearchOptions as SearchOptions
from .study import parse_objectives as parse_objectives
from .trials import compose_space as compose_space
from .trials import random_search_points as random_search_points
from .trials import search_sweep_id as search_sweep_id

__all__ = [
    "ADAPTIVE",
    "PRUNERS",
    "SAMPLERS",
    "Objective",
    "SearchDriver",
    "SearchOptions",
    "compose_space",
    "parse_objectives",
    "random_search_points",
    "search_sweep_id",
]
