"""The TCP core against the Linux kernel's TCP, through a real TUN device in a network namespace.

Clients are the kernel (Python's asyncio streams run with ``ip netns exec``); the server is the core
fed by tunpump.Pump in this process. Needs root with CAP_NET_ADMIN and /dev/net/tun; under CI=true
their absence fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from coder_agent.tailnet.tcp import TcpStack
from tests.conftest import t, unavailable

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from tunpump import (  # noqa: E402
    ECHO,
    SERVER_IP,
    SINK,
    SLOW_SINK,
    SLOW_SINK_PAUSE,
    SOURCE,
    Pump,
    TunNamespace,
    missing_tools,
)

pytestmark = pytest.mark.slow
MB = 1 << 20


@pytest.fixture
async def tun() -> AsyncIterator[tuple[TunNamespace, Pump]]:
    reason = missing_tools()
    if reason:
        unavailable(reason)
    ns = TunNamespace(str(os.getpid() % 100000))
    pump = Pump(ns.fd, TcpStack())
    try:
        yield ns, pump
    finally:
        pump.close()
        ns.close()


async def client(ns: TunNamespace, *args: object, timeout: float = 120) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", ns.ns, sys.executable, str(HERE / "tcp_client.py"), *map(str, args),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), t(timeout))
    except TimeoutError:
        raise AssertionError(f"client {args} did not finish within {t(timeout)} s") from None
    finally:
        if proc.returncode is None:  # timed out or cancelled: the namespace goes away, so must the client
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    result: dict[str, Any] = json.loads(out)
    return result


async def test_upload_download_and_echo_of_megabytes(tun: tuple[TunNamespace, Pump]) -> None:
    ns, pump = tun
    up = await client(ns, "upload", SERVER_IP, SINK, 8 * MB)
    assert up["ok"], up
    down = await client(ns, "download", SERVER_IP, SOURCE, 8 * MB)
    assert down["ok"], down
    echo = await client(ns, "echo", SERVER_IP, ECHO, 4 * MB)
    assert echo["ok"], echo
    assert pump.stats.resets == []
    print(f"8 MiB up {8 / up['seconds']:.1f} MiB/s, down {8 / down['seconds']:.1f} MiB/s, "
          f"4 MiB echo {4 / echo['seconds']:.1f} MiB/s")


async def test_a_reader_that_stops_closes_the_window_and_the_kernel_waits(tun: tuple[TunNamespace, Pump]) -> None:
    ns, pump = tun
    res = await client(ns, "upload", SERVER_IP, SLOW_SINK, 2 * MB)
    assert res["ok"], res
    assert res["seconds"] >= SLOW_SINK_PAUSE  # the kernel could not finish while we did not read
    # what the application held (unread) filled the receive buffer and went no further
    assert pump.stack.config.recv_buffer - 8 * 1220 <= pump.stats.max_held <= pump.stack.config.recv_buffer + 128
    assert pump.stats.resets == []


async def test_refused_port_gets_rst_at_once(tun: tuple[TunNamespace, Pump]) -> None:
    ns, pump = tun
    res = await client(ns, "refused", SERVER_IP, 5555)
    assert res["ok"], res
    assert res["seconds"] < 1.0
    assert pump.stats.refused == 1


async def test_200_concurrent_connections(tun: tuple[TunNamespace, Pump]) -> None:
    ns, pump = tun
    res = await client(ns, "many", SERVER_IP, ECHO, 20_000, 200)
    assert res["ok"] and res["completed"] == 200, res
    assert pump.stats.accepted == 200
    assert pump.stats.resets == []

    async def all_closed() -> None:
        while pump.stats.closed < 200:
            await asyncio.sleep(0.05)

    await asyncio.wait_for(all_closed(), t(10))


async def test_transfer_under_one_percent_loss(tun: tuple[TunNamespace, Pump]) -> None:
    ns, pump = tun
    how = ns.add_loss(0.01)
    up = await client(ns, "upload", SERVER_IP, SINK, 4 * MB, timeout=180)
    assert up["ok"], up
    down = await client(ns, "download", SERVER_IP, SOURCE, 4 * MB, timeout=180)
    assert down["ok"], down
    assert pump.stats.resets == []
    print(f"1% loss ({how}): 4 MiB up {up['seconds']:.2f} s, down {down['seconds']:.2f} s")
