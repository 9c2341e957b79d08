"""DERP, the relay protocol of Coder's tailnet: framing and the client side, sans-I/O.

Wire rules (tailscale ``derp/derp.go``, ``derp_client.go``; ../shared/protocol/coder-tailnet.md §4):

* A frame is a 1-byte type, a 4-byte big-endian length, then that many payload bytes. Bytes may
  arrive in any chunking; :class:`FrameReader` reassembles them.
* Memory is bounded: a frame we keep (any type we understand) may carry at most
  :data:`MAX_FRAME_PAYLOAD` bytes (a 64 KiB packet + its 32-byte key + headroom), else
  :class:`DerpProtocolError`. A frame of a type we do not know is skipped as its bytes arrive
  (never buffered), up to :data:`MAX_SKIP_PAYLOAD` (Go's 1 MiB "corrupt frame" limit).
* Login: the server sends ServerKey (``DERP🔑`` + its 32-byte key); the client answers ClientInfo
  = its 32-byte public key + 24-byte nonce + NaCl box (X25519/XSalsa20-Poly1305, node private key
  → server key) of ``{"version":2,"CanAckPings":true}``; the server answers ServerInfo = nonce +
  box (server key → client key) of ``{"version":2}`` (maybe with token-bucket hints, which we
  report but do not enforce: coderd never sets them).
* The node private key is the DERP identity (and the WireGuard static key): raw 32 bytes.
* After ClientInfo the client may send at once (Go does not wait for ServerInfo). A Ping from the
  server is answered with a Pong carrying the same 8 bytes, by the core itself. KeepAlive,
  Health, Restarting and PeerGone are reported as events; frames of unknown type, mesh-only
  frames and short frames are ignored, as Go does.
* Clients need no keepalives of their own: nothing here asks for a timer.

The core never does I/O, never reads a clock: feed it bytes with :meth:`ClientProtocol.receive_data`,
take the bytes to send with :meth:`ClientProtocol.data_to_send`. Nonces come from ``os.urandom``
unless a test injects its own.
"""

from __future__ import annotations

import enum
import json
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "KEY_LEN",
    "MAGIC",
    "MAX_FRAME_PAYLOAD",
    "MAX_PACKET_SIZE",
    "MAX_SKIP_PAYLOAD",
    "NONCE_LEN",
    "ClientProtocol",
    "DerpProtocolError",
    "Event",
    "FrameReader",
    "FrameType",
    "Health",
    "KeepAlive",
    "LoggedIn",
    "PeerGone",
    "PeerGoneReason",
    "Ping",
    "Pong",
    "RecvPacket",
    "Restarting",
    "build_client_info",
    "build_server_info",
    "build_server_key",
    "encode_frame",
    "open_client_info",
    "open_server_info",
    "parse_server_key",
    "public_key",
]

MAGIC: Final = "DERP🔑".encode()  # 44 45 52 50 f0 9f 94 91
KEY_LEN: Final = 32
NONCE_LEN: Final = 24
PROTOCOL_VERSION: Final = 2
MAX_PACKET_SIZE: Final = 64 << 10
MAX_FRAME_PAYLOAD: Final = MAX_PACKET_SIZE + KEY_LEN + 1024
MAX_SKIP_PAYLOAD: Final = 1 << 20
MAX_CLIENT_INFO: Final = 256 << 10  # the server's limit on the (still untrusted) ClientInfo
HEADER_LEN: Final = 5
_HEADER = struct.Struct(">BI")


class FrameType(enum.IntEnum):
    SERVER_KEY = 0x01
    CLIENT_INFO = 0x02
    SERVER_INFO = 0x03
    SEND_PACKET = 0x04
    RECV_PACKET = 0x05
    KEEP_ALIVE = 0x06
    NOTE_PREFERRED = 0x07
    PEER_GONE = 0x08
    PEER_PRESENT = 0x09
    FORWARD_PACKET = 0x0A
    WATCH_CONNS = 0x10
    CLOSE_PEER = 0x11
    PING = 0x12
    PONG = 0x13
    HEALTH = 0x14
    RESTARTING = 0x15


_KNOWN: Final = frozenset(int(t) for t in FrameType)


class PeerGoneReason(enum.IntEnum):
    DISCONNECTED = 0
    NOT_HERE = 1


class DerpProtocolError(Exception):
    """The peer broke the DERP protocol; the connection must be closed."""


# ---- framing ------------------------------------------------------------------------------


