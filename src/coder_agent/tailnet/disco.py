"""Disco messages over DERP: answer Ping with Pong, ignore CallMeMaybe (coder-tailnet.md §5).

Rules (tailscale ``disco/disco.go`` as in coder/tailscale):

* A disco datagram is ``MAGIC`` (``TS💬``, 6 bytes) + the sender's 32-byte disco public key +
  a 24-byte nonce + a NaCl box (X25519/XSalsa20-Poly1305) from the sender's disco private key to
  the receiver's disco public key. Anything shorter than the header, or not starting with the
  magic, is not disco (it may be WireGuard: first byte 1..4 then three zero bytes).
* Plaintext: type (1 Ping, 2 Pong, 3 CallMeMaybe), version, payload. Ping = 12-byte TxID
  [+ 32-byte node key]; Pong = TxID + 16-byte IP (IPv4 as v4-mapped) + BE port; CallMeMaybe =
  n × (16-byte IP + BE port), version 0, unpadded. Longer payloads are accepted (forward
  compatible).
* Ping and Pong we send are version 1, zero-padded to a 1230-byte payload (Coder's
  ``paddedPayloadLen`` at the default inner MTU 1280: 1280 + 30 - (6 + 32 + 24 + 16 + 2)).
* A Ping received over DERP is answered over DERP with ``Src`` = 127.3.3.40:<regionID>
  (magicsock's DERP magic address). Disco from a disco key we do not know is dropped, as is
  anything that fails to open.
"""

from __future__ import annotations

import ipaddress
import os
import struct
from dataclasses import dataclass

__all__ = [
    "MAGIC",
    "PADDED_PAYLOAD_LEN",
    "CallMeMaybe",
    "Ping",
    "Pong",
    "answer",
    "decode",
    "encode",
    "looks_like_disco",
    "open_message",
    "seal_message",
]

MAGIC = "TS💬".encode()
KEY_LEN = 32
NONCE_LEN = 24
HEADER_LEN = len(MAGIC) + KEY_LEN + NONCE_LEN
PADDED_PAYLOAD_LEN = 1230
DERP_MAGIC_IP = ipaddress.IPv4Address("127.3.3.40")

TYPE_PING = 1
TYPE_PONG = 2
TYPE_CALL_ME_MAYBE = 3


@dataclass(frozen=True)
class Ping:
    tx_id: bytes  # 12 bytes
    node_key: bytes | None = None  # the sender's raw WireGuard key (unverified)


@dataclass(frozen=True)
class Pong:
    tx_id: bytes
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int


@dataclass(frozen=True)
class CallMeMaybe:
    endpoints: tuple[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int], ...] = ()


Message = Ping | Pong | CallMeMaybe


def looks_like_disco(datagram: bytes) -> bool:
    return len(datagram) >= HEADER_LEN and datagram.startswith(MAGIC)


def _ip16(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    return ip.packed if ip.version == 6 else b"\0" * 10 + b"\xff\xff" + ip.packed


def _unmap(raw: bytes) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    ip = ipaddress.IPv6Address(raw)
    return ip.ipv4_mapped or ip


def encode(msg: Message) -> bytes:
    """The plaintext of a message (Ping/Pong v1 padded, CallMeMaybe v0)."""
    if isinstance(msg, Ping):
        body = msg.tx_id + (msg.node_key or b"")
        return bytes([TYPE_PING, 1]) + body.ljust(PADDED_PAYLOAD_LEN, b"\0")
    if isinstance(msg, Pong):
        body = msg.tx_id + _ip16(msg.ip) + struct.pack(">H", msg.port)
        return bytes([TYPE_PONG, 1]) + body.ljust(PADDED_PAYLOAD_LEN, b"\0")
    return bytes([TYPE_CALL_ME_MAYBE, 0]) + b"".join(_ip16(ip) + struct.pack(">H", port) for ip, port in msg.endpoints)


def decode(plain: bytes) -> Message | None:
    """A message from its plaintext, or None if unknown or short."""
    if len(plain) < 2:
        return None
    kind, version, p = plain[0], plain[1], plain[2:]
    if kind == TYPE_PING and len(p) >= 12:
        key = p[12:44]
        # Padding is zeros: an all-zero key means none (Go's NodeKey.IsZero).
        return Ping(p[:12], key if len(key) == KEY_LEN and any(key) else None)
    if kind == TYPE_PONG and len(p) >= 30:
        return Pong(p[:12], _unmap(p[12:28]), int.from_bytes(p[28:30], "big"))
    if kind == TYPE_CALL_ME_MAYBE:
        if version != 0 or not p or len(p) % 18:
            return CallMeMaybe()
        return CallMeMaybe(tuple((_unmap(p[i:i + 16]), int.from_bytes(p[i + 16:i + 18], "big"))
                                 for i in range(0, len(p), 18)))
    return None


def seal_message(sender_private: bytes, sender_public: bytes, receiver_public: bytes, msg: Message,
                 nonce: bytes | None = None) -> bytes:
    """A disco datagram carrying ``msg`` from us to ``receiver_public``."""
    from nacl.public import Box, PrivateKey, PublicKey

    nonce = nonce if nonce is not None else os.urandom(NONCE_LEN)
    box = Box(PrivateKey(sender_private), PublicKey(receiver_public))
    return MAGIC + sender_public + bytes(box.encrypt(encode(msg), nonce))


def open_message(receiver_private: bytes, datagram: bytes) -> tuple[bytes, Message] | None:
    """(sender disco public key, message), or None if it is no disco or does not open."""
    from nacl.exceptions import CryptoError
    from nacl.public import Box, PrivateKey, PublicKey

    if not looks_like_disco(datagram):
        return None
    sender = datagram[len(MAGIC):len(MAGIC) + KEY_LEN]
    try:
        plain = Box(PrivateKey(receiver_private), PublicKey(sender)).decrypt(
            datagram[HEADER_LEN:], datagram[len(MAGIC) + KEY_LEN:HEADER_LEN])
    except (CryptoError, ValueError):
        return None
    msg = decode(plain)
    return None if msg is None else (sender, msg)


def answer(our_private: bytes, our_public: bytes, known: frozenset[bytes] | set[bytes], datagram: bytes,
           region_id: int) -> bytes | None:
    """The reply to a disco datagram received over DERP in ``region_id``: a Pong for a Ping from
    a known disco key, else None (Pong and CallMeMaybe are read and ignored)."""
    opened = open_message(our_private, datagram)
    if opened is None:
        return None
    sender, msg = opened
    if sender not in known or not isinstance(msg, Ping):
        return None
    return seal_message(our_private, our_public, sender, Pong(msg.tx_id, DERP_MAGIC_IP, region_id))
