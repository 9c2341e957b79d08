"""TCP through the tunnel into the REAL daemon: port forwarding (coder-tailnet.md §1).

The client is the kernel's TCP in wireguard-go's namespace (rig.py); the path is kernel →
wireguard-go → DERP relay (devserver) → the daemon's WireGuard and TCP → 127.0.0.1 / [::1]
servers this test runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from coder_agent.devserver import DevAgent, DevServer

from ..conftest import apoll, t
from .rig import Tunnelled

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]
HERE = Path(__file__).parent
CLIENT = HERE / "tcp_client.py"
MB = 1 << 20

HTTP_GET = r"""
import json, socket, sys, time
host, port = sys.argv[1], int(sys.argv[2])
t0 = time.monotonic()
try:
    s = socket.create_connection((host, port), timeout=20)
except ConnectionRefusedError:
    print(json.dumps({"refused": True, "seconds": time.monotonic() - t0})); raise SystemExit
s.sendall(b"GET /x HTTP/1.0\r\nHost: t\r\n\r\n")
buf = b""
while chunk := s.recv(65536):
    buf += chunk
print(json.dumps({"refused": False, "reply": buf.decode(errors="replace"), "seconds": time.monotonic() - t0}))
"""


@contextlib.asynccontextmanager
async def serve(host: str, handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
                ) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, host, 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()


def http_says(text: str) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readuntil(b"\r\n\r\n")
        body = text.encode()
        w.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await w.drain()
        w.close()
    return handle


async def sink(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    """tcp_client.py upload: hash everything until EOF, answer the sha256 hex."""
    h = hashlib.sha256()
    while chunk := await r.read(1 << 16):
        h.update(chunk)
    w.write(h.hexdigest().encode())
    await w.drain()
    w.close()


async def source(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    """tcp_client.py download: ``SIZE\\n`` → that many bytes of random.Random(SIZE)."""
    size = int(await r.readline())
    data = random.Random(size).randbytes(size)
    for i in range(0, size, 1 << 18):
        w.write(data[i:i + (1 << 18)])
        await w.drain()
    w.close()


async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    while chunk := await r.read(1 << 16):
        w.write(chunk)
        await w.drain()
    w.write_eof()
    w.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", 0))
        port = int(s.getsockname()[1])
    with socket.socket() as s4:  # closed on both families (best effort)
        try:
            s4.bind(("127.0.0.1", port))
        except OSError:
            return free_port()
    return port


@pytest.fixture
async def tunnelled(daemon_env: Any, spawn_daemon: Any, short_tmp: Path) -> AsyncIterator[Tunnelled]:
    async with DevServer(agents=[DevAgent(id=str(uuid.uuid4()))], tailnet=True) as ds:
        d = spawn_daemon(daemon_env(ds.url, ds.agent.token))
        d.wait_ready()
        async with Tunnelled(ds, d, short_tmp) as rig:
            yield rig


async def test_forwarded_ports_reach_ipv4_and_ipv6_loopback_and_a_closed_port_is_refused(
        tunnelled: Tunnelled) -> None:
    rig = tunnelled
    async with serve("127.0.0.1", http_says("hello from v4")) as p4, serve("::1", http_says("hello from v6")) as p6:
        got4 = await rig.ns_python(HTTP_GET, rig.agent_ip, p4)
        assert not got4["refused"] and got4["reply"].endswith("hello from v4"), got4
        got6 = await rig.ns_python(HTTP_GET, rig.agent_ip, p6)
        assert not got6["refused"] and got6["reply"].endswith("hello from v6"), got6
    closed = await rig.ns_python(HTTP_GET, rig.agent_ip, free_port())
    assert closed["refused"] and closed["seconds"] < 1.0, closed
    # the reserved SSH ports are the agent's SSH server, not forwarded (test_tunnel_ssh.py uses them)
    for port in (1, 22):
        got = await rig.ns_python(HTTP_GET, rig.agent_ip, port)
        assert not got["refused"] and got["reply"].startswith("SSH-2.0-"), (port, got)


async def test_megabytes_each_way_and_200_concurrent_connections(tunnelled: Tunnelled) -> None:
    rig = tunnelled
    async with serve("127.0.0.1", sink) as ps, serve("127.0.0.1", source) as pd, serve("127.0.0.1", echo) as pe:
        up = await rig.ns_script(CLIENT, "upload", rig.agent_ip, ps, 8 * MB, timeout=180)
        assert up["ok"], up
        down = await rig.ns_script(CLIENT, "download", rig.agent_ip, pd, 8 * MB, timeout=180)
        assert down["ok"], down
        many = await rig.ns_script(CLIENT, "many", rig.agent_ip, pe, 10_000, 200, timeout=180)
        assert many["ok"] and many["completed"] == 200, many
    print(f"8 MiB up {8 / up['seconds']:.2f} MiB/s, down {8 / down['seconds']:.2f} MiB/s; "
          f"200 echo connections in {many['seconds']:.1f} s")


async def test_a_local_server_that_stops_reading_closes_the_window(tunnelled: Tunnelled) -> None:
    """Backpressure: bytes for a local socket that is not drained stay bounded in the daemon
    (the client's window closes), and everything arrives once the server reads again."""
    rig = tunnelled
    paused = asyncio.Event()
    resume = asyncio.Event()

    async def slow_sink(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        sock = w.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        paused.set()
        await resume.wait()
        await sink(r, w)

    size = 24 * MB
    async with serve("127.0.0.1", slow_sink) as port:
        up = asyncio.ensure_future(rig.ns_script(CLIENT, "upload", rig.agent_ip, port, size, timeout=300))
        await asyncio.wait_for(paused.wait(), t(30))

        def held() -> dict[str, Any]:
            st: dict[str, Any] = rig.daemon.api("GET", "/api/v0/status").json()["tailnet"]["tcp"]
            return st

        # the window fills up and stays shut: what the daemon holds stops at its receive buffer
        full = await apoll(lambda: (h := held())["held_received_bytes"] >= 128 * 1024 and h, timeout=t(30))
        await asyncio.sleep(2)
        later = held()
        assert later["held_received_bytes"] <= 256 * 1024 + 1220, later
        assert later["held_received_bytes"] >= full["held_received_bytes"] - 1220, (full, later)
        assert not up.done()
        resume.set()
        res = await up
        assert res["ok"], res


async def test_100_mb_each_way_under_one_percent_loss(tunnelled: Tunnelled) -> None:
    rig = tunnelled
    how = rig.add_loss(0.01)
    async with serve("127.0.0.1", sink) as ps, serve("127.0.0.1", source) as pd:
        up = await rig.ns_script(CLIENT, "upload", rig.agent_ip, ps, 100 * MB, timeout=t(500))
        assert up["ok"], up
        down = await rig.ns_script(CLIENT, "download", rig.agent_ip, pd, 100 * MB, timeout=t(500))
        assert down["ok"], down
    print(f"1% loss ({how}): 100 MB up {100 / up['seconds']:.2f} MiB/s, down {100 / down['seconds']:.2f} MiB/s")
