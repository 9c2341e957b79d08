"""Sans-I/O dRPC (storj.io/drpc) framing, client calls (unary, server-stream, bidi) and the server half.

Bytes in, packets / results out, bytes to send out; no sockets, no clock, no await.
One dRPC conversation runs over one yamux stream (coder opens a fresh stream per RPC).

Wire rules (shared/protocol/coder-agent-rpc.md §3):

* Frame = control byte ``(kind << 1) | done | 0x80·control``, then three unsigned
  varints (stream id, message id, data length), then the data. Varints are protobuf
  style, at most 10 bytes; a longer one is a protocol error.
* Kinds: Invoke 1, Message 2, Error 3, Cancel 4, Close 5, CloseSend 6, InvokeMetadata 7.
* A packet is sent as one or more frames with the same (stream, message, kind); all
  but the last have done=0. Writers split data into frames of at most 64 KiB; readers
  concatenate until done=1 and refuse packets larger than 4 MiB.
* Ids: readers start at (1, 1). A frame whose (stream, message) is lower than the
  current one is an "id monotonicity violation"; after a packet completes its id is
  used up. A new, higher id while a packet is half-assembled silently discards the
  partial packet (Go's reader does the same: it is how interrupts work). A kind change
  within one packet is a protocol error. Every packet a sender emits consumes the next
  message id, starting at 1 per stream and per direction.
* Frames with the control bit are ignored unless their kind is known to be a control
  kind (Cancel): newer peers may use the bit for things we do not understand.
* Error packet data = 8-byte big-endian code + UTF-8 text; code 12 is Unimplemented,
  and an unknown method comes back as code 0 with "unknown rpc" in the text.

Streams (§3.6): a server stream is Invoke + Message + CloseSend from the client, then
Messages from the server until its CloseSend (normal end), Error or Close. A bidi stream is
Invoke, then Messages both ways; each side ends its direction with CloseSend, and either may
abandon the whole stream with Close. An Error or a Close ends both directions.

The server half (:class:`ServerStream`) deliberately does not reuse the client half's
reader or writer: it powers our fake control plane, and tests that round-trip client
against server would not notice a codec bug that both halves shared. Both are checked
against the byte-exact vectors from the facts file instead.
"""

from __future__ import annotations

import enum
import functools
import struct
from collections.abc import Collection
from dataclasses import dataclass
from typing import Final

__all__ = [
    "MAX_PACKET_SIZE",
    "MAX_VARINT_LEN",
    "SPLIT_SIZE",
    "UNIMPLEMENTED",
    "ClientStream",
    "CloseReceived",
    "CloseSendReceived",
    "DrpcError",
    "DrpcProtocolError",
    "Frame",
    "InvokeReceived",
    "Kind",
    "MessageReceived",
    "Packet",
    "PacketReader",
    "PacketWriter",
    "RequestReceived",
    "RpcError",
    "RpcUnimplemented",
    "ServerEvent",
    "ServerStream",
    "StreamEnded",
    "StreamEvent",
    "StreamMessage",
    "UnaryCall",
    "decode_error",
    "decode_varint",
    "encode_error",
    "encode_frame",
    "encode_packet",
    "encode_varint",
    "parse_frame",
    "rpc_error",
]

MAX_VARINT_LEN: Final = 10
SPLIT_SIZE: Final = 64 * 1024
MAX_PACKET_SIZE: Final = 4 << 20
UNIMPLEMENTED: Final = 12
_MAX_UINT64: Final = (1 << 64) - 1
_CODE = struct.Struct(">Q")


class Kind(enum.IntEnum):
    INVOKE = 1
    MESSAGE = 2
    ERROR = 3
    CANCEL = 4
    CLOSE = 5
    CLOSE_SEND = 6
    INVOKE_METADATA = 7


# Plain ints for the per-packet paths: comparing with an IntEnum member costs ~0.2 us on Python 3.11.
_INVOKE: Final = int(Kind.INVOKE)
_MESSAGE: Final = int(Kind.MESSAGE)
_ERROR: Final = int(Kind.ERROR)
_CANCEL: Final = int(Kind.CANCEL)
_CLOSE: Final = int(Kind.CLOSE)
_CLOSE_SEND: Final = int(Kind.CLOSE_SEND)
_INVOKE_METADATA: Final = int(Kind.INVOKE_METADATA)

# Control kinds we act on when they arrive with the control bit; everything else
# with that bit set is someone else's extension and is dropped.
_KNOWN_CONTROL_KINDS: Final = frozenset({_CANCEL})


# --------------------------------------------------------------------------------------
# Errors


