"""A sans-I/O WireGuard device: handshakes, sessions, timers and transport data for many peers.

Protocol: stock WireGuard (Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s, pre-shared key zero), as
wireguard-go speaks it (coder-tailnet.md §6). No sockets, no clock, no ``await``: the caller
passes ``now`` (monotonic seconds) into every call and moves the datagrams.

API::

    dev = Device(private_key, Timers(), wall_offset=time.time() - time.monotonic())
    dev.add_peer(public_key, ["fd7a:115c:a1e0:ab12::/64"], persistent_keepalive=None)
    r = dev.receive(src, datagram, now)   # a datagram from the network
    r = dev.send(ip_packet, now)          # a packet from our side, routed by destination
    r = dev.tick(now)                     # timers; call at next_deadline()
    r = dev.initiate(public_key, now)     # a handshake now (rate-limited like any other)
    dev.next_deadline()                   # the earliest timer, or None when idle
    dev.peers[public_key].stats           # last handshake (a ``now`` value), bytes, packets
    dev.remove_peer(public_key)

Each call returns a ``Result``: ``packets_in`` (decrypted IP packets that passed the allowed-IP
check), ``to_send`` (``(peer_key, datagram)`` pairs; a peer is addressed by its public key, as
DERP does), ``events`` (``HandshakeComplete``, ``HandshakeFailed``). Then call ``tick`` at
``next_deadline()`` again: it only changes when a call is made, so an idle device never wakes.

Rules:

* Randomness (ephemeral keys, session indices, cookie nonces, retransmit jitter) comes from
  ``entropy(n) -> n bytes`` (default ``os.urandom``), so a recorded exchange replays byte-exact.
* Peers are identified by their 32-byte public key. ``src`` in ``receive`` is where the datagram
  came from (the DERP source key, or any stable bytes naming a UDP address); it is only used
  for cookie replies (to whom, and the cookie's address binding).
* Messages: 1 initiation (148 bytes), 2 response (92), 3 cookie reply (64), 4 transport data
  (16-byte header: type, 3 zero bytes, LE receiver index, LE 64-bit counter; content zero-padded
  to a multiple of 16, never beyond ``mtu``; nonce = 4 zero bytes + LE counter). Anything else,
  or any message failing authentication, is dropped silently (counted in ``Device.dropped``).
* mac1 is checked on every handshake message; mac2 only when the device is under load (more
  than ``Timers.under_load_handshakes`` handshake messages within one second, or
  ``force_under_load``): then a handshake without a valid mac2 is answered with a cookie reply
  instead (XChaCha20-Poly1305 of MAC(secret, src) under HASH("cookie--" ‖ our public key), the
  secret renewed every ``cookie_refresh_time``). A received cookie is used for mac2 on our next
  handshake messages to that peer for ``cookie_refresh_time``.
* Initiations carry a TAI64N timestamp (wall time = ``now + wall_offset``, nanoseconds rounded
  down to 2**24 ns like wireguard-go, strictly increasing per device). Peers remember the last
  one per static key, so fix ``wall_offset`` once per node key (per process: keys are not
  persisted) and a wall-clock step cannot make our initiations look replayed. A responder rejects an
  initiation whose timestamp is not greater than the last one from that peer (replay) and one
  arriving less than ``handshake_initiation_rate`` after the previous one (flood).
* Sessions (wireguard-go's keypairs): ``current``, ``previous``, ``next``. A responder's new
  session waits in ``next`` until the initiator's first transport message confirms it; an
  initiator's session becomes ``current`` at once and a keepalive (or the queued packets)
  confirms it to the peer. Sending uses ``current`` only; receiving accepts any of the three.
* Replay: a sliding window per session over the 64-bit counter, ``REPLAY_WINDOW`` = 8128
  counters like wireguard-go's RFC 6479 ring (128 blocks of 64 bits, one kept free); the window
  moves only after a packet authenticated. Counters at or above ``REJECT_AFTER_MESSAGES`` are
  refused.
* Allowed IPs: a packet from a peer is delivered only if its source address routes back to that
  same peer (longest prefix match over all peers); a packet we send goes to the peer whose
  allowed IPs best match its destination, or is dropped if none does.
* Packets sent without a usable session are queued (up to ``queue_limit`` per peer, oldest
  dropped first) and a handshake starts; they leave when the session exists.
* Timers follow wireguard-go ``timers.go`` with the ``Timers`` values: handshake retransmit every
  ``rekey_timeout`` (+ up to ``rekey_timeout_jitter``) and give up after ``rekey_attempt_time``
  (1 + 19 tries at the defaults, as wireguard-go; queued packets dropped, ``HandshakeFailed``);
  an initiator rekeys when sending on a session
  older than ``rekey_after_time`` (or after ``REKEY_AFTER_MESSAGES``), and when receiving on one
  older than ``reject_after_time - keepalive_timeout - rekey_timeout``; no session is used after
  ``reject_after_time``; a keepalive answers received data when we had nothing to send for
  ``keepalive_timeout``; a new handshake starts when data we sent got no answer for
  ``keepalive_timeout + rekey_timeout``; all key material is erased ``3 * reject_after_time``
  after the last session was made; a persistent keepalive (per peer, optional) goes out after
  that many seconds without any packet either way.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import struct
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

# This module is imported only when the tailnet starts (keep it out of the daemon's import
# path otherwise); the per-packet code then needs these names at hand.
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

__all__ = [
    "REJECT_AFTER_MESSAGES",
    "REKEY_AFTER_MESSAGES",
    "REPLAY_WINDOW",
    "Device",
    "Event",
    "HandshakeComplete",
    "HandshakeFailed",
    "Peer",
    "PeerStats",
    "ReplayWindow",
    "Result",
    "Timers",
    "tai64n",
]

CONSTRUCTION = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
IDENTIFIER = b"WireGuard v1 zx2c4 Jason@zx2c4.com"
LABEL_MAC1 = b"mac1----"
LABEL_COOKIE = b"cookie--"

MSG_INITIATION = 1
MSG_RESPONSE = 2
MSG_COOKIE_REPLY = 3
MSG_TRANSPORT = 4
INITIATION_LEN = 148
RESPONSE_LEN = 92
COOKIE_REPLY_LEN = 64
TRANSPORT_HEADER_LEN = 16
MIN_TRANSPORT_LEN = TRANSPORT_HEADER_LEN + 16

REKEY_AFTER_MESSAGES = 1 << 60
REJECT_AFTER_MESSAGES = (1 << 64) - (1 << 13) - 1
REPLAY_WINDOW = 8128
_ZERO32 = bytes(32)
_ZERO16 = bytes(16)
_TAI64_BASE = 0x400000000000000A
_WHITEN = 0xFFFFFF


def _hash(*parts: bytes) -> bytes:
    h = hashlib.blake2s()
    for p in parts:
        h.update(p)
    return h.digest()


def _mac(key: bytes, data: bytes) -> bytes:
    return hashlib.blake2s(data, digest_size=16, key=key).digest()


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.blake2s).digest()


def _kdf(n: int, key: bytes, data: bytes) -> list[bytes]:
    t0 = _hmac(key, data)
    out = [_hmac(t0, b"\x01")]
    for i in range(2, n + 1):
        out.append(_hmac(t0, out[-1] + bytes([i])))
    return out


_CK0 = _hash(CONSTRUCTION)
_H0 = _hash(_CK0, IDENTIFIER)


def _dh(private: bytes, public: bytes) -> bytes:
    """X25519; ValueError for a low-order public key (all-zero shared secret)."""
    return X25519PrivateKey.from_private_bytes(private).exchange(X25519PublicKey.from_public_bytes(public))


def _keypair(private: bytes) -> tuple[bytes, bytes]:
    from .keys import public_from_private

    return private, public_from_private(private)


def _aead(key: bytes) -> ChaCha20Poly1305:
    return ChaCha20Poly1305(key)


def _nonce(counter: int) -> bytes:
    return b"\0\0\0\0" + counter.to_bytes(8, "little")


def _seal(key: bytes, plain: bytes, ad: bytes) -> bytes:
    return _aead(key).encrypt(_nonce(0), plain, ad)


def _open(key: bytes, sealed: bytes, ad: bytes) -> bytes | None:
    try:
        return _aead(key).decrypt(_nonce(0), sealed, ad)
    except InvalidTag:
        return None


def tai64n(wall: float) -> bytes:
    """The 12-byte TAI64N timestamp of a wall-clock time, nanoseconds whitened as wireguard-go."""
    secs = int(wall)
    nanos = int((wall - secs) * 1e9) & ~_WHITEN
    return struct.pack(">QI", _TAI64_BASE + secs, nanos)


@dataclass(frozen=True)
class Timers:
    """The protocol's timers in seconds (wireguard-go ``device/constants.go``); shorten them in
    tests, never in production. ``under_load_handshakes`` is handshake messages per second
    beyond which mac2 (cookies) is required."""

    rekey_after_time: float = 120.0
    reject_after_time: float = 180.0
    rekey_attempt_time: float = 90.0
    rekey_timeout: float = 5.0
    rekey_timeout_jitter: float = 0.334
    keepalive_timeout: float = 10.0
    cookie_refresh_time: float = 120.0
    handshake_initiation_rate: float = 0.02
    under_load_handshakes: int = 128

    @property
    def max_handshake_attempts(self) -> int:
        return int(self.rekey_attempt_time / self.rekey_timeout)


class ReplayWindow:
    """Sliding-window replay filter over 64-bit counters (bit 0 = the highest counter seen)."""

    __slots__ = ("_bits", "_mask", "_size", "top")

    def __init__(self, size: int = REPLAY_WINDOW) -> None:
        self._size = size
        self._mask = (1 << size) - 1
        self._bits = 0
        self.top = -1

    def check(self, counter: int) -> bool:
        """Whether ``counter`` would be accepted (no state change)."""
        if counter >= REJECT_AFTER_MESSAGES or counter < 0:
            return False
        if counter > self.top:
            return True
        diff = self.top - counter
        return diff < self._size and not (self._bits >> diff) & 1

    def accept(self, counter: int) -> bool:
        """Record ``counter`` (after it authenticated); False if it is a replay or too old."""
        if not self.check(counter):
            return False
        if counter > self.top:
            shift = counter - self.top
            self._bits = 1 if shift >= self._size else ((self._bits << shift) | 1) & self._mask
            self.top = counter
        else:
            self._bits |= 1 << (self.top - counter)
        return True


@dataclass(frozen=True)
class HandshakeComplete:
    peer: bytes
    initiator: bool


@dataclass(frozen=True)
class HandshakeFailed:
    """No answer after ``rekey_attempt_time``: queued packets were dropped."""

    peer: bytes


Event = HandshakeComplete | HandshakeFailed


@dataclass
class Result:
    packets_in: list[bytes] = field(default_factory=list)
    to_send: list[tuple[bytes, bytes]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


@dataclass
class PeerStats:
    last_handshake: float | None = None  # ``now`` of the last completed handshake
    handshakes: int = 0
    rx_bytes: int = 0  # authenticated datagrams, wire size
    tx_bytes: int = 0
    rx_packets: int = 0  # IP packets delivered / sent (keepalives not counted)
    tx_packets: int = 0


class _Session:
    __slots__ = ("created", "initiator", "local_index", "recv", "remote_index", "replay", "send", "send_counter")

    def __init__(self, send_key: bytes, recv_key: bytes, local_index: int, remote_index: int, created: float,
                 initiator: bool) -> None:
        self.send = _aead(send_key)
        self.recv = _aead(recv_key)
        self.send_counter = 0
        self.replay = ReplayWindow()
        self.local_index = local_index
        self.remote_index = remote_index
        self.created = created
        self.initiator = initiator


@dataclass
class _Handshake:
    hash: bytes
    chain_key: bytes
    ephemeral: bytes  # our ephemeral private key
    local_index: int


_Net = tuple[int, int, int]  # (ip version, network as int, prefix length)


def _nets(allowed_ips: Iterable[str | ipaddress.IPv4Network | ipaddress.IPv6Network]) -> tuple[_Net, ...]:
    out = []
    for a in allowed_ips:
        n = ipaddress.ip_network(a, strict=False)
        out.append((n.version, int(n.network_address), n.prefixlen))
    return tuple(out)


class Peer:
    """One peer's configuration, sessions, timers and stats (read ``stats``; the rest is the
    device's)."""

    def __init__(self, device: Device, public_key: bytes, allowed: tuple[_Net, ...], keepalive: float | None) -> None:
        self.public_key = public_key
        self.allowed = allowed
        self.persistent_keepalive = keepalive
        self.stats = PeerStats()
        self._mac1_key = _hash(LABEL_MAC1, public_key)
        self._cookie_key = _hash(LABEL_COOKIE, public_key)
        self._h_init = _hash(_H0, public_key)
        try:
            self._ss: bytes | None = _dh(device._private, public_key)
        except ValueError:
            self._ss = None  # a low-order key: never handshakes
        self.last_timestamp = bytes(12)
        self.last_initiation: float | None = None
        self.last_sent_handshake: float | None = None
        self.last_sent_mac1: bytes | None = None
        self.cookie: bytes | None = None
        self.cookie_time = 0.0
        self.handshake: _Handshake | None = None
        self.current: _Session | None = None
        self.previous: _Session | None = None
        self.next: _Session | None = None
        self.queue: deque[bytes] = deque()
        self.attempts = 0
        self.sent_last_minute_handshake = False
        self.need_another_keepalive = False
        # Deadlines (``now`` values) or None when the timer is not pending.
        self.t_retransmit: float | None = None
        self.t_send_keepalive: float | None = None
        self.t_new_handshake: float | None = None
        self.t_zero_keys: float | None = None
        self.t_persistent: float | None = None

    def __repr__(self) -> str:
        return "<Peer>"  # never the key

    def deadlines(self) -> list[float]:
        return [d for d in (self.t_retransmit, self.t_send_keepalive, self.t_new_handshake, self.t_zero_keys,
                            self.t_persistent) if d is not None]