def encode_frame(frame_type: int, payload: bytes = b"") -> bytes:
    """One frame: type, BE length, payload."""
    return _HEADER.pack(frame_type, len(payload)) + payload


class FrameReader:
    """Reassembles frames from arbitrarily chunked bytes, with bounded memory.

    :meth:`feed` returns the complete ``(type, payload)`` frames of known types; unknown types are
    dropped as they stream past. Raises :class:`DerpProtocolError` on an oversized frame (after
    which the reader is unusable).
    """

    def __init__(self, max_payload: int = MAX_FRAME_PAYLOAD, max_skip: int = MAX_SKIP_PAYLOAD) -> None:
        self.max_payload = max_payload
        self.max_skip = max_skip
        self._buf = bytearray()
        self._skip = 0  # bytes of an unknown frame still to drop
        self.skipped = 0  # unknown frames dropped (for tests and status)

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        if self._skip:
            n = min(self._skip, len(data))
            self._skip -= n
            data = data[n:]
        buf = self._buf
        # Whole frames usually arrive whole: parse straight from ``data`` (one copy per payload)
        # and keep only an incomplete tail.
        src: bytes | bytearray
        if buf:
            buf += data
            src = buf
        else:
            src = data
        pos = 0
        end = len(src)
        while end - pos >= HEADER_LEN:
            ftype, length = _HEADER.unpack_from(src, pos)
            if ftype not in _KNOWN:
                if length > self.max_skip:
                    raise DerpProtocolError(f"unexpectedly large frame (type 0x{ftype:02x}) of {length} bytes")
                pos += HEADER_LEN
                avail = min(length, end - pos)
                pos += avail
                self.skipped += 1
                if avail < length:
                    self._skip = length - avail
                continue
            if length > self.max_payload:
                raise DerpProtocolError(f"frame (type 0x{ftype:02x}) of {length} bytes exceeds {self.max_payload}")
            if end - pos - HEADER_LEN < length:
                break
            start = pos + HEADER_LEN
            out.append((ftype, bytes(src[start:start + length])))
            pos = start + length
        if src is buf:
            if pos:
                del buf[:pos]
        elif pos < end:
            buf += memoryview(data)[pos:]
        return out


# ---- keys and the login boxes ------------------------------------------------------------------


def _check_key(key: bytes, what: str) -> None:
    if len(key) != KEY_LEN:
        raise ValueError(f"{what} must be {KEY_LEN} bytes, not {len(key)}")


def public_key(private_key: bytes) -> bytes:
    """The X25519 public key of a raw 32-byte private key."""
    from nacl.public import PrivateKey

    _check_key(private_key, "private key")
    return bytes(PrivateKey(private_key).public_key)


def _box(private_key: bytes, peer_public: bytes) -> Any:
    from nacl.public import Box, PrivateKey, PublicKey

    return Box(PrivateKey(private_key), PublicKey(peer_public))


def _seal(private_key: bytes, peer_public: bytes, message: bytes, nonce: bytes) -> bytes:
    if len(nonce) != NONCE_LEN:
        raise ValueError(f"nonce must be {NONCE_LEN} bytes")
    return bytes(_box(private_key, peer_public).encrypt(message, nonce))  # nonce ‖ ciphertext


def _open(private_key: bytes, peer_public: bytes, sealed: bytes, what: str) -> bytes:
    from nacl.exceptions import CryptoError

    if len(sealed) < NONCE_LEN:
        raise DerpProtocolError(f"short {what} frame")
    try:
        return bytes(_box(private_key, peer_public).decrypt(sealed))
    except CryptoError:
        raise DerpProtocolError(f"cannot open the {what} box") from None


def build_server_key(server_public: bytes) -> bytes:
    """The ServerKey frame a server sends first."""
    _check_key(server_public, "server key")
    return encode_frame(FrameType.SERVER_KEY, MAGIC + server_public)


def parse_server_key(payload: bytes) -> bytes:
    """The server's public key from a ServerKey payload (extra trailing bytes allowed, as Go)."""
    if len(payload) < len(MAGIC) + KEY_LEN or payload[:len(MAGIC)] != MAGIC:
        raise DerpProtocolError("invalid server greeting")
    return payload[len(MAGIC):len(MAGIC) + KEY_LEN]


def client_info_json(can_ack_pings: bool = True) -> bytes:
    """Go's ``json.Marshal(clientInfo{Version: 2, CanAckPings: ...})`` byte for byte."""
    return b'{"version":2,"CanAckPings":' + (b"true" if can_ack_pings else b"false") + b"}"


