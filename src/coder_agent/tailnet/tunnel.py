"""TCP inside the tunnel: the asyncio layer over the sans-I/O :class:`~.tcp.TcpStack`.

One :class:`TunnelTcp` per engine (coder-tailnet.md §1 "Dispatch / port forwarding", Go's
``Conn.forwardTCP`` and tailscale's netstack ``acceptTCP``/``forwardTCP``):

* Decrypted IPv6 packets come in through :meth:`TunnelTcp.receive` (the engine's
  ``on_ip_packet``); everything the stack emits goes out through ``send_ip``. Packets whose
  destination is not one of the agent's addresses are dropped. One event-loop timer is armed at
  ``TcpStack.next_deadline()`` after every call into the stack (an idle stack arms nothing).
* Dispatch of a SYN, by destination port only: a port with a registered handler
  (:meth:`TunnelTcp.register`) is accepted at once and the handler gets a :class:`TunnelConn`;
  a port in ``reserved`` without a handler (1, 22, 2 until their servers are wired in) is
  refused with RST; any other port P is dialled at 127.0.0.1:P, then [::1]:P, and only when a
  dial succeeds is the SYN accepted (so a closed port gives the client a reset at once, as Go's
  agent does); then bytes are spliced both ways.
* Backpressure, both ways: received bytes hold TCP window until the application comes back
  for more (:meth:`TunnelConn.read` releases what the previous read returned), so a local
  socket that does not drain closes the client's window; :meth:`TunnelConn.drain` waits until
  every written byte is in the stack's bounded send buffer, so the splice reads the local socket
  only while the tunnel can take more.
* Active open (:meth:`TunnelTcp.connect`, a client's side, as the devserver's own peer uses it):
  a SYN from an unused ephemeral port; the :class:`TunnelConn` once the handshake completes,
  ConnectionRefusedError when the peer resets it, TimeoutError (and a reset) when it never answers.
* Bounds: SYNs waiting for their dial are at most ``TcpConfig.max_pending`` (1024, like
  tailscale's in-flight connection attempts); each dial tries 5 s per address. An idle
  forwarded connection costs about 13 KiB of the daemon's RSS (``bench.tunnel``).
* Counters for UpdateStats (:meth:`TunnelTcp.take_stats`): IP packets and bytes in and out
  through the tunnel's TCP, and the connections seen since the last report.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
import socket
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Final

from ..log import Collapse, get_logger
from ..tasks import reap
from .deadline import DeadlineTimer
from .tcp import (
    Connected,
    ConnectionClosed,
    ConnectionRequested,
    ConnectionReset,
    ConnKey,
    DataReceived,
    PeerClosed,
    State,
    TcpConfig,
    TcpError,
    TcpEvent,
    TcpStack,
    Writable,
    split_ipv6,
)

__all__ = ["DIAL_TIMEOUT", "SSH_KEEPALIVE_IDLE", "ConnHandler", "TunnelConn", "TunnelCounters", "TunnelTcp",
           "forward_to", "splice"]

DIAL_TIMEOUT: Final = 5.0
SSH_KEEPALIVE_IDLE: Final = 72 * 3600.0  # Go: ports 1 and 22 get 72 h keepalive idle
RESERVED_PORTS: Final = frozenset({1, 2, 22})
_WRITE_HIGH: Final = 64 * 1024  # drain() returns once the bytes not yet in the stack are under this
_READ_CHUNK: Final = 64 * 1024
_EPHEMERAL: Final = range(49152, 65536)  # IANA's dynamic ports, as Linux and gVisor pick from

ConnHandler = Callable[["TunnelConn"], Awaitable[None]]


@dataclass
class TunnelCounters:
    """Since the last :meth:`TunnelTcp.take_stats`: IP packets/bytes and connections seen."""

    rx_packets: int = 0
    rx_bytes: int = 0
    tx_packets: int = 0
    tx_bytes: int = 0
    connections: int = 0  # connections open at the report or opened since the previous one


class TunnelConn:
    """One accepted tunnel connection, shaped like an asyncio stream pair.

    ``read()`` returns bytes (b"" at the peer's FIN, raises ConnectionResetError after a
    reset); ``readexactly``/``readuntil``/``readline`` as a StreamReader's; ``write()`` queues,
    ``drain()`` waits for room; ``write_eof()`` half-closes; ``close()`` closes both ways (what
    arrives later is discarded), ``wait_closed()`` waits for the end; ``abort()`` resets. One
    object serves as both the reader and the writer of a StreamReader/StreamWriter pair.
    """

    def __init__(self, tunnel: TunnelTcp, key: ConnKey) -> None:
        self._tunnel = tunnel
        self.key = key
        self.remote = (str(ipaddress.IPv6Address(key.remote_addr)), key.remote_port)
        self.local_port = key.local_port
        self._chunks: deque[bytes] = deque()
        self._unreleased = 0  # bytes handed out by read() whose window is not yet released
        self._eof = False
        self._error: str | None = None
        self._out = bytearray()
        self._eof_wanted = False
        self._eof_sent = False
        self._discard = False
        self._readable = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self.closed = asyncio.Event()
        self._settled = asyncio.Event()  # the handshake completed, or the connection ended
        self._established = False

    # ---- application side ---------------------------------------------------------------

    async def read(self, n: int = _READ_CHUNK) -> bytes:
        self._release()
        while not self._chunks:
            if self._error is not None:
                raise ConnectionResetError(self._error)
            if self._eof:
                return b""
            self._readable.clear()
            await self._readable.wait()
        chunk = self._chunks.popleft()
        if len(chunk) > n:
            self._chunks.appendleft(chunk[n:])
            chunk = chunk[:n]
        self._unreleased += len(chunk)
        return chunk

    async def readexactly(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = await self.read(n - len(buf))
            if not chunk:
                raise asyncio.IncompleteReadError(bytes(buf), n)
            buf += chunk
        return bytes(buf)

    async def readuntil(self, separator: bytes = b"\n", limit: int = 64 * 1024) -> bytes:
        """Bytes up to and including ``separator``; IncompleteReadError at EOF before it,
        ValueError past ``limit``. What follows stays for the next read."""
        buf = bytearray()
        while (i := buf.find(separator)) < 0:
            if len(buf) > limit:
                raise ValueError(f"no {separator!r} within {limit} bytes")
            chunk = await self.read()
            if not chunk:
                raise asyncio.IncompleteReadError(bytes(buf), None)
            buf += chunk
        end = i + len(separator)
        if end < len(buf):
            self._chunks.appendleft(bytes(buf[end:]))
            self._unreleased -= len(buf) - end
        return bytes(buf[:end])

    async def readline(self) -> bytes:
        try:
            return await self.readuntil(b"\n")
        except asyncio.IncompleteReadError as e:
            return e.partial

    def get_extra_info(self, name: str, default: object = None) -> object:
        """``peername`` (the client's tunnel address and port) and ``sockname``, as a socket's."""
        if name == "peername":
            return (*self.remote, 0, 0)
        if name == "sockname":
            return (str(ipaddress.IPv6Address(self.key.local_addr)), self.local_port, 0, 0)
        return default

    def is_closing(self) -> bool:
        return self._eof_wanted or self.closed.is_set()

    def can_write_eof(self) -> bool:
        return True

    async def wait_closed(self) -> None:
        await self.closed.wait()

    def write(self, data: bytes) -> None:
        if self._error is not None:
            raise ConnectionResetError(self._error)
        if self._eof_wanted:
            raise ConnectionError("write after write_eof/close")
        if data:
            self._out += data
            self._flush()

    async def drain(self) -> None:
        while len(self._out) > _WRITE_HIGH:
            if self._error is not None:
                raise ConnectionResetError(self._error)
            self._room.clear()
            await self._room.wait()
        if self._error is not None:
            raise ConnectionResetError(self._error)

    def write_eof(self) -> None:
        if self._error is None and not self._eof_wanted:
            self._eof_wanted = True
            self._flush()

    def close(self) -> None:
        """FIN after the queued bytes; bytes still arriving are read and dropped."""
        self._discard = True
        self._chunks.clear()
        self._release()
        self.write_eof()

    def abort(self) -> None:
        if self._error is None and not self.closed.is_set():
            self._error = "aborted"
            self._tunnel._abort(self)

    @property
    def at_eof(self) -> bool:
        return self._eof and not self._chunks

    # ---- stack side -----------------------------------------------------------------------

    def _release(self) -> None:
        pending = self._unreleased
        if self._discard:
            pending += sum(len(c) for c in self._chunks)
            self._chunks.clear()
        if pending:
            self._unreleased = 0
            self._tunnel._consume(self.key, pending)

    def _flush(self) -> None:
        if self._error is not None or self.closed.is_set():
            return
        if self._out:
            n = self._tunnel._send(self.key, self._out)
            if n:
                del self._out[:n]
        if len(self._out) <= _WRITE_HIGH:
            self._room.set()
        if self._eof_wanted and not self._out and not self._eof_sent:
            self._eof_sent = True
            self._tunnel._close(self.key)

    def _on_data(self, data: bytes) -> None:
        if self._discard:
            self._tunnel._consume(self.key, len(data))
            return
        self._chunks.append(data)
        self._readable.set()

    def _on_connected(self) -> None:
        self._established = True
        self._settled.set()
        self._flush()

    def _on_peer_closed(self) -> None:
        self._eof = True
        self._readable.set()

    def _on_end(self, error: str | None) -> None:
        if error is not None and self._error is None:
            self._error = error
        self._eof = True
        self._readable.set()
        self._room.set()
        self.closed.set()
        self._settled.set()


class TunnelTcp:
    """Every TCP connection inside one engine's tunnel; see the module rules."""

    def __init__(self, send_ip: Callable[[bytes], None], local_addrs: Callable[[], Iterable[bytes]], *,
                 config: TcpConfig | None = None, reserved: Collection[int] = RESERVED_PORTS,
                 forward_hosts: tuple[str, ...] = ("127.0.0.1", "::1"), dial_timeout: float = DIAL_TIMEOUT,
                 log: object = None) -> None:
        self.stack = TcpStack(config)
        self._send_ip = send_ip
        self._local_addrs = local_addrs
        self.reserved = frozenset(reserved)
        self.forward_hosts = forward_hosts
        self.dial_timeout = dial_timeout
        self.log = log if log is not None else get_logger("tailnet.tcp")
        self._errors = Collapse(self.log)
        self._handlers: dict[int, tuple[ConnHandler, float | None]] = {}
        self._conns: dict[ConnKey, TunnelConn] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop = asyncio.get_running_loop()
        self._timer = DeadlineTimer(self._fire, self._loop.time)  # the TCP stack's timers
        self._closed = False
        self.counters = TunnelCounters()
        self._seen_since_report = 0
        self.refused = 0
        self.forwarded = 0

    # ---- configuration ----------------------------------------------------------------------

    def register(self, port: int, handler: ConnHandler, *, keepalive_idle: float | None = None) -> None:
        """Serve ``port`` with ``handler`` (one task per accepted connection)."""
        if port in (1, 22) and keepalive_idle is None:
            keepalive_idle = SSH_KEEPALIVE_IDLE
        self._handlers[port] = (handler, keepalive_idle)

    def unregister(self, port: int) -> None:
        self._handlers.pop(port, None)

    # ---- packets in and out -----------------------------------------------------------------

    def receive(self, packet: bytes) -> None:
        """One decrypted IPv6 packet from the tunnel (the engine's ``on_ip_packet``)."""
        if self._closed:
            return
        parts = split_ipv6(packet)
        if parts is None or parts[1] not in self._local_addrs():
            return
        self.counters.rx_packets += 1
        self.counters.rx_bytes += len(packet)
        events = self.stack.receive_packet(packet, self._loop.time())
        self._handle(events)
        self._flush_out()

    def _flush_out(self) -> None:
        for p in self.stack.packets_to_send():
            self.counters.tx_packets += 1
            self.counters.tx_bytes += len(p)
            self._send_ip(p)
        self._rearm()

    def _rearm(self) -> None:
        if not self._closed:
            self._timer.arm(self.stack.next_deadline())

    def _fire(self) -> None:
        if self._closed:
            return
        self._handle(self.stack.handle_timers(self._loop.time()))
        self._flush_out()

    # ---- events ---------------------------------------------------------------------------------

    def _handle(self, events: list[TcpEvent]) -> None:
        for ev in events:
            if isinstance(ev, ConnectionRequested):
                self._requested(ev.key)
                continue
            conn = self._conns.get(ev.key)
            if conn is None:
                continue
            if isinstance(ev, DataReceived):
                conn._on_data(ev.data)
            elif isinstance(ev, Writable):
                conn._flush()
            elif isinstance(ev, PeerClosed):
                conn._on_peer_closed()
            elif isinstance(ev, ConnectionClosed):
                self._end(conn, None)
            elif isinstance(ev, ConnectionReset):
                self._end(conn, ev.reason)
            elif isinstance(ev, Connected):
                conn._on_connected()

    def _end(self, conn: TunnelConn, error: str | None) -> None:
        if self._conns.get(conn.key) is conn:
            del self._conns[conn.key]
        conn._on_end(error)

    def _requested(self, key: ConnKey) -> None:
        port = key.local_port
        entry = self._handlers.get(port)
        if entry is not None:
            handler, keepalive = entry
            self._spawn(self._serve(self._accept(key, keepalive), handler))
        elif port in self.reserved:
            self.refused += 1
            self.stack.refuse(key)
        else:
            self._spawn(self._forward(key))

    def _accept(self, key: ConnKey, keepalive_idle: float | None) -> TunnelConn:
        self.stack.accept(key, self._loop.time(), keepalive_idle=keepalive_idle)
        conn = TunnelConn(self, key)
        self._conns[key] = conn
        self._seen_since_report += 1
        return conn

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, conn: TunnelConn, handler: ConnHandler) -> None:
        try:
            await handler(conn)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except Exception as e:
            self._errors.error("tunnel connection handler failed", type(e).__name__, port=conn.local_port,
                               error=str(e) or type(e).__name__)
        finally:
            if not conn.closed.is_set():
                conn.close()

    # ---- active open --------------------------------------------------------------------------

    async def connect(self, local_addr: bytes, remote_addr: bytes, port: int, *,
                      timeout: float = DIAL_TIMEOUT) -> TunnelConn:
        """Open a connection from ``local_addr`` (16 bytes, an ephemeral port) to
        ``[remote_addr]:port`` through the tunnel; see the module rules for the errors."""
        if self._closed:
            raise ConnectionError("the tunnel is closed")
        key = None
        for _ in range(64):
            candidate = ConnKey(local_addr, random.choice(_EPHEMERAL), remote_addr, port)  # noqa: S311
            if candidate not in self.stack:
                key = self.stack.connect(*candidate, self._loop.time())
                break
        if key is None:
            raise ConnectionError("no free ephemeral port")
        conn = TunnelConn(self, key)
        self._conns[key] = conn
        self._seen_since_report += 1
        self._flush_out()
        try:
            async with asyncio.timeout(timeout):
                await conn._settled.wait()
        except BaseException:  # the timeout, or the caller cancelled: the SYN is withdrawn
            conn.abort()
            raise
        if not conn._established:
            raise ConnectionRefusedError(f"[{ipaddress.IPv6Address(remote_addr)}]:{port}: {conn._error or 'closed'}")
        return conn

    # ---- forwarding --------------------------------------------------------------------------

    async def _dial(self, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        for host in self.forward_hosts:
            try:
                return await asyncio.wait_for(asyncio.open_connection(host, port), self.dial_timeout)
            except (OSError, TimeoutError):
                continue
        return None

    async def _forward(self, key: ConnKey) -> None:
        dialed = await self._dial(key.local_port)
        if self._closed or self.stack.state(key) is not State.REQUESTED:
            if dialed is not None:
                dialed[1].close()
            return
        if dialed is None:
            self.refused += 1
            self.stack.refuse(key)
            self._flush_out()
            return
        reader, writer = dialed
        conn = self._accept(key, None)
        self._flush_out()
        self.forwarded += 1
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await self._serve(conn, lambda c: splice(c, reader, writer))

    # ---- calls from TunnelConn ----------------------------------------------------------------

    def _send(self, key: ConnKey, data: bytearray) -> int:
        try:
            n = self.stack.send(key, bytes(data), self._loop.time())  # less than all: Writable later
        except TcpError:
            return 0
        self._flush_out()
        return n

    def _consume(self, key: ConnKey, n: int) -> None:
        self.stack.consume(key, n, self._loop.time())
        self._flush_out()

    def _close(self, key: ConnKey) -> None:
        with contextlib.suppress(TcpError):
            self.stack.close(key, self._loop.time())
        self._flush_out()

    def _abort(self, conn: TunnelConn) -> None:
        self.stack.abort(conn.key)
        self._end(conn, "aborted")
        self._flush_out()

    # ---- outside view ----------------------------------------------------------------------------

    @property
    def open_connections(self) -> int:
        return len(self._conns)

    def status(self) -> dict[str, object]:
        received = sent = 0
        for key, conn in self._conns.items():
            if key in self.stack:
                out, unconsumed = self.stack.buffered(key)
                received += unconsumed
                sent += out + len(conn._out)
        return {"connections": len(self._conns), "tcp_states": len(self.stack), "forwarded": self.forwarded,
                "refused": self.refused, "ports": sorted(self._handlers),
                "held_received_bytes": received, "held_send_bytes": sent}

    def take_stats(self) -> TunnelCounters:
        """The counters since the previous call (Go's connstats are per report interval)."""
        c = self.counters
        c.connections = max(self._seen_since_report, len(self._conns))
        self.counters = TunnelCounters()
        self._seen_since_report = len(self._conns)
        return c

    def reset_all(self) -> None:
        """Reset every connection (the agent's addresses changed: reinit)."""
        for conn in list(self._conns.values()):
            conn.abort()
        for key in self.stack.keys():  # noqa: SIM118  (TcpStack is not iterable; keys() is a copy)
            self.stack.abort(key)
        self._flush_out()

    async def close(self) -> None:
        """Reset every connection and stop the timer and the tasks."""
        for conn in list(self._conns.values()):
            conn.abort()
        self._closed = True
        self._timer.cancel()
        await reap(*self._tasks)


async def splice(conn: TunnelConn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Bytes both ways between a tunnel connection and a local socket, with backpressure;
    a FIN on one side half-closes the other; a reset on either side resets the other."""

    async def to_local() -> None:
        while data := await conn.read():
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    async def to_tunnel() -> None:
        while data := await reader.read(_READ_CHUNK):
            conn.write(data)
            await conn.drain()
        conn.write_eof()

    tasks = [asyncio.ensure_future(to_local()), asyncio.ensure_future(to_tunnel())]
    try:
        for fut in asyncio.as_completed(tasks):
            await fut  # an error on one side ends both
        await conn.closed.wait()
    except (ConnectionError, OSError):
        conn.abort()
        transport = writer.transport
        if isinstance(transport, asyncio.WriteTransport):
            transport.abort()
    finally:
        try:
            await reap(*tasks)
        finally:
            writer.close()


def forward_to(host: str, port: int | Callable[[], int]) -> ConnHandler:
    """A handler that splices each tunnel connection to a local listener (``port`` may be a
    callable, read per connection): how a server that wants a real socket (the SSH server on
    loopback, say) is put on a tunnel port with :meth:`TunnelTcp.register`."""

    async def handle(conn: TunnelConn) -> None:
        target = port() if callable(port) else port
        reader, writer = await asyncio.open_connection(host, target)
        await splice(conn, reader, writer)

    return handle