class Device:
    """A WireGuard interface without I/O. See the module header for the rules."""

    def __init__(self, private_key: bytes, timers: Timers | None = None, *, wall_offset: float = 0.0,
                 mtu: int = 1280, queue_limit: int = 128, entropy: Callable[[int], bytes] = os.urandom) -> None:
        from .keys import public_from_private

        if len(private_key) != 32:
            raise ValueError("a WireGuard private key is 32 bytes")
        self._private = private_key
        self.public_key = public_from_private(private_key)
        self.timers = timers or Timers()
        self.wall_offset = wall_offset
        self.mtu = mtu
        self.queue_limit = queue_limit
        self._entropy = entropy
        self.peers: dict[bytes, Peer] = {}
        self.dropped = 0
        self.force_under_load = False
        self._routes: list[tuple[int, int, int, Peer]] = []
        self._route_cache: dict[bytes, Peer | None] = {}
        self._indices: dict[int, tuple[Peer, _Session | None]] = {}
        self._mac1_key = _hash(LABEL_MAC1, self.public_key)
        self._cookie_key = _hash(LABEL_COOKIE, self.public_key)
        self._h_self = _hash(_H0, self.public_key)
        self._cookie_secret = b""
        self._cookie_secret_time = 0.0
        self._load_window = 0.0
        self._load_count = 0
        self._last_stamp = b""

    # -- peers -------------------------------------------------------------------------------

    def add_peer(self, public_key: bytes, allowed_ips: Iterable[str | ipaddress.IPv4Network | ipaddress.IPv6Network],
                 persistent_keepalive: float | None = None) -> Peer:
        """Add a peer, or update an existing one's allowed IPs and keepalive (sessions kept)."""
        if len(public_key) != 32:
            raise ValueError("a WireGuard public key is 32 bytes")
        nets = _nets(allowed_ips)
        peer = self.peers.get(public_key)
        if peer is None:
            peer = self.peers[public_key] = Peer(self, public_key, nets, persistent_keepalive)
        else:
            peer.allowed = nets
            if not persistent_keepalive:
                peer.t_persistent = None
            peer.persistent_keepalive = persistent_keepalive
        self._rebuild_routes()
        return peer

    def remove_peer(self, public_key: bytes) -> None:
        """Forget a peer, its sessions, queued packets and timers. Unknown keys are ignored."""
        peer = self.peers.pop(public_key, None)
        if peer is None:
            return
        self._zero(peer)
        peer.queue.clear()
        peer.t_retransmit = peer.t_send_keepalive = peer.t_new_handshake = peer.t_persistent = None
        self._rebuild_routes()

    def _rebuild_routes(self) -> None:
        routes = [(v, net, plen, p) for p in self.peers.values() for (v, net, plen) in p.allowed]
        routes.sort(key=lambda r: -r[2])
        self._routes = routes
        self._route_cache.clear()

    def route(self, packet: bytes, *, source: bool = False) -> Peer | None:
        """The peer whose allowed IPs best match the packet's destination (or source)."""
        if not packet:
            return None
        version = packet[0] >> 4
        if version == 6 and len(packet) >= 40:
            raw = packet[8:24] if source else packet[24:40]
        elif version == 4 and len(packet) >= 20:
            raw = packet[12:16] if source else packet[16:20]
        else:
            return None
        try:
            return self._route_cache[raw]
        except KeyError:
            pass
        addr, bits, found = int.from_bytes(raw, "big"), len(raw) * 8, None
        for v, net, plen, peer in self._routes:
            if v == version and (addr >> (bits - plen)) == (net >> (bits - plen)):
                found = peer
                break
        if len(self._route_cache) >= 4096:
            self._route_cache.clear()
        self._route_cache[raw] = found
        return found

    # -- the three entry points ----------------------------------------------------------------

    def receive(self, src: bytes, datagram: bytes, now: float) -> Result:
        """Handle one datagram from the network."""
        r = Result()
        n = len(datagram)
        if n < 4 or datagram[1:4] != b"\0\0\0":
            self.dropped += 1
            return r
        kind = datagram[0]
        if kind == MSG_TRANSPORT and n >= MIN_TRANSPORT_LEN:
            self._recv_transport(datagram, now, r)
        elif kind == MSG_INITIATION and n == INITIATION_LEN:
            self._recv_initiation(src, datagram, now, r)
        elif kind == MSG_RESPONSE and n == RESPONSE_LEN:
            self._recv_response(src, datagram, now, r)
        elif kind == MSG_COOKIE_REPLY and n == COOKIE_REPLY_LEN:
            self._recv_cookie(datagram, now)
        else:
            self.dropped += 1
        return r

    def send(self, packet: bytes, now: float) -> Result:
        """Send an IP packet to the peer its destination routes to (dropped if none)."""
        r = Result()
        peer = self.route(packet)
        if peer is None:
            self.dropped += 1
            return r
        self._enqueue(peer, packet)
        self._send_queued(peer, now, r)
        return r

    def initiate(self, public_key: bytes, now: float) -> Result:
        """Start a handshake with a peer now (rate-limited to one per ``rekey_timeout``)."""
        r = Result()
        peer = self.peers.get(public_key)
        if peer is not None:
            self._initiate(peer, now, r, retry=False)
        return r

    def tick(self, now: float) -> Result:
        """Run every timer that is due at ``now``."""
        r = Result()
        for peer in list(self.peers.values()):
            self._tick_peer(peer, now, r)
        return r

    def next_deadline(self) -> float | None:
        """When ``tick`` has work next, or None if no timer is pending."""
        return min((d for p in self.peers.values() for d in p.deadlines()), default=None)

    # -- handshake ----------------------------------------------------------------------------

    def _new_index(self, peer: Peer, session: _Session | None) -> int:
        while True:
            i = int.from_bytes(self._entropy(4), "little")
            if i not in self._indices:
                self._indices[i] = (peer, session)
                return i

    def _timestamp(self, now: float) -> bytes:
        stamp = tai64n(now + self.wall_offset)
        if self._last_stamp and stamp <= self._last_stamp:
            # Two initiations within one whitened 16 ms step: keep them strictly increasing.
            stamp = (int.from_bytes(self._last_stamp, "big") + 1).to_bytes(12, "big")
        self._last_stamp = stamp
        return stamp

    def _add_macs(self, peer: Peer, body: bytes, now: float) -> bytes:
        mac1 = _mac(peer._mac1_key, body)
        peer.last_sent_mac1 = mac1
        msg = body + mac1
        if peer.cookie is not None and now - peer.cookie_time < self.timers.cookie_refresh_time:
            return msg + _mac(peer.cookie, msg)
        return msg + _ZERO16

    def _under_load(self, now: float) -> bool:
        if now - self._load_window >= 1.0:
            self._load_window = now
            self._load_count = 0
        self._load_count += 1
        return self.force_under_load or self._load_count > self.timers.under_load_handshakes

    def _cookie_tau(self, src: bytes, now: float) -> bytes:
        if not self._cookie_secret or now - self._cookie_secret_time >= self.timers.cookie_refresh_time:
            self._cookie_secret = os.urandom(32)
            self._cookie_secret_time = now
        return _mac(self._cookie_secret, src)

    def _check_macs(self, src: bytes, msg: bytes, now: float, r: Result) -> bool:
        """mac1 always; under load also mac2, answering a missing one with a cookie reply."""
        if not hmac.compare_digest(_mac(self._mac1_key, msg[:-32]), msg[-32:-16]):
            self.dropped += 1
            return False
        if not self._under_load(now):
            return True
        tau = self._cookie_tau(src, now)
        if hmac.compare_digest(_mac(tau, msg[:-16]), msg[-16:]):
            return True
        from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_encrypt

        nonce = self._entropy(24)
        sealed = crypto_aead_xchacha20poly1305_ietf_encrypt(tau, msg[-32:-16], nonce, self._cookie_key)
        r.to_send.append((src, struct.pack("<I", MSG_COOKIE_REPLY) + msg[4:8] + nonce + sealed))
        return False

    def _recv_cookie(self, msg: bytes, now: float) -> None:
        from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_decrypt
        from nacl.exceptions import CryptoError

        entry = self._indices.get(int.from_bytes(msg[4:8], "little"))
        if entry is None or entry[0].last_sent_mac1 is None:
            self.dropped += 1
            return
        peer = entry[0]
        try:
            cookie = crypto_aead_xchacha20poly1305_ietf_decrypt(msg[32:64], peer.last_sent_mac1, msg[8:32],
                                                                 peer._cookie_key)
        except CryptoError:
            self.dropped += 1
            return
        peer.cookie, peer.cookie_time, peer.last_sent_mac1 = cookie, now, None

    def _create_initiation(self, peer: Peer, now: float) -> bytes:
        assert peer._ss is not None
        self._drop_handshake(peer)
        e_priv, e_pub = _keypair(self._entropy(32))
        ck = _kdf(1, _CK0, e_pub)[0]
        h = _hash(peer._h_init, e_pub)
        ck, k = _kdf(2, ck, _dh(e_priv, peer.public_key))
        enc_static = _seal(k, self.public_key, h)
        h = _hash(h, enc_static)
        ck, k = _kdf(2, ck, peer._ss)
        enc_time = _seal(k, self._timestamp(now), h)
        h = _hash(h, enc_time)
        index = self._new_index(peer, None)
        peer.handshake = _Handshake(h, ck, e_priv, index)
        return self._add_macs(peer, struct.pack("<II", MSG_INITIATION, index) + e_pub + enc_static + enc_time, now)

    def _recv_initiation(self, src: bytes, msg: bytes, now: float, r: Result) -> None:
        if not self._check_macs(src, msg, now, r):
            return
        e_i = msg[8:40]
        ck = _kdf(1, _CK0, e_i)[0]
        h = _hash(self._h_self, e_i)
        try:
            ck, k = _kdf(2, ck, _dh(self._private, e_i))
        except ValueError:
            self.dropped += 1
            return
        static = _open(k, msg[40:88], h)
        peer = self.peers.get(static) if static is not None else None
        if peer is None or peer._ss is None:
            self.dropped += 1
            return
        h = _hash(h, msg[40:88])
        ck, k = _kdf(2, ck, peer._ss)
        stamp = _open(k, msg[88:116], h)
        if stamp is None or stamp <= peer.last_timestamp:
            self.dropped += 1  # forged, or a replayed initiation
            return
        if peer.last_initiation is not None and now - peer.last_initiation < self.timers.handshake_initiation_rate:
            self.dropped += 1  # flood
            return
        h = _hash(h, msg[88:116])
        peer.last_timestamp, peer.last_initiation = stamp, now
        remote_index = int.from_bytes(msg[4:8], "little")
        self._any_authenticated_received(peer, len(msg), now)
        # The response.
        self._drop_handshake(peer)
        e_priv, e_pub = _keypair(self._entropy(32))
        ck = _kdf(1, ck, e_pub)[0]
        h = _hash(h, e_pub)
        try:
            ck = _kdf(1, ck, _dh(e_priv, e_i))[0]
        except ValueError:
            self.dropped += 1
            return
        ck = _kdf(1, ck, _dh(e_priv, peer.public_key))[0]
        ck, tau, k = _kdf(3, ck, _ZERO32)
        h = _hash(h, tau)
        enc_empty = _seal(k, b"", h)
        recv_key, send_key = _kdf(2, ck, b"")
        session = _Session(send_key, recv_key, 0, remote_index, now, initiator=False)
        session.local_index = self._new_index(peer, session)
        body = struct.pack("<III", MSG_RESPONSE, session.local_index, remote_index) + e_pub + enc_empty
        self._install(peer, session, now)
        self._emit(peer, self._add_macs(peer, body, now), now, r)

    def _recv_response(self, src: bytes, msg: bytes, now: float, r: Result) -> None:
        index = int.from_bytes(msg[8:12], "little")
        entry = self._indices.get(index)
        if entry is None or entry[1] is not None:
            self.dropped += 1
            return
        peer = entry[0]
        hs = peer.handshake
        if hs is None or hs.local_index != index or not self._check_macs(src, msg, now, r):
            self.dropped += 1
            return
        e_r = msg[12:44]
        ck = _kdf(1, hs.chain_key, e_r)[0]
        h = _hash(hs.hash, e_r)
        try:
            ck = _kdf(1, ck, _dh(hs.ephemeral, e_r))[0]
            ck = _kdf(1, ck, _dh(self._private, e_r))[0]
        except ValueError:
            self.dropped += 1
            return
        ck, tau, k = _kdf(3, ck, _ZERO32)
        h = _hash(h, tau)
        if _open(k, msg[44:60], h) is None:
            self.dropped += 1
            return
        send_key, recv_key = _kdf(2, ck, b"")
        session = _Session(send_key, recv_key, index, int.from_bytes(msg[4:8], "little"), now, initiator=True)
        peer.handshake = None
        self._indices[index] = (peer, session)
        self._any_authenticated_received(peer, len(msg), now)
        self._install(peer, session, now)
        self._handshake_complete(peer, now, r, initiator=True)
        self._keepalive(peer, now, r)

    def _install(self, peer: Peer, session: _Session, now: float) -> None:
        """A new session (wireguard-go ``BeginSymmetricSession``)."""
        if session.initiator:
            if peer.next is not None:
                peer.previous, peer.next = peer.next, None
                self._drop_session(peer.current)
            else:
                self._drop_session(peer.previous)
                peer.previous = peer.current
            peer.current = session
        else:
            self._drop_session(peer.next)
            peer.next = session
            self._drop_session(peer.previous)
            peer.previous = None
        peer.t_zero_keys = now + 3 * self.timers.reject_after_time

    def _drop_session(self, session: _Session | None) -> None:
        if session is not None:
            self._indices.pop(session.local_index, None)

    def _drop_handshake(self, peer: Peer) -> None:
        if peer.handshake is not None:
            self._indices.pop(peer.handshake.local_index, None)
            peer.handshake = None

    def _zero(self, peer: Peer) -> None:
        for s in (peer.current, peer.previous, peer.next):
            self._drop_session(s)
        peer.current = peer.previous = peer.next = None
        self._drop_handshake(peer)
        peer.t_zero_keys = None

    def _handshake_complete(self, peer: Peer, now: float, r: Result, *, initiator: bool) -> None:
        peer.t_retransmit = None
        peer.attempts = 0
        peer.sent_last_minute_handshake = False
        peer.stats.last_handshake = now
        peer.stats.handshakes += 1
        r.events.append(HandshakeComplete(peer.public_key, initiator))

    def _initiate(self, peer: Peer, now: float, r: Result, *, retry: bool) -> None:
        if peer._ss is None:
            return
        if not retry:
            peer.attempts = 0
        if peer.last_sent_handshake is not None and now - peer.last_sent_handshake < self.timers.rekey_timeout:
            return
        peer.last_sent_handshake = now
        self._emit(peer, self._create_initiation(peer, now), now, r)
        jitter = int.from_bytes(self._entropy(2), "little") / 65536 * self.timers.rekey_timeout_jitter
        peer.t_retransmit = now + self.timers.rekey_timeout + jitter

    # -- transport ----------------------------------------------------------------------------

    def _recv_transport(self, msg: bytes, now: float, r: Result) -> None:
        entry = self._indices.get(int.from_bytes(msg[4:8], "little"))
        session = entry[1] if entry is not None else None
        if entry is None or session is None:
            self.dropped += 1
            return
        peer = entry[0]
        counter = int.from_bytes(msg[8:16], "little")
        if now - session.created >= self.timers.reject_after_time or not session.replay.check(counter):
            self.dropped += 1
            return
        try:
            plain = session.recv.decrypt(b"\0\0\0\0" + msg[8:16], msg[16:], None)
        except InvalidTag:
            self.dropped += 1
            return
        if not session.replay.accept(counter):
            self.dropped += 1
            return
        if session is peer.next:
            self._drop_session(peer.previous)
            peer.previous, peer.current, peer.next = peer.current, session, None
            self._handshake_complete(peer, now, r, initiator=False)
            self._send_queued(peer, now, r)
        current = peer.current
        if (not peer.sent_last_minute_handshake and current is not None and current.initiator
                and now - current.created > (self.timers.reject_after_time - self.timers.keepalive_timeout
                                             - self.timers.rekey_timeout)):
            peer.sent_last_minute_handshake = True
            self._initiate(peer, now, r, retry=False)
        self._any_authenticated_received(peer, len(msg), now)
        if not plain:
            return  # keepalive
        if peer.t_send_keepalive is None:
            peer.t_send_keepalive = now + self.timers.keepalive_timeout
        else:
            peer.need_another_keepalive = True
        packet = self._ip_packet(plain)
        if packet is None or self.route(packet, source=True) is not peer:
            self.dropped += 1  # malformed, or a source this peer may not use
            return
        peer.stats.rx_packets += 1
        r.packets_in.append(packet)

    @staticmethod
    def _ip_packet(plain: bytes) -> bytes | None:
        """The packet without its padding, or None if it is no IP packet."""
        version = plain[0] >> 4
        if version == 6 and len(plain) >= 40:
            size = 40 + int.from_bytes(plain[4:6], "big")
        elif version == 4 and len(plain) >= 20:
            size = int.from_bytes(plain[2:4], "big")
        else:
            return None
        return plain[:size] if 0 < size <= len(plain) else None

    def _any_authenticated_received(self, peer: Peer, size: int, now: float) -> None:
        peer.stats.rx_bytes += size
        peer.t_new_handshake = None
        if peer.persistent_keepalive:
            peer.t_persistent = now + peer.persistent_keepalive

    def _emit(self, peer: Peer, datagram: bytes, now: float, r: Result) -> None:
        """Send an authenticated datagram to a peer (any type) and run the "sent" timers."""
        r.to_send.append((peer.public_key, datagram))
        peer.stats.tx_bytes += len(datagram)
        peer.t_send_keepalive = None
        if peer.persistent_keepalive:
            peer.t_persistent = now + peer.persistent_keepalive

    def _enqueue(self, peer: Peer, packet: bytes) -> None:
        if len(peer.queue) >= self.queue_limit:
            peer.queue.popleft()
            self.dropped += 1
        peer.queue.append(packet)

    def _keepalive(self, peer: Peer, now: float, r: Result) -> None:
        if not peer.queue:
            peer.queue.append(b"")
        self._send_queued(peer, now, r)

    def _send_queued(self, peer: Peer, now: float, r: Result) -> None:
        s = peer.current
        if s is None or now - s.created >= self.timers.reject_after_time or s.send_counter >= REJECT_AFTER_MESSAGES:
            self._initiate(peer, now, r, retry=False)
            return
        while peer.queue:
            packet = peer.queue.popleft()
            n = len(packet)
            padded = (n + 15) & ~15
            if n <= self.mtu:
                padded = min(padded, self.mtu)
            counter = s.send_counter
            s.send_counter += 1
            sealed = s.send.encrypt(_nonce(counter), packet + bytes(padded - n), None)
            self._emit(peer, struct.pack("<IIQ", MSG_TRANSPORT, s.remote_index, counter) + sealed, now, r)
            if n:
                peer.stats.tx_packets += 1
                if peer.t_new_handshake is None:
                    peer.t_new_handshake = now + self.timers.keepalive_timeout + self.timers.rekey_timeout
        if s.initiator and (s.send_counter > REKEY_AFTER_MESSAGES
                            or now - s.created >= self.timers.rekey_after_time):
            self._initiate(peer, now, r, retry=False)

    # -- timers -------------------------------------------------------------------------------

    def _tick_peer(self, peer: Peer, now: float, r: Result) -> None:
        t = self.timers
        if peer.t_retransmit is not None and now >= peer.t_retransmit:
            peer.t_retransmit = None
            if peer.attempts > t.max_handshake_attempts:  # as wireguard-go: 1 + 19 tries
                peer.t_send_keepalive = None
                self.dropped += len(peer.queue)
                peer.queue.clear()
                if peer.t_zero_keys is None:
                    peer.t_zero_keys = now + 3 * t.reject_after_time
                r.events.append(HandshakeFailed(peer.public_key))
            else:
                peer.attempts += 1
                self._initiate(peer, now, r, retry=True)
        if peer.t_send_keepalive is not None and now >= peer.t_send_keepalive:
            peer.t_send_keepalive = None
            self._keepalive(peer, now, r)
            if peer.need_another_keepalive:
                peer.need_another_keepalive = False
                peer.t_send_keepalive = now + t.keepalive_timeout
        if peer.t_new_handshake is not None and now >= peer.t_new_handshake:
            peer.t_new_handshake = None
            self._initiate(peer, now, r, retry=False)
        if peer.t_zero_keys is not None and now >= peer.t_zero_keys:
            self._zero(peer)
        if peer.t_persistent is not None and now >= peer.t_persistent:
            peer.t_persistent = None
            if peer.persistent_keepalive:
                self._keepalive(peer, now, r)
                if peer.t_persistent is None:  # nothing left (handshake rate-limited): try again later
                    peer.t_persistent = now + peer.persistent_keepalive
