"""Thin asyncio layer: a websocket carrying a yamux session, streams, and dRPC unary calls.

All protocol decisions live in the sans-I/O cores (:mod:`.yamux`, :mod:`.drpc`); this
module only moves bytes and wakes waiters. Rules it keeps:

* The websocket is one ordered byte stream: every received binary message goes to
  the session whatever its boundaries; a text message ends the connection (coderd's
  NetConn treats it as a protocol violation).
* Everything the session queues is sent in order, in binary messages of at most
  ``max_message`` bytes (the Go side refuses messages over 4 MiB), one send at a time: by a
  task that is about to wait for the peer (:meth:`Stream.read`, :meth:`Stream.drain`), which
  sends what is pending itself, so a call's request leaves without a hop through another
  task; otherwise on the next loop pass, at once if the socket can write without waiting
  (``send_now``, :mod:`.websocket`), else by the writer task. The reader never awaits a
  send (a reader blocked on a full socket while the peer does the same would deadlock).
* Window credit is returned as the application reads (:meth:`Stream.read`), so a slow
  reader slows the peer instead of buffering without bound.
* Pings from the peer are answered by the session as the reader feeds it, never behind
  application work.
* A protocol error, a GoAway with a non-zero code, or the websocket closing ends the
  connection: :attr:`YamuxConnection.closed` resolves with the reason and every
  pending read, ping and open fails with :class:`ConnectionClosedError`.

One dRPC call = one fresh yamux stream, as coder's Go SDK does: :func:`unary_call`,
:func:`server_stream` (an async iterator of messages) and :func:`bidi_stream` (a
:class:`BidiStream` with send/recv/close_send/close).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any, Final, Protocol

from ..tasks import reap
from . import drpc, yamux
from .drpc import RpcError, RpcUnimplemented

__all__ = [
    "BidiStream",
    "ConnectionClosedError",
    "MessageSocket",
    "RpcError",
    "RpcUnimplemented",
    "Stream",
    "StreamResetError",
    "YamuxConnection",
    "bidi_stream",
    "server_stream",
    "unary_call",
    "unary_call_pieces",
]

DEFAULT_MAX_MESSAGE: Final = 1 << 20
# Go's AcceptBacklog: inbound streams nobody accepts beyond this are reset.
ACCEPT_BACKLOG: Final = 256


class MessageSocket(Protocol):
    """What we need from a websocket: ``websockets``' ClientConnection fits.

    ``send`` must hand the whole message to the transport before it first suspends (then
    it may wait for the buffer to drain), so that a send cancelled with its caller never
    leaves half a message: websockets' and aiohttp's sends do.
    """

    async def send(self, message: bytes, /) -> None: ...

    async def close(self) -> None: ...

    def __aiter__(self) -> AsyncIterator[str | bytes]: ...


class ConnectionClosedError(yamux.YamuxError):
    """The yamux connection is gone (or going away); ``reason`` says why."""


class StreamResetError(yamux.YamuxError):
    """The stream was reset (by the peer or by us); its data is lost."""


class Stream:
    """One yamux stream. Obtain it from :meth:`YamuxConnection.open_stream` / ``accept_stream``."""

    def __init__(self, conn: YamuxConnection, stream_id: int) -> None:
        self._conn = conn
        self.stream_id: Final = stream_id
        self._buf: deque[bytes] = deque()
        self._eof = False
        self._reset = False
        # The read() waiting for data, eof, reset or the connection's end (one reader at a time).
        self._waiter: asyncio.Future[None] | None = None
        self._local_closed = False

    def write(self, data: bytes) -> None:
        """Queue ``data``; it leaves as fast as the peer's window allows.

        Does not wait; use :meth:`drain` for back-pressure. Raises
        :class:`StreamResetError`, :class:`ConnectionClosedError`, or
        :class:`yamux.StreamError` after :meth:`close`.
        """
        self._check_alive()
        self._conn._send(self.stream_id, data)

    def writelines(self, parts: Iterable[bytes | memoryview]) -> None:
        """:meth:`write` each part, in order, as one write (a ``memoryview`` is not copied: its
        buffer must not change until sent)."""
        self._check_alive()
        self._conn._send(self.stream_id, *parts)

    async def drain(self) -> None:
        """Wait until everything written has been handed to the websocket."""
        conn = self._conn
        while True:
            self._check_alive()
            if conn._pending and not conn._sending and await conn._send_pending():
                continue
            if conn._session.send_queued(self.stream_id) == 0:
                return
            await conn._progress()

    async def read(self, max_bytes: int = -1) -> bytes:
        """Return the next received bytes (all buffered, or at most ``max_bytes``).

        Returns b"" once the peer has closed its side and the buffer is empty. Raises
        :class:`StreamResetError` if the stream was reset and
        :class:`ConnectionClosedError` if the connection ended before the peer's FIN.
        One read at a time: a second one while the first waits raises RuntimeError.
        """
        conn = self._conn
        while not self._buf:
            if self._reset:
                raise StreamResetError(f"stream {self.stream_id} was reset")
            if self._eof:
                return b""
            if conn._closed_reason is not None:
                raise ConnectionClosedError(conn._closed_reason)
            # About to wait for the peer: what we wrote goes out now, from this task.
            if conn._pending and not conn._sending and await conn._send_pending():
                continue
            if self._waiter is not None:  # as asyncio.StreamReader: one reader at a time
                raise RuntimeError(f"stream {self.stream_id}: another read is already waiting")
            waiter = conn._loop.create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                self._waiter = None
        if max_bytes < 0:
            data = b"".join(self._buf)
            self._buf.clear()
        else:
            head = self._buf.popleft()
            data, rest = head[:max_bytes], head[max_bytes:]
            if rest:
                self._buf.appendleft(rest)
        self._conn._consume(self.stream_id, len(data))
        return data

    async def close(self) -> None:
        """Half-close: FIN after queued data. Reading continues until the peer's FIN.

        Idempotent; a no-op on a reset stream or a closed connection.
        """
        self.close_nowait()

    def close_nowait(self) -> None:
        """:meth:`close` for places that cannot await (an async generator being finalized)."""
        if self._local_closed or self._reset or self._conn._closed_reason is not None:
            return
        self._local_closed = True
        self._conn._close_stream(self.stream_id)

    def reset(self) -> None:
        """Abort the stream (RST); pending and later reads raise :class:`StreamResetError`."""
        if self._reset:
            return
        self._mark_reset()
        if self._conn._closed_reason is None:
            self._conn._reset_stream(self.stream_id)

    # Called by the connection's reader task.
    def _feed(self, data: bytes) -> None:
        self._buf.append(data)
        self._wake()

    def _mark_eof(self) -> None:
        self._eof = True
        self._wake()

    def _mark_reset(self) -> None:
        self._reset = True
        self._buf.clear()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _check_alive(self) -> None:
        if self._reset:
            raise StreamResetError(f"stream {self.stream_id} was reset")
        if self._conn._closed_reason is not None:
            raise ConnectionClosedError(self._conn._closed_reason)


class YamuxConnection:
    """A yamux session over an already-open websocket.

    Create it inside a running event loop: it starts a reader and a writer task at
    once. ``client=True`` is the agent's role (odd stream ids); ``client=False``
    serves (our test control plane), accepting streams via :meth:`accept_stream`, or, with
    ``on_stream``, handing each inbound stream to that callback from the reader task itself
    (it must not block: it typically starts a task), which saves the accept queue's task hops.
    :attr:`closed` is a future that resolves with the reason text when the connection
    ends, whoever ended it.
    """

    def __init__(
        self,
        ws: MessageSocket,
        *,
        client: bool = True,
        max_message: int = DEFAULT_MAX_MESSAGE,
        on_stream: Callable[[Stream], None] | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        self._ws = ws
        self._session = yamux.Session(client=client)
        self._max_message = max_message
        self._streams: dict[int, Stream] = {}
        self._accept: asyncio.Queue[Stream] = asyncio.Queue()
        self._on_stream = on_stream
        self._pings: dict[int, asyncio.Future[None]] = {}
        # Bytes taken from the session and not yet sent, in order; one send at a time.
        self._pending: list[bytes] = []
        self._sending = False
        self._writer_wake: asyncio.Future[None] | None = None
        self._writer_stop = False
        self._kick_armed = False
        self._loop = loop
        self._progress_event = asyncio.Event()
        self._closed_reason: str | None = None
        self.closed: asyncio.Future[str] = loop.create_future()
        self.last_received: float = loop.time()
        """Loop time of the last websocket message: a liveness signal for watchdogs."""
        self._send_now: Callable[[bytes], bool] | None = getattr(ws, "send_now", None)
        self._reader = loop.create_task(self._read_loop(), name="yamux-reader")
        self._writer = loop.create_task(self._write_loop(), name="yamux-writer")
        self._shutdown: asyncio.Task[None] | None = None
        # A socket that can deliver messages itself (rpc.websocket) does, from its protocol
        # callback: no task hop per message. The reader task still ends the connection when
        # the socket closes, and takes whatever the socket does not deliver that way.
        set_receiver: Callable[[Callable[[bytes], None]], None] | None = getattr(ws, "set_receiver", None)
        if set_receiver is not None:
            set_receiver(self._receive)

    @property
    def session(self) -> yamux.Session:
        """The sans-I/O core (read-only use: windows, states, go-away codes)."""
        return self._session

    # ---- public API ------------------------------------------------------------------

    async def open_stream(self) -> Stream:
        """Open a new stream (SYN is sent at once; data may follow before the ACK)."""
        self._check_open()
        try:
            sid = self._session.open_stream()
        except yamux.SessionClosedError as exc:
            raise ConnectionClosedError(str(exc)) from exc
        stream = Stream(self, sid)
        self._streams[sid] = stream
        self._flush()
        return stream

    async def accept_stream(self) -> Stream:
        """Wait for a stream the peer opened. Raises :class:`ConnectionClosedError`."""
        get = asyncio.ensure_future(self._accept.get())
        waiters: set[asyncio.Future[Any]] = {get, self.closed}
        try:
            done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not get.done():
                get.cancel()
        if get in done:
            return get.result()
        raise ConnectionClosedError(self.closed.result())

    # The timeout parameter is the published contract (callers pass a number, not a scope).
    async def ping(self, timeout: float) -> float:
        """Send a yamux ping and return the round-trip time in seconds.

        Raises TimeoutError if no ACK arrives within ``timeout`` and
        :class:`ConnectionClosedError` if the connection ends first.
        """
        self._check_open()
        loop = asyncio.get_running_loop()
        ping_id = self._session.ping()
        fut: asyncio.Future[None] = loop.create_future()
        self._pings[ping_id] = fut
        started = loop.time()
        self._flush()
        try:
            await asyncio.wait_for(fut, timeout)
        finally:
            self._pings.pop(ping_id, None)
        return loop.time() - started

    async def close(self, code: int = yamux.GoAwayCode.NORMAL) -> None:
        """Send GoAway(``code``), flush, close the websocket and wait for the tasks to end."""
        if self._closed_reason is None:
            with contextlib.suppress(yamux.SessionClosedError):
                self._session.go_away(code)
            self._flush()
            self._terminate("closed by us")
        if self._shutdown is not None:
            await self._shutdown

    # ---- used by Stream --------------------------------------------------------------

    def _send(self, sid: int, *parts: bytes | memoryview) -> None:
        for data in parts:
            self._session.send(sid, data)
        self._flush()

    def _consume(self, sid: int, n: int) -> None:
        if self._closed_reason is None and n:
            self._session.consume(sid, n)
            self._flush()

    def _close_stream(self, sid: int) -> None:
        self._session.close_stream(sid)
        self._flush()
        self._forget_if_gone(sid)

    def _reset_stream(self, sid: int) -> None:
        self._session.reset_stream(sid)
        self._flush()
        self._streams.pop(sid, None)

    async def _progress(self) -> None:
        """Wait for the next batch of received frames (window updates may be in it)."""
        self._progress_event.clear()
        waiter = asyncio.ensure_future(self._progress_event.wait())
        waiters: set[asyncio.Future[Any]] = {waiter, self.closed}
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()

    # ---- internals -------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed_reason is not None:
            raise ConnectionClosedError(self._closed_reason)

    def _flush(self) -> None:
        data = self._session.data_to_send()
        if data:
            self._pending.append(data)
            if not self._kick_armed:
                self._kick_armed = True
                self._loop.call_soon(self._kick)

    def _kick(self) -> None:
        # One loop pass after bytes were queued: a task about to wait for the peer has
        # usually sent them itself by now (:meth:`_send_pending`); if not, the writer does.
        self._kick_armed = False
        if self._pending and not self._sending and not self._send_sync():
            self._wake_writer()

    def _send_sync(self) -> bool:
        """Send everything pending now if the socket can without waiting (``send_now``)."""
        send_now = self._send_now
        if send_now is None or self._sending:
            return False
        blob = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        if len(blob) > self._max_message:
            return False
        try:
            if not send_now(blob):
                return False
        except Exception as exc:
            self._terminate(f"websocket send failed: {exc!r}")
        self._pending.clear()
        return True

    def _wake_writer(self) -> None:
        wake = self._writer_wake
        if wake is not None:
            self._writer_wake = None
            if not wake.done():
                wake.set_result(None)

    async def _send_pending(self) -> bool:
        """Send what is pending from the calling task, as one message; True if it did.

        A failure ends the connection, which the caller then sees; cancellation is safe
        (see :class:`MessageSocket`). A batch bigger than one message is left to the writer,
        which cuts it.
        """
        if self._sending or not self._pending or self._closed_reason is not None:
            return False
        if self._send_sync():
            return True
        blob = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        if len(blob) > self._max_message:
            self._wake_writer()
            return False
        self._pending.clear()
        self._sending = True
        try:
            await self._ws.send(blob)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._terminate(f"websocket send failed: {exc!r}")
        finally:
            self._sending = False
            if self._pending or self._writer_stop:
                self._wake_writer()
        return True

    def _forget_if_gone(self, sid: int) -> None:
        if self._session.stream_state(sid) is None:
            self._streams.pop(sid, None)

    async def _read_loop(self) -> None:
        reason = "websocket closed by peer"
        try:
            async for message in self._ws:
                if self._closed_reason is not None:
                    return
                if isinstance(message, str):
                    reason = "text message on the RPC websocket"
                    break
                self._receive(message)
                if self._closed_reason is not None:
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the websocket library's closing errors vary by version
            reason = f"websocket error: {exc!r}"
        self._terminate(reason)

    def _receive(self, message: bytes) -> None:
        """One binary message: from the reader task, or straight from the socket (``set_receiver``)."""
        if self._closed_reason is not None:
            return
        self.last_received = self._loop.time()
        try:
            events = self._session.receive_data(message)
        except yamux.YamuxProtocolError as exc:
            self._dispatch(exc.events)
            self._flush()  # the GoAway(1) the core queued
            self._terminate(f"yamux protocol error: {exc}")
            return
        self._dispatch(events)
        self._flush()

    def _dispatch(self, events: list[yamux.YamuxEvent]) -> None:
        for ev in events:
            if isinstance(ev, yamux.StreamData):
                stream = self._streams.get(ev.stream_id)
                if stream is not None:
                    stream._feed(ev.data)
                else:
                    # Nobody will read it; return the credit so the peer is not stalled.
                    self._session.consume(ev.stream_id, len(ev.data))
            elif isinstance(ev, yamux.StreamOpened):
                self._on_stream_opened(ev.stream_id)
            elif isinstance(ev, yamux.StreamEnded):
                stream = self._streams.get(ev.stream_id)
                if stream is not None:
                    stream._mark_eof()
                self._forget_if_gone(ev.stream_id)
            elif isinstance(ev, yamux.StreamReset):
                stream = self._streams.pop(ev.stream_id, None)
                if stream is not None:
                    stream._mark_reset()
            elif isinstance(ev, yamux.PingAcked):
                fut = self._pings.get(ev.ping_id)
                if fut is not None and not fut.done():
                    fut.set_result(None)
            elif isinstance(ev, yamux.GoAwayReceived) and ev.code != yamux.GoAwayCode.NORMAL:
                # Go ends its session on these; a normal GoAway only stops new streams.
                self._terminate(f"peer sent GoAway with code {ev.code}")
            # StreamAccepted and PingReceived need no action: the core already answered.
        # A stream whose FIN left late (queued behind window credit) is only now gone
        # from the session; drop our handle too. Its Stream object keeps its buffer.
        # Every live session stream has a handle here, so equal counts mean nothing to drop.
        if len(self._streams) != self._session.stream_count:
            for sid in [sid for sid in self._streams if self._session.stream_state(sid) is None]:
                del self._streams[sid]
        self._progress_event.set()

    def _on_stream_opened(self, sid: int) -> None:
        if self._on_stream is not None:
            stream = Stream(self, sid)
            self._streams[sid] = stream
            self._on_stream(stream)
            return
        if self._accept.qsize() >= ACCEPT_BACKLOG:
            self._session.reset_stream(sid)
            return
        stream = Stream(self, sid)
        self._streams[sid] = stream
        self._accept.put_nowait(stream)

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self._sending or not self._pending:
                if self._writer_stop and not self._sending:
                    return
                self._writer_wake = loop.create_future()
                await self._writer_wake
                continue
            # Coalesce what is queued, then cut to the message size limit.
            blob = b"".join(self._pending)
            self._pending.clear()
            self._sending = True
            try:
                for i in range(0, len(blob), self._max_message):
                    await self._ws.send(blob[i : i + self._max_message])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._terminate(f"websocket send failed: {exc!r}")
                return
            finally:
                self._sending = False

    def _terminate(self, reason: str) -> None:
        if self._closed_reason is not None:
            return
        self._closed_reason = reason
        if not self.closed.done():
            self.closed.set_result(reason)
        for stream in self._streams.values():
            stream._wake()
        self._streams.clear()
        for fut in self._pings.values():
            if not fut.done():
                fut.set_exception(ConnectionClosedError(reason))
        self._progress_event.set()
        self._shutdown = asyncio.get_running_loop().create_task(self._finish(), name="yamux-shutdown")

    async def _finish(self) -> None:
        # Let the writer send what is queued (a GoAway, final frames), then close.
        self._writer_stop = True
        self._wake_writer()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(self._writer), 5)
        self._writer.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._ws.close(), 5)
        await reap(self._reader)


# The timeout parameter is the published contract (callers pass a number, not a scope).
async def unary_call(
    conn: YamuxConnection,
    method: str,
    request: bytes | bytearray,
    timeout: float,
) -> bytes:
    """Run one dRPC unary call on a fresh stream and return the response message bytes.

    Sends Invoke/Message/CloseSend, reads until the reply, then closes the stream
    (FIN). Raises :class:`RpcError` for an Error packet (:class:`RpcUnimplemented` for
    code 12 or "unknown rpc"), :class:`drpc.DrpcProtocolError` for bad framing,
    TimeoutError after ``timeout`` seconds, and :class:`ConnectionClosedError` /
    :class:`StreamResetError` when the transport fails. On anything but a normal
    reply or an RpcError the stream is reset rather than closed.
    """
    return await _unary(conn, drpc.UnaryCall(method, request), None, timeout)


async def unary_call_pieces(
    conn: YamuxConnection,
    method: str,
    first: bytes,
    rest: Iterator[bytes],
    timeout: float,
) -> bytes:
    """:func:`unary_call` with the request given as pieces, ``first`` then ``rest`` (the request is
    their concatenation), made as they are sent: the next piece is taken once the previous ones
    left (the peer's window), so a large request is never held whole."""
    call = drpc.UnaryCall(method, None)
    return await _unary(conn, call, (first, rest), timeout)


async def _unary(conn: YamuxConnection, call: drpc.UnaryCall, pieces: tuple[bytes, Iterator[bytes]] | None,
                 timeout: float) -> bytes:
    stream: Stream | None = None
    try:
        async with asyncio.timeout(timeout):
            stream = await conn.open_stream()
            # No FIN before the reply: the Go server tears the call down when its
            # read side reaches EOF.
            stream.writelines(call.parts_to_send())  # the request is not copied on its way out
            if pieces is not None:
                piece, rest = pieces
                while True:
                    following = next(rest, None)
                    call.send_request_piece(piece, last=following is None)
                    stream.writelines(call.parts_to_send())
                    if following is None:
                        break
                    await stream.drain()  # the window is the bound on what is held
                    piece = following
            while not call.finished:
                data = await stream.read()
                if not data:
                    call.receive_eof()
                    break
                call.receive_data(data)
            try:
                result = call.result()
            except RpcError:
                await stream.close()
                raise
            await stream.close()
            return result
    except RpcError:
        raise
    except BaseException:
        if stream is not None:
            stream.reset()
        raise


class BidiStream:
    """One bidirectional dRPC stream on its own yamux stream (obtain it from :func:`bidi_stream`).

    :meth:`send` queues a Message; :meth:`recv` returns the next server Message, or None
    once the server ended its direction (CloseSend or Close); an Error packet raises
    :class:`RpcError`, a stream that ends without one of those raises
    :class:`drpc.DrpcProtocolError`. :meth:`close_send` ends our direction (the server
    may still answer); :meth:`close` abandons the stream (dRPC Close, then FIN), as Go's
    ``stream.Close``. Transport failures raise :class:`ConnectionClosedError` /
    :class:`StreamResetError`. One reader at a time; sends may interleave with a
    pending :meth:`recv`.
    """

    def __init__(self, stream: Stream, call: drpc.ClientStream) -> None:
        self._stream = stream
        self._call = call
        self._pending: deque[drpc.StreamEvent] = deque()
        self._closed = False

    @property
    def stream_id(self) -> int:
        return self._stream.stream_id

    @property
    def ended(self) -> drpc.StreamEnded | None:
        """How the server's direction ended (None while open)."""
        return self._call.ended

    async def send(self, message: bytes) -> None:
        """Send one message and wait until it is handed to the websocket.

        Raises RuntimeError after :meth:`close_send` / :meth:`close` or once the stream ended.
        """
        self._call.send_message(message)
        self._stream.write(self._call.data_to_send())
        await self._stream.drain()

    async def recv(self) -> bytes | None:
        """The next message from the server; None at the server's CloseSend or Close."""
        while not self._pending:
            if self._call.ended is not None:
                self._raise_if_failed(self._call.ended)
                return None
            data = await self._stream.read()
            if not data:
                self._pending.extend(self._call.receive_eof())
            else:
                self._pending.extend(self._call.receive_data(data))
        event = self._pending.popleft()
        if isinstance(event, drpc.StreamMessage):
            return event.data
        self._raise_if_failed(event)
        return None

    async def close_send(self) -> None:
        """Half-close: dRPC CloseSend (idempotent). Reading continues."""
        if self._call.send_closed:
            return
        self._call.close_send()
        with contextlib.suppress(ConnectionClosedError, StreamResetError):
            self._stream.write(self._call.data_to_send())

    async def close(self) -> None:
        """Abandon the stream: dRPC Close (unless it already ended), then yamux FIN. Idempotent."""
        self.close_nowait()

    def close_nowait(self) -> None:
        """:meth:`close` without awaiting (it never blocks)."""
        if self._closed:
            return
        self._closed = True
        self._call.close()
        with contextlib.suppress(ConnectionClosedError, StreamResetError):
            out = self._call.data_to_send()
            if out:
                self._stream.write(out)
            self._stream.close_nowait()

    def reset(self) -> None:
        """Abort at once (yamux RST), for errors and cancellation."""
        self._closed = True
        self._stream.reset()

    @staticmethod
    def _raise_if_failed(end: drpc.StreamEnded) -> None:
        if end.error is not None:
            raise end.error


# The timeout parameter is the published contract (callers pass a number, not a scope).
async def bidi_stream(conn: YamuxConnection, method: str, open_timeout: float = 30.0) -> BidiStream:
    """Open a bidirectional dRPC stream (Invoke sent at once) on a fresh yamux stream.

    Raises :class:`ConnectionClosedError` if the connection is gone and TimeoutError if
    the stream cannot be opened within ``open_timeout`` seconds.
    """
    call = drpc.ClientStream(method)
    async with asyncio.timeout(open_timeout):
        stream = await conn.open_stream()
    try:
        stream.write(call.data_to_send())
    except BaseException:
        stream.reset()
        raise
    return BidiStream(stream, call)


async def server_stream(
    conn: YamuxConnection, method: str, request: bytes, open_timeout: float = 30.0
) -> AsyncIterator[bytes]:
    """Run one server-streaming dRPC call; yield each message the server sends.

    Sends Invoke/Message/CloseSend on a fresh stream. The iteration ends at the server's
    CloseSend or Close; an Error packet raises :class:`RpcError`, a stream that ends
    without either raises :class:`drpc.DrpcProtocolError`, and transport failures raise
    :class:`ConnectionClosedError` / :class:`StreamResetError`. Leaving the loop early
    (break, cancellation, ``aclose``) sends dRPC Close and FIN, as Go's client does.
    """
    call = drpc.ClientStream.server_stream(method, request)
    async with asyncio.timeout(open_timeout):
        stream = await conn.open_stream()
    bidi = BidiStream(stream, call)
    try:
        stream.write(call.data_to_send())
        while True:
            message = await bidi.recv()
            if message is None:
                break
            yield message
    except (ConnectionClosedError, StreamResetError):
        raise
    except (RpcError, GeneratorExit, asyncio.CancelledError):
        bidi.close_nowait()
        raise
    except BaseException:
        bidi.reset()
        raise
    bidi.close_nowait()