class DrpcError(Exception):
    """Base of the errors raised by this module."""


class DrpcProtocolError(DrpcError):
    """The peer broke dRPC framing; the yamux stream carrying it must be torn down."""


class RpcError(DrpcError):
    """The server answered the call with an Error packet.

    ``code`` is the drpcerr code (0 for plain handler errors, 12 Unimplemented);
    ``message`` the server's text, meant for logs.
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"rpc error (code {code}): {message}")
        self.code = code
        self.message = message


class RpcUnimplemented(RpcError):
    """The server does not implement the method (code 12, or "unknown rpc").

    Callers of optional RPCs treat this as "feature unavailable" and stop calling.
    """


def rpc_error(code: int, message: str) -> RpcError:
    """Build the right :class:`RpcError` subclass for an Error packet's contents."""
    if code == UNIMPLEMENTED or "unknown rpc" in message:
        return RpcUnimplemented(code, message)
    return RpcError(code, message)


# --------------------------------------------------------------------------------------
# Varints, frames, packets


def encode_varint(value: int) -> bytes:
    """Encode an unsigned 64-bit integer as a protobuf-style varint."""
    if 0 <= value < 0x80:
        return _SMALL_VARINTS[value]
    if not (0 <= value <= _MAX_UINT64):
        raise ValueError("varint out of uint64 range")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# Ids and short lengths are one byte: the per-call encoders look them up instead of looping.
_SMALL_VARINTS: Final = tuple(bytes((i,)) for i in range(0x80))


