"""``[fn(item) for item in items]`` on a thread pool: store and daemon calls are I/O bound."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: Items submitted ahead of the one being waited for, per worker: enough to keep every
#: worker busy, few enough that 300k items (a run's output files) never mean 300k live
#: futures (each holds a lock and a condition: ~2 KB).
_AHEAD = 4


def parallel_map(fn: Callable[[T], R], items: Sequence[T], workers: int = 16) -> list[R]:
    """The results in the order of ``items``; inline when there is nothing to overlap.

    At most ``workers * 4`` items are in flight at once, so the memory it takes beyond
    the results does not grow with the number of items; the first error is raised once
    the items in flight have finished."""
    if len(items) <= 1 or workers <= 1:
        return [fn(item) for item in items]
    workers = min(workers, len(items))
    results: list[R] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque[Future[R]] = deque()
        try:
            for item in items:
                if len(pending) >= workers * _AHEAD:
                    results.append(pending.popleft().result())
                pending.append(pool.submit(fn, item))
            while pending:
                results.append(pending.popleft().result())
        finally:
            for future in pending:
                future.cancel()
    return results


def parallel_iter(fn: Callable[[T], R], items: Iterable[T], workers: int = 16) -> Iterator[R]:
    """``fn(item)`` of each item, in order, as they finish: neither the items nor the
    results are ever all in memory (a run's 300k output names are read from a file and
    their descriptions written to one). The first error is raised once the items in
    flight have finished; closing the iterator early cancels what was not started."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending: deque[Future[R]] = deque()
        try:
            for item in items:
                if len(pending) >= max(1, workers) * _AHEAD:
                    yield pending.popleft().result()
                pending.append(pool.submit(fn, item))
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
