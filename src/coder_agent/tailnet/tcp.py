"""A sans-I/O TCP over IPv6 (RFC 9293): many connections in one :class:`TcpStack`.

Segments in, segments and events out, no sockets, no clock, no await. The I/O layer
feeds every IPv6 packet it reads (:meth:`TcpStack.receive_packet`, or
:meth:`TcpStack.receive_segment` with the addresses and the TCP bytes), hands the
events to the applications, writes out :meth:`TcpStack.packets_to_send` after each
call, and sleeps until :meth:`TcpStack.next_deadline` (``None``: no timer at all, so
an idle stack never wakes) before calling :meth:`TcpStack.handle_timers`. Every call
that can start a timer takes ``now`` (seconds, any monotonic origin).

Connections are keyed by :class:`ConnKey` (local address and port, remote address and
port; addresses are the 16 raw bytes). Packets with IPv6 extension headers, bad TCP
checksums or port 0 are dropped; the stack answers for any destination address (which
addresses are ours is the caller's routing).

Opening. Every SYN for an unknown 4-tuple becomes :class:`ConnectionRequested`, and
nothing goes back to the peer until the caller decides: :meth:`TcpStack.accept` sends
the SYN-ACK (the dispatcher does that only after dialling the local port succeeded),
:meth:`TcpStack.refuse` sends RST (a closed port, as Go does). Duplicate SYNs while
the decision is pending are dropped; at most ``TcpConfig.max_pending`` requests wait
at once (further SYNs are dropped, the peer retries) and one left undecided for
``TcpConfig.decision_timeout`` is refused. :meth:`TcpStack.connect` is an active open
(used by the tests as the client; simultaneous open is not supported).

Rules this module enforces:

* MSS: we announce ``TcpConfig.mss`` (1220 = MTU 1280 - 40 - 20) and send at most
  min(ours, the peer's). Window scaling when both SYNs carry it; SACK and timestamps
  are not offered (a peer's offer is ignored).
* Receive: in-order bytes are handed out at once (:class:`DataReceived`) and count
  against the window until the application calls :meth:`TcpStack.consume`, so a slow
  reader shrinks the advertised window to zero and the sender stops. Out-of-order
  segments are kept (inside the window only, at most one receive buffer of bytes)
  and delivered when the hole fills; each one is answered by an immediate duplicate
  ACK. In-order data is acknowledged once per :meth:`TcpStack.packets_to_send`
  (ACKs of one batch coalesce; an outgoing data segment carries the ACK instead), or at
  once when a quarter of the receive buffer is unacknowledged. Pure ACKs carry SND.MAX.
* Send: :meth:`TcpStack.send` takes only what fits in ``TcpConfig.send_buffer`` and
  returns the count; when it took less than offered, :class:`Writable` follows once
  half the buffer is free again. Nagle is off (Go's default).
* Retransmission (RFC 6298): SRTT/RTTVAR from one timed segment at a time, never a
  retransmitted one (Karn); RTO clamped to [``rto_min``, ``rto_max``], doubled on each
  expiry; after ``max_retries`` expiries (``syn_retries`` for a handshake) the
  connection is reset. After an RTO, everything from SND.UNA is sent again under
  slow start (go-back-N; no SACK).
* Congestion control (RFC 5681/6582 NewReno): initial window 10 segments, slow start,
  congestion avoidance, fast retransmit on the third duplicate ACK, fast recovery with
  partial ACKs.
* Zero window: the persist timer sends an out-of-window ACK (SEQ = SND.UNA-1) with
  RTO backoff; the peer's answer carries its window. It gives up after ``max_retries``
  probes with no answer at all.
* RST out: to any segment for an unknown connection (except a RST, and a SYN which
  is a request); to an unacceptable ACK in SYN-RECEIVED; when a connection is aborted
  or times out. RST in (RFC 5961): reset only when SEQ = RCV.NXT exactly, a challenge
  ACK when it is elsewhere in the window. A SYN on a synchronized connection gets a
  challenge ACK. Unacceptable segments get an ACK and are dropped.
* Keepalive per connection (``accept(..., keepalive_idle=)``): after that long without
  a segment from the peer, probes every ``keepalive_interval``; ``keepalive_count``
  unanswered probes reset the connection.
* TIME-WAIT lasts ``time_wait`` seconds and at most ``max_time_wait`` connections
  linger in it (the oldest is dropped first); a new SYN above RCV.NXT reopens the
  4-tuple.

Connection states (``_TRANSITIONS``; an event a state does not list is a bug and
raises). ``REQUESTED`` is ours: a SYN seen, the caller's decision pending.

====================  ===============  ==============
state                 event            next
====================  ===============  ==============
REQUESTED             accept           SYN_RECEIVED
SYN_SENT              rcv_syn_ack      ESTABLISHED
SYN_RECEIVED          rcv_ack          ESTABLISHED
ESTABLISHED           close            FIN_WAIT_1
ESTABLISHED           rcv_fin          CLOSE_WAIT
FIN_WAIT_1            fin_acked        FIN_WAIT_2
FIN_WAIT_1            rcv_fin          CLOSING
FIN_WAIT_2            rcv_fin          TIME_WAIT
CLOSE_WAIT            close            LAST_ACK
CLOSING               fin_acked        TIME_WAIT
LAST_ACK              fin_acked        CLOSED
TIME_WAIT             timeout          CLOSED
any                   rst / abort      CLOSED
====================  ===============  ==============

A close before the handshake completes waits for it. Events per connection, in order:
``ConnectionRequested`` (passive) → ``Connected`` → ``DataReceived``* / ``Writable``* →
``PeerClosed`` (the peer's FIN, at most once) → ``ConnectionClosed`` (both FINs sent
and acknowledged: entering TIME_WAIT or CLOSED). ``ConnectionReset`` (peer RST,
timeout, refused) can come at any point instead and is final. A connection the caller
ends with :meth:`TcpStack.refuse` or :meth:`TcpStack.abort` gets no further event.
"""

from __future__ import annotations

import enum
import heapq
import random
import struct
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final, NamedTuple

