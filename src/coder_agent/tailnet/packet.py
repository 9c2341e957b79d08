"""IPv6 packets inside the tunnel: header parse/build, checksums, and the agent's own replies.

Rules (coder-tailnet.md §5, §6):

* IPv6 only (the tailnet has no IPv4 for agents); MTU 1280. A packet is the 40-byte fixed header
  (version 6, traffic class and flow label zero when we build, payload length, next header, hop
  limit, source, destination) followed by the payload. Extension headers are not followed:
  ``next_header`` is the fixed header's field.
* ``ipv6_checksum(src, dst, next_header, payload)`` is the RFC 8200 §8.1 pseudo-header checksum
  (ICMPv6, TCP, UDP): the payload's checksum field must be zero when computing it; a received
  payload with its checksum in place sums to 0.
* TSMP ping (next header 99, ``b"p"`` + 8 bytes) is answered with ``b"o"`` + the same 8 bytes +
  BE uint16 peerapi port 0, addresses swapped, hop limit 64 (``net/tstun/wrap.go``). Without it
  every Coder client says "agent is unreachable".
* ICMPv6 echo request (type 128) to one of our addresses is answered with an echo reply (129)
  carrying the same identifier, sequence and data, hop limit 64.
* ``local_reply`` answers only packets addressed to one of the given local addresses; anything
  else is for the next layer (TCP) and yields None.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = [
    "HEADER_LEN",
    "MTU",
    "NH_ICMPV6",
    "NH_TCP",
    "NH_TSMP",
    "NH_UDP",
    "IPv6Header",
    "build",
    "icmpv6_echo_reply",
    "ipv6_checksum",
    "local_reply",
    "parse",
    "tsmp_pong",
]

MTU = 1280
HEADER_LEN = 40
NH_TCP = 6
NH_UDP = 17
NH_ICMPV6 = 58
NH_TSMP = 99
HOP_LIMIT = 64

ICMPV6_ECHO_REQUEST = 128
ICMPV6_ECHO_REPLY = 129
TSMP_PING = ord("p")
TSMP_PONG = ord("o")

_HDR = struct.Struct("!IHBB16s16s")


class PacketError(ValueError):
    """Not a well-formed IPv6 packet."""


@dataclass(frozen=True)
class IPv6Header:
    payload_length: int
    next_header: int
    hop_limit: int
    src: bytes  # 16 bytes
    dst: bytes  # 16 bytes
    traffic_class: int = 0
    flow_label: int = 0

    def pack(self) -> bytes:
        first = (6 << 28) | (self.traffic_class << 20) | self.flow_label
        return _HDR.pack(first, self.payload_length, self.next_header, self.hop_limit, self.src, self.dst)


def parse(packet: bytes) -> tuple[IPv6Header, bytes]:
    """The header and payload of an IPv6 packet (trailing bytes beyond payload length cut off)."""
    if len(packet) < HEADER_LEN:
        raise PacketError("shorter than an IPv6 header")
    first, plen, nh, hop, src, dst = _HDR.unpack_from(packet)
    if first >> 28 != 6:
        raise PacketError("not IPv6")
    if HEADER_LEN + plen > len(packet):
        raise PacketError("payload length beyond the packet")
    hdr = IPv6Header(plen, nh, hop, src, dst, (first >> 20) & 0xFF, first & 0xFFFFF)
    return hdr, packet[HEADER_LEN:HEADER_LEN + plen]


def build(src: bytes, dst: bytes, next_header: int, payload: bytes, hop_limit: int = HOP_LIMIT) -> bytes:
    """An IPv6 packet (header + payload); the payload's own checksum is the caller's."""
    return IPv6Header(len(payload), next_header, hop_limit, src, dst).pack() + payload


def _sum16(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    # Summing as one big integer of 16-bit words is much faster in Python than a word loop.
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def ipv6_checksum(src: bytes, dst: bytes, next_header: int, payload: bytes) -> int:
    """The internet checksum of ``payload`` over the IPv6 pseudo-header (RFC 8200 §8.1)."""
    pseudo = src + dst + struct.pack("!IxxxB", len(payload), next_header)
    return ~_sum16(pseudo + payload) & 0xFFFF


def tsmp_pong(hdr: IPv6Header, payload: bytes) -> bytes | None:
    """The pong for a TSMP ping, or None if ``payload`` is not one."""
    if len(payload) < 9 or payload[0] != TSMP_PING:
        return None
    return build(hdr.dst, hdr.src, NH_TSMP, bytes([TSMP_PONG]) + payload[1:9] + b"\0\0")


def icmpv6_echo_reply(hdr: IPv6Header, payload: bytes) -> bytes | None:
    """The echo reply for an ICMPv6 echo request with a valid checksum, or None."""
    if len(payload) < 8 or payload[0] != ICMPV6_ECHO_REQUEST or payload[1] != 0:
        return None
    if ipv6_checksum(hdr.src, hdr.dst, NH_ICMPV6, payload) != 0:
        return None
    body = bytes([ICMPV6_ECHO_REPLY, 0, 0, 0]) + payload[4:]
    csum = ipv6_checksum(hdr.dst, hdr.src, NH_ICMPV6, body)
    return build(hdr.dst, hdr.src, NH_ICMPV6, body[:2] + struct.pack("!H", csum) + body[4:])


def local_reply(packet: bytes, local: frozenset[bytes] | set[bytes]) -> bytes | None:
    """The agent's own answer to ``packet`` (TSMP pong, ICMPv6 echo reply) if it is addressed to
    one of the 16-byte ``local`` addresses and is one of those; otherwise None."""
    try:
        hdr, payload = parse(packet)
    except PacketError:
        return None
    if hdr.dst not in local:
        return None
    if hdr.next_header == NH_TSMP:
        return tsmp_pong(hdr, payload)
    if hdr.next_header == NH_ICMPV6:
        return icmpv6_echo_reply(hdr, payload)
    return None
