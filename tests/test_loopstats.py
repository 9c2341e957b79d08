"""The event loop counts its own wake-ups; ``status --json`` reports them."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from coder_agent.devserver import DevServer
from coder_agent.loopstats import WakeCounter, new_loop, wakeups_per_minute

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