__all__ = [
    "ConnKey",
    "Connected",
    "ConnectionClosed",
    "ConnectionRequested",
    "ConnectionReset",
    "DataReceived",
    "PeerClosed",
    "State",
    "TcpConfig",
    "TcpError",
    "TcpEvent",
    "TcpStack",
    "Writable",
    "build_ipv6",
    "encode_segment",
    "split_ipv6",
]

PROTO_TCP: Final = 6
_M32: Final = 0xFFFF_FFFF
_HALF: Final = 1 << 31
_TCP = struct.Struct(">HHIIBBHHH")
_IP6 = struct.Struct(">IHBB16s16s")

FIN: Final = 0x01
SYN: Final = 0x02
RST: Final = 0x04
PSH: Final = 0x08
ACK: Final = 0x10


class TcpError(Exception):
    """A call the connection's state does not allow (unknown key, send after close...)."""


@dataclass(frozen=True, slots=True)
class TcpConfig:
    """Tunables. Defaults fit the tailnet (MTU 1280) and a Python I/O layer."""

    mss: int = 1220
    recv_buffer: int = 256 * 1024
    send_buffer: int = 256 * 1024
    rto_initial: float = 1.0
    rto_min: float = 0.2
    rto_max: float = 60.0
    max_retries: int = 15
    syn_retries: int = 5
    initial_cwnd_segments: int = 10
    time_wait: float = 30.0
    max_time_wait: int = 4096
    max_pending: int = 1024
    decision_timeout: float = 30.0
    keepalive_interval: float = 75.0
    keepalive_count: int = 9
    hop_limit: int = 64


class ConnKey(NamedTuple):
    local_addr: bytes
    local_port: int
    remote_addr: bytes
    remote_port: int


class State(enum.Enum):
    REQUESTED = "REQUESTED"
    SYN_SENT = "SYN-SENT"
    SYN_RECEIVED = "SYN-RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN-WAIT-1"
    FIN_WAIT_2 = "FIN-WAIT-2"
    CLOSE_WAIT = "CLOSE-WAIT"
    CLOSING = "CLOSING"
    LAST_ACK = "LAST-ACK"
    TIME_WAIT = "TIME-WAIT"
    CLOSED = "CLOSED"


_S = State
_TRANSITIONS: Final[dict[State, dict[str, State]]] = {
    _S.REQUESTED: {"accept": _S.SYN_RECEIVED},
    _S.SYN_SENT: {"rcv_syn_ack": _S.ESTABLISHED},
    _S.SYN_RECEIVED: {"rcv_ack": _S.ESTABLISHED},
    _S.ESTABLISHED: {"close": _S.FIN_WAIT_1, "rcv_fin": _S.CLOSE_WAIT},
    _S.FIN_WAIT_1: {"fin_acked": _S.FIN_WAIT_2, "rcv_fin": _S.CLOSING},
    _S.FIN_WAIT_2: {"rcv_fin": _S.TIME_WAIT},
    _S.CLOSE_WAIT: {"close": _S.LAST_ACK},
    _S.CLOSING: {"fin_acked": _S.TIME_WAIT},
    _S.LAST_ACK: {"fin_acked": _S.CLOSED},
    _S.TIME_WAIT: {"timeout": _S.CLOSED},
    _S.CLOSED: {},
}
_SENDING: Final = frozenset({_S.ESTABLISHED, _S.CLOSE_WAIT, _S.FIN_WAIT_1, _S.CLOSING, _S.LAST_ACK})
_RECEIVING: Final = frozenset({_S.ESTABLISHED, _S.FIN_WAIT_1, _S.FIN_WAIT_2})
_KEEPALIVE: Final = frozenset({_S.ESTABLISHED, _S.CLOSE_WAIT, _S.FIN_WAIT_2})


# --------------------------------------------------------------------------------------
# Events


@dataclass(frozen=True, slots=True)
class ConnectionRequested:
    """A SYN: call :meth:`TcpStack.accept` or :meth:`TcpStack.refuse`."""

    key: ConnKey


@dataclass(frozen=True, slots=True)
class Connected:
    """The three-way handshake completed."""

    key: ConnKey


@dataclass(frozen=True, slots=True)
class DataReceived:
    """In-order bytes; they hold window until :meth:`TcpStack.consume` releases them."""

    key: ConnKey
    data: bytes


@dataclass(frozen=True, slots=True)
class PeerClosed:
    """The peer's FIN: it sends no more (our direction stays open)."""

    key: ConnKey


@dataclass(frozen=True, slots=True)
class Writable:
    """The send buffer that refused bytes is at least half free again."""

    key: ConnKey


@dataclass(frozen=True, slots=True)
class ConnectionReset:
    """Final: ``reason`` is "reset by peer", "refused", "timeout" or "keepalive timeout"."""

    key: ConnKey
    reason: str


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """Final: both directions closed and acknowledged."""

    key: ConnKey


TcpEvent = ConnectionRequested | Connected | DataReceived | PeerClosed | Writable | ConnectionReset | ConnectionClosed


# --------------------------------------------------------------------------------------
# Wire


def _ipv6_checksum(src: bytes, dst: bytes, next_header: int, data: bytes) -> int:
    """Internet checksum of ``data`` under the IPv6 pseudo-header (RFC 8200 §8.1).

    With ``data``'s checksum field zeroed this is the value to put there; over data
    that carries a correct checksum it is 0. A big integer modulo 0xFFFF equals the
    ones'-complement sum of its 16-bit words (65536 ≡ 1), which keeps the loop in C.
    """
    n = len(data)
    acc = int.from_bytes(src + dst + n.to_bytes(4, "big") + next_header.to_bytes(4, "big"), "big")
    body = int.from_bytes(data, "big")
    if n & 1:
        body <<= 8
    s = (acc + body) % 0xFFFF
    return 0 if s == 0 and (acc or body) else 0xFFFF - s


def split_ipv6(packet: bytes) -> tuple[bytes, bytes, int, bytes] | None:
    """(src, dst, next header, payload) of an IPv6 packet, or None if it is not one."""
    if len(packet) < 40 or packet[0] >> 4 != 6:
        return None
    _, plen, nh, _, src, dst = _IP6.unpack_from(packet)
    if 40 + plen > len(packet):
        return None
    return src, dst, nh, packet[40 : 40 + plen]


