"""``orch best``: the one best run of a selection, and what makes it differ.

A pure function over run records, like the rest of :mod:`orchestrator.results`.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import UsageError
from .table import _HIGHER_IS_BETTER, _LOWER_IS_BETTER
from .values import display_value, flatten, format_number, is_number, metric_names, printable
from .where import select


def parse_objective(text: str, known: Sequence[str]) -> tuple[str, bool]:
    """``loss`` / ``loss:min`` / ``accuracy:max`` -> (metric, maximize)."""
    name, sep, direction = text.partition(":")
    name = name.strip()
    if name.startswith("metrics."):
        name = name[len("metrics.") :]
    if not name or (sep and direction not in ("max", "min")):
        raise UsageError(f"bad objective {text!r}: expected METRIC, METRIC:max or METRIC:min")
    if name not in known:
        close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
        listed = ", ".join(close or known) or "none"
        raise UsageError(
            f"unknown metric {name!r} ({'close' if close else 'known'}: {listed})"
        )
    if sep:
        return name, direction == "max"
    # No direction given: losses and errors go down, accuracies and scores up.
    return name, bool(_HIGHER_IS_BETTER.search(name) and not _LOWER_IS_BETTER.search(name))


def find_best(
    records: Sequence[Mapping[str, Any]], objective: str, where: Sequence[str] = ()
) -> dict[str, Any]:
    """The best succeeded run by ``objective``, with its diff to the runner-up."""
    finished = [r for r in records if r.get("status") == "succeeded"]
    name, maximize = parse_objective(objective, metric_names(finished))
    selected = select(finished, where)
    ranked = [r for r in selected if is_number((r.get("metrics") or {}).get(name))]
    if not ranked:
        raise UsageError(f"no succeeded run has metric {name!r}"
                         + (" among those --where selects" if where else ""))
    ranked.sort(key=lambda r: float(r["metrics"][name]), reverse=maximize)
    top = ranked[0]
    second = ranked[1] if len(ranked) > 1 else None
    answer: dict[str, Any] = {
        "metric": name,
        "direction": "max" if maximize else "min",
        "value": top["metrics"][name],
        "candidates": len(ranked),
        "sweeps": len({r.get("sweep_id") for r in ranked}),
        "run_id": top.get("run_id"),
        "sweep_id": top.get("sweep_id"),
        "sweep_name": top.get("sweep_name"),
        "tags": list(top.get("tags") or []),
        "overrides": list(top.get("overrides") or []),
        "config": top.get("config") or {},
        "metrics": top.get("metrics") or {},
        "image_id": top.get("image_id"),
        "repo_digest": top.get("repo_digest"),
        "git_commit": top.get("git_commit"),
        "runner_up": None,
    }
    if second is not None:
        mine, theirs = flatten(top.get("config") or {}), flatten(second.get("config") or {})
        keys = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
        answer["runner_up"] = {
            "run_id": second.get("run_id"),
            "value": second["metrics"][name],
            "config_diff": {k: [mine.get(k), theirs.get(k)] for k in keys},
        }
    return answer


def render_best(answer: Mapping[str, Any]) -> str:
    name = answer["metric"]
    sweep = answer.get("sweep_name") or ""
    sweep_text = f"{sweep} ({answer['sweep_id']})" if sweep else str(answer.get("sweep_id"))
    lines = [
        f"best {name} ({answer['direction']}): {format_number(answer['value'])}  "
        f"run {answer['run_id']}  of {answer['candidates']} runs in {answer['sweeps']} sweeps",
        f"sweep:      {sweep_text}" + (f"  tags: {', '.join(answer['tags'])}"
                                       if answer.get("tags") else ""),
        f"overrides:  {' '.join(answer['overrides']) or '(none)'}",
    ]
    up = answer.get("runner_up")
    if up:
        lines.append(f"vs runner-up {up['run_id']} ({name} {format_number(up['value'])}):")
        diff = up["config_diff"]
        for key, (mine, theirs) in diff.items():
            lines.append(f"  {key}: {display_value(mine)}  (runner-up: {display_value(theirs)})")
        if not diff:
            lines.append("  same config")
    others = {k: v for k, v in (answer.get("metrics") or {}).items() if k != name}
    if others:
        shown = ", ".join(f"{k}={format_number(v)}" for k, v in sorted(others.items()))
        lines.append(f"metrics:    {shown}")
    lines.append(f"image:      {answer.get('image_id') or '-'}"
                 + (f"  ({answer['repo_digest']})" if answer.get("repo_digest") else ""))
    if answer.get("git_commit"):
        lines.append(f"commit:     {answer['git_commit']}")
    lines.append(f"rerun:      {answer.get('rerun') or 'orch rerun ' + str(answer['run_id'])}")
    # names and values are the runs' (a metric name with an escape sequence): one line each
    return "\n".join(printable(line) for line in lines)
