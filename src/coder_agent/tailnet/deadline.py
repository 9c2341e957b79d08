"""One event-loop timer kept at a sans-I/O core's next deadline (the WireGuard device, the TCP stack).

After every call into the core the asyncio layer calls :meth:`DeadlineTimer.arm` with the core's
``next_deadline()``: the timer moves only when the deadline changed, and a ``None`` deadline arms
nothing, so an idle core never wakes the loop. ``now`` is the clock the deadlines are read on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["DeadlineTimer"]


class DeadlineTimer:
    def __init__(self, fire: Callable[[], None], now: Callable[[], float]) -> None:
        self._fire = fire
        self._now = now
        self._handle: asyncio.TimerHandle | None = None
        self._at: float | None = None

    @property
    def deadline(self) -> float | None:
        """When the timer fires next, None when nothing is armed."""
        return self._at if self._handle is not None else None

    def arm(self, deadline: float | None) -> None:
        if deadline == self._at and (deadline is None or self._handle is not None):
            return
        self.cancel()
        self._at = deadline
        if deadline is not None:
            self._handle = asyncio.get_running_loop().call_later(max(0.0, deadline - self._now()), self._run)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._at = None

    def _run(self) -> None:
        self._handle = None
        self._at = None
        self._fire()
