"""Calls ``bench/ray_bench.py``'s ``main()`` in a child process, so
Ray's processes and global state never leak into the harness; null when it is absent."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from common import BenchError, run_timed
from context import Ctx

HERE = Path(__file__).resolve().parent

_CALL = """\
import inspect, json, sys
sys.path.insert(0, sys.argv[1])
import ray_bench
kwargs = {}
if "quick" in inspect.signature(ray_bench.main).parameters:
    kwargs["quick"] = sys.argv[2] in ("1", "2")
if "smoke" in inspect.signature(ray_bench.main).parameters:
    kwargs["smoke"] = sys.argv[2] == "2"
result = ray_bench.main(**kwargs)
print()
print(json.dumps(result, default=str))
"""


def ray(ctx: Ctx) -> dict[str, Any]:
    if not (HERE / "ray_bench.py").is_file():
        ctx.notes["ray_overhead_ratio_median3"] = "bench/ray_bench.py does not exist (yet)"
        return {"ray_overhead_ratio_median3": None}
    timed = run_timed(
        ctx.janitor,
        [sys.executable, "-c", _CALL, str(HERE), "2" if ctx.smoke else "1" if ctx.quick else "0"],
        timeout=1500,
        check=False,
        grace=90.0,  # ray_bench stops its nodes and second daemon itself on SIGTERM
    )
    lines = [line for line in timed.stdout.strip().splitlines() if line.strip()]
    try:
        result = json.loads(lines[-1])
    except (IndexError, ValueError):
        tail = " ".join(timed.stderr.strip().splitlines()[-2:])
        raise BenchError(
            f"ray_bench.main() gave no result (exit {timed.returncode}): {tail[-300:]}"
        ) from None
    if not isinstance(result, dict):
        raise BenchError(f"ray_bench.main() returned {type(result).__name__}, not a dict")
    figures = {
        (key if key.startswith("ray_") else f"ray_{key}"): value for key, value in result.items()
    }
    figures.setdefault("ray_overhead_ratio_median3", None)
    figures["ray_bench_wall_s"] = round(timed.seconds, 1)
    return figures