def build_client_info(private_key: bytes, server_public: bytes, nonce: bytes, *, can_ack_pings: bool = True) -> bytes:
    """The ClientInfo frame: our public key, then nonce ‖ box(JSON) sealed to the server key."""
    _check_key(server_public, "server key")
    sealed = _seal(private_key, server_public, client_info_json(can_ack_pings), nonce)
    return encode_frame(FrameType.CLIENT_INFO, public_key(private_key) + sealed)


def open_client_info(server_private: bytes, payload: bytes) -> tuple[bytes, dict[str, Any]]:
    """Server side: ``(client public key, client info JSON)`` from a ClientInfo payload."""
    if len(payload) < KEY_LEN + NONCE_LEN:
        raise DerpProtocolError("short client info")
    if len(payload) > MAX_CLIENT_INFO:
        raise DerpProtocolError("long client info")
    client = payload[:KEY_LEN]
    info = _json_object(_open(server_private, client, payload[KEY_LEN:], "client info"), "client info")
    return client, info


def build_server_info(server_private: bytes, client_public: bytes, nonce: bytes,
                      info: dict[str, Any] | None = None) -> bytes:
    """Server side: the ServerInfo frame, ``{"version":2}`` sealed to the client."""
    body = json.dumps(info if info is not None else {"version": PROTOCOL_VERSION}, separators=(",", ":"))
    return encode_frame(FrameType.SERVER_INFO, _seal(server_private, client_public, body.encode(), nonce))


def open_server_info(private_key: bytes, server_public: bytes, payload: bytes) -> dict[str, Any]:
    """Client side: the ServerInfo JSON."""
    return _json_object(_open(private_key, server_public, payload, "server info"), "server info")


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        raise DerpProtocolError(f"{what}: invalid JSON") from None
    if not isinstance(value, dict):
        raise DerpProtocolError(f"{what}: not a JSON object")
    return value


# ---- events -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoggedIn:
    """ServerInfo arrived and opened: the login is complete."""

    server_key: bytes
    info: dict[str, Any]

    @property
    def version(self) -> int:
        v = self.info.get("version", 0)
        return v if isinstance(v, int) else 0


@dataclass(frozen=True)
class RecvPacket:
    src: bytes
    data: bytes


@dataclass(frozen=True)
class PeerGone:
    peer: bytes
    reason: int  # a PeerGoneReason value, or another byte from a newer server


@dataclass(frozen=True)
class KeepAlive:
    pass


@dataclass(frozen=True)
class Ping:
    """The server pinged us; the Pong is already queued."""

    data: bytes


@dataclass(frozen=True)
class Pong:
    data: bytes


@dataclass(frozen=True)
class Health:
    """Empty ``problem`` = healthy again."""

    problem: str


@dataclass(frozen=True)
class Restarting:
    """The server is restarting: reconnect after ``reconnect_in`` s, keep trying for ``try_for`` s."""

    reconnect_in: float
    try_for: float


Event = LoggedIn | RecvPacket | PeerGone | KeepAlive | Ping | Pong | Health | Restarting


class _State(enum.Enum):
    AWAIT_SERVER_KEY = "await-server-key"
    AWAIT_SERVER_INFO = "await-server-info"
    READY = "ready"
    BROKEN = "broken"


# The login: ServerKey must come first (else a protocol error); ServerInfo completes it. Other
# frames arriving before ServerInfo are handled as usual, as Go's client does.
_TRANSITIONS: Final = {
    _State.AWAIT_SERVER_KEY: {FrameType.SERVER_KEY: _State.AWAIT_SERVER_INFO},
    _State.AWAIT_SERVER_INFO: {FrameType.SERVER_INFO: _State.READY},
}


