"""The reconnecting-PTY server (tunnel port 2, the dashboard's web terminal).

Rules:

* :meth:`RptyServer.handle` serves one connection given as asyncio streams (the tunnel calls it);
  :meth:`RptyServer.start` also listens on 127.0.0.1 (an ephemeral port) for splicing. The
  splicer tells which tunnel address a loopback connection stands for with
  :meth:`RptyServer.register_peer` (before its first byte, but maybe after the accept: the
  connection waits up to :data:`REGISTER_WAIT` for it); with ``require_registered_peer`` (the
  daemon) a loopback connection never registered is closed: it is some local process.
* A connection sends the header (:mod:`.protocol`); a bad or missing header closes it. Sessions
  are keyed by the header's ``ID``: the first connection creates one (concurrent first connections
  create it once; a failure to start is every waiting connection's error), later ones attach.
  The backend is :mod:`.screen` when the header asks for it and ``screen`` is installed, else the
  buffered one (:mod:`.session`, which also states the session rules).
* Reporting: ``on_connect(connection_id, ip)`` when a connection arrives and
  ``on_disconnect(connection_id, ip, status_code, reason)`` when it ends (0 and "" for a normal
  end or a bad header, as Go; 1 and the error when the session could not be created or attached;
  1 "server shut down" on :meth:`close`). ``ip`` has no port. :attr:`RptyServer.connections` is
  the live count of open connections (Go's ``ConnCount``, for ``UpdateStats``). A hook that raises
  is logged, never breaks the terminal.
* :meth:`RptyServer.close` stops listening and ends every session (killing its processes) and
  every connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from ..childenv import ChildEnv
from ..clock import Clock, SystemClock
from ..log import get_logger
from ..procprio import ChildPriority
from .protocol import HeaderReader, InitRequest, ProtocolError
from .screen import ScreenSession
from .session import BufferedSession, Command, RptySettings, Session, SessionClosed, command_for

__all__ = ["RptyServer", "RptySettings", "backend_for", "host_of"]

REGISTER_WAIT = 10.0
OnConnect = Callable[[str, str], None]
OnDisconnect = Callable[[str, str, int, str], None]


def host_of(addr: str) -> str:
    """``addr`` without its port (``1.2.3.4:5`` → ``1.2.3.4``, ``[fd7a::1]:5`` → ``fd7a::1``)."""
    if addr.startswith("["):
        return addr[1:].split("]", 1)[0]
    if addr.count(":") == 1:
        return addr.split(":", 1)[0]
    return addr


def backend_for(init: InitRequest, env: Mapping[str, str]) -> str:
    """"screen" when asked for and installed, else "buffered" (see :mod:`.screen`)."""
    if init.backend_type.casefold() == "screen" and shutil.which("screen", path=env.get("PATH")):
        return "screen"
    return "buffered"


class RptyServer:
    """The reconnecting-PTY server (see the module rules).

    ``env`` gives each session's environment: a :class:`~coder_agent.childenv.ChildEnv`
    (its ``build()``) or a callable returning a mapping. ``directory`` is the working directory
    setting (a string or a callable for one that follows the manifest). ``priority`` is the daemon's
    ``oom_score_adj``/nice for its children."""

    def __init__(self, env: ChildEnv | Callable[[], Mapping[str, str]], *,
                 directory: str | Callable[[], str] = "", settings: RptySettings | None = None,
                 on_connect: OnConnect | None = None, on_disconnect: OnDisconnect | None = None,
                 clock: Clock | None = None, require_registered_peer: bool = False,
                 priority: ChildPriority | None = None) -> None:
        self.env_factory: Callable[[], Mapping[str, str]] = env.build if isinstance(env, ChildEnv) else env
        self.directory_factory: Callable[[], str] = directory if callable(directory) else (lambda: directory)
        self.settings = settings or RptySettings()
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self.clock: Clock = clock or SystemClock()
        self.sessions: dict[str, Session] = {}
        self._conns: dict[str, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._listener: asyncio.Server | None = None
        self._closed = False
        self._log = get_logger("rpty")
        self.require_registered_peer = require_registered_peer
        self.priority = priority or ChildPriority()
        self._peers: dict[int, str] = {}  # loopback client port -> the tunnel's "host:port"
        self._registered = asyncio.Event()  # set (and cleared by waiters) on each registration

    @property
    def connections(self) -> int:
        """Connections open now (from accept to close, header phase included)."""
        return len(self._conns)

    async def start(self) -> int:
        """Listen on 127.0.0.1 (an ephemeral port); returns the port."""
        self._listener = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port: int = self._listener.sockets[0].getsockname()[1]
        return port

    def register_peer(self, local_client_port: int, remote: tuple[str, int],
                      local: tuple[str, int] | None = None) -> None:
        """The loopback connection from ``local_client_port`` carries the tunnel's from ``remote``."""
        host, port = remote
        self._peers[local_client_port] = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._registered.set()

    def unregister_peer(self, local_client_port: int) -> None:
        self._peers.pop(local_client_port, None)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        remote = await self._claim(int(peer[1])) if peer else None
        if remote is None and self.require_registered_peer:
            self._log.warning("reconnecting pty connection refused: not from the tunnel",
                              client_port=peer[1] if peer else 0)
            writer.close()
            return
        await self.handle(reader, writer, remote or (f"{peer[0]}:{peer[1]}" if peer else ""))

    async def _claim(self, client_port: int) -> str | None:
        """The registration of the loopback connection from ``client_port`` (the tunnel may make it
        just after our accept); None without one (at once when not required)."""
        if client_port in self._peers or not self.require_registered_peer:
            return self._peers.pop(client_port, None)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(REGISTER_WAIT):
                while client_port not in self._peers and not self._closed:
                    self._registered.clear()
                    await self._registered.wait()
        return self._peers.pop(client_port, None)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, remote_addr: str) -> None:
        """Serve one connection until it or its session ends; never raises for the peer's errors."""
        cid, ip = str(uuid.uuid4()), host_of(remote_addr)
        self._conns[cid] = (reader, writer)
        self._idle.clear()
        self._report(self.on_connect, cid, ip)
        code, reason = 0, ""
        log = self._log.bind(connection=cid, remote=remote_addr)
        try:
            got = await self._read_header(reader, log)
            if got is not None and not self._closed:
                init, rest = got
                log = log.bind(session=init.id)
                try:
                    session = await self._session_for(init)
                    await session.attach(cid, reader, writer, init, rest)
                except Exception as e:  # reported to coderd as the disconnect reason
                    code, reason = 1, str(e) or type(e).__name__
                    log.warning("reconnecting pty failed", error=reason)
        except asyncio.CancelledError:
            code, reason = 1, "server shut down"
            raise
        finally:
            if self._closed and code == 0:
                code, reason = 1, "server shut down"
            writer.close()
            try:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.wait_closed(), 1.0)
            finally:
                del self._conns[cid]
                if not self._conns:
                    self._idle.set()
                self._report(self.on_disconnect, cid, ip, code, reason)

    def _report(self, cb: Callable[..., None] | None, *args: Any) -> None:
        if cb is None:
            return
        try:
            cb(*args)
        except Exception as e:  # a reporting hook must not break the terminal
            self._log.warning("connection report hook failed", error=str(e))

    async def _read_header(self, reader: asyncio.StreamReader, log: Any) -> tuple[InitRequest, bytes] | None:
        hr = HeaderReader()
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    log.info("connection closed before the reconnecting pty header")
                    return None
                got = hr.feed(data)
                if got is not None:
                    return got
        except ProtocolError as e:
            log.warning("bad reconnecting pty header", error=str(e))
        except ConnectionError as e:
            log.info("connection failed before the reconnecting pty header", error=str(e))
        return None

    async def _session_for(self, init: InitRequest) -> Session:
        s = self.sessions.get(init.id)
        if s is not None:
            await asyncio.shield(s.ready)
            return s
        env = self.env_factory()
        cls = ScreenSession if backend_for(init, env) == "screen" else BufferedSession
        s = cls(init.id, self.settings, self.clock, self._forget)
        self.sessions[init.id] = s
        try:
            cmd = await command_for(init, env, self.directory_factory(), self.settings)
            prio = self.priority  # oom_score_adj / nice as every child of the daemon (Go's agentexec)
            await s.start(Command(prio.wrap(cmd.argv), prio.env(cmd.env), cmd.cwd), init)
        except BaseException as e:
            self._forget(s)
            if not s.ready.done():
                s.ready.set_exception(e if isinstance(e, Exception) else SessionClosed("cancelled"))
                s.ready.exception()  # retrieved: waiting attachers get it, nobody else must log it
            s.closing = True
            s.done.set()
            raise
        s.ready.set_result(None)
        return s

    def _forget(self, s: Session) -> None:
        if self.sessions.get(s.id) is s:
            del self.sessions[s.id]

    async def close(self) -> None:
        """Stop listening, end every session (killing its processes) and every connection."""
        self._closed = True
        self._registered.set()  # connections waiting for a registration give up
        if self._listener is not None:
            self._listener.close()
        await asyncio.gather(*(s.close("server shut down") for s in list(self.sessions.values())),
                             return_exceptions=True)
        for reader, writer in list(self._conns.values()):  # those not attached (header, starting)
            reader.feed_eof()
            writer.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), 5.0)
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._listener.wait_closed(), 5.0)
