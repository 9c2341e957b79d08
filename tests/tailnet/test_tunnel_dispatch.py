"""TunnelTcp in-process: dispatch, forwarding to real loopback servers, stats.

The client is a second :class:`TcpStack` (active open) whose packets go straight into the
tunnel's ``receive`` and back through its ``send_ip``; the forwarded servers are real asyncio
servers on 127.0.0.1 / [::1]. The kernel-client versions of these checks are test_tunnel.py.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

from coder_agent.tailnet.tcp import Connected, ConnectionReset, ConnKey, DataReceived, PeerClosed, TcpEvent, TcpStack
from coder_agent.tailnet.tunnel import SSH_KEEPALIVE_IDLE, TunnelConn, TunnelTcp

from ..conftest import apoll

AGENT = ipaddress.IPv6Address("fd7a:115c:a1e0::1").packed
CLIENT = ipaddress.IPv6Address("fd7a:115c:a1e0::2").packed


class Pair:
    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.client = TcpStack()
        self.events: list[TcpEvent] = []
        self.tunnel = TunnelTcp(self._to_client, lambda: {AGENT})
        self._port = 40000

    def _to_client(self, packet: bytes) -> None:
        self.events += self.client.receive_packet(packet, self.loop.time())
        self.loop.call_soon(self.flush)

    def flush(self) -> None:
        for p in self.client.packets_to_send():
            self.tunnel.receive(p)

    def connect(self, port: int) -> ConnKey:
        self._port += 1
        key = self.client.connect(CLIENT, self._port, AGENT, port, self.loop.time())
        self.flush()
        return key

    def send(self, key: ConnKey, data: bytes) -> None:
        assert self.client.send(key, data, self.loop.time()) == len(data)
        self.flush()

    def of(self, key: ConnKey, kind: type) -> list[TcpEvent]:
        return [e for e in self.events if isinstance(e, kind) and e.key == key]

    def received(self, key: ConnKey) -> bytes:
        data = b"".join(e.data for e in self.events if isinstance(e, DataReceived) and e.key == key)
        return data


async def test_a_registered_port_is_served_and_reserved_ports_are_refused() -> None:
    pair = Pair()
    seen: list[TunnelConn] = []

    async def echo(conn: TunnelConn) -> None:
        seen.append(conn)
        while data := await conn.read():
            conn.write(data.upper())
            await conn.drain()
        conn.close()

    pair.tunnel.register(7777, echo)
    pair.tunnel.register(22, echo)
    key = pair.connect(7777)
    await apoll(lambda: pair.of(key, Connected), timeout=5)
    pair.send(key, b"hello")
    await apoll(lambda: pair.received(key) == b"HELLO", timeout=5)
    assert seen[0].remote == ("fd7a:115c:a1e0::2", key.local_port) and seen[0].local_port == 7777
    pair.client.close(key, pair.loop.time())
    pair.flush()
    await apoll(lambda: pair.of(key, PeerClosed), timeout=5)

    ssh = pair.connect(22)
    await apoll(lambda: pair.of(ssh, Connected), timeout=5)
    server_key = ConnKey(AGENT, 22, CLIENT, ssh.local_port)
    assert pair.tunnel.stack._conns[server_key].ka_idle == SSH_KEEPALIVE_IDLE  # Go: 72 h on 1 and 22

    for port in (1, 2):
        k = pair.connect(port)
        await apoll(lambda k=k: pair.of(k, ConnectionReset), timeout=5)
    assert pair.tunnel.refused == 2
    stats = pair.tunnel.take_stats()
    assert stats.connections == 2 and stats.rx_packets > 0 and stats.tx_bytes > 0
    # reinit (new addresses): every connection is reset
    pair.tunnel.reset_all()
    await apoll(lambda: pair.of(ssh, ConnectionReset), timeout=5)
    assert len(pair.tunnel.stack) == 0 and pair.tunnel.open_connections == 0
    await pair.tunnel.close()


async def test_other_ports_are_forwarded_to_v4_then_v6_loopback_and_a_closed_port_is_refused() -> None:
    pair = Pair()

    async def greet(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        line = await r.readline()
        w.write(b"got " + line)
        await w.drain()
        w.close()

    v4 = await asyncio.start_server(greet, "127.0.0.1", 0)
    v6 = await asyncio.start_server(greet, "::1", 0)
    for server in (v4, v6):
        port = server.sockets[0].getsockname()[1]
        key = pair.connect(port)
        await apoll(lambda key=key: pair.of(key, Connected), timeout=5)
        pair.send(key, b"ping\n")
        await apoll(lambda key=key: pair.received(key) == b"got ping\n" and pair.of(key, PeerClosed), timeout=5)
        server.close()
    assert pair.tunnel.forwarded == 2

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    key = pair.connect(closed)
    await apoll(lambda: pair.of(key, ConnectionReset), timeout=5)
    assert not pair.of(key, Connected)
    await pair.tunnel.close()


async def test_a_tunnel_connection_reads_lines_like_a_stream_reader() -> None:
    pair = Pair()
    lines: list[bytes] = []

    async def lined(conn: TunnelConn) -> None:
        lines.append(await conn.readline())
        lines.append(await conn.readuntil(b";"))
        lines.append(await conn.readexactly(3))
        lines.append(await conn.readline())  # EOF before a newline: the partial line
        assert conn.get_extra_info("peername")[:2] == conn.remote
        conn.write(b"bye")
        conn.close()
        await conn.wait_closed()

    pair.tunnel.register(7000, lined)
    key = pair.connect(7000)
    await apoll(lambda: pair.of(key, Connected), timeout=5)
    pair.send(key, b"one\ntwo;three")
    pair.send(key, b"four")
    pair.client.close(key, pair.loop.time())
    pair.flush()
    await apoll(lambda: pair.received(key) == b"bye" and pair.of(key, PeerClosed), timeout=5)
    assert lines == [b"one\n", b"two;", b"thr", b"eefour"]
    await pair.tunnel.close()


async def test_packets_for_other_addresses_are_ignored() -> None:
    pair = Pair()
    other = ipaddress.IPv6Address("fd7a:115c:a1e0::99").packed
    pair.client.connect(CLIENT, 5000, other, 8080, pair.loop.time())
    pair.flush()
    await asyncio.sleep(0.05)
    assert len(pair.tunnel.stack) == 0 and pair.tunnel.counters.rx_packets == 0
    await pair.tunnel.close()
