"""A local TCP port that reaches one agent port through the devserver's own tunnel.

How the demo offers a working ``ssh -p <port> coder@127.0.0.1``: :class:`PortForward` listens on
127.0.0.1 (an ephemeral port unless one is given); each accepted connection is opened through a
:class:`~.tunnelpeer.ClientPeer` to the agent's port (WireGuard over the DERP relay, our
userspace TCP) and spliced both ways with
:func:`~coder_agent.tailnet.tunnel.splice`: backpressure both ways (a reader that does not drain
closes the other side's window), a FIN half-closes the other side, a reset on either side resets
the other. A connection whose tunnel open fails (refused, timed out) is closed at once, and the
reason kept in :attr:`PortForward.last_error`. Counters: :attr:`PortForward.accepted`,
:attr:`PortForward.failed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

from ..tailnet.tunnel import splice
from ..tasks import reap
from .tunnelpeer import ClientPeer

__all__ = ["PortForward"]


class PortForward:
    """``async with PortForward(peer, 1) as fwd:`` then connect to ``127.0.0.1:fwd.port``."""

    def __init__(self, peer: ClientPeer, agent_port: int, *, host: str = "127.0.0.1", port: int = 0,
                 open_timeout: float = 15.0) -> None:
        self.peer = peer
        self.agent_port = agent_port
        self.host = host
        self.port = port
        self.open_timeout = open_timeout
        self.accepted = 0
        self.failed = 0
        self.last_error = ""
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        """Listen; the port (also :attr:`port`)."""
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(self._carry(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _carry(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            conn = await self.peer.open(self.agent_port, self.open_timeout)
        except (OSError, TimeoutError) as e:
            self.failed += 1
            self.last_error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            writer.close()
            return
        try:
            await splice(conn, reader, writer)
        finally:
            if not conn.closed.is_set():
                conn.abort()  # cancelled (close()): the agent's side is reset too

    async def close(self) -> None:
        """Stop listening; every carried connection is reset."""
        if self._server is not None:
            self._server.close()
        await reap(*self._tasks)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def __aenter__(self) -> PortForward:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