class ClientProtocol:
    """One DERP client connection's protocol state.

    Call :meth:`receive_data` with every byte received (an empty ``bytes`` is not EOF: the I/O
    layer handles EOF by dropping the object); send whatever :meth:`data_to_send` returns after
    each call. :meth:`send_packet` and friends are allowed once ClientInfo went out
    (:attr:`can_send`), else they raise :class:`RuntimeError`.
    """

    def __init__(self, private_key: bytes, *, can_ack_pings: bool = True,
                 nonce: Callable[[int], bytes] = os.urandom) -> None:
        _check_key(private_key, "private key")
        self._private = private_key
        self.public_key = public_key(private_key)
        self.can_ack_pings = can_ack_pings
        self._nonce = nonce
        self._reader = FrameReader()
        self._out: list[bytes] = []
        self._state = _State.AWAIT_SERVER_KEY
        self.server_key: bytes | None = None

    @property
    def state(self) -> str:
        return self._state.value

    @property
    def can_send(self) -> bool:
        return self._state in (_State.AWAIT_SERVER_INFO, _State.READY)

    @property
    def logged_in(self) -> bool:
        return self._state is _State.READY

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)  # one chunk: no copy
        self._out.clear()
        return out

    # -- outgoing --

    def _require_send(self) -> None:
        if not self.can_send:
            raise RuntimeError(f"cannot send before ClientInfo (state {self._state.value})")

    def send_packet(self, dst: bytes, payload: bytes) -> None:
        """Queue a SendPacket to ``dst`` (a 32-byte node key). ValueError if ``payload`` > 64 KiB."""
        if self._state is not _State.READY:
            self._require_send()
        if len(dst) != KEY_LEN:
            raise ValueError(f"destination key must be {KEY_LEN} bytes, not {len(dst)}")
        if len(payload) > MAX_PACKET_SIZE:
            raise ValueError(f"packet too big: {len(payload)}")
        self._out.append(_HEADER.pack(FrameType.SEND_PACKET, KEY_LEN + len(payload)) + dst + payload)

    def note_preferred(self, preferred: bool) -> None:
        self._require_send()
        self._out.append(encode_frame(FrameType.NOTE_PREFERRED, b"\x01" if preferred else b"\x00"))

    def send_ping(self, data: bytes) -> None:
        self._require_send()
        if len(data) != 8:
            raise ValueError("ping data must be 8 bytes")
        self._out.append(encode_frame(FrameType.PING, data))

    # -- incoming --

    def receive_data(self, data: bytes) -> list[Event]:
        """Process received bytes; return the events they complete. Raises DerpProtocolError."""
        if self._state is _State.BROKEN:
            raise DerpProtocolError("connection already failed")
        try:
            frames = self._reader.feed(data)
            events: list[Event] = []
            for ftype, payload in frames:
                ev = self._frame(ftype, payload)
                if ev is not None:
                    events.append(ev)
            return events
        except DerpProtocolError:
            self._state = _State.BROKEN
            raise

    def _frame(self, ftype: int, payload: bytes) -> Event | None:
        expect = _TRANSITIONS.get(self._state)
        if expect is not None:
            nxt = expect.get(FrameType(ftype))
            if nxt is None:
                if self._state is _State.AWAIT_SERVER_INFO:
                    return self._steady(ftype, payload)  # Go's client does not insist on the order either
                raise DerpProtocolError(f"unexpected frame 0x{ftype:02x} in state {self._state.value}")
            if ftype == FrameType.SERVER_KEY:
                self.server_key = parse_server_key(payload)
                self._out.append(build_client_info(self._private, self.server_key, self._nonce(NONCE_LEN),
                                                   can_ack_pings=self.can_ack_pings))
                self._state = nxt
                return None
            assert self.server_key is not None
            info = open_server_info(self._private, self.server_key, payload)
            self._state = nxt
            return LoggedIn(self.server_key, info)
        return self._steady(ftype, payload)

    def _steady(self, ftype: int, payload: bytes) -> Event | None:
        n = len(payload)
        if ftype == FrameType.RECV_PACKET:
            return RecvPacket(payload[:KEY_LEN], payload[KEY_LEN:]) if n >= KEY_LEN else None
        if ftype == FrameType.KEEP_ALIVE:
            return KeepAlive()
        if ftype == FrameType.PING:
            if n < 8:
                return None
            self._out.append(encode_frame(FrameType.PONG, payload[:8]))
            return Ping(payload[:8])
        if ftype == FrameType.PONG:
            return Pong(payload[:8]) if n >= 8 else None
        if ftype == FrameType.PEER_GONE:
            if n < KEY_LEN:
                return None
            return PeerGone(payload[:KEY_LEN], payload[KEY_LEN] if n > KEY_LEN else PeerGoneReason.DISCONNECTED)
        if ftype == FrameType.HEALTH:
            return Health(payload.decode("utf-8", "replace"))
        if ftype == FrameType.RESTARTING:
            if n < 8:
                return None
            reconnect_ms, try_ms = struct.unpack_from(">II", payload)
            return Restarting(reconnect_ms / 1000.0, try_ms / 1000.0)
        # ServerKey/ServerInfo again, mesh frames, frames only a server receives: ignored.
        return None