def decode_varint(buf: bytes | bytearray | memoryview, pos: int = 0) -> tuple[int, int] | None:
    """Decode a varint at ``pos``; return ``(value, next_pos)``, or None if incomplete.

    Raises :class:`DrpcProtocolError` when the varint runs past 10 bytes or past 64 bits.
    """
    value = 0
    for i in range(MAX_VARINT_LEN):
        if pos + i >= len(buf):
            return None
        byte = buf[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if value > _MAX_UINT64:
                raise DrpcProtocolError("varint overflows 64 bits")
            return value, pos + i + 1
    raise DrpcProtocolError("varint too long")


@dataclass(frozen=True, slots=True)
class Frame:
    """One dRPC frame. ``kind`` stays a plain int so unknown kinds survive parsing."""

    kind: int
    stream_id: int
    message_id: int
    data: bytes = b""
    done: bool = True
    control: bool = False


@dataclass(frozen=True, slots=True)
class Packet:
    """A reassembled packet: all the frames of one (stream, message) concatenated."""

    kind: int
    stream_id: int
    message_id: int
    data: bytes = b""
    control: bool = False


def encode_frame(frame: Frame) -> bytes:
    """Encode one frame exactly as given (no splitting)."""
    if not (0 <= frame.kind <= 0x3F):
        raise ValueError("kind must fit in 6 bits")
    return _frame_bytes(frame.kind, frame.stream_id, frame.message_id, frame.data, frame.done, frame.control)


def _frame_bytes(kind: int, stream_id: int, message_id: int, data: bytes | bytearray, done: bool,
                 control: bool) -> bytes:
    # The hot path of every packet written: no Frame object, one join.
    head = (kind << 1) | (1 if done else 0) | (0x80 if control else 0)
    return b"".join((_SMALL_VARINTS[head] if head < 0x80 else bytes((head,)), encode_varint(stream_id),
                     encode_varint(message_id), encode_varint(len(data)), data))


def _packet_parts(kind: int, stream_id: int, message_id: int, data: bytes | bytearray, control: bool,
                  split_size: int, last: bool = True) -> list[bytes | memoryview]:
    """One packet as frame headers and views of ``data``, for a caller that joins them with
    everything else it sends: a large message is copied once, not once per layer. ``last=False``:
    a piece of a packet whose data goes on (no frame of it is done)."""
    if len(data) <= split_size:
        return [_frame_bytes(kind, stream_id, message_id, data, last, control)]
    view = memoryview(data)
    parts: list[bytes | memoryview] = []
    flag = 0x80 if control else 0
    for offset in range(0, len(data), split_size):
        chunk = view[offset : offset + split_size]
        head = (kind << 1) | (1 if last and offset + split_size >= len(data) else 0) | flag
        parts.append(b"".join((_SMALL_VARINTS[head] if head < 0x80 else bytes((head,)), encode_varint(stream_id),
                               encode_varint(message_id), encode_varint(len(chunk)))))
        parts.append(chunk)
    return parts


def _read_uvarint(buf: bytes | bytearray | memoryview, pos: int) -> tuple[int, int] | None:
    """:func:`decode_varint` with the one-byte case inline (ids and short lengths)."""
    if pos < len(buf):
        byte = buf[pos]
        if byte < 0x80:
            return byte, pos + 1
    return decode_varint(buf, pos)


def _frame_header(
    buf: bytes | bytearray | memoryview, pos: int, max_size: int
) -> tuple[int, int, int, int, int] | None:
    """(control byte, stream id, message id, data start, data end) of the frame at ``pos``.

    None while incomplete; the size limit is checked on the header, before the data is buffered.
    """
    if pos >= len(buf):
        return None
    got = _read_uvarint(buf, pos + 1)
    if got is None:
        return None
    stream_id, p = got
    got = _read_uvarint(buf, p)
    if got is None:
        return None
    message_id, p = got
    got = _read_uvarint(buf, p)
    if got is None:
        return None
    length, p = got
    if length > max_size:
        raise DrpcProtocolError(f"frame of {length} bytes exceeds the {max_size}-byte limit")
    if len(buf) - p < length:
        return None
    return buf[pos], stream_id, message_id, p, p + length


def parse_frame(
    buf: bytes | bytearray | memoryview, pos: int = 0, *, max_size: int = MAX_PACKET_SIZE
) -> tuple[Frame, int] | None:
    """Parse one frame at ``pos``; return ``(frame, next_pos)`` or None if incomplete.

    Raises :class:`DrpcProtocolError` for a bad varint or a frame larger than
    ``max_size`` (checked on the header, before the data is buffered).
    """
    header = _frame_header(buf, pos, max_size)
    if header is None:
        return None
    control, stream_id, message_id, start, end = header
    frame = Frame(
        kind=(control >> 1) & 0x3F,
        stream_id=stream_id,
        message_id=message_id,
        data=bytes(buf[start:end]),
        done=bool(control & 0x01),
        control=bool(control & 0x80),
    )
    return frame, end


def encode_packet(packet: Packet, *, split_size: int = SPLIT_SIZE) -> bytes:
    """Encode a packet as frames of at most ``split_size`` data bytes, done=1 on the last."""
    if split_size <= 0:
        raise ValueError("split_size must be positive")
    return _packet_bytes(packet.kind, packet.stream_id, packet.message_id, packet.data, packet.control, split_size)


def _packet_bytes(kind: int, stream_id: int, message_id: int, data: bytes, control: bool, split_size: int) -> bytes:
    if len(data) <= split_size:
        return _frame_bytes(kind, stream_id, message_id, data, True, control)
    return b"".join(_packet_parts(kind, stream_id, message_id, data, control, split_size))


def encode_error(code: int, message: str) -> bytes:
    """Error packet data: 8-byte big-endian code, then the UTF-8 text."""
    return _CODE.pack(code) + message.encode("utf-8")


def decode_error(data: bytes) -> tuple[int, str]:
    """Split Error packet data into (code, text); short data is all text, code 0, as in Go."""
    if len(data) < _CODE.size:
        return 0, data.decode("utf-8", "replace") + " (drpcwire note: invalid error data)"
    (code,) = _CODE.unpack_from(data)
    return code, data[_CODE.size :].decode("utf-8", "replace")


class PacketReader:
    """Incremental frame parser and packet assembler (one direction of one transport).

    :meth:`receive_data` takes any chunking and returns the packets it completed.
    Raises :class:`DrpcProtocolError` on id monotonicity violations, a kind change
    inside a packet, bad varints or oversized packets; the reader is then unusable.
    """

    def __init__(self, *, max_packet_size: int = MAX_PACKET_SIZE) -> None:
        self._buf = bytearray()
        self._max = max_packet_size
        # The lowest (stream, message) still acceptable; Go starts at (1, 1).
        self._id = (1, 1)
        self._partial: Packet | None = None
        self._parts: list[bytes] = []
        self._partial_size = 0
        self._failed: str | None = None

    def receive_data(self, data: bytes) -> list[Packet]:
        if self._failed is not None:
            raise DrpcProtocolError(f"reader already failed: {self._failed}")
        buf = self._buf
        buf += data
        packets: list[Packet] = []
        pos = 0
        try:
            while True:
                header = _frame_header(buf, pos, self._max)
                if header is None:
                    break
                control, stream_id, message_id, start, pos = header
                packet = self._assemble(control, stream_id, message_id, bytes(buf[start:pos]))
                if packet is not None:
                    packets.append(packet)
        except DrpcProtocolError as exc:
            self._failed = str(exc)
            raise
        del buf[:pos]
        return packets

    @property
    def buffered(self) -> int:
        """Bytes received that do not yet form a complete frame."""
        return len(self._buf)

    def _assemble(self, control: int, stream_id: int, message_id: int, data: bytes) -> Packet | None:
        kind = (control >> 1) & 0x3F
        if control & 0x80:
            if kind in _KNOWN_CONTROL_KINDS:
                return Packet(kind, stream_id, message_id, data, control=True)
            return None
        fid = (stream_id, message_id)
        if fid < self._id:
            raise DrpcProtocolError(f"id monotonicity violation: frame {fid} after {self._id}")
        done = control & 0x01
        if self._partial is None or fid != self._id:
            # A higher id abandons any half-built packet: the sender moved on.
            self._id = fid
            if done:
                # A whole packet in one frame, the common case: no reassembly.
                if len(data) > self._max:
                    raise DrpcProtocolError(f"packet exceeds {self._max} bytes")
                self._partial = None
                self._parts = []
                self._partial_size = 0
                self._id = (stream_id, message_id + 1)
                return Packet(kind, stream_id, message_id, data)
            self._partial = Packet(kind, stream_id, message_id)
            self._parts = []
            self._partial_size = 0
        elif kind != self._partial.kind:
            raise DrpcProtocolError(f"packet kind change from {self._partial.kind} to {kind}")
        self._parts.append(data)
        self._partial_size += len(data)
        if self._partial_size > self._max:
            raise DrpcProtocolError(f"packet exceeds {self._max} bytes")
        if not done:
            return None
        packet = Packet(self._partial.kind, stream_id, message_id, b"".join(self._parts))
        self._partial = None
        self._parts = []
        self._partial_size = 0
        # The id of a finished packet is used up; any later frame must be higher.
        self._id = (stream_id, message_id + 1)
        return packet


class PacketWriter:
    """Numbers and encodes outgoing packets for one dRPC stream (message ids 1, 2, 3, ...)."""

    def __init__(self, stream_id: int = 1, *, split_size: int = SPLIT_SIZE) -> None:
        if stream_id <= 0:
            raise ValueError("dRPC stream ids start at 1")
        self.stream_id = stream_id
        self._next_message_id = 1
        self._split = split_size

    def packet(self, kind: int, data: bytes = b"", *, control: bool = False) -> bytes:
        """Encode the next packet of ``kind`` (a :class:`Kind` value); it consumes one message id."""
        message_id = self._next_message_id
        self._next_message_id += 1
        return _packet_bytes(kind, self.stream_id, message_id, data, control, self._split)


# --------------------------------------------------------------------------------------
# Client: one unary call


@functools.lru_cache(maxsize=64)
def _invoke_packet(method: str, split_size: int) -> bytes:
    return _packet_bytes(_INVOKE, 1, 1, method.encode("utf-8"), False, split_size)


_CLOSE_SEND_1_3: Final = _frame_bytes(_CLOSE_SEND, 1, 3, b"", True, False)


class UnaryCall:
    """Client side of one unary RPC on a fresh dRPC stream (stream id 1).

    On construction the call queues Invoke(1,1) → Message(1,2) → CloseSend(1,3) (the
    Message is sent even for an empty request: the server waits for it); with ``request=None``
    only Invoke, and the Message's pieces follow through :meth:`send_request_piece` (a request
    serialized as it is sent: only the peer's window of it is ever held here). Feed the
    stream's bytes to :meth:`receive_data` until :attr:`finished`; then
    :meth:`result` returns the response message bytes or raises :class:`RpcError`.

    The call finishes at the first complete Message (as Go's client does; the server's
    CloseSend that follows is not needed), at an Error packet, at Close or CloseSend
    without a Message, or at :meth:`receive_eof`. Bytes after that are ignored.
    """

    def __init__(self, method: str, request: bytes | bytearray | None, *, split_size: int = SPLIT_SIZE) -> None:
        if not method.startswith("/"):
            raise ValueError("method must be a full path like /coder.agent.v2.Agent/GetManifest")
        self.method = method
        self._split = split_size
        self._reader = PacketReader()
        self._response: bytes | None = None
        self._error: DrpcError | None = None
        # Invoke(1,1) is the same bytes for every call of a method: encoded once. A long request is
        # not copied here: its frames are headers and views of it (a log batch is 1 MiB, and each
        # copy is RSS at its peak). request=None: it comes in pieces (send_request_piece).
        self._out: list[bytes | memoryview] = [_invoke_packet(method, split_size)]
        self._request_open = True
        if request is not None:
            self.send_request_piece(request, last=True)

    @property
    def finished(self) -> bool:
        return self._response is not None or self._error is not None

    def data_to_send(self) -> bytes:
        """Return and forget the bytes queued for the server."""
        return b"".join(self.parts_to_send())

    def send_request_piece(self, data: bytes | bytearray, *, last: bool) -> None:
        """Queue the next piece of a request given in pieces (``request=None``): the pieces'
        concatenation is the request; ``last`` ends it (and queues CloseSend)."""
        if not self._request_open:
            raise RuntimeError(f"{self.method}: the request is complete")
        self._out += _packet_parts(_MESSAGE, 1, 2, data, False, self._split, last)
        if last:
            self._out.append(_CLOSE_SEND_1_3)
            self._request_open = False

    def parts_to_send(self) -> list[bytes | memoryview]:
        """:meth:`data_to_send` as the pieces it is made of: frame headers and views of the request
        (which must not change until they are sent)."""
        out, self._out = self._out, []
        return out

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the server. Raises :class:`DrpcProtocolError` on bad framing."""
        if self.finished:
            return
        try:
            packets = self._reader.receive_data(data)
        except DrpcProtocolError as exc:
            self._error = exc
            raise
        for packet in packets:
            self._on_packet(packet)
            if self.finished:
                return

    def receive_eof(self) -> None:
        """The server closed its side; a call still waiting for its reply fails."""
        if not self.finished:
            self._error = DrpcProtocolError(f"{self.method}: stream ended before a reply")

    def result(self) -> bytes:
        """The response message bytes; raises the call's error, or RuntimeError if unfinished."""
        if self._error is not None:
            raise self._error
        if self._response is None:
            raise RuntimeError("call has not finished")
        return self._response

    def _on_packet(self, packet: Packet) -> None:
        if packet.stream_id != 1:
            self._error = DrpcProtocolError(f"reply on dRPC stream {packet.stream_id}, expected 1")
        elif packet.kind == _MESSAGE:
            self._response = packet.data
        elif packet.kind == _ERROR:
            code, text = decode_error(packet.data)
            self._error = rpc_error(code, text)
        elif packet.kind in (_CLOSE, _CLOSE_SEND, _CANCEL):
            self._error = DrpcProtocolError(f"{self.method}: server closed the stream without a reply")
        else:
            self._error = DrpcProtocolError(f"unexpected packet kind {packet.kind} from the server")


# --------------------------------------------------------------------------------------
# Client: one streaming call (server stream or bidi)


@dataclass(frozen=True, slots=True)
class StreamMessage:
    """A complete Message packet from the server."""

    data: bytes


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """The server's direction is over; nothing more will be received.

    ``how`` is "close_send" (the normal end of a server stream), "close" (the server
    abandoned the stream), "error" (``error`` holds the :class:`RpcError`) or "eof" (the
    transport ended without any of those: ``error`` holds a :class:`DrpcProtocolError`).
    """

    how: str
    error: DrpcError | None = None


StreamEvent = StreamMessage | StreamEnded


class ClientStream:
    """Client side of one streaming RPC on a fresh dRPC stream (stream id 1).

    On construction the stream queues Invoke(1,1). Then :meth:`send_message`,
    :meth:`close_send` (no more messages from us) and :meth:`close` (abandon the stream)
    queue packets in order; :meth:`data_to_send` hands them out. :meth:`receive_data`
    returns :class:`StreamMessage` events and, once, a :class:`StreamEnded`; after that
    received bytes are ignored. A server stream is :meth:`server_stream`: the request
    and CloseSend are queued at once, as Go's generated client does.

    Sending after :meth:`close_send` or :meth:`close` raises RuntimeError. Framing errors
    raise :class:`DrpcProtocolError` from :meth:`receive_data` and also end the stream.
    """

    def __init__(self, method: str, *, split_size: int = SPLIT_SIZE) -> None:
        if not method.startswith("/"):
            raise ValueError("method must be a full path like /coder.tailnet.v2.Tailnet/Coordinate")
        self.method = method
        self._writer = PacketWriter(1, split_size=split_size)
        self._reader = PacketReader()
        self._out = bytearray(self._writer.packet(_INVOKE, method.encode("utf-8")))
        self._send_closed = False
        self._closed = False
        self.ended: StreamEnded | None = None
        """How the server's direction ended, None while it is open."""

    @classmethod
    def server_stream(cls, method: str, request: bytes, *, split_size: int = SPLIT_SIZE) -> ClientStream:
        """A server-streaming call: Invoke, the request Message and CloseSend, queued at once."""
        stream = cls(method, split_size=split_size)
        stream.send_message(request)
        stream.close_send()
        return stream

    @property
    def send_closed(self) -> bool:
        """True after :meth:`close_send` or :meth:`close`, or once the stream has ended."""
        return self._send_closed or self._closed or self.ended is not None

    def data_to_send(self) -> bytes:
        """Return and forget the bytes queued for the server."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def send_message(self, data: bytes) -> None:
        """Queue one Message packet (split into frames as needed)."""
        if self.send_closed:
            raise RuntimeError(f"{self.method}: cannot send on a closed stream")
        self._out += self._writer.packet(_MESSAGE, data)

    def close_send(self) -> None:
        """Queue CloseSend: we send nothing more, the server may still answer. Idempotent."""
        if self.send_closed:
            return
        self._send_closed = True
        self._out += self._writer.packet(_CLOSE_SEND)

    def close(self) -> None:
        """Queue Close: the stream is abandoned both ways. Idempotent; a no-op once ended."""
        if self._closed or self.ended is not None:
            return
        self._closed = True
        self._out += self._writer.packet(_CLOSE)
        self.ended = StreamEnded("close")

    def receive_data(self, data: bytes) -> list[StreamEvent]:
        """Feed bytes from the server; return the events they completed."""
        if self.ended is not None:
            return []
        try:
            packets = self._reader.receive_data(data)
        except DrpcProtocolError as exc:
            self.ended = StreamEnded("eof", exc)
            raise
        events: list[StreamEvent] = []
        for packet in packets:
            event = self._on_packet(packet)
            events.append(event)
            if isinstance(event, StreamEnded):
                self.ended = event
                break
        return events

    def receive_eof(self) -> list[StreamEvent]:
        """The transport ended; a stream still open ends with an "eof" :class:`StreamEnded`."""
        if self.ended is not None:
            return []
        self.ended = StreamEnded("eof", DrpcProtocolError(f"{self.method}: stream ended without CloseSend"))
        return [self.ended]

    def _on_packet(self, packet: Packet) -> StreamEvent:
        if packet.stream_id != 1:
            return StreamEnded("eof", DrpcProtocolError(f"packet on dRPC stream {packet.stream_id}, expected 1"))
        if packet.kind == _MESSAGE:
            return StreamMessage(packet.data)
        if packet.kind == _CLOSE_SEND:
            return StreamEnded("close_send")
        if packet.kind in (_CLOSE, _CANCEL):
            return StreamEnded("close")
        if packet.kind == _ERROR:
            code, text = decode_error(packet.data)
            return StreamEnded("error", rpc_error(code, text))
        return StreamEnded("eof", DrpcProtocolError(f"unexpected packet kind {packet.kind} from the server"))


# --------------------------------------------------------------------------------------
# Server: one call, written apart from the client half (see the module docstring)


@dataclass(frozen=True, slots=True)
class InvokeReceived:
    """The client named the method (and optionally sent InvokeMetadata before it)."""

    method: str
    metadata: bytes | None = None


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """The request message is complete: time to call the handler and reply."""

    method: str
    request: bytes


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """One Message of a streaming call (the first one is the request of a server stream)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class CloseSendReceived:
    """The client will send nothing more (normal after the request)."""


@dataclass(frozen=True, slots=True)
class CloseReceived:
    """The client abandoned the stream (Close or Cancel); no reply is expected."""


ServerEvent = InvokeReceived | RequestReceived | MessageReceived | CloseSendReceived | CloseReceived


class _ServerState(enum.Enum):
    AWAIT_INVOKE = "await_invoke"
    AWAIT_REQUEST = "await_request"
    HANDLING = "handling"  # request delivered, reply not yet given
    STREAMING = "streaming"  # a streaming method: messages flow both ways
    REPLIED = "replied"
    CLOSED = "closed"

# Module-level names for the per-packet paths: on Python 3.11 an enum member lookup costs ~0.1 us.
_S_AWAIT_INVOKE: Final = _ServerState.AWAIT_INVOKE
_S_AWAIT_REQUEST: Final = _ServerState.AWAIT_REQUEST
_S_HANDLING: Final = _ServerState.HANDLING
_S_STREAMING: Final = _ServerState.STREAMING
_S_REPLIED: Final = _ServerState.REPLIED
_S_CLOSED: Final = _ServerState.CLOSED


class ServerStream:
    """Server side of one RPC on one dRPC stream (our fake control plane's half).

    Feed client bytes to :meth:`receive_data`; it returns :class:`InvokeReceived`,
    then, for a unary method, :class:`RequestReceived` (answer it with :meth:`reply` or
    :meth:`reply_error`), :class:`CloseSendReceived` and possibly
    :class:`CloseReceived`. Replies are Message + CloseSend, or a single Error, as
    drpcmux does. Raises :class:`DrpcProtocolError` on bad framing or out-of-order
    packets (Message before Invoke, a second request on a unary call, a Message after
    the client's CloseSend).

    Methods named in ``streaming`` (full paths) are streams, as drpcmux knows from the
    generated description: every client Message is a :class:`MessageReceived` (the
    first is the request of a server stream), and the server sends with
    :meth:`send_message`, ends its direction with :meth:`close_send` (a handler that
    returned), fails it with :meth:`send_error`, or abandons the stream with
    :meth:`close` (what coderd's Coordinate does when it hangs up).
    """

    def __init__(
        self,
        *,
        max_packet_size: int = MAX_PACKET_SIZE,
        split_size: int = SPLIT_SIZE,
        streaming: Collection[str] = (),
    ) -> None:
        self._streaming = frozenset(streaming)
        self._server_done = False
        self._in = bytearray()
        self._max = max_packet_size
        self._split = split_size
        self._state = _S_AWAIT_INVOKE
        self._stream_id = 0
        self._last = (1, 0)  # (stream, message) of the last finished packet
        self._cur: tuple[int, int, int] | None = None  # (stream, message, kind) being built
        self._cur_data = bytearray()
        self._metadata: bytes | None = None
        self._method = ""
        self._out = bytearray()
        self._next_out_id = 1
        self._client_done = False

    @property
    def method(self) -> str:
        """The invoked method, "" until Invoke arrived."""
        return self._method

    @property
    def replied(self) -> bool:
        """The server's direction is over (reply, CloseSend, Error or Close sent or received)."""
        return self._server_done or self._state in (_S_REPLIED, _S_CLOSED)

    @property
    def streaming(self) -> bool:
        """The invoked method is a stream (named in ``streaming``)."""
        return self._state is _S_STREAMING or (self._method in self._streaming and bool(self._method))

    @property
    def client_done(self) -> bool:
        """The client sent CloseSend or Close: no more messages will arrive."""
        return self._client_done or self._state is _S_CLOSED

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def receive_data(self, data: bytes) -> list[ServerEvent]:
        self._in += data
        events: list[ServerEvent] = []
        view = memoryview(self._in)
        pos = 0
        try:
            while True:
                header = self._read_header(view, pos)
                if header is None:
                    break
                ctl, sid, mid, length, body_at = header
                if len(view) - body_at < length:
                    break
                body = bytes(view[body_at : body_at + length])
                pos = body_at + length
                self._on_frame(ctl, sid, mid, body, events)
        finally:
            view.release()
        del self._in[:pos]
        return events

    def reply(self, message: bytes) -> None:
        """Answer the request with ``message``: Message then CloseSend."""
        self._check_can_reply()
        self._send(_MESSAGE, message)
        self._send(_CLOSE_SEND, b"")
        self._state = _S_REPLIED

    def reply_error(self, code: int, message: str) -> None:
        """Answer with an Error packet (code, text); no CloseSend follows, as in Go."""
        self._check_can_reply()
        self._send(_ERROR, code.to_bytes(8, "big") + message.encode("utf-8"))
        self._state = _S_REPLIED

    def send_message(self, message: bytes) -> None:
        """Streaming methods: send one Message to the client."""
        self._check_can_stream()
        self._send(_MESSAGE, message)

    def close_send(self) -> None:
        """Streaming methods: end the server's direction (CloseSend), as a handler returning nil."""
        self._check_can_stream()
        self._send(_CLOSE_SEND, b"")
        self._server_done = True

    def send_error(self, code: int, message: str) -> None:
        """Streaming methods: end the stream with an Error packet (code, text)."""
        self._check_can_stream()
        self._send(_ERROR, encode_error(code, message))
        self._server_done = True

    def close(self) -> None:
        """Abandon the stream (Close). Idempotent; a no-op once the stream was closed."""
        if self._state is _S_CLOSED or self._server_done:
            self._state = _S_CLOSED
            return
        if self._state is _S_AWAIT_INVOKE:
            raise RuntimeError("cannot close a stream before Invoke")
        self._send(_CLOSE, b"")
        self._server_done = True
        self._state = _S_CLOSED

    # ---- internals -------------------------------------------------------------------

    def _check_can_stream(self) -> None:
        if self._state is not _S_STREAMING or self._server_done:
            raise RuntimeError(f"cannot stream in state {self._state.value}")

    def _check_can_reply(self) -> None:
        if self._state is not _S_HANDLING:
            raise RuntimeError(f"cannot reply in state {self._state.value}")

    def _send(self, kind: int, data: bytes) -> None:
        mid = self._next_out_id
        self._next_out_id += 1
        split = self._split
        for offset in range(0, max(len(data), 1), split):
            chunk = data[offset : offset + split]
            self._out.append((kind << 1) | (1 if offset + split >= len(data) else 0))
            self._put_uvarint(self._stream_id)
            self._put_uvarint(mid)
            self._put_uvarint(len(chunk))
            self._out += chunk

    def _put_uvarint(self, value: int) -> None:
        while True:
            low = value & 0x7F
            value >>= 7
            if value:
                self._out.append(low | 0x80)
            else:
                self._out.append(low)
                return

    def _read_header(self, view: memoryview, pos: int) -> tuple[int, int, int, int, int] | None:
        if pos >= len(view):
            return None
        ctl = view[pos]
        p = pos + 1
        values = []
        for _ in range(3):
            if p < len(view) and view[p] < 0x80:  # one-byte varints: ids and short lengths
                values.append(view[p])
                p += 1
                continue
            shift = 0
            value = 0
            while True:
                if p >= len(view):
                    return None
                if shift >= 7 * MAX_VARINT_LEN:
                    raise DrpcProtocolError("varint too long")
                b = view[p]
                p += 1
                value |= (b & 0x7F) << shift
                shift += 7
                if b < 0x80:
                    break
            values.append(value)
        sid, mid, length = values
        if length > self._max:
            raise DrpcProtocolError(f"frame of {length} bytes exceeds the {self._max}-byte limit")
        return ctl, sid, mid, length, p

    def _on_frame(self, ctl: int, sid: int, mid: int, body: bytes, events: list[ServerEvent]) -> None:
        kind, done = (ctl >> 1) & 0x3F, ctl & 1
        if ctl & 0x80:
            if kind == _CANCEL:
                self._closed(events)
            return
        if (sid, mid) <= self._last:
            raise DrpcProtocolError(f"id monotonicity violation: ({sid}, {mid}) after {self._last}")
        cur = self._cur
        if cur is not None and cur[0] == sid and cur[1] == mid:
            if cur[2] != kind:
                raise DrpcProtocolError("packet kind change")
        elif done:
            # A whole packet in one frame, the usual case (any half-built one is abandoned).
            if len(body) > self._max:
                raise DrpcProtocolError(f"packet exceeds {self._max} bytes")
            self._cur = None
            self._cur_data.clear()
            self._last = (sid, mid)
            self._on_packet(kind, sid, body, events)
            return
        else:
            self._cur = (sid, mid, kind)
            self._cur_data.clear()
        self._cur_data += body
        if len(self._cur_data) > self._max:
            raise DrpcProtocolError(f"packet exceeds {self._max} bytes")
        if not done:
            return
        data = bytes(self._cur_data)
        self._cur = None
        self._cur_data.clear()
        self._last = (sid, mid)
        self._on_packet(kind, sid, data, events)

    def _on_packet(self, kind: int, sid: int, data: bytes, events: list[ServerEvent]) -> None:
        state = self._state
        if kind == _INVOKE_METADATA and state is _S_AWAIT_INVOKE:
            self._metadata = data
        elif kind == _INVOKE and state is _S_AWAIT_INVOKE:
            self._stream_id = sid
            try:
                self._method = data.decode("utf-8")
            except UnicodeDecodeError:
                raise DrpcProtocolError("method name is not UTF-8") from None
            streaming = self._method in self._streaming
            self._state = _S_STREAMING if streaming else _S_AWAIT_REQUEST
            events.append(InvokeReceived(self._method, self._metadata))
        elif sid != self._stream_id and state is not _S_AWAIT_INVOKE:
            raise DrpcProtocolError(f"packet for dRPC stream {sid} inside stream {self._stream_id}")
        elif kind == _MESSAGE and state is _S_AWAIT_REQUEST:
            self._state = _S_HANDLING
            events.append(RequestReceived(self._method, data))
        elif kind == _MESSAGE and state is _S_STREAMING and not self._client_done:
            events.append(MessageReceived(data))
        elif kind == _CLOSE_SEND and state is not _S_AWAIT_INVOKE:
            if not self._client_done:
                self._client_done = True
                events.append(CloseSendReceived())
        elif kind == _CLOSE:
            self._closed(events)
        else:
            raise DrpcProtocolError(f"unexpected packet kind {kind} in state {state.value}")

    def _closed(self, events: list[ServerEvent]) -> None:
        if self._state is not _S_CLOSED:
            self._state = _S_CLOSED
            events.append(CloseReceived())
