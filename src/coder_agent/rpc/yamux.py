"""A sans-I/O yamux session (hashicorp/yamux wire protocol), client or server role.

Bytes in, events out, bytes to send out: :meth:`Session.receive_data` takes whatever
bytes arrived (any chunking, message boundaries mean nothing) and returns events;
every API call and every received frame may queue outgoing bytes, which the I/O
layer collects with :meth:`Session.data_to_send`. No sockets, no clock, no await.

Wire rules this module enforces (see shared/protocol/coder-agent-rpc.md §2):

* Frame = 12-byte big-endian header ``version(1)=0 type(1) flags(2) stream(4) length(4)``;
  Data frames carry ``length`` payload bytes. Any other version or type is a session
  error.
* The client opens odd stream ids, the server even ones, starting at 1 / 2 and never
  reused. A stream is opened by a WindowUpdate carrying SYN (delta 0), as Go does.
  An inbound SYN is acknowledged at once (WindowUpdate ACK, delta 0): accept
  backlogs are an I/O-layer policy, not a wire rule.
* Flow control: each direction of each stream starts with a 256 KiB window. We never
  send beyond the peer's window: the excess waits in a per-stream queue until a
  WindowUpdate arrives. Received bytes count against our window until the
  application reports them consumed (:meth:`Session.consume`); credit is returned
  once at least half the window has been consumed, as Go does, so that a peer never
  stalls on a reader that keeps reading.
* A peer exceeding our window, a duplicate or wrong-parity SYN, data after the peer's
  FIN, or a malformed header is a protocol error: GoAway(1) is queued, the session is
  terminated, and :class:`YamuxProtocolError` is raised.
* Frames for streams we no longer know (typically after we sent RST) are dropped,
  their payload discarded, like Go does.
* Pings with SYN are answered with ACK and the same opaque value immediately, even
  while data is queued; our own pings are matched by value (:class:`PingAcked`).
* GoAway: after sending or receiving one, no new stream may be opened and inbound
  SYNs are refused with RST; streams already open continue. A received GoAway with a
  non-zero code is reported as an event; ending the session is the caller's call.

Stream state (per direction, Go's states folded into one table, ``_TRANSITIONS``):
``SYN_SENT -> ESTABLISHED`` on ACK; FIN sent / received moves to ``LOCAL_CLOSED`` /
``REMOTE_CLOSED`` and both to ``CLOSED``; RST from either side goes to ``RESET``.
A stream in ``CLOSED`` or ``RESET`` is forgotten; its id is never handed out again.
"""

from __future__ import annotations

import enum
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "DEFAULT_WINDOW",
    "HEADER_SIZE",
    "Flag",
    "Frame",
    "FrameType",
    "GoAwayCode",
    "GoAwayReceived",
    "PingAcked",
    "PingReceived",
    "Session",
    "SessionClosedError",
    "StreamAccepted",
    "StreamData",
    "StreamEnded",
    "StreamError",
    "StreamOpened",
    "StreamReset",
    "StreamState",
    "YamuxError",
    "YamuxEvent",
    "YamuxProtocolError",
    "encode_frame",
]

HEADER_SIZE: Final = 12
PROTOCOL_VERSION: Final = 0
DEFAULT_WINDOW: Final = 256 * 1024
_MAX_UINT32: Final = 0xFFFF_FFFF
_HEADER = struct.Struct(">BBHII")


class FrameType(enum.IntEnum):
    DATA = 0
    WINDOW_UPDATE = 1
    PING = 2
    GO_AWAY = 3


class Flag(enum.IntFlag):
    NONE = 0
    SYN = 0x1
    ACK = 0x2
    FIN = 0x4
    RST = 0x8


# The hot path decodes into plain ints: building and and-ing IntFlag members costs a Python-level
# enum call each (bench.rpc_throughput: dozens per RPC).
_SYN: Final = 0x1
_ACK: Final = 0x2
_FIN: Final = 0x4
_RST: Final = 0x8
# Same for frame types (and, below, stream states): an enum member lookup costs ~0.1 us on 3.11.
_DATA: Final = 0
_WINDOW_UPDATE: Final = 1
_PING: Final = 2
_GO_AWAY: Final = 3


class GoAwayCode(enum.IntEnum):
    NORMAL = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2


# --------------------------------------------------------------------------------------
# Errors


class YamuxError(Exception):
    """Base of every error raised by this module."""


