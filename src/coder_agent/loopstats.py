"""Wake-ups of the event loop, counted by the loop's own selector.

What is counted: every return from ``selector.select(timeout)`` whose ``timeout`` was not 0,
i.e. every time the loop had gone to sleep (nothing ready to run) and the kernel woke it — for
a due timer, a readable socket, a signal, a callback from a thread. ``select(0)`` calls (the
loop polling for I/O between ready callbacks while it is busy) are the same wake-up continuing
and are not counted. That is exactly the number an idle daemon should keep small: each one is a
CPU wake, a context switch and a trip through the loop.

How: the daemon's loop is built by :func:`new_loop` (``asyncio.Runner(loop_factory=new_loop)``
in ``coder-agent run``) on a :class:`CountingSelector`, a delegating wrapper around the default
selector — public asyncio API, no patching of loop internals. Counts go into one-second buckets
of a 60-slot ring (:class:`WakeCounter`, pure: times in, counts out), so memory stays constant
and the answer is "wake-ups in the last 60 s". A loop not built here (tests running the daemon
in-process) reports ``None``.
"""

from __future__ import annotations

import asyncio
import selectors
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["CountingSelector", "WakeCounter", "new_loop", "wakeups_per_minute"]

WINDOW = 60


class WakeCounter:
    """Wake-ups per second over the last :data:`WINDOW` seconds (pure: the caller passes the time)."""

    def __init__(self) -> None:
        self._buckets = [0] * WINDOW
        self._stamp = [-1] * WINDOW  # which whole second each bucket holds
        self.total = 0

    def record(self, now: float) -> None:
        sec = int(now)
        i = sec % WINDOW
        if self._stamp[i] != sec:
            self._stamp[i] = sec
            self._buckets[i] = 0
        self._buckets[i] += 1
        self.total += 1

    def last_minute(self, now: float) -> int:
        """Wake-ups in the last :data:`WINDOW` whole seconds up to ``now`` (this second included)."""
        sec = int(now)
        return sum(n for n, s in zip(self._buckets, self._stamp, strict=True) if sec - WINDOW < s <= sec)


class CountingSelector(selectors.BaseSelector):
    """A selector that counts the loop's wake-ups (see the module rules) and delegates the rest."""

    def __init__(self, inner: selectors.BaseSelector, counter: WakeCounter,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._inner = inner
        self.counter = counter
        self._clock = clock

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._inner.select(timeout)
        if timeout is None or timeout > 0:
            self.counter.record(self._clock())
        return ready

    def close(self) -> None:
        self._inner.close()

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.get_key(fileobj)

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._inner.get_map()


_counters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, WakeCounter] = weakref.WeakKeyDictionary()


def new_loop() -> asyncio.AbstractEventLoop:
    """A selector event loop whose wake-ups are counted."""
    counter = WakeCounter()
    loop = asyncio.SelectorEventLoop(CountingSelector(selectors.DefaultSelector(), counter))
    _counters[loop] = counter
    return loop


def wakeups_per_minute(loop: asyncio.AbstractEventLoop | None = None) -> int | None:
    """Wake-ups of ``loop`` (default: the running one) in the last minute; None when not counted."""
    if loop is None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
    counter = _counters.get(loop)
    return None if counter is None else counter.last_minute(time.monotonic())
