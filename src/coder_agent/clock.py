"""The one injectable clock.

Rules: every deadline and interval uses ``monotonic()``; only timestamps shown to people or
sent to coderd use ``now()``. Tests inject :class:`FakeClock` to drive time without sleeping.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Protocol

__all__ = ["Clock", "FakeClock", "SystemClock"]


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def now(self) -> dt.datetime: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """Real time."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class FakeClock:
    """Time that moves only when told to. ``sleep`` advances it instantly and records the call."""

    def __init__(self, start: float = 1000.0) -> None:
        self._t = start
        self._wall = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self._t

    def now(self) -> dt.datetime:
        return self._wall + dt.timedelta(seconds=self._t)

    def advance(self, seconds: float) -> None:
        self._t += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self._t += max(0.0, seconds)
        await asyncio.sleep(0)
