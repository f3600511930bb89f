"""Stopping a sweep the way a terminal asks: drain on the first Ctrl-C, cancel on the second.

A :class:`Stop` is shared by the sweep driver, the backend and every run in flight:

- ``drain()`` (first SIGINT): start nothing new; runs already in their container finish
  and are committed as usual.
- ``cancel()`` (second SIGINT, SIGTERM, SIGHUP): every running container is stopped (a
  grace period, then killed) and recorded as ``cancelled`` with its logs, last metrics
  and checkpoint; its claim is released so a re-submission runs it at once.

Runs register what to do on cancel with :meth:`on_cancel`; a hook registered after the
cancel runs at once, so no container started late can slip through. Work before the
first run (the environment build) says what it is with :meth:`doing`, so that the
messages name it; a drain lets it finish (what it makes is cached), a cancel stops it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any


class Stop:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._drain = threading.Event()
        self._cancel = threading.Event()
        self._hooks: dict[int, Callable[[], None]] = {}
        self._next = 0
        self._doing: list[str] = []

    @property
    def draining(self) -> bool:
        return self._drain.is_set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def drain(self) -> None:
        self._drain.set()

    def cancel(self) -> None:
        with self._lock:
            self._drain.set()
            self._cancel.set()
            hooks = list(self._hooks.values())
        for hook in hooks:
            _run_hook(hook)

    @contextmanager
    def on_cancel(self, hook: Callable[[], None]) -> Iterator[None]:
        """Call ``hook`` (once) if the stop is cancelled while the block runs."""
        with self._lock:
            key, self._next = self._next, self._next + 1
            self._hooks[key] = hook
            already = self._cancel.is_set()
        if already:
            _run_hook(hook)
        try:
            yield
        finally:
            with self._lock:
                self._hooks.pop(key, None)

    @contextmanager
    def doing(self, what: str) -> Iterator[None]:
        """Name what is under way while no run is (``"the environment build"``)."""
        with self._lock:
            self._doing.append(what)
        try:
            yield
        finally:
            with self._lock:
                self._doing.remove(what)

    @property
    def activity(self) -> str | None:
        with self._lock:
            return self._doing[-1] if self._doing else None


def _run_hook(hook: Callable[[], None]) -> None:
    try:
        hook()
    except Exception:  # noqa: BLE001 - one run's failure to stop must not spare the others
        pass


@contextmanager
def terminal_signals(
    stop: Stop, say: Callable[[str], None], running: Callable[[], int]
) -> Iterator[None]:
    """SIGINT drains then cancels; SIGTERM and SIGHUP cancel; the old handlers come back."""

    def stopping() -> str:
        activity = stop.activity
        return "the running containers" if activity is None or running() else activity

    def on_int(signum: int, frame: FrameType | None) -> None:
        activity = stop.activity
        if stop.draining:
            say(f"cancelling: stopping {stopping()}")
            stop.cancel()
        elif activity is not None and not running():
            say(
                f"stopping: {activity} finishes (what it makes is cached), then nothing "
                "starts (Ctrl-C again to cancel it)"
            )
            stop.drain()
        else:
            say(f"stopping: waiting for {running()} running runs (Ctrl-C again to cancel them)")
            stop.drain()

    def on_term(signum: int, frame: FrameType | None) -> None:
        say(f"cancelling on {signal.Signals(signum).name}: stopping {stopping()}")
        stop.cancel()

    wanted = {signal.SIGINT: on_int, signal.SIGTERM: on_term, signal.SIGHUP: on_term}
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum, handler in wanted.items():
            previous[signum] = signal.signal(signum, handler)
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)
