"""The connection-report queue: order, the cap, "localhost", held until sent, disabled for good."""

from __future__ import annotations

import asyncio
import datetime as dt

from coder_agent.connreports import ConnectionReports, SumCounts

T0 = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


async def test_events_in_order_until_sent() -> None:
    q = ConnectionReports(lambda: T0, cap=3)
    q.connect("a", "ssh", "localhost")
    q.disconnect("a", "ssh", "fd7a::1", 255, "killed")
    first = await q.wait()
    assert (first.connect, first.app, first.type, first.ip, first.at) == (True, "ssh", 1, "127.0.0.1", T0)
    assert await q.wait() is first  # not sent yet: still the head (a failed send is retried)
    q.sent(first)
    second = await q.wait()
    assert (second.connect, second.ip, second.status_code, second.reason) == (False, "fd7a::1", 255, "killed")
    q.sent(second)
    waiter = asyncio.create_task(q.wait())
    await asyncio.sleep(0)
    assert not waiter.done()
    q.connect("b", "reconnecting_pty", "fd7a::2")
    assert (await asyncio.wait_for(waiter, 5)).type == 4


def test_cap_drops_new_events_and_disable_drops_all() -> None:
    q = ConnectionReports(cap=2)
    for i in range(4):
        q.connect(str(i), "vscode", "x")
    assert len(q) == 2 and q.dropped == 2
    q.disable()
    q.connect("5", "jetbrains", "x")
    assert len(q) == 0 and q.disabled


def test_sum_counts() -> None:
    class C:
        def __init__(self, **c: int) -> None:
            self.c = c

        def session_counts(self) -> dict[str, int]:
            return self.c

    assert SumCounts(C(ssh=1, vscode=2), C(reconnecting_pty=3, ssh=1)).session_counts() == {
        "ssh": 2, "vscode": 2, "reconnecting_pty": 3}
