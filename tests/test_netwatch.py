"""Network changes skip the reconnect backoff: netlink framing, a real netlink socket seeing a
real address change on lo, and the daemon retrying coderd when that happens while it is failing."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import struct
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from coder_agent.devserver import DevServer
from coder_agent.netwatch import RTM_DELADDR, RTM_NEWADDR, NetWatch, parse_types

from .conftest import apoll, unavailable


def _msg(mtype: int, payload: bytes = b"") -> bytes:
    length = 16 + len(payload)
    return struct.pack("=IHHII", length, mtype, 0, 0, 0) + payload + b"\0" * ((-length) % 4)


def test_parse_types_walks_aligned_messages_and_stops_at_garbage() -> None:
    assert parse_types(_msg(RTM_NEWADDR, b"abcde") + _msg(RTM_DELADDR)) == [RTM_NEWADDR, RTM_DELADDR]
    assert parse_types(_msg(RTM_NEWADDR) + b"\x01\x02") == [RTM_NEWADDR]  # a torn tail is ignored
    assert parse_types(struct.pack("=IHHII", 4, RTM_NEWADDR, 0, 0, 0)) == []  # length below the header
    assert parse_types(struct.pack("=IHHII", 999, RTM_NEWADDR, 0, 0, 0)) == []  # longer than the datagram
    assert parse_types(b"") == []


@contextmanager
def _address_on_lo() -> Iterator[None]:
    """Add (then remove) an address on lo: a real RTM_NEWADDR / RTM_DELADDR from the kernel."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        unavailable("needs root and iproute2's ip",
                    ci_reason="needs root and iproute2's ip (scripts/provision.sh installs it)")
    addr = f"127.0.{random.randint(100, 250)}.{random.randint(1, 250)}/32"
    subprocess.run(["ip", "addr", "add", addr, "dev", "lo"], check=True)
    try:
        yield
    finally:
        subprocess.run(["ip", "addr", "del", addr, "dev", "lo"], check=False)


async def test_a_real_address_change_is_seen_once_per_burst() -> None:
    calls: list[int] = []
    w = NetWatch(lambda: calls.append(1), debounce=0.2)
    task = asyncio.create_task(w.run())
    try:
        await apoll(lambda: w.health.state == "ok")
        assert calls == []  # nothing happened yet: nothing reported
        with _address_on_lo():
            await apoll(lambda: calls)
        await apoll(lambda: len(calls) >= 2)  # the removal is a change too
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_closed_while_not_wanted_and_opened_by_a_poke() -> None:
    calls: list[int] = []
    want = [False]
    w = NetWatch(lambda: calls.append(1), debounce=0.2, wanted=lambda: want[0])
    task = asyncio.create_task(w.run())
    try:
        await apoll(lambda: w.health.state == "ok")
        assert not w.listening  # no netlink socket: a busy host's messages cost nothing
        with _address_on_lo():
            await asyncio.sleep(0.5)
        assert calls == [] and w.changes == 0
        want[0] = True
        w.poke()
        await apoll(lambda: w.listening)
        with _address_on_lo():
            await apoll(lambda: calls)
        want[0] = False
        w.poke()
        await apoll(lambda: not w.listening)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_daemon_retries_coderd_on_a_network_change(devserver: DevServer, daemon_env, spawn_daemon) -> None:  # type: ignore[no-untyped-def]
    await devserver.go_down()
    d = spawn_daemon(daemon_env(devserver.url, devserver.agent.token))
    await asyncio.to_thread(d.wait_ready)
    await apoll(lambda: d.api("GET", "/api/v0/status").json()["control_plane"]["state"] == "failing")
    assert d.api("GET", "/api/v0/status").json()["services"]["netwatch"]["state"] == "ok"
    attempts = d.api("GET", "/api/v0/status").json()["control_plane"]["attempts"]
    with _address_on_lo():  # still down: the retry it causes fails too, but it is made at once
        await apoll(lambda: "network changed while coderd is unreachable" in d.stderr())
    assert "retrying the control-plane connection now" in d.stderr()
    await apoll(lambda: d.api("GET", "/api/v0/status").json()["control_plane"]["attempts"] > attempts)
    await devserver.come_up()
    await apoll(lambda: d.api("GET", "/api/v0/status").json()["control_plane"]["state"] == "connected")
