"""reap/settle: tasks end, and the caller's own cancellation is never swallowed."""

from __future__ import annotations

import asyncio

import pytest

from coder_agent.tasks import reap, settle


async def test_reap_cancels_and_waits() -> None:
    ended = asyncio.Event()

    async def child() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            ended.set()

    t = asyncio.create_task(child())
    await asyncio.sleep(0)
    await reap(t, None)
    assert t.cancelled() and ended.is_set()


async def test_settle_consumes_failures() -> None:
    async def boom() -> None:
        raise ValueError("x")

    t = asyncio.create_task(boom())
    await settle(t)  # does not raise
    assert isinstance(t.exception(), ValueError)


async def test_callers_cancellation_propagates_while_reaping() -> None:
    """The bug this module exists for: a child slow to end must not make its reaper immortal."""
    release = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await release.wait()  # takes its time to clean up
            raise

    child = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    after_reap = asyncio.Event()

    async def reaper() -> None:
        await reap(child)
        after_reap.set()  # must never run: the reaper itself was cancelled

    r = asyncio.create_task(reaper())
    await asyncio.sleep(0.01)
    r.cancel()
    with pytest.raises(asyncio.CancelledError):
        await r
    assert not after_reap.is_set()
    release.set()
    await settle(child)
    assert child.cancelled()
