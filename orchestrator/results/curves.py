"""Learning curves: a run's ``metrics.jsonl`` as one series of points per metric.

Each line is a JSON object of numbers with an optional ``step`` (else its line number,
counting the lines that parsed); ``epoch`` and ``time`` are bookkeeping, not curves. A
line that is not such an object is skipped, as while the run was live. Points are kept as
two arrays of doubles per metric (16 bytes a point) and drawn from a downsampled copy, so
a run that logged a million steps costs megabytes, not a page that will not open.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Mapping, Sequence

from ..runner.live import number

#: Keys that are not plotted as curves.
NOT_CURVES = frozenset({"step", "epoch", "time"})
#: A curve is drawn from at most about this many points.
MAX_POINTS = 500

Series = tuple[Sequence[float], Sequence[float]]  # steps, values
Curves = Mapping[str, Series]  # metric name -> series



def _finite(value: object) -> float | None:
    checked = number(value)
    return None if checked is None else float(checked)
def parse_curve(data: bytes) -> dict[str, Series]:
    """The step metrics in ``data`` (a ``metrics.jsonl``), by metric, in file order."""
    steps: dict[str, array[float]] = {}
    values: dict[str, array[float]] = {}
    count = 0
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            parsed = json.loads(line)
        except ValueError:
            continue
        if not isinstance(parsed, dict):
            continue
        count += 1
        step = _finite(parsed.get("step"))
        x = step if step is not None else float(count)
        for key, raw in parsed.items():
            y = _finite(raw)
            if key in NOT_CURVES or y is None:
                continue
            name = str(key)
            if name not in steps:
                steps[name], values[name] = array("d"), array("d")
            steps[name].append(x)
            values[name].append(y)
    return {name: (steps[name], values[name]) for name in steps}


def downsample(series: Series, limit: int = MAX_POINTS) -> list[tuple[float, float]]:
    """At most about ``limit`` points of ``series``, keeping its ends and, per bucket,
    its lowest and highest value (so a spike or a dip survives the thinning)."""
    xs, ys = series
    n = len(xs)
    if n <= limit:
        return list(zip(xs, ys, strict=True))
    buckets = max(limit // 2 - 1, 1)
    size = (n - 2) / buckets
    kept = [0]
    for b in range(buckets):
        lo, hi = 1 + int(b * size), 1 + int((b + 1) * size)
        if hi <= lo:
            continue
        low = min(range(lo, hi), key=ys.__getitem__)
        high = max(range(lo, hi), key=ys.__getitem__)
        kept.extend(sorted({low, high}))
    kept.append(n - 1)
    return [(xs[i], ys[i]) for i in kept]
