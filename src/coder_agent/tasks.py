"""Ending asyncio tasks without swallowing our own cancellation.

``task.cancel(); with suppress(BaseException): await task`` is the usual idiom, and it is wrong:
if the *caller* is cancelled while it waits (a second stop signal, a timeout), the suppress eats
that CancelledError too and the caller carries on as if nothing happened. :func:`reap` waits with
``asyncio.wait``, which never raises the task's outcome but does raise the caller's cancellation.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["reap", "settle"]


async def settle(*tasks: asyncio.Future[Any] | None) -> None:
    """Wait until ``tasks`` have ended, whatever their outcome (which is consumed, not raised)."""
    live = [t for t in tasks if t is not None]
    if not live:
        return
    await asyncio.wait(live)
    for t in live:
        if not t.cancelled():
            t.exception()  # retrieved, so asyncio does not report it as never retrieved


async def reap(*tasks: asyncio.Future[Any] | None) -> None:
    """Cancel ``tasks`` and wait until they have ended; the caller's own cancellation propagates."""
    for t in tasks:
        if t is not None:
            t.cancel()
    await settle(*tasks)
