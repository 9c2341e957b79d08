"""tunnelports.splice: registers the loopback peer before the first byte, carries both ways, and
the tunnel's EOF half-closes (the server still answers)."""

from __future__ import annotations

import asyncio

import pytest

from coder_agent.tunnelports import LoopbackPort, splice

from .conftest import t


class CountingService:
    """Reads to EOF, then answers how many bytes came and which peer the tunnel registered."""

    def __init__(self) -> None:
        self.peers: dict[int, tuple[tuple[str, int], tuple[str, int]]] = {}
        self.seen_registered: list[bool] = []
        self.server: asyncio.Server | None = None

    async def port(self) -> int:
        if self.server is None:
            self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    def register_peer(self, local_client_port: int, remote: tuple[str, int], local: tuple[str, int]) -> None:
        self.peers[local_client_port] = (remote, local)

    def unregister_peer(self, local_client_port: int) -> None:
        self.peers.pop(local_client_port, None)

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        first = await r.read(1)
        peer = self.peers.get(w.get_extra_info("peername")[1])
        self.seen_registered.append(peer is not None)
        rest = await r.read()  # to EOF: the tunnel's half-close
        w.write(f"{len(first) + len(rest)} from {peer[0][0] if peer else '?'}\n".encode())
        await w.drain()
        w.close()


async def test_splice_registers_first_and_half_closes() -> None:
    svc = CountingService()

    async def tunnel_side(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await splice(svc, r, w, ("fd7a::5", 40000), ("fd7a::1", 2))

    tunnel = await asyncio.start_server(tunnel_side, "127.0.0.1", 0)
    try:
        r, w = await asyncio.open_connection("127.0.0.1", tunnel.sockets[0].getsockname()[1])
        w.write(b"x" * 200_000)
        await w.drain()
        w.write_eof()
        answer = await asyncio.wait_for(r.read(), t(10))
        assert answer == b"200000 from fd7a::5\n"
        assert svc.seen_registered == [True]
        w.close()
    finally:
        tunnel.close()
        if svc.server is not None:
            svc.server.close()


async def test_splice_raises_when_the_service_is_unreachable() -> None:
    class Gone(CountingService):
        async def port(self) -> int:
            s = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
            p = int(s.sockets[0].getsockname()[1])
            s.close()
            await s.wait_closed()
            return p

    r = asyncio.StreamReader()
    with pytest.raises(OSError):
        await splice(Gone(), r, None, ("a", 1), ("b", 2))  # type: ignore[arg-type]


async def test_loopback_port_waiters_own_ports_and_a_failed_start() -> None:
    own: set[int] = set()
    lp = LoopbackPort(own)
    early = asyncio.ensure_future(lp.wait())  # the tunnel's first connection, before the listener
    await asyncio.sleep(0)
    lp.failed(OSError("cannot listen"))
    with pytest.raises(OSError, match="cannot listen"):  # its splice gives up at once
        await asyncio.wait_for(early, t(5))
    later = asyncio.ensure_future(lp.wait())  # waits for the next start (the supervisor's restart)
    await asyncio.sleep(0)
    assert not later.done()
    lp.listening(40001)
    assert await asyncio.wait_for(later, t(5)) == 40001 and await lp.wait() == 40001
    assert own == {40001} and lp.number == 40001  # one of the daemon's own ports while it listens
    lp.closed()
    assert own == set() and lp.number == 0
    lp.listening(40002)  # started again: the new port
    assert await lp.wait() == 40002 and own == {40002}
