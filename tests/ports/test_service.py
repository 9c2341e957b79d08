"""The service in-process behind a real local API on loopback: shape, cache, 500, watch, health."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from coder_agent.clock import FakeClock
from coder_agent.localapi import LocalAPI
from coder_agent.ports.scan import ProcNetReader, PsutilReader, ReaderUnavailable, Scanner, default_scanner
from coder_agent.ports.select import Listener
from coder_agent.ports.service import PortsService

from ..conftest import apoll, t
from .conftest import Listeners

V4 = {"family": 4, "host": "0.0.0.0"}


class Harness:
    def __init__(self, svc: PortsService, api: LocalAPI) -> None:
        self.svc = svc
        self.api = api
        self.base = f"http://127.0.0.1:{api.bound_port}"
        self.http = aiohttp.ClientSession()

    async def get(self, path: str = "/api/v0/listening-ports") -> tuple[int, Any]:
        async with self.http.get(self.base + path) as r:
            return r.status, await r.json()

    async def ours(self, ports: list[int]) -> list[dict[str, Any]]:
        status, body = await self.get()
        assert status == 200, body
        return [p for p in body["ports"] if p["port"] in ports]


@pytest.fixture
async def harness() -> AsyncIterator[Callable[..., Any]]:
    made: list[tuple[Harness, asyncio.Task[None]]] = []

    async def make(scanner: Scanner | None = None, run_loop: bool = True, **kw: Any) -> Harness:
        svc = PortsService(scanner or default_scanner(), **kw)
        api = LocalAPI("127.0.0.1:0")
        svc.install(api)
        await api.start()
        h = Harness(svc, api)
        made.append((h, asyncio.create_task(svc.run() if run_loop else asyncio.Event().wait())))
        return h

    yield make
    for h, task in made:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await h.http.close()
        await h.api.stop()


class Counting:
    """A reader that counts its scans and returns what it is told."""

    name = "counting"

    def __init__(self) -> None:
        self.calls = 0
        self.listeners_: list[Listener] = [Listener(4, "0.0.0.0", 3000, "node")]

    def listeners(self) -> list[Listener]:
        self.calls += 1
        time.sleep(0.05)  # long enough for a burst to pile up behind one scan
        return list(self.listeners_)


class Failing:
    name = "failing"

    def listeners(self) -> list[Listener]:
        raise ReaderUnavailable("cannot read /proc/net/tcp: Permission denied")


async def test_exact_shape_sorted(harness: Callable[..., Any], listen: Callable[..., Listeners]) -> None:
    ln = listen([V4, V4, V4], name="node")
    h = await harness()
    status, body = await h.get()
    assert status == 200 and set(body) == {"ports"}
    assert [p["port"] for p in body["ports"]] == sorted(p["port"] for p in body["ports"])
    assert await h.ours(ln.ports) == [{"process_name": "node", "network": "tcp", "port": p} for p in sorted(ln.ports)]


async def test_a_burst_costs_one_scan(harness: Callable[..., Any]) -> None:
    reader = Counting()
    clock = FakeClock()
    h = await harness(Scanner([reader]), run_loop=False, clock=clock)
    one = (200, {"ports": [{"process_name": "node", "network": "tcp", "port": 3000}]})
    assert await asyncio.gather(*(h.get() for _ in range(30))) == [one] * 30
    assert reader.calls == 1  # concurrent requests shared the scan in flight
    clock.advance(0.9)
    assert await asyncio.gather(*(h.get() for _ in range(10))) == [one] * 10
    assert reader.calls == 1  # within the 1 s cache
    clock.advance(0.1)
    assert await asyncio.gather(*(h.get() for _ in range(30))) == [one] * 30
    assert reader.calls == 2


async def test_idle_scans_back_off_while_nothing_changes_fast_while_watched() -> None:
    reader = Counting()
    clock = FakeClock()
    svc = PortsService(Scanner([reader]), clock=clock)
    task = asyncio.create_task(svc.run())
    try:
        await apoll(lambda: len(clock.sleeps) >= 6)
        assert clock.sleeps[:6] == [5.0, 10.0, 20.0, 40.0, 60.0, 60.0]  # nothing changes: back off to 60 s
        assert reader.calls <= len(clock.sleeps) + 1  # one scan per wake-up, no more
        # a change (seen by the background scan) resets the cadence
        reader.listeners_ = [Listener(4, "0.0.0.0", 3001, "node")]
        n = len(clock.sleeps)
        await apoll(lambda: len(clock.sleeps) >= n + 3)
        after = clock.sleeps[n:n + 3]
        assert 5.0 in after and after[after.index(5.0) + 1:][:1] in ([], [10.0]), after
        # a watcher makes it fast
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=1)
        svc._watchers.add(queue)
        svc._wake.set()
        n = len(clock.sleeps)
        await apoll(lambda: len(clock.sleeps) >= n + 3)
        assert clock.sleeps[-1] == 1.0
        svc._watchers.discard(queue)
        n = len(clock.sleeps)
        await apoll(lambda: len(clock.sleeps) >= n + 3)
        assert clock.sleeps[-1] > 1.0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_new_port_appears_on_the_next_request_without_the_background_loop(
        harness: Callable[..., Any], listen: Callable[..., Listeners]) -> None:
    # the background loop sleeps an hour: only the on-demand scan (behind the 1 s cache) can see it
    h = await harness(idle_interval=3600.0, idle_max=3600.0)
    await apoll(lambda: h.svc.scans >= 1)
    await h.get()
    ln = listen([V4], name="ca-demand")
    entry = {"process_name": "ca-demand", "network": "tcp", "port": ln.ports[0]}
    opened = time.monotonic()
    while entry not in await h.ours(ln.ports):
        assert time.monotonic() - opened < t(2), "the new port did not show on demand within 2 s"
        await asyncio.sleep(0.05)
    assert h.svc.scans <= 5  # on demand, behind the cache: not one scan per request


async def test_scan_error_is_500_and_degraded_not_a_crash(harness: Callable[..., Any]) -> None:
    h = await harness(Scanner([Failing()]))
    status, body = await h.get()
    assert status == 500
    assert body == {"message": "Could not scan for listening ports.",
                    "detail": "cannot read /proc/net/tcp: Permission denied"}
    assert h.svc.health.state == "degraded"
    assert "Permission denied" in h.svc.health.message
    status, _ = await h.get("/")  # the API is still up
    assert status == 200


async def test_restricted_proc_degrades_with_the_reason(harness: Callable[..., Any], tmp_path: Path,
                                                        listen: Callable[..., Listeners]) -> None:
    h = await harness(Scanner([ProcNetReader(tmp_path)]))
    status, _ = await h.get()
    assert status == 500
    assert h.svc.health.state == "degraded"
    assert h.svc.health.message == f"listening ports unavailable: cannot read {tmp_path}/net/tcp: no such file"

    # with the psutil fallback the ports still come, and health says why it is degraded
    ln = listen([V4], name="ca-restrict")
    h2 = await harness(Scanner([ProcNetReader(tmp_path), PsutilReader()]))
    assert await h2.ours(ln.ports) == [{"process_name": "ca-restrict", "network": "tcp", "port": ln.ports[0]}]
    assert h2.svc.health.state == "degraded"
    assert "using psutil instead" in h2.svc.health.message


async def test_ignore_list_and_own_ports(harness: Callable[..., Any], listen: Callable[..., Listeners]) -> None:
    ln = listen([V4, V4, V4], name="ca-excl")
    keep, ignored, own = ln.ports
    h = await harness(exclude=lambda: {ignored, own})
    assert await h.ours(ln.ports) == [{"process_name": "ca-excl", "network": "tcp", "port": keep}]


async def _next(ws: aiohttp.ClientWebSocketResponse, timeout: float) -> dict[str, Any]:
    msg = await ws.receive(timeout=timeout)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    return json.loads(msg.data)  # type: ignore[no-any-return]


async def test_watch_pushes_open_and_close(harness: Callable[..., Any], listen: Callable[..., Listeners]) -> None:
    h = await harness()
    async with h.http.ws_connect(h.base + "/api/v0/listening-ports/watch") as ws:
        first = await _next(ws, t(5))
        assert set(first) == {"ports"}
        await apoll(lambda: h.svc._watchers)
        ln = listen([V4], name="ca-watch")
        port = ln.ports[0]
        entry = {"process_name": "ca-watch", "network": "tcp", "port": port}
        opened = time.monotonic()
        while entry not in (await _next(ws, t(2)))["ports"]:
            pass
        assert time.monotonic() - opened < t(2)
        ln.close()
        closed = time.monotonic()
        while True:
            m = await _next(ws, t(2))
            if not any(p["port"] == port for p in m["ports"]):
                break
        assert time.monotonic() - closed < t(2)


async def test_watch_sends_only_changes_and_survives_disconnects(harness: Callable[..., Any]) -> None:
    reader = Counting()
    h = await harness(Scanner([reader]), watch_interval=0.1, cache_ttl=0.05)
    url = h.base + "/api/v0/listening-ports/watch"
    async with h.http.ws_connect(url) as ws:
        assert await _next(ws, t(5)) == {"ports": [{"process_name": "node", "network": "tcp", "port": 3000}]}
        calls = reader.calls
        await apoll(lambda: reader.calls >= calls + 3)  # several scans, nothing changed...
        with pytest.raises(asyncio.TimeoutError):
            await ws.receive(timeout=0.2)  # ...so nothing is sent
        reader.listeners_ = [Listener(6, "::", 3001, "vite")]
        assert await _next(ws, t(5)) == {"ports": [{"process_name": "vite", "network": "tcp", "port": 3001}]}
    await apoll(lambda: not h.svc._watchers)  # the server noticed the client left
    # an abrupt disconnect (no close frame) is noticed too
    ws2 = await h.http.ws_connect(url)
    await _next(ws2, t(5))
    await apoll(lambda: len(h.svc._watchers) == 1)
    assert ws2._response.connection is not None
    ws2._response.connection.transport.abort()  # type: ignore[union-attr]
    await apoll(lambda: not h.svc._watchers)
    async with h.http.ws_connect(url) as ws3:
        assert (await _next(ws3, t(5)))["ports"][0]["port"] == 3001


async def test_watch_on_scan_error_says_why(harness: Callable[..., Any]) -> None:
    h = await harness(Scanner([Failing()]))
    async with h.http.ws_connect(h.base + "/api/v0/listening-ports/watch") as ws:
        body = await _next(ws, t(5))
        assert body["message"] == "Could not scan for listening ports."
        msg = await ws.receive(timeout=t(5))
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1011