def build_ipv6(src: bytes, dst: bytes, next_header: int, payload: bytes, hop_limit: int = 64) -> bytes:
    return _IP6.pack(0x6000_0000, len(payload), next_header, hop_limit, src, dst) + payload


def encode_segment(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int,
                   window: int, options: bytes = b"", payload: bytes = b"") -> bytes:
    """TCP bytes (header, options, payload) with the checksum filled in."""
    head = _TCP.pack(sport, dport, seq & _M32, ack & _M32, (20 + len(options)) << 2, flags, window, 0, 0) + options
    csum = _ipv6_checksum(src, dst, PROTO_TCP, head + payload)
    return head[:16] + csum.to_bytes(2, "big") + head[18:] + payload


def _parse_options(opts: bytes) -> tuple[int | None, int | None]:
    """(MSS, window-scale shift) from a SYN's options; malformed options end the scan."""
    mss: int | None = None
    ws: int | None = None
    i = 0
    while i < len(opts):
        kind = opts[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= len(opts) or opts[i + 1] < 2:
            break
        ln = opts[i + 1]
        if kind == 2 and ln == 4 and i + 4 <= len(opts):
            mss = int.from_bytes(opts[i + 2 : i + 4], "big")
        elif kind == 3 and ln == 3 and i + 3 <= len(opts):
            ws = min(opts[i + 2], 14)
        i += ln
    return mss, ws


def _unwrap(wire: int, ref: int) -> int:
    """The unbounded sequence number nearest ``ref`` whose low 32 bits are ``wire``."""
    d = (wire - ref) & _M32
    if d >= _HALF:
        d -= 1 << 32
    return ref + d


# --------------------------------------------------------------------------------------
# Connection record


class _Conn:
    __slots__ = (
        "ack_sent", "backoff", "blocked", "ca_acc", "cwnd", "dupacks", "fin_at", "fin_queued", "in_recovery", "irs",
        "iss", "ka_at", "ka_idle", "ka_probes", "key", "last_rx", "max_snd_wnd", "mss", "ooo", "ooo_bytes", "peer_fin",
        "persist", "rcv_adv", "rcv_nxt", "rcv_ws", "recover", "req_at", "retries", "rto", "rtt_seq", "rtt_time",
        "rttvar", "rtx_at", "snd_buf_seq", "snd_max", "snd_nxt", "snd_una", "snd_wl1", "snd_wl2", "snd_wnd",
        "snd_ws", "sndbuf", "srtt", "ssthresh", "state", "timer_at", "tw_at", "unconsumed", "ws_ok",
    )

    def __init__(self, key: ConnKey, state: State, iss: int, cfg: TcpConfig) -> None:
        self.key = key
        self.state = state
        self.iss = iss
        self.snd_una = self.snd_nxt = self.snd_max = iss
        self.snd_buf_seq = iss + 1
        self.sndbuf = bytearray()
        self.fin_queued = False
        self.blocked = False
        self.snd_wnd = 0
        self.max_snd_wnd = 0
        self.snd_wl1 = 0
        self.snd_wl2 = 0
        self.snd_ws = 0
        self.rcv_ws = 0
        self.ws_ok = False
        self.mss = cfg.mss
        self.irs = 0
        self.rcv_nxt = 0
        self.rcv_adv = 0
        self.ack_sent = 0
        self.unconsumed = 0
        self.ooo: dict[int, bytes] = {}
        self.ooo_bytes = 0
        self.fin_at: int | None = None
        self.peer_fin = False
        self.cwnd = cfg.initial_cwnd_segments * cfg.mss
        self.ssthresh = 1 << 30
        self.ca_acc = 0
        self.dupacks = 0
        self.in_recovery = False
        self.recover = iss
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.rto = cfg.rto_initial
        self.backoff = 0
        self.rtt_seq: int | None = None
        self.rtt_time = 0.0
        self.rtx_at: float | None = None
        self.retries = 0
        self.persist = False
        self.tw_at: float | None = None
        self.ka_idle: float | None = None
        self.ka_at: float | None = None
        self.ka_probes = 0
        self.last_rx = 0.0
        self.req_at: float | None = None
        self.timer_at: float | None = None


def _shift_for(buf: int) -> int:
    s = 0
    while (buf >> s) > 0xFFFF and s < 14:
        s += 1
    return s


# --------------------------------------------------------------------------------------
# The stack


class TcpStack:
    """Every TCP connection of one tunnel. Not thread-safe; call from one event loop."""

    def __init__(self, config: TcpConfig | None = None, *, rng: random.Random | None = None) -> None:
        self.config = config or TcpConfig()
        self._rng = rng or random.SystemRandom()
        self._conns: dict[ConnKey, _Conn] = {}
        self._out: list[bytes] = []
        self._ack_pending: dict[ConnKey, _Conn] = {}
        self._timers: list[tuple[float, int, ConnKey]] = []
        self._timer_seq = 0
        self._pending = 0
        self._time_wait: OrderedDict[ConnKey, None] = OrderedDict()
        self._rcv_shift = _shift_for(self.config.recv_buffer)

    # ---- queries -------------------------------------------------------------------

    def state(self, key: ConnKey) -> State:
        """The connection's state; ``CLOSED`` once forgotten."""
        conn = self._conns.get(key)
        return conn.state if conn else State.CLOSED

    def __len__(self) -> int:
        return len(self._conns)

    def __contains__(self, key: object) -> bool:
        return key in self._conns

    def keys(self) -> list[ConnKey]:
        return list(self._conns)

    def send_space(self, key: ConnKey) -> int:
        conn = self._get(key)
        return max(0, self.config.send_buffer - len(conn.sndbuf))

    def buffered(self, key: ConnKey) -> tuple[int, int]:
        """(bytes in the send buffer, received bytes not yet consumed): what the connection holds."""
        conn = self._get(key)
        return len(conn.sndbuf), conn.unconsumed + conn.ooo_bytes

    # ---- I/O -----------------------------------------------------------------------

    def packets_to_send(self) -> list[bytes]:
        """IPv6 packets to write out, oldest first (pending ACKs are generated here)."""
        if self._ack_pending:
            pending = list(self._ack_pending.values())
            self._ack_pending.clear()
            for conn in pending:
                if self._conns.get(conn.key) is conn:
                    self._send_ctl(conn, ACK, conn.snd_max)
        out, self._out = self._out, []
        return out

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timers` must run next, or None if no timer is armed."""
        heap = self._timers
        while heap:
            at, _, key = heap[0]
            conn = self._conns.get(key)
            if conn is not None and conn.timer_at == at:
                return at
            heapq.heappop(heap)
        return None

    def handle_timers(self, now: float) -> list[TcpEvent]:
        events: list[TcpEvent] = []
        heap = self._timers
        while heap and heap[0][0] <= now:
            at, _, key = heapq.heappop(heap)
            conn = self._conns.get(key)
            if conn is None or conn.timer_at != at:
                continue
            conn.timer_at = None
            self._on_timer(conn, now, events)
            if self._conns.get(key) is conn:
                self._rearm(conn)
        return events

    def receive_packet(self, packet: bytes, now: float) -> list[TcpEvent]:
        """One IPv6 packet; anything but TCP without extension headers is ignored."""
        parts = split_ipv6(packet)
        if parts is None or parts[2] != PROTO_TCP:
            return []
        return self.receive_segment(parts[0], parts[1], parts[3], now)

    def receive_segment(self, src: bytes, dst: bytes, tcp: bytes, now: float) -> list[TcpEvent]:
        """One TCP segment from ``src`` to ``dst`` (16-byte addresses); bad checksums are dropped."""
        if len(tcp) < 20 or _ipv6_checksum(src, dst, PROTO_TCP, tcp) != 0:
            return []
        sport, dport, seq, ack, off, flags, win, _, _ = _TCP.unpack_from(tcp)
        hl = (off >> 4) * 4
        if hl < 20 or hl > len(tcp) or sport == 0 or dport == 0:
            return []
        events: list[TcpEvent] = []
        key = ConnKey(dst, dport, src, sport)
        conn = self._conns.get(key)
        if (conn is not None and conn.state is _S.TIME_WAIT and flags & SYN and not flags & (ACK | RST)
                and _unwrap(seq, conn.rcv_nxt) > conn.rcv_nxt):
            self._forget(conn)  # a new incarnation of the 4-tuple (RFC 9293 §3.10.7.4 note)
            conn = None
        if conn is None:
            self._no_conn(key, seq, ack, flags, tcp[20:hl], len(tcp) - hl, now, events)
        else:
            conn.last_rx = now
            conn.ka_probes = 0
            self._segment(conn, seq, ack, flags, win, tcp[20:hl], tcp[hl:], now, events)
            if self._conns.get(key) is conn:
                self._rearm(conn)
        return events

    # ---- application calls -----------------------------------------------------------

    def accept(self, key: ConnKey, now: float, *, keepalive_idle: float | None = None) -> None:
        """Complete a requested connection: the SYN-ACK goes out."""
        conn = self._get(key)
        if conn.state is not _S.REQUESTED:
            raise TcpError(f"accept in {conn.state.value}")
        self._pending -= 1
        conn.req_at = None
        conn.ka_idle = keepalive_idle
        self._move(conn, "accept")
        conn.rcv_adv = conn.rcv_nxt + self._window_field(conn, syn=True)
        self._send_syn(conn, now)
        self._rearm(conn)

    def refuse(self, key: ConnKey) -> None:
        """Answer a requested connection with RST (closed port) and forget it."""
        conn = self._get(key)
        if conn.state is not _S.REQUESTED:
            raise TcpError(f"refuse in {conn.state.value}")
        self._emit_rst(key, 0, conn.rcv_nxt, with_ack=True)
        self._forget(conn)

    def connect(self, local_addr: bytes, local_port: int, remote_addr: bytes, remote_port: int, now: float, *,
                keepalive_idle: float | None = None) -> ConnKey:
        """Active open: the SYN goes out; :class:`Connected` or :class:`ConnectionReset` follows."""
        key = ConnKey(local_addr, local_port, remote_addr, remote_port)
        if key in self._conns:
            raise TcpError("4-tuple in use")
        conn = _Conn(key, _S.SYN_SENT, self._rng.getrandbits(32), self.config)
        conn.ka_idle = keepalive_idle
        conn.rcv_ws = self._rcv_shift
        self._conns[key] = conn
        self._send_syn(conn, now)
        self._rearm(conn)
        return key

    def send(self, key: ConnKey, data: bytes, now: float) -> int:
        """Queue as much of ``data`` as fits; return how much. Less than all → :class:`Writable` later."""
        conn = self._get(key)
        if conn.fin_queued or conn.state not in (_S.SYN_SENT, _S.SYN_RECEIVED, _S.ESTABLISHED, _S.CLOSE_WAIT):
            raise TcpError(f"send in {conn.state.value}{' after close' if conn.fin_queued else ''}")
        n = min(len(data), self.config.send_buffer - len(conn.sndbuf))
        if n < len(data):
            conn.blocked = True
        if n > 0:
            conn.sndbuf += data[:n] if n < len(data) else data
            if conn.state in _SENDING:
                self._output(conn, now)
                self._rearm(conn)
        return n

    def consume(self, key: ConnKey, n: int, now: float) -> None:
        """The application is done with ``n`` received bytes: their window reopens."""
        conn = self._conns.get(key)
        if conn is None:
            return
        conn.unconsumed = max(0, conn.unconsumed - n)
        if conn.state not in _RECEIVING:
            return
        buf = self.config.recv_buffer
        old = conn.rcv_adv - conn.rcv_nxt
        new = min(buf - conn.unconsumed, 0xFFFF << conn.rcv_ws)
        if new - old >= min(conn.mss, buf // 2) and new >= 2 * old:
            self._ack_pending[key] = conn

    def close(self, key: ConnKey, now: float) -> None:
        """Half close: a FIN after the queued bytes. Receiving continues until :class:`PeerClosed`."""
        conn = self._get(key)
        if conn.fin_queued:
            return
        if conn.state is _S.REQUESTED:
            raise TcpError("close of a requested connection: refuse it")
        if conn.state not in (_S.SYN_SENT, _S.SYN_RECEIVED, _S.ESTABLISHED, _S.CLOSE_WAIT):
            raise TcpError(f"close in {conn.state.value}")
        conn.fin_queued = True
        if conn.state in (_S.ESTABLISHED, _S.CLOSE_WAIT):
            self._move(conn, "close")
            self._output(conn, now)
            self._rearm(conn)

    def abort(self, key: ConnKey) -> None:
        """RST the connection and forget it (no event follows)."""
        conn = self._conns.get(key)
        if conn is None:
            return
        if conn.state is _S.REQUESTED:
            self.refuse(key)
            return
        if conn.state not in (_S.TIME_WAIT, _S.SYN_SENT):
            self._emit_rst(key, conn.snd_max, 0, with_ack=False)
        self._forget(conn)

    # ---- internals: bookkeeping ------------------------------------------------------

    def _get(self, key: ConnKey) -> _Conn:
        conn = self._conns.get(key)
        if conn is None:
            raise TcpError("no such connection")
        return conn

    def _move(self, conn: _Conn, event: str) -> None:
        nxt = _TRANSITIONS[conn.state].get(event)
        if nxt is None:
            raise AssertionError(f"tcp: no transition from {conn.state.value} on {event}")
        conn.state = nxt

    def _forget(self, conn: _Conn) -> None:
        if self._conns.get(conn.key) is conn:
            del self._conns[conn.key]
        if conn.state is _S.REQUESTED:
            self._pending -= 1
        self._time_wait.pop(conn.key, None)
        self._ack_pending.pop(conn.key, None)
        conn.state = _S.CLOSED
        conn.timer_at = None

    def _rearm(self, conn: _Conn) -> None:
        at: float | None = None
        for t in (conn.rtx_at, conn.tw_at, conn.ka_at, conn.req_at):
            if t is not None and (at is None or t < at):
                at = t
        if at != conn.timer_at:
            conn.timer_at = at
            if at is not None:
                self._timer_seq += 1
                heapq.heappush(self._timers, (at, self._timer_seq, conn.key))

    def _rto_now(self, conn: _Conn) -> float:
        return min(conn.rto * (1 << min(conn.backoff, 30)), self.config.rto_max)

    def _reset(self, conn: _Conn, reason: str, events: list[TcpEvent], *, send_rst: bool) -> None:
        if send_rst:
            self._emit_rst(conn.key, conn.snd_max, 0, with_ack=False)
        self._forget(conn)
        events.append(ConnectionReset(conn.key, reason))

    def _enter_time_wait(self, conn: _Conn, now: float) -> None:
        conn.tw_at = now + self.config.time_wait
        conn.rtx_at = None
        conn.ka_at = None
        self._time_wait[conn.key] = None
        while len(self._time_wait) > self.config.max_time_wait:
            old, _ = self._time_wait.popitem(last=False)
            victim = self._conns.get(old)
            if victim is not None:
                self._forget(victim)

    def _established(self, conn: _Conn, now: float, events: list[TcpEvent]) -> None:
        """Active open completed (the passive side does the same inline, in its own order)."""
        events.append(Connected(conn.key))
        if conn.ka_idle is not None:
            conn.ka_at = now + conn.ka_idle
        if conn.fin_queued:
            self._move(conn, "close")
        self._output(conn, now)

    # ---- internals: output ------------------------------------------------------------

    def _window_field(self, conn: _Conn, *, syn: bool = False) -> int:
        free = max(0, self.config.recv_buffer - conn.unconsumed)
        if syn:
            return min(free, 0xFFFF)
        w = min(free >> conn.rcv_ws, 0xFFFF)
        edge = conn.rcv_nxt + (w << conn.rcv_ws)
        if edge > conn.rcv_adv:
            conn.rcv_adv = edge
        return w

    def _packet(self, key: ConnKey, seq: int, ack: int, flags: int, window: int, options: bytes = b"",
                payload: bytes = b"", conn: _Conn | None = None) -> None:
        if conn is not None:
            conn.ack_sent = ack
        seg = encode_segment(key.local_addr, key.remote_addr, key.local_port, key.remote_port, seq, ack, flags,
                             window, options, payload)
        self._out.append(build_ipv6(key.local_addr, key.remote_addr, PROTO_TCP, seg, self.config.hop_limit))

    def _emit_rst(self, key: ConnKey, seq: int, ack: int, *, with_ack: bool) -> None:
        self._packet(key, seq, ack if with_ack else 0, RST | (ACK if with_ack else 0), 0)

    def _send_ctl(self, conn: _Conn, flags: int, seq: int) -> None:
        self._ack_pending.pop(conn.key, None)
        self._packet(conn.key, seq, conn.rcv_nxt, flags, self._window_field(conn), conn=conn)

    def _ack_now(self, conn: _Conn) -> None:
        # SND.MAX, not SND.NXT: after an RTO rewinds SND.NXT, an ACK numbered below what the peer
        # already has would be unacceptable there, and two stacks would trade ACKs forever.
        self._send_ctl(conn, ACK, conn.snd_max)

    def _send_syn(self, conn: _Conn, now: float) -> None:
        opts = struct.pack(">BBH", 2, 4, self.config.mss)
        passive = conn.state is _S.SYN_RECEIVED
        if not passive or conn.ws_ok:
            opts += bytes((1, 3, 3, conn.rcv_ws))
        flags = SYN | (ACK if passive else 0)
        self._packet(conn.key, conn.iss, conn.rcv_nxt if passive else 0, flags, self._window_field(conn, syn=True),
                     opts, conn=conn)
        conn.snd_nxt = conn.snd_max = conn.iss + 1
        if conn.retries == 0:
            conn.rtt_seq = conn.iss + 1
            conn.rtt_time = now
        conn.rtx_at = now + self._rto_now(conn)

    def _emit_data(self, conn: _Conn, seq: int, n: int) -> int:
        """Send ``n`` bytes from ``seq`` (plus FIN when they end the queued stream); return seq space used."""
        data_end = conn.snd_buf_seq + len(conn.sndbuf)
        off = seq - conn.snd_buf_seq
        payload = bytes(conn.sndbuf[off : off + n]) if n else b""
        flags = ACK
        used = n
        if seq + n == data_end:
            if n:
                flags |= PSH
            if conn.fin_queued:
                flags |= FIN
                used += 1
        self._ack_pending.pop(conn.key, None)
        self._packet(conn.key, seq, conn.rcv_nxt, flags, self._window_field(conn), b"", payload, conn)
        if seq + used > conn.snd_max:
            # a retransmission that reaches the end of the stream may carry a FIN never sent before:
            # SND.MAX must cover it, or the peer's ACK of it would look like an ACK of unsent data
            conn.snd_max = seq + used
        return used

    def _output(self, conn: _Conn, now: float) -> None:
        if conn.state not in _SENDING:
            return
        data_end = conn.snd_buf_seq + len(conn.sndbuf)
        end = data_end + (1 if conn.fin_queued else 0)
        limit = conn.snd_una + min(conn.snd_wnd, conn.cwnd)
        mss = conn.mss
        while conn.snd_nxt < end:
            nxt = conn.snd_nxt
            if nxt < data_end:
                left = data_end - nxt
                n = min(mss, left, limit - nxt)
                if n <= 0:
                    break
                if n < mss and n < left and conn.snd_max > conn.snd_una:
                    break  # sender-side silly window avoidance: wait for ACKs to free a full segment
            else:
                n = 0
            retransmit = nxt < conn.snd_max
            used = self._emit_data(conn, nxt, n)
            if retransmit:
                if conn.rtt_seq is not None and conn.rtt_seq > nxt:
                    conn.rtt_seq = None  # Karn
            elif conn.rtt_seq is None:
                conn.rtt_seq = nxt + used
                conn.rtt_time = now
            conn.snd_nxt = nxt + used
            if conn.snd_nxt > conn.snd_max:
                conn.snd_max = conn.snd_nxt
            if conn.rtx_at is None or conn.persist:
                conn.persist = False
                conn.rtx_at = now + self._rto_now(conn)
        if conn.snd_nxt < end and conn.snd_una == conn.snd_max and conn.rtx_at is None:
            conn.persist = True  # nothing in flight, window closed: probe until it opens
            conn.rtx_at = now + self._rto_now(conn)

    # ---- internals: timers ------------------------------------------------------------

    def _on_timer(self, conn: _Conn, now: float, events: list[TcpEvent]) -> None:
        cfg = self.config
        if conn.req_at is not None and now >= conn.req_at:
            self._emit_rst(conn.key, 0, conn.rcv_nxt, with_ack=True)
            self._reset(conn, "timeout", events, send_rst=False)
            return
        if conn.tw_at is not None and now >= conn.tw_at:
            self._forget(conn)
            return
        if conn.rtx_at is not None and now >= conn.rtx_at:
            conn.rtx_at = None
            self._retransmit_timeout(conn, now, events)
            if self._conns.get(conn.key) is not conn:
                return
        if conn.ka_at is not None and now >= conn.ka_at and conn.ka_idle is not None:
            if conn.state not in _KEEPALIVE:
                conn.ka_at = None
            elif conn.ka_probes == 0 and now < conn.last_rx + conn.ka_idle:
                conn.ka_at = conn.last_rx + conn.ka_idle
            elif conn.snd_max > conn.snd_una:
                conn.ka_at = now + cfg.keepalive_interval  # data in flight: the RTO watches the peer
            elif conn.ka_probes >= cfg.keepalive_count:
                self._reset(conn, "keepalive timeout", events, send_rst=True)
            else:
                self._send_ctl(conn, ACK, conn.snd_una - 1)
                conn.ka_probes += 1
                conn.ka_at = now + cfg.keepalive_interval

    def _retransmit_timeout(self, conn: _Conn, now: float, events: list[TcpEvent]) -> None:
        cfg = self.config
        handshake = conn.state in (_S.SYN_SENT, _S.SYN_RECEIVED)
        if conn.persist:
            if conn.retries >= cfg.max_retries:
                self._reset(conn, "timeout", events, send_rst=True)
                return
            conn.retries += 1
            conn.backoff += 1
            self._send_ctl(conn, ACK, conn.snd_una - 1)
            conn.rtx_at = now + self._rto_now(conn)
            return
        if conn.snd_una >= conn.snd_max:
            return
        conn.retries += 1
        if conn.retries > (cfg.syn_retries if handshake else cfg.max_retries):
            self._reset(conn, "timeout", events, send_rst=conn.state is not _S.SYN_SENT)
            return
        conn.backoff += 1
        conn.rtt_seq = None
        if handshake:
            self._send_syn(conn, now)
            return
        mss = conn.mss
        conn.ssthresh = max((conn.snd_max - conn.snd_una) // 2, 2 * mss)
        conn.cwnd = mss
        conn.ca_acc = 0
        conn.in_recovery = False
        conn.recover = conn.snd_max
        conn.dupacks = 0
        data_end = conn.snd_buf_seq + len(conn.sndbuf)
        n = max(0, min(mss, data_end - conn.snd_una))
        conn.snd_nxt = conn.snd_una + self._emit_data(conn, conn.snd_una, n)
        conn.rtx_at = now + self._rto_now(conn)

    # ---- internals: input -------------------------------------------------------------

    def _no_conn(self, key: ConnKey, seq: int, ack: int, flags: int, opts: bytes, plen: int, now: float,
                 events: list[TcpEvent]) -> None:
        if flags & RST:
            return
        if flags & ACK:
            self._emit_rst(key, ack, 0, with_ack=False)
            return
        if not flags & SYN:
            self._emit_rst(key, 0, seq + plen + (1 if flags & FIN else 0), with_ack=True)
            return
        if self._pending >= self.config.max_pending:
            return  # backlog full: the peer retransmits its SYN
        conn = _Conn(key, _S.REQUESTED, self._rng.getrandbits(32), self.config)
        conn.irs = seq
        conn.rcv_nxt = seq + 1
        mss, ws = _parse_options(opts)
        conn.mss = max(64, min(self.config.mss, mss if mss is not None else 1220))
        if ws is not None:
            conn.ws_ok = True
            conn.snd_ws = ws
            conn.rcv_ws = self._rcv_shift
        conn.req_at = now + self.config.decision_timeout
        self._conns[key] = conn
        self._pending += 1
        self._rearm(conn)
        events.append(ConnectionRequested(key))

    def _segment(self, conn: _Conn, seq_w: int, ack_w: int, flags: int, win: int, opts: bytes, payload: bytes,
                 now: float, events: list[TcpEvent]) -> None:
        st = conn.state
        if st is _S.REQUESTED:
            if flags & RST and seq_w == (conn.irs + 1) & _M32:
                self._reset(conn, "reset by peer", events, send_rst=False)
            return  # a duplicate SYN or anything else waits for the caller's decision
        if st is _S.SYN_SENT:
            self._syn_sent(conn, seq_w, ack_w, flags, win, opts, now, events)
            return
        s = _unwrap(seq_w, conn.rcv_nxt)
        if flags & SYN and st is _S.SYN_RECEIVED and s == conn.rcv_nxt - 1 and not flags & ACK:
            conn.rtx_at = None
            self._send_syn(conn, now)  # our SYN-ACK was lost: say it again
            conn.rtt_seq = None  # Karn: the ACK may answer either copy
            return
        seglen = len(payload) + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
        wnd = max(0, conn.rcv_adv - conn.rcv_nxt)
        if s + seglen < conn.rcv_nxt or s > conn.rcv_nxt + wnd:
            if not flags & RST:
                self._ack_now(conn)
            return
        if flags & RST:
            if s == conn.rcv_nxt:
                if st is _S.TIME_WAIT:
                    self._forget(conn)
                else:
                    self._reset(conn, "reset by peer", events, send_rst=False)
            else:
                self._ack_now(conn)  # challenge ACK (RFC 5961 §3)
            return
        if flags & SYN:
            self._ack_now(conn)  # challenge ACK (RFC 5961 §4)
            return
        if not flags & ACK:
            return
        a = _unwrap(ack_w, conn.snd_una)
        if st is _S.SYN_RECEIVED:
            if not conn.snd_una < a <= conn.snd_max:
                self._emit_rst(conn.key, a, 0, with_ack=False)
                return
            self._move(conn, "rcv_ack")
            events.append(Connected(conn.key))
            if conn.ka_idle is not None:
                conn.ka_at = now + conn.ka_idle
            conn.snd_wnd = win << conn.snd_ws
            conn.max_snd_wnd = conn.snd_wnd
            conn.snd_wl1 = s
            conn.snd_wl2 = a
            if conn.rtt_seq is not None:
                self._rtt_sample(conn, now - conn.rtt_time)
                conn.rtt_seq = None
            conn.snd_una = a
            conn.retries = 0
            conn.rtx_at = None
            if conn.fin_queued:
                self._move(conn, "close")
        else:
            if a > conn.snd_max:
                self._ack_now(conn)
                return
            if a >= conn.snd_una - max(conn.max_snd_wnd, 1 << 16):
                self._ack(conn, a, s, win, seglen, now, events)
                if self._conns.get(conn.key) is not conn:
                    return
            if conn.persist:
                conn.retries = 0  # the peer answers the probes: keep probing (RFC 9293 §3.8.6.1)
        self._receive_data(conn, s, flags, payload, now, events)
        self._output(conn, now)

    def _syn_sent(self, conn: _Conn, seq_w: int, ack_w: int, flags: int, win: int, opts: bytes, now: float,
                  events: list[TcpEvent]) -> None:
        a = 0
        if flags & ACK:
            a = _unwrap(ack_w, conn.snd_una)
            if a <= conn.iss or a > conn.snd_max:
                if not flags & RST:
                    self._emit_rst(conn.key, a, 0, with_ack=False)
                return
        if flags & RST:
            if flags & ACK:
                self._reset(conn, "refused", events, send_rst=False)
            return
        if not flags & SYN or not flags & ACK:
            return  # simultaneous open is not supported
        conn.irs = seq_w
        conn.rcv_nxt = seq_w + 1
        mss, ws = _parse_options(opts)
        conn.mss = max(64, min(self.config.mss, mss if mss is not None else 1220))
        if ws is None:
            conn.rcv_ws = 0
        else:
            conn.ws_ok = True
            conn.snd_ws = ws
        conn.rtx_at = None
        conn.retries = 0
        self._move(conn, "rcv_syn_ack")
        conn.snd_una = a
        if conn.rtt_seq is not None and a >= conn.rtt_seq:
            self._rtt_sample(conn, now - conn.rtt_time)
        conn.rtt_seq = None
        conn.snd_wnd = win  # never scaled in a SYN
        conn.max_snd_wnd = win
        conn.snd_wl1 = conn.rcv_nxt
        conn.snd_wl2 = a
        conn.rcv_adv = conn.rcv_nxt + self._window_field(conn)
        self._ack_now(conn)
        self._established(conn, now, events)

    def _rtt_sample(self, conn: _Conn, r: float) -> None:
        if conn.srtt is None:
            conn.srtt = r
            conn.rttvar = r / 2
        else:
            conn.rttvar = 0.75 * conn.rttvar + 0.25 * abs(conn.srtt - r)
            conn.srtt = 0.875 * conn.srtt + 0.125 * r
        cfg = self.config
        conn.rto = min(max(conn.srtt + max(0.001, 4 * conn.rttvar), cfg.rto_min), cfg.rto_max)
        conn.backoff = 0

    def _ack(self, conn: _Conn, a: int, s: int, win: int, seglen: int, now: float,
             events: list[TcpEvent]) -> None:
        wnd = win << conn.snd_ws
        mss = conn.mss
        if a > conn.snd_una:
            acked = a - conn.snd_una
            if conn.rtt_seq is not None and a >= conn.rtt_seq:
                self._rtt_sample(conn, now - conn.rtt_time)
                conn.rtt_seq = None
            if a > conn.snd_buf_seq:
                n = min(a - conn.snd_buf_seq, len(conn.sndbuf))
                del conn.sndbuf[:n]
                conn.snd_buf_seq += n
            conn.snd_una = a
            if conn.snd_nxt < a:
                conn.snd_nxt = a
            conn.retries = 0
            if conn.in_recovery:
                if a >= conn.recover:
                    conn.in_recovery = False
                    conn.dupacks = 0
                    conn.cwnd = max(min(conn.ssthresh, conn.snd_max - conn.snd_una + mss), mss)
                else:  # partial ACK (RFC 6582): resend the next hole, deflate
                    data_end = conn.snd_buf_seq + len(conn.sndbuf)
                    self._emit_data(conn, a, max(0, min(mss, data_end - a, conn.snd_max - a)))
                    conn.cwnd = max(conn.cwnd - acked + mss, mss)
            else:
                conn.dupacks = 0
                if conn.cwnd < conn.ssthresh:
                    conn.cwnd += min(acked, mss)
                else:
                    conn.ca_acc += acked
                    if conn.ca_acc >= conn.cwnd:
                        conn.ca_acc -= conn.cwnd
                        conn.cwnd += mss
            conn.rtx_at = None if conn.snd_una >= conn.snd_max else now + self._rto_now(conn)
            conn.persist = False
            if conn.blocked and len(conn.sndbuf) <= self.config.send_buffer // 2:
                conn.blocked = False
                events.append(Writable(conn.key))
            if conn.fin_queued and conn.snd_una > conn.snd_buf_seq + len(conn.sndbuf):
                self._move(conn, "fin_acked")
                if conn.state is _S.CLOSED:
                    self._forget(conn)
                    events.append(ConnectionClosed(conn.key))
                    return
                if conn.state is _S.TIME_WAIT:
                    self._enter_time_wait(conn, now)
                    events.append(ConnectionClosed(conn.key))
        elif (a == conn.snd_una and conn.snd_max > conn.snd_una and seglen == 0 and wnd == conn.snd_wnd
              and not conn.persist):
            conn.dupacks += 1
            if conn.dupacks == 3 and not conn.in_recovery and a > conn.recover:
                conn.ssthresh = max((conn.snd_max - conn.snd_una) // 2, 2 * mss)
                conn.recover = conn.snd_max
                conn.in_recovery = True
                conn.rtt_seq = None
                data_end = conn.snd_buf_seq + len(conn.sndbuf)
                self._emit_data(conn, a, max(0, min(mss, data_end - a, conn.snd_max - a)))
                conn.cwnd = conn.ssthresh + 3 * mss
            elif conn.in_recovery and conn.dupacks > 3:
                conn.cwnd += mss
        if conn.snd_wl1 < s or (conn.snd_wl1 == s and conn.snd_wl2 <= a):
            conn.snd_wnd = wnd
            conn.snd_wl1 = s
            conn.snd_wl2 = a
            if wnd > conn.max_snd_wnd:
                conn.max_snd_wnd = wnd
            if conn.persist and wnd > 0:
                conn.persist = False
                conn.rtx_at = None

    def _receive_data(self, conn: _Conn, s: int, flags: int, payload: bytes, now: float,
                      events: list[TcpEvent]) -> None:
        if conn.state not in _RECEIVING or conn.peer_fin:
            if payload or flags & FIN:
                self._ack_now(conn)  # a retransmission after the peer's FIN: acknowledge again
                if conn.state is _S.TIME_WAIT:
                    conn.tw_at = now + self.config.time_wait
            return
        if flags & FIN and conn.fin_at is None:
            conn.fin_at = s + len(payload)
        if payload:
            if s < conn.rcv_nxt:
                payload = payload[conn.rcv_nxt - s :]
                s = conn.rcv_nxt
            limit = conn.rcv_adv if conn.fin_at is None else min(conn.rcv_adv, conn.fin_at)
            if s + len(payload) > limit:
                payload = payload[: max(0, limit - s)]
            if not payload:
                self._ack_now(conn)  # a duplicate or beyond the window
            elif s == conn.rcv_nxt:
                had_hole = bool(conn.ooo)
                self._deliver(conn, payload, events)
                if conn.ooo:
                    self._drain_ooo(conn, events)
                if had_hole or conn.rcv_nxt - conn.ack_sent >= self.config.recv_buffer // 4:
                    self._ack_now(conn)  # a filled hole, or a quarter window unacknowledged: say so now
                else:
                    self._ack_pending[conn.key] = conn
            else:
                old = conn.ooo.get(s)
                if (old is None or len(old) < len(payload)) and \
                        conn.ooo_bytes + len(payload) <= self.config.recv_buffer:
                    conn.ooo[s] = payload
                    conn.ooo_bytes += len(payload) - (len(old) if old else 0)
                self._ack_now(conn)  # duplicate ACK: the sender's fast retransmit counts these
        if conn.fin_at is not None:
            if conn.rcv_nxt == conn.fin_at:
                conn.rcv_nxt += 1
                conn.peer_fin = True
                conn.ooo.clear()
                conn.ooo_bytes = 0
                events.append(PeerClosed(conn.key))
                self._move(conn, "rcv_fin")
                self._ack_now(conn)
                if conn.state is _S.TIME_WAIT:
                    self._enter_time_wait(conn, now)
                    events.append(ConnectionClosed(conn.key))
            elif flags & FIN:
                self._ack_now(conn)

    def _deliver(self, conn: _Conn, data: bytes, events: list[TcpEvent]) -> None:
        conn.rcv_nxt += len(data)
        conn.unconsumed += len(data)
        events.append(DataReceived(conn.key, data))

    def _drain_ooo(self, conn: _Conn, events: list[TcpEvent]) -> None:
        for start in sorted(conn.ooo):
            data = conn.ooo.pop(start)
            conn.ooo_bytes -= len(data)
            end = start + len(data)
            if end <= conn.rcv_nxt:
                continue
            if start > conn.rcv_nxt:
                conn.ooo[start] = data
                conn.ooo_bytes += len(data)
                break
            self._deliver(conn, data[conn.rcv_nxt - start :], events)
