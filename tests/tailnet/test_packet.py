"""IPv6 header, pseudo-header checksum, TSMP pong and ICMPv6 echo reply (byte-exact)."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coder_agent.tailnet import packet

A = ipaddress.IPv6Address("fd7a:115c:a1e0::1").packed
B = ipaddress.IPv6Address("fd7a:115c:a1e0:4e5a:9b8c:7d6e:5f4a:3b2c").packed


def test_header_roundtrip_and_layout() -> None:
    p = packet.build(A, B, packet.NH_TSMP, b"p" + bytes(range(8)))
    assert p[:8] == bytes.fromhex("60000000 0009 63 40")
    assert p[8:24] == A and p[24:40] == B
    hdr, payload = packet.parse(p + b"\0" * 7)  # WireGuard padding is cut by the payload length
    assert (hdr.payload_length, hdr.next_header, hdr.hop_limit, hdr.src, hdr.dst) == (9, 99, 64, A, B)
    assert payload == b"p" + bytes(range(8))
    assert hdr.pack() + payload == p


@pytest.mark.parametrize("bad", [b"", b"\x60" * 39, b"\x45" + bytes(39), packet.build(A, B, 58, b"x")[:-1]])
def test_parse_rejects(bad: bytes) -> None:
    with pytest.raises(packet.PacketError):
        packet.parse(bad)


def test_checksum_known_value() -> None:
    # An ICMPv6 echo request as Linux sent it (ping -6: id 0x70b2, seq 1, 56 data bytes) in
    # tests/tailnet/vectors/wireguard_go.json; the kernel's checksum 0xbba3 covers the pseudo-header.
    src = ipaddress.IPv6Address("fd7a:115c:a1e0::2").packed
    dst = ipaddress.IPv6Address("fd7a:115c:a1e0:4e5a:9b8c:7d6e:5f4a:3b2c").packed
    body = bytes.fromhex("8000 bba3 70b2 0001") + bytes.fromhex(
        "93c2166b0000000085f0010000000000101112131415161718191a1b1c1d1e1f"
        "202122232425262728292a2b2c2d2e2f3031323334353637")
    assert packet.ipv6_checksum(src, dst, packet.NH_ICMPV6, body) == 0
    assert packet.ipv6_checksum(src, dst, packet.NH_ICMPV6, body[:2] + b"\0\0" + body[4:]) == 0xBBA3
    # Our reply, as the kernel accepted it in that capture: type 129, checksum 0xbaa3.
    reply = packet.local_reply(packet.build(src, dst, packet.NH_ICMPV6, body, hop_limit=64), {dst})
    assert reply == (bytes.fromhex("60000000 0040 3a 40") + dst + src + bytes.fromhex("8100 baa3") + body[4:])


@given(st.binary(max_size=300), st.sampled_from([6, 17, 58]))
def test_checksum_verifies_to_zero(payload: bytes, nh: int) -> None:
    body = bytes(4) + payload
    csum = packet.ipv6_checksum(A, B, nh, body)
    assert packet.ipv6_checksum(A, B, nh, body[:2] + struct.pack("!H", csum) + body[4:]) in (0, 0xFFFF)


def test_tsmp_pong_byte_exact() -> None:
    ping = packet.build(A, B, packet.NH_TSMP, b"p\x01\x02\x03\x04\x05\x06\x07\x08", hop_limit=63)
    pong = packet.local_reply(ping, {B})
    assert pong == (bytes.fromhex("60000000 000b 63 40") + B + A + b"o\x01\x02\x03\x04\x05\x06\x07\x08\x00\x00")


def test_local_reply_only_for_our_addresses_and_known_kinds() -> None:
    ping = packet.build(A, B, packet.NH_TSMP, b"p12345678")
    assert packet.local_reply(ping, {A}) is None  # not addressed to us
    assert packet.local_reply(packet.build(A, B, packet.NH_TSMP, b"o12345678\0\0"), {B}) is None  # a pong
    assert packet.local_reply(packet.build(A, B, packet.NH_TSMP, b"p1234"), {B}) is None  # short
    assert packet.local_reply(packet.build(A, B, packet.NH_TCP, bytes(20)), {B}) is None  # TCP: next layer
    bad_sum = packet.build(A, B, packet.NH_ICMPV6, bytes.fromhex("8000 ffff 0001 0001"))
    assert packet.local_reply(bad_sum, {B}) is None
    assert packet.local_reply(b"garbage", {B}) is None
