"""parallel_map's memory beyond its results does not grow with the number of items.

A run with 100k output files is committed through one parallel_map over its files: with
every item submitted at once, each held a Future (a lock, a condition: ~2 KB) until the
end, 200+ MB at 100k files (issue 27, item 19).
"""

from __future__ import annotations

import sys
import tracemalloc

from orchestrator._util.pool import parallel_map


def _overhead_per_item(count: int) -> float:
    items = list(range(count))
    tracemalloc.start()
    try:
        results = parallel_map(lambda item: item, items, workers=8)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert results == items
    return (peak - sys.getsizeof(results)) / count


def test_memory_beyond_the_results_is_flat() -> None:
    small, large = _overhead_per_item(20_000), _overhead_per_item(80_000)
    # what remains per item is the results list growing (amortized pointers), not futures
    assert large < 32, (small, large)
    assert large <= small + 8, (small, large)


def test_order_and_errors_are_kept() -> None:
    assert parallel_map(lambda x: x * 2, list(range(1000)), workers=4) == [
        x * 2 for x in range(1000)]

    def boom(x: int) -> int:
        if x == 500:
            raise ValueError("item 500")
        return x

    try:
        parallel_map(boom, list(range(1000)), workers=4)
    except ValueError as exc:
        assert str(exc) == "item 500"
    else:
        raise AssertionError("the error was swallowed")
