"""Disco: layout, NaCl box, v1 padding to 1230 bytes, Ping -> Pong with the DERP magic source."""

from __future__ import annotations

import ipaddress

from nacl.public import Box, PrivateKey, PublicKey

from coder_agent.tailnet import disco
from coder_agent.tailnet.keys import DiscoKey

ME = DiscoKey(bytes(range(32)))
PEER = DiscoKey(bytes(range(32, 64)))
TX = bytes(range(100, 112))
NONCE = bytes(range(24))


def test_magic_and_layout() -> None:
    assert bytes.fromhex("5453f09f92ac") == disco.MAGIC
    d = disco.seal_message(PEER.private, PEER.public, ME.public, disco.Ping(TX, b"K" * 32), nonce=NONCE)
    assert d[:6] == disco.MAGIC and d[6:38] == PEER.public and d[38:62] == NONCE
    # Coder's paddedPayloadLen: 1280 + 30 - (6 + 32 + 24 + 16 + 2) = 1230 payload bytes, so the
    # datagram is exactly one inner-MTU WireGuard packet (1310 bytes).
    assert len(d) == 1310
    plain = Box(PrivateKey(ME.private), PublicKey(PEER.public)).decrypt(d[62:], NONCE)
    assert plain[:2] == b"\x01\x01" and plain[2:14] == TX and plain[14:46] == b"K" * 32
    assert plain[46:] == bytes(1230 - 44)


def test_ping_gets_pong_from_derp_magic_address() -> None:
    ping = disco.seal_message(PEER.private, PEER.public, ME.public, disco.Ping(TX))
    reply = disco.answer(ME.private, ME.public, {PEER.public}, ping, region_id=999)
    assert reply is not None
    opened = disco.open_message(PEER.private, reply)
    assert opened == (ME.public, disco.Pong(TX, ipaddress.IPv4Address("127.3.3.40"), 999))
    plain = Box(PrivateKey(PEER.private), PublicKey(ME.public)).decrypt(reply[62:], reply[38:62])
    assert plain[:2] == b"\x02\x01" and len(plain) == 1232
    assert plain[14:32] == bytes(10) + b"\xff\xff" + bytes([127, 3, 3, 40]) + (999).to_bytes(2, "big")


def test_unknown_sender_garbage_pong_and_call_me_maybe_get_nothing() -> None:
    ping = disco.seal_message(PEER.private, PEER.public, ME.public, disco.Ping(TX))
    assert disco.answer(ME.private, ME.public, set(), ping, 999) is None
    tampered = ping[:-1] + bytes([ping[-1] ^ 1])
    assert disco.answer(ME.private, ME.public, {PEER.public}, tampered, 999) is None
    assert disco.answer(ME.private, ME.public, {PEER.public}, b"\x01\0\0\0" + bytes(60), 999) is None
    pong = disco.seal_message(PEER.private, PEER.public, ME.public,
                              disco.Pong(TX, ipaddress.IPv6Address("fd7a:115c:a1e0::1"), 41641))
    assert disco.answer(ME.private, ME.public, {PEER.public}, pong, 999) is None
    ep = ((ipaddress.IPv4Address("192.0.2.1"), 41641), (ipaddress.IPv6Address("2001:db8::1"), 1))
    cmm = disco.seal_message(PEER.private, PEER.public, ME.public, disco.CallMeMaybe(ep))
    assert disco.open_message(ME.private, cmm) == (PEER.public, disco.CallMeMaybe(ep))
    assert disco.answer(ME.private, ME.public, {PEER.public}, cmm, 999) is None


def test_decode_is_lax_like_go() -> None:
    assert disco.decode(b"\x01\x00" + TX) == disco.Ping(TX, None)  # v0, no key, no padding
    assert disco.decode(b"\x01\x01" + TX + bytes(1218)) == disco.Ping(TX, None)  # zero key = none
    assert disco.decode(b"\x01\x00" + TX[:11]) is None
    assert disco.decode(b"\x09\x00") is None
    assert disco.decode(b"\x03\x00" + bytes(17)) == disco.CallMeMaybe()  # not a multiple of 18
    assert not disco.looks_like_disco(b"\x04\0\0\0" + bytes(100))
