"""The event loop counts its own wake-ups; ``status --json`` reports them."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from coder_agent.devserver import DevServer
from coder_agent.loopstats import WakeCounter, coalesce, new_loop, wakeups_per_minute

from .conftest import DaemonProcess, t


def test_counter_keeps_the_last_minute() -> None:
    c = WakeCounter()
    for now in (100.1, 100.5, 101.0, 130.0):
        c.record(now)
    assert c.last_minute(130.5) == 4
    assert c.last_minute(160.9) == 2  # the seconds 101..160: 101.0 and 130.0
    assert c.last_minute(161.0) == 1  # 101 has left the window; 130 has not
    assert c.last_minute(500.0) == 0
    c.record(500.2)  # a bucket reused after the ring came round holds only the new second
    assert c.last_minute(500.3) == 1 and c.total == 5


def test_long_timers_move_to_a_coarse_grid_short_ones_stay_exact() -> None:
    assert coalesce(100.3, 100.0) == 100.3  # under a second: exact (protocol timers)
    assert coalesce(101.1, 100.0) == 101.25  # 1.1 s: the next quarter second
    assert coalesce(105.0, 100.0) == 105.0  # already on the grid
    assert coalesce(130.2, 100.0) == 131.0  # 30 s: the next whole second
    for now in (0.0, 7.3, 1e6 + 0.123):
        for delay in (1.0, 2.5, 7.99, 8.0, 30.0, 300.0):
            fired = coalesce(now + delay, now)
            assert now + delay <= fired <= now + delay + (0.25 if delay < 8 else 1.0)  # never early


def test_timers_due_close_together_fire_in_one_wake_up() -> None:
    loop = new_loop()
    try:
        async def main() -> tuple[int, list[float], float]:
            fired: list[float] = []
            done = asyncio.Event()
            slot = math.ceil((loop.time() + 1.5) / 0.25) * 0.25
            for before_slot in (0.2, 0.1, 0.01):  # three duties due a tenth of a second apart
                loop.call_at(slot - before_slot, lambda: (fired.append(loop.time()), len(fired) == 3 and done.set()))
            before = wakeups_per_minute()
            await done.wait()
            after = wakeups_per_minute()
            assert before is not None and after is not None
            return after - before, fired, slot

        woke, fired, slot = loop.run_until_complete(main())
        assert min(fired) >= slot  # none early: all moved to the grid point
        assert woke == 1  # one wake-up for the three (exact timers would take three)
    finally:
        loop.close()


def test_sleeps_count_ready_callbacks_do_not() -> None:
    loop = new_loop()
    try:
        async def sleeper() -> int | None:
            for _ in range(10):
                await asyncio.sleep(0.01)  # ten times asleep, ten wake-ups
            return wakeups_per_minute()

        async def busy() -> int | None:
            before = wakeups_per_minute()
            assert before is not None
            for _ in range(1000):
                await asyncio.sleep(0)  # ready at once: the loop never sleeps
            after = wakeups_per_minute()
            assert after is not None
            return after - before

        slept = loop.run_until_complete(sleeper())
        assert slept is not None and 10 <= slept <= 15
        assert loop.run_until_complete(busy()) <= 2
    finally:
        loop.close()
    # a loop not built by new_loop is not counted
    assert asyncio.run(_running()) is None


async def _running() -> int | None:
    return wakeups_per_minute()


async def test_status_json_reports_wakeups(devserver: DevServer, daemon_env: Callable[..., Any],
                                           spawn_daemon: Callable[..., DaemonProcess]) -> None:
    d = spawn_daemon(daemon_env(devserver.url, devserver.agent.token))

    def check() -> dict[str, Any]:
        d.wait_ready()
        out = subprocess.run([sys.executable, "-m", "coder_agent", "status", "--json", "--api-address",
                              d.api_address], capture_output=True, text=True, timeout=t(20), env=d.env)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)  # type: ignore[no-any-return]

    st = await asyncio.to_thread(check)
    assert isinstance(st["wakeups_per_minute"], int) and st["wakeups_per_minute"] > 0