class YamuxProtocolError(YamuxError):
    """The peer broke the yamux protocol; the session is terminated.

    GoAway(1) has already been queued in :meth:`Session.data_to_send`: the caller
    should flush it and close the connection. ``events`` holds the events decoded
    from the same input before the fault, so that nothing already received is lost.
    """

    def __init__(self, message: str, events: list[YamuxEvent] | None = None) -> None:
        super().__init__(message)
        self.events: list[YamuxEvent] = events if events is not None else []


class SessionClosedError(YamuxError):
    """The session is terminated, or went away, and cannot do what was asked."""


class StreamError(YamuxError):
    """The stream is unknown, already closed for sending, or reset."""


# --------------------------------------------------------------------------------------
# Frames


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded header (and, for Data frames, the length of its payload)."""

    type: FrameType
    flags: int  # Flag bits, as a plain int
    stream_id: int
    length: int


def encode_frame(type_: FrameType, flags: Flag, stream_id: int, length: int, payload: bytes = b"") -> bytes:
    """Encode one frame. For Data frames ``length`` must equal ``len(payload)``."""
    if type_ is FrameType.DATA and length != len(payload):
        raise ValueError("data frame length must match its payload")
    if type_ is not FrameType.DATA and payload:
        raise ValueError("only data frames carry a payload")
    if not (0 <= stream_id <= _MAX_UINT32 and 0 <= length <= _MAX_UINT32):
        raise ValueError("stream id and length are 32-bit unsigned")
    return _HEADER.pack(PROTOCOL_VERSION, type_, flags, stream_id, length) + payload


# --------------------------------------------------------------------------------------
# Events


@dataclass(frozen=True, slots=True)
class StreamOpened:
    """The peer opened a stream (SYN). We have already acknowledged it."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamAccepted:
    """The peer acknowledged (ACK) a stream we opened."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamData:
    """Payload bytes for a stream. Report them with :meth:`Session.consume` once read."""

    stream_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """The peer half-closed the stream (FIN): no more data will arrive on it."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamReset:
    """The peer reset the stream (RST). Queued outgoing data for it was dropped."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class PingReceived:
    """The peer pinged us; the ACK is already queued. Useful as a liveness signal."""

    opaque: int


@dataclass(frozen=True, slots=True)
class PingAcked:
    """The peer answered our ping ``ping_id`` (as returned by :meth:`Session.ping`)."""

    ping_id: int


@dataclass(frozen=True, slots=True)
class GoAwayReceived:
    """The peer will accept no new streams. ``code`` 0 is normal, 1 protocol error, 2 internal."""

    code: int


YamuxEvent = (
    StreamOpened
    | StreamAccepted
    | StreamData
    | StreamEnded
    | StreamReset
    | PingReceived
    | PingAcked
    | GoAwayReceived
)


# --------------------------------------------------------------------------------------
# Stream state machine




class StreamState(enum.Enum):
    # Members are singletons compared by identity: hash them the same way, in C (the default
    # Enum.__hash__ is a Python call, paid on every state-table lookup).
    __hash__ = object.__hash__

    SYN_SENT = "syn_sent"
    ESTABLISHED = "established"
    LOCAL_CLOSED = "local_closed"  # we sent FIN, peer may still send
    REMOTE_CLOSED = "remote_closed"  # peer sent FIN, we may still send
    CLOSED = "closed"
    RESET = "reset"


class _Ev(enum.Enum):
    __hash__ = object.__hash__

    RECV_ACK = "recv_ack"
    SEND_FIN = "send_fin"
    RECV_FIN = "recv_fin"
    RST = "rst"


_S = StreamState
_TRANSITIONS: Final[dict[StreamState, dict[_Ev, StreamState]]] = {
    _S.SYN_SENT: {
        _Ev.RECV_ACK: _S.ESTABLISHED,
        _Ev.SEND_FIN: _S.LOCAL_CLOSED,
        _Ev.RECV_FIN: _S.REMOTE_CLOSED,
        _Ev.RST: _S.RESET,
    },
    _S.ESTABLISHED: {
        _Ev.RECV_ACK: _S.ESTABLISHED,
        _Ev.SEND_FIN: _S.LOCAL_CLOSED,
        _Ev.RECV_FIN: _S.REMOTE_CLOSED,
        _Ev.RST: _S.RESET,
    },
    _S.LOCAL_CLOSED: {
        _Ev.RECV_ACK: _S.LOCAL_CLOSED,
        _Ev.RECV_FIN: _S.CLOSED,
        _Ev.RST: _S.RESET,
    },
    _S.REMOTE_CLOSED: {
        _Ev.RECV_ACK: _S.REMOTE_CLOSED,
        _Ev.SEND_FIN: _S.CLOSED,
        _Ev.RST: _S.RESET,
    },
    # Terminal states: streams in them are dropped from the session table at once.
    _S.CLOSED: {},
    _S.RESET: {},
}
_SYN_SENT: Final = _S.SYN_SENT
_ESTABLISHED: Final = _S.ESTABLISHED
_LOCAL_CLOSED: Final = _S.LOCAL_CLOSED
_REMOTE_CLOSED: Final = _S.REMOTE_CLOSED
_CLOSED: Final = _S.CLOSED
_RESET: Final = _S.RESET
_RECV_ACK: Final = _Ev.RECV_ACK
_SEND_FIN: Final = _Ev.SEND_FIN
_RECV_FIN: Final = _Ev.RECV_FIN
_EV_RST: Final = _Ev.RST


@dataclass(slots=True)
class _Stream:
    stream_id: int
    state: StreamState
    # Bytes the peer may still send us before it must wait for credit.
    recv_window: int = DEFAULT_WINDOW
    # Received and not yet reported consumed by the application.
    unconsumed: int = 0
    # Consumed but not yet returned to the peer as credit.
    uncredited: int = 0
    # Bytes we may still send before the peer's credit runs out.
    send_window: int = DEFAULT_WINDOW
    send_queue: deque[memoryview] = field(default_factory=deque)  # views: a window's part is not a copy
    send_queued: int = 0
    # close_stream() was called: FIN goes out once the send queue has drained.
    fin_pending: bool = False

    def fire(self, ev: _Ev) -> None:
        try:
            self.state = _TRANSITIONS[self.state][ev]
        except KeyError:
            raise StreamError(
                f"stream {self.stream_id}: {ev.value} not allowed in {self.state.value}"
            ) from None


# --------------------------------------------------------------------------------------
# Session


class Session:
    """One yamux session over one ordered byte stream.

    ``client=True`` opens odd stream ids (the Coder agent's role); ``client=False``
    opens even ids (coderd's role, used by our test control plane). Both roles
    accept inbound streams of the other parity.

    ``window`` is the per-stream receive window we grant and the initial send window
    we assume for the peer; yamux fixes it at 256 KiB and anything else only makes
    sense between two of our own sessions.

    Contract for the caller: feed every received byte to :meth:`receive_data` in
    order, act on the returned events, call :meth:`consume` for the data bytes the
    application has read, and after every call send :meth:`data_to_send` to the peer.
    """

    def __init__(self, client: bool, *, window: int = DEFAULT_WINDOW) -> None:
        if not (0 < window <= _MAX_UINT32):
            raise ValueError("window must be a positive 32-bit value")
        self.client: Final = client
        self._window = window
        self._next_stream_id = 1 if client else 2
        self._streams: dict[int, _Stream] = {}
        self._out = bytearray()
        self._in = bytearray()
        # A Data frame whose payload is still arriving (_body_left > 0): its stream and flags.
        self._body_stream = 0
        self._body_flags = 0
        self._body_left = 0
        # Payload of a frame for a stream we forgot is dropped, but still counted.
        self._body_discard = False
        self._next_ping_id = 0
        self._pings_outstanding: set[int] = set()
        self._local_go_away: int | None = None
        self._remote_go_away: int | None = None
        self._terminated: str | None = None

    # ---- introspection ---------------------------------------------------------------

    @property
    def terminated(self) -> str | None:
        """Why the session ended (a protocol error), or None while it is usable."""
        return self._terminated

    @property
    def local_go_away(self) -> int | None:
        """The code of the GoAway we sent, if any."""
        return self._local_go_away

    @property
    def remote_go_away(self) -> int | None:
        """The code of the GoAway the peer sent, if any."""
        return self._remote_go_away

    @property
    def stream_count(self) -> int:
        """How many streams are live (neither closed both ways nor reset)."""
        return len(self._streams)

    def stream_state(self, stream_id: int) -> StreamState | None:
        """The state of a live stream; None once it is closed, reset or never existed."""
        stream = self._streams.get(stream_id)
        return stream.state if stream is not None else None

    def send_window(self, stream_id: int) -> int:
        """Bytes the peer currently lets us send on the stream (0 for unknown streams)."""
        stream = self._streams.get(stream_id)
        return stream.send_window if stream is not None else 0

    def send_queued(self, stream_id: int) -> int:
        """Bytes accepted by :meth:`send` that still wait for the peer's window."""
        stream = self._streams.get(stream_id)
        return stream.send_queued if stream is not None else 0

    def recv_window(self, stream_id: int) -> int:
        """Bytes the peer may still send on the stream before it needs credit."""
        stream = self._streams.get(stream_id)
        return stream.recv_window if stream is not None else 0

    # ---- output ----------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Return and forget all bytes queued for the peer (b"" if none)."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def _emit(self, type_: int, flags: int, stream_id: int, length: int, payload: bytes | memoryview = b"") -> None:
        # Arguments come from this module, already valid: no checks, no enum (see encode_frame).
        out = self._out
        out += _HEADER.pack(PROTOCOL_VERSION, type_, flags, stream_id, length)
        if payload:
            out += payload

    # ---- application API -------------------------------------------------------------

    def open_stream(self) -> int:
        """Open a new outbound stream and return its id; its SYN is queued at once.

        Raises :class:`SessionClosedError` after a GoAway from either side or a
        protocol error, and when the 32-bit id space is exhausted.
        """
        self._check_usable()
        if self._local_go_away is not None or self._remote_go_away is not None:
            raise SessionClosedError("session is going away: no new streams")
        stream_id = self._next_stream_id
        if stream_id > _MAX_UINT32:
            raise SessionClosedError("stream ids exhausted")
        self._next_stream_id += 2
        self._streams[stream_id] = _Stream(
            stream_id, _SYN_SENT, recv_window=self._window, send_window=self._window
        )
        # Go opens with a bare WindowUpdate(SYN, delta 0) before any data; so do we, so
        # the peer learns about the stream even if the application writes nothing.
        self._emit(_WINDOW_UPDATE, _SYN, stream_id, 0)
        return stream_id

    def send(self, stream_id: int, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data`` on the stream; as much as the peer's window allows goes out now.

        The rest waits inside the session and leaves as WindowUpdates arrive; watch
        :meth:`send_queued` for back-pressure. Raises :class:`StreamError` if the
        stream is unknown, reset, or already closed for sending. A ``bytearray`` is copied; a
        ``memoryview`` is queued as it is (not copied: its buffer must not change until sent).
        """
        self._check_usable()
        stream = self._writable_stream(stream_id)
        if data:
            stream.send_queue.append(data if isinstance(data, memoryview) else memoryview(bytes(data)))
            stream.send_queued += len(data)
            self._flush(stream)

    def close_stream(self, stream_id: int) -> None:
        """Half-close the stream (FIN) after everything queued on it has been sent.

        Closing a stream that is already closed for sending, or already gone, is a
        no-op, so that close paths need not track what the peer did first.
        """
        self._check_usable()
        stream = self._streams.get(stream_id)
        if stream is None or stream.fin_pending or stream.state is _LOCAL_CLOSED:
            return
        stream.fin_pending = True
        self._flush(stream)

    def reset_stream(self, stream_id: int) -> None:
        """Abort the stream (RST) at once, dropping anything still queued on it.

        A no-op for streams that are already gone.
        """
        self._check_usable()
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return
        stream.fire(_EV_RST)
        self._emit(_WINDOW_UPDATE, _RST, stream_id, 0)

    def consume(self, stream_id: int, n: int) -> None:
        """Report that the application has read ``n`` received bytes of the stream.

        Once at least half the window has been consumed since the last credit, a
        WindowUpdate returning all of it is queued. Unknown streams are ignored (the
        data of a stream that ended may still be read after it is gone).
        """
        if n < 0:
            raise ValueError("n must be >= 0")
        stream = self._streams.get(stream_id)
        if stream is None or self._terminated is not None:
            return
        if n > stream.unconsumed:
            raise StreamError(f"stream {stream_id}: consumed {n} bytes but only {stream.unconsumed} unread")
        stream.unconsumed -= n
        stream.uncredited += n
        # After the peer's FIN no more data can come: credit would be wasted bytes.
        if stream.uncredited >= self._window // 2 and stream.state in (
            _SYN_SENT,
            _ESTABLISHED,
            _LOCAL_CLOSED,
        ):
            delta = stream.uncredited
            stream.uncredited = 0
            stream.recv_window += delta
            self._emit(_WINDOW_UPDATE, 0, stream_id, delta)

    def ping(self) -> int:
        """Queue a ping and return its id; a :class:`PingAcked` with that id follows."""
        self._check_usable()
        ping_id = self._next_ping_id
        self._next_ping_id = (self._next_ping_id + 1) & _MAX_UINT32
        self._pings_outstanding.add(ping_id)
        self._emit(_PING, _SYN, 0, ping_id)
        return ping_id

    def go_away(self, code: int = GoAwayCode.NORMAL) -> None:
        """Tell the peer we accept no new streams (sent once; later calls are no-ops)."""
        self._check_usable()
        if self._local_go_away is not None:
            return
        self._local_go_away = int(code)
        self._emit(_GO_AWAY, 0, 0, int(code))

    # ---- input -----------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[YamuxEvent]:
        """Feed received bytes (any chunking) and return the events they complete.

        Raises :class:`YamuxProtocolError` on a protocol violation (GoAway(1) is then
        queued and the session terminated) and :class:`SessionClosedError` if the
        session was already terminated.
        """
        self._check_usable()
        buf = self._in
        buf += data
        events: list[YamuxEvent] = []
        pos = 0
        end = len(buf)
        try:
            while True:
                if self._body_left:
                    take = min(self._body_left, end - pos)
                    if take == 0:
                        break
                    chunk = bytes(buf[pos : pos + take])
                    pos += take
                    self._body_left -= take
                    sid = self._body_stream
                    # The stream may have been reset locally between two reads.
                    if not self._body_discard and sid in self._streams:
                        self._deliver(sid, chunk, events)
                    if self._body_left == 0 and not self._body_discard:
                        self._after_data(sid, self._body_flags, events)
                    continue
                if end - pos < HEADER_SIZE:
                    break
                version, type_, flags, stream_id, length = _HEADER.unpack_from(buf, pos)
                pos += HEADER_SIZE
                if version != PROTOCOL_VERSION:
                    raise _Violation(f"unsupported yamux version {version}")
                if type_ <= _WINDOW_UPDATE:  # Data or WindowUpdate
                    self._handle_stream_frame(type_, flags, stream_id, length, events)
                elif type_ == _PING:
                    self._handle_ping(flags, length, events)
                elif type_ == _GO_AWAY:
                    self._remote_go_away = length
                    events.append(GoAwayReceived(length))
                else:
                    raise _Violation(f"unknown frame type {type_}")
        except _Violation as exc:
            del buf[:pos]
            self._fail(str(exc))
            raise YamuxProtocolError(str(exc), events) from None
        del buf[:pos]
        return events

    def _handle_ping(self, flags: int, opaque: int, events: list[YamuxEvent]) -> None:
        if flags & _SYN:
            # Answered here rather than by the application, so a busy or blocked reader
            # never delays it: Go's keepalive gives up after 10 s and coderd's liveness
            # monitor drops agents whose pings go unanswered.
            self._emit(_PING, _ACK, 0, opaque)
            events.append(PingReceived(opaque))
        elif flags & _ACK and opaque in self._pings_outstanding:
            self._pings_outstanding.discard(opaque)
            events.append(PingAcked(opaque))
        # A stray ACK (already answered, or never asked) carries no information.

    def _handle_stream_frame(self, type_: int, flags: int, sid: int, length: int, events: list[YamuxEvent]) -> None:
        if sid == 0:
            raise _Violation(f"{FrameType(type_).name} frame on stream 0")
        if flags & _SYN:
            self._incoming_syn(sid, events)
        stream = self._streams.get(sid)
        if stream is None:
            # Most likely a frame that crossed our RST, or the refusal of a SYN after
            # GoAway. Go drops these; the payload must still be skipped.
            if type_ == _DATA and length:
                self._start_body(sid, flags, length, discard=True)
            return
        if flags & _ACK:
            if stream.state is _SYN_SENT:
                events.append(StreamAccepted(sid))
                stream.state = _ESTABLISHED
            else:
                stream.fire(_RECV_ACK)
        if type_ == _WINDOW_UPDATE:
            if length:
                if stream.send_window + length > _MAX_UINT32:
                    raise _Violation(f"stream {sid}: send window overflow")
                stream.send_window += length
                self._flush(stream)
            if flags & (_FIN | _RST):
                self._apply_close_flags(stream, flags, events)
            return
        # Data frame: check the window before buffering anything, so a peer cannot
        # make us hold more than the window whatever length it claims.
        if length:
            if stream.state is _REMOTE_CLOSED:
                raise _Violation(f"stream {sid}: data after FIN")
            if length > stream.recv_window:
                raise _Violation(f"stream {sid}: receive window exceeded ({length} > {stream.recv_window})")
            stream.recv_window -= length
            stream.unconsumed += length
            self._start_body(sid, flags, length, discard=False)
            return
        if flags & (_FIN | _RST):
            self._apply_close_flags(stream, flags, events)

    def _start_body(self, sid: int, flags: int, length: int, *, discard: bool) -> None:
        self._body_stream, self._body_flags, self._body_left, self._body_discard = sid, flags, length, discard

    def _after_data(self, sid: int, flags: int, events: list[YamuxEvent]) -> None:
        stream = self._streams.get(sid)
        if stream is not None and flags & (_FIN | _RST):
            # A FIN riding on a Data frame takes effect after its payload.
            self._apply_close_flags(stream, flags, events)

    def _deliver(self, stream_id: int, chunk: bytes, events: list[YamuxEvent]) -> None:
        # Coalesce with the previous event of this call when it is for the same
        # stream, so byte-sized input does not mean byte-sized events.
        if events:
            last = events[-1]
            if type(last) is StreamData and last.stream_id == stream_id:
                events[-1] = StreamData(stream_id, last.data + chunk)
                return
        events.append(StreamData(stream_id, chunk))

    def _apply_close_flags(self, stream: _Stream, flags: int, events: list[YamuxEvent]) -> None:
        if flags & _RST:
            stream.fire(_EV_RST)
            del self._streams[stream.stream_id]
            events.append(StreamReset(stream.stream_id))
            return
        if flags & _FIN:
            if stream.state is _REMOTE_CLOSED:
                raise _Violation(f"stream {stream.stream_id}: second FIN")
            stream.fire(_RECV_FIN)
            events.append(StreamEnded(stream.stream_id))
            self._forget_if_done(stream)

    def _incoming_syn(self, sid: int, events: list[YamuxEvent]) -> None:
        own_parity = 1 if self.client else 0
        if sid % 2 == own_parity:
            raise _Violation(f"SYN for stream {sid}, which has our own id parity")
        if sid in self._streams:
            raise _Violation(f"duplicate SYN for stream {sid}")
        if self._local_go_away is not None:
            # We said no new streams; Go refuses with RST and so do we. The stream is
            # not recorded, so the rest of its frames are dropped as unknown.
            self._emit(_WINDOW_UPDATE, _RST, sid, 0)
            return
        self._streams[sid] = _Stream(sid, _ESTABLISHED, recv_window=self._window, send_window=self._window)
        self._emit(_WINDOW_UPDATE, _ACK, sid, 0)
        events.append(StreamOpened(sid))

    # ---- internals -------------------------------------------------------------------

    def _flush(self, stream: _Stream) -> None:
        while stream.send_queue and stream.send_window > 0:
            head = stream.send_queue[0]
            n = min(len(head), stream.send_window)
            if n == len(head):
                stream.send_queue.popleft()
                chunk = head
            else:
                chunk = head[:n]
                stream.send_queue[0] = head[n:]
            stream.send_queued -= n
            stream.send_window -= n
            self._emit(_DATA, 0, stream.stream_id, n, chunk)
        if stream.fin_pending and not stream.send_queue:
            stream.fin_pending = False
            stream.fire(_SEND_FIN)
            self._emit(_WINDOW_UPDATE, _FIN, stream.stream_id, 0)
            self._forget_if_done(stream)

    def _forget_if_done(self, stream: _Stream) -> None:
        if stream.state is _CLOSED or stream.state is _RESET:
            self._streams.pop(stream.stream_id, None)

    def _writable_stream(self, stream_id: int) -> _Stream:
        stream = self._streams.get(stream_id)
        if stream is None:
            raise StreamError(f"stream {stream_id} is not open")
        if stream.fin_pending or stream.state is _LOCAL_CLOSED:
            raise StreamError(f"stream {stream_id} is closed for sending")
        return stream

    def _check_usable(self) -> None:
        if self._terminated is not None:
            raise SessionClosedError(f"session terminated: {self._terminated}")

    def _fail(self, reason: str) -> None:
        self._emit(_GO_AWAY, 0, 0, int(GoAwayCode.PROTOCOL_ERROR))
        self._local_go_away = GoAwayCode.PROTOCOL_ERROR
        self._terminated = reason
        self._streams.clear()
        self._in.clear()
        self._body_left = 0


class _Violation(Exception):
    """Internal: raised while parsing, turned into YamuxProtocolError at the boundary."""
