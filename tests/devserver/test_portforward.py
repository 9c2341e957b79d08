"""The devserver's local port forward: a loopback port carried over the devserver's own client peer
(coordinator, DERP relay, WireGuard, our userspace TCP) to a port of the real daemon's tunnel; and
the active open it stands on (:meth:`TunnelTcp.connect`), between two tunnels in one process.

The agent's tunnel forwards a port with no server of its own to 127.0.0.1:<port> on its machine,
so a local server of the test stands behind the agent's port: bytes go test client → forward →
tunnel → daemon → test server and back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from coder_agent.devserver import DevAgent, DevServer
from coder_agent.devserver.portforward import PortForward
from coder_agent.devserver.tunnelpeer import ClientPeer, join
from coder_agent.tailnet.tunnel import TunnelConn, TunnelTcp

from ..conftest import DaemonProcess, apoll, t

pytestmark = pytest.mark.timeout(300)

Server = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def peer(daemon_env, spawn_daemon) -> AsyncIterator[ClientPeer]:  # type: ignore[no-untyped-def]
    async with DevServer(agents=[DevAgent()], tailnet=True) as ds:
        d: DaemonProcess = spawn_daemon(daemon_env(ds.url, ds.agent.token))
        p = await join(ds, uuid.UUID(ds.agent.id), timeout=t(60))
        async with p:
            await p.ping(timeout=t(30))
            yield p
        await asyncio.to_thread(d.stop)  # while the devserver still answers its goodbye


@contextlib.asynccontextmanager
async def local_server(handle: Server, rcvbuf: int | None = None) -> AsyncIterator[int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # inherited by accepted sockets
    sock.bind(("127.0.0.1", 0))
    server = await asyncio.start_server(handle, sock=sock)
    try:
        yield sock.getsockname()[1]
    finally:
        server.close()


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(1 << 16):
        writer.write(data)
        await writer.drain()
    writer.write_eof()  # the client's FIN arrived: ours follows
    await writer.drain()
    writer.close()


async def test_bytes_both_ways_and_half_close(peer: ClientPeer) -> None:
    data = random.Random(1).randbytes(2 << 20)
    async with local_server(_echo) as port, PortForward(peer, port) as fwd:
        reader, writer = await asyncio.open_connection("127.0.0.1", fwd.port)

        async def send() -> None:
            for i in range(0, len(data), 50_000):
                writer.write(data[i : i + 50_000])
                await writer.drain()
            writer.write_eof()  # a half close: the echo server sees EOF through the tunnel

        sender = asyncio.create_task(send())
        got = await asyncio.wait_for(reader.read(-1), t(120))  # to EOF: the server's FIN came back
        await sender
        writer.close()
        assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest() and len(got) == len(data)
        assert fwd.accepted == 1 and fwd.failed == 0
        await apoll(lambda: peer.tcp.open_connections == 0, timeout=30)  # both FINs: the tunnel side ended


async def test_a_closed_agent_port_closes_the_local_connection(peer: ClientPeer) -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    closed_port = probe.getsockname()[1]
    probe.close()  # nothing listens there: the agent answers the SYN with a reset
    async with PortForward(peer, closed_port) as fwd:
        reader, writer = await asyncio.open_connection("127.0.0.1", fwd.port)
        assert await asyncio.wait_for(reader.read(), t(30)) == b""
        writer.close()
        assert fwd.failed == 1 and "ConnectionRefusedError" in fwd.last_error, fwd.last_error


async def test_a_reader_that_stops_holds_the_sender_back(peer: ClientPeer) -> None:
    """Backpressure end to end: while the agent-side reader does not read, the tunnel's window
    closes and the forward holds a bounded amount (it stops reading the local socket); once the
    reader reads again, every byte arrives intact."""
    size = 12 << 20
    data = random.Random(2).randbytes(size)
    go = asyncio.Event()
    received = hashlib.sha256()
    count = 0
    done = asyncio.Event()

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal count
        await go.wait()
        while chunk := await reader.read(1 << 16):
            received.update(chunk)
            count += len(chunk)
        done.set()
        writer.close()

    async with local_server(sink, rcvbuf=64 << 10) as port, PortForward(peer, port) as fwd:
        _, writer = await asyncio.open_connection("127.0.0.1", fwd.port)

        async def send() -> None:
            for i in range(0, size, 1 << 16):
                writer.write(data[i : i + (1 << 16)])
                await writer.drain()
            writer.write_eof()

        sender = asyncio.create_task(send())
        peak = 0

        def tunnel_full() -> bool:
            nonlocal peak
            held = peer.tcp.status()["held_send_bytes"]
            assert isinstance(held, int)
            peak = max(peak, held)
            return held >= peer.tcp.stack.config.send_buffer  # the agent's window is shut

        await apoll(tunnel_full, timeout=120, interval=0.01)
        for _ in range(50):  # and it stays bounded while the reader still does not read
            tunnel_full()
            await asyncio.sleep(0.01)
        assert not sender.done()
        # the stack's send buffer, the connection's queue (64 KiB) and one local read (64 KiB)
        assert peak <= peer.tcp.stack.config.send_buffer + (128 << 10), peak
        go.set()
        await asyncio.wait_for(done.wait(), t(180))
        await sender
        writer.close()
        assert count == size and received.hexdigest() == hashlib.sha256(data).hexdigest()
        assert fwd.failed == 0


# ---- the active open the forward stands on (TunnelTcp.connect), two tunnels back to back ----------

AGENT = bytes.fromhex("fd7a115ca1e0" + "00" * 9 + "01")
CLIENT = bytes.fromhex("fd7a115ca1e0" + "00" * 9 + "02")


def _back_to_back(*, lossy: bool = False) -> tuple[TunnelTcp, TunnelTcp]:
    """(client, agent): each one's packets go into the other's ``receive`` on the next loop turn
    (``lossy``: the client's packets go nowhere)."""
    loop = asyncio.get_running_loop()

    def to_agent(p: bytes) -> None:
        if not lossy:
            loop.call_soon(agent.receive, p)

    def to_client(p: bytes) -> None:
        loop.call_soon(client.receive, p)

    client = TunnelTcp(to_agent, lambda: {CLIENT}, forward_hosts=())
    agent = TunnelTcp(to_client, lambda: {AGENT}, forward_hosts=())
    return client, agent


async def test_connect_opens_and_carries_bytes() -> None:
    client, agent = _back_to_back()

    async def upper(conn: TunnelConn) -> None:
        while data := await conn.read():
            conn.write(data.upper())
            await conn.drain()
        conn.close()

    agent.register(7000, upper)
    conns = [await client.connect(CLIENT, AGENT, 7000, timeout=t(10)) for _ in range(3)]
    assert len({c.key.local_port for c in conns}) == 3 and all(c.key.local_port >= 49152 for c in conns)
    for i, conn in enumerate(conns):
        conn.write(b"hello %d" % i)
        conn.write_eof()
        assert await asyncio.wait_for(conn.read(), t(10)) == b"HELLO %d" % i
        assert await asyncio.wait_for(conn.read(), t(10)) == b""
        await asyncio.wait_for(conn.wait_closed(), t(10))
    await client.close()
    await agent.close()


async def test_connect_refused_and_timed_out() -> None:
    client, agent = _back_to_back()
    with pytest.raises(ConnectionRefusedError, match="refused"):
        await client.connect(CLIENT, AGENT, 1, timeout=t(10))  # reserved, no server: a reset
    assert client.open_connections == 0 and len(client.stack) == 0
    await client.close()
    await agent.close()

    client, agent = _back_to_back(lossy=True)
    with pytest.raises(TimeoutError):
        await client.connect(CLIENT, AGENT, 7000, timeout=0.3)
    assert client.open_connections == 0 and len(client.stack) == 0  # the SYN is withdrawn: no retries
    task = asyncio.ensure_future(client.connect(CLIENT, AGENT, 7000, timeout=t(10)))
    await apoll(lambda: len(client.stack) == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert client.open_connections == 0 and len(client.stack) == 0  # likewise when the caller gives up
    await client.close()
    await agent.close()
