"""What the tunnel serves on its fixed agent ports: an interface module (ARCHITECTURE.md).

The root builds ``{1: ssh, 22: ssh, 2: rpty}`` (``Daemon.tunnel_services``) from the ``sshd`` and
``rpty`` capabilities and hands it to the tailnet capability, which, for each TCP connection the
tunnel accepts on one of those ports:

1. opens a loopback connection to ``await service.port()`` (the service starts its listener on
   first use if it has not yet; the call waits for it);
2. calls ``service.register_peer(<its loopback client port>, (peer_ip, peer_port),
   (agent_ip, agent_port))`` BEFORE it splices the first byte: the service serves only loopback
   connections registered this way (the SSH server has no authentication);
3. splices both ways until both sides are done.

:func:`splice` does exactly that for a tunnel connection offered as an asyncio-like stream pair;
:class:`LoopbackPort` is the listener's side of step 1, shared by the services.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

__all__ = ["LoopbackPort", "StreamIn", "StreamOut", "TunnelService", "splice"]

_CHUNK = 65536


class TunnelService(Protocol):
    async def port(self) -> int:
        """The loopback (127.0.0.1) port to splice to."""
        ...

    def register_peer(self, local_client_port: int, remote: tuple[str, int], local: tuple[str, int]) -> None:
        """The loopback connection from ``local_client_port`` carries the tunnel's connection from
        ``remote`` (the client's tunnel address) to ``local`` (the agent's)."""
        ...

    def unregister_peer(self, local_client_port: int) -> None:
        """Forget a registration whose loopback connection was never made."""
        ...


class LoopbackPort:
    """A tunnel service's loopback listener as the tunnel sees it. :meth:`wait` (the body of
    :meth:`TunnelService.port`) waits until the service says :meth:`listening`; from then until
    :meth:`closed` the port is one of the daemon's own (``own_ports``: never reported as a
    workspace listening port). A start that :meth:`failed` fails the waiters at once (their
    splices give up) and the service's next start (the supervisor's restart) serves new ones."""

    def __init__(self, own_ports: set[int]) -> None:
        self.own_ports = own_ports
        self.number = 0  # the port while listening, else 0
        self._ready: asyncio.Future[int] | None = None

    def _future(self) -> asyncio.Future[int]:
        if self._ready is None:
            self._ready = asyncio.get_running_loop().create_future()
        return self._ready

    async def wait(self) -> int:
        return await asyncio.shield(self._future())

    def listening(self, port: int) -> None:
        self.number = port
        self.own_ports.add(port)
        ready = self._future()
        if ready.done():  # started again: later callers get the new port
            self._ready = ready = asyncio.get_running_loop().create_future()
        ready.set_result(port)

    def failed(self, exc: BaseException) -> None:
        ready, self._ready = self._future(), None
        if not ready.done():
            ready.set_exception(exc)
            ready.exception()  # retrieved here: nobody may be waiting

    def closed(self) -> None:
        self.own_ports.discard(self.number)
        self.number = 0


class StreamIn(Protocol):
    """The tunnel connection's receiving side (as :class:`asyncio.StreamReader`)."""

    async def read(self, n: int = -1) -> bytes: ...


class StreamOut(Protocol):
    """The tunnel connection's sending side (as :class:`asyncio.StreamWriter`)."""

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def close(self) -> None: ...


async def splice(service: TunnelService, reader: StreamIn, writer: StreamOut, remote: tuple[str, int],
                 local: tuple[str, int]) -> None:
    """Serve one tunnel connection (from ``remote`` to the agent's ``local``) by ``service``: connect
    to its loopback port, register the peer, then copy both ways. The tunnel's EOF half-closes the
    loopback connection (the server still answers); the server's EOF or an error ends both.
    Raises OSError when the loopback port cannot be reached (the caller resets the connection)."""
    up_r, up_w = await asyncio.open_connection("127.0.0.1", await service.port())
    service.register_peer(int(up_w.get_extra_info("sockname")[1]), remote, local)

    async def inbound() -> None:  # tunnel -> server
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(_CHUNK):
                up_w.write(data)
                await up_w.drain()
            if up_w.can_write_eof():
                up_w.write_eof()
                return
        up_w.close()

    async def outbound() -> None:  # server -> tunnel
        with contextlib.suppress(ConnectionError):
            while data := await up_r.read(_CHUNK):
                writer.write(data)
                await writer.drain()

    pump_in = asyncio.ensure_future(inbound())
    try:
        await outbound()
    finally:
        pump_in.cancel()
        await asyncio.gather(pump_in, return_exceptions=True)
        up_w.close()
        with contextlib.suppress(Exception):
            writer.close()
