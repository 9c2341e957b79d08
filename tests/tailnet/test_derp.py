"""The DERP sans-I/O core: byte-exact frames, login boxes against Go's nacl/box, re-chunking."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coder_agent.tailnet import derp
from coder_agent.tailnet.derp import FrameType

# Golden vectors made once with Go (golang.org/x/crypto/nacl/box.Seal, Debian's x/crypto; the
# program is in the commit message that added this file): client key bytes 1..32, server key
# bytes 0x80..0x9f, nonce bytes 0xa0..0xb7.
CPRIV = bytes(range(1, 33))
SPRIV = bytes(range(0x80, 0xA0))
NONCE = bytes(range(0xA0, 0xB8))
CPUB = bytes.fromhex("07a37cbc142093c8b755dc1b10e86cb426374ad16aa853ed0bdfc0b2b86d1c7c")
SPUB = bytes.fromhex("493e82fc74464a59268817623d2053c5eb8e2cc4a988b4fee179ec6b010d531d")
GO_CLIENT_INFO_BOX = bytes.fromhex(
    "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b773558b8de5b7f0e8fe573f3e753c0045392db123f61f89"
    "2511b407bee4f61362aa948d52cbe658d2fdc7dd502fdfa876")
GO_SERVER_INFO_BOX = bytes.fromhex(
    "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7051ccc621a456d8b95de837dd96d1528392db123f61f89"
    "2511b407beb5")
PEER = bytes(range(0x40, 0x60))


def test_keys_match_go() -> None:
    assert derp.public_key(CPRIV) == CPUB
    assert derp.public_key(SPRIV) == SPUB


def test_frame_bytes() -> None:
    assert bytes.fromhex("44455250f09f9491") == derp.MAGIC
    assert derp.encode_frame(FrameType.KEEP_ALIVE) == b"\x06\x00\x00\x00\x00"
    assert derp.build_server_key(SPUB) == b"\x01\x00\x00\x00\x28" + derp.MAGIC + SPUB


def test_client_info_is_gos_box() -> None:
    frame = derp.build_client_info(CPRIV, SPUB, NONCE)
    assert frame == b"\x02" + (32 + len(GO_CLIENT_INFO_BOX)).to_bytes(4, "big") + CPUB + GO_CLIENT_INFO_BOX
    client, info = derp.open_client_info(SPRIV, frame[5:])
    assert client == CPUB and info == {"version": 2, "CanAckPings": True}
    assert derp.client_info_json() == b'{"version":2,"CanAckPings":true}'


def test_server_info_is_gos_box() -> None:
    frame = derp.build_server_info(SPRIV, CPUB, NONCE)
    assert frame == b"\x03" + len(GO_SERVER_INFO_BOX).to_bytes(4, "big") + GO_SERVER_INFO_BOX
    assert derp.open_server_info(CPRIV, SPUB, GO_SERVER_INFO_BOX) == {"version": 2}
    with pytest.raises(derp.DerpProtocolError, match="box"):
        derp.open_server_info(CPRIV, SPUB, GO_SERVER_INFO_BOX[:-1] + b"\x00")


def _logged_in() -> derp.ClientProtocol:
    c = derp.ClientProtocol(CPRIV, nonce=lambda n: NONCE)
    assert c.receive_data(derp.build_server_key(SPUB)) == []
    assert c.data_to_send() == derp.build_client_info(CPRIV, SPUB, NONCE)
    [ev] = c.receive_data(derp.build_server_info(SPRIV, CPUB, NONCE))
    assert ev == derp.LoggedIn(SPUB, {"version": 2}) and ev.version == 2
    assert c.logged_in
    return c


def test_login_and_steady_state_bytes() -> None:
    c = _logged_in()
    c.note_preferred(True)
    c.send_packet(PEER, b"hello")
    c.send_ping(b"12345678")
    assert c.data_to_send() == (b"\x07\x00\x00\x00\x01\x01" + b"\x04\x00\x00\x00\x25" + PEER + b"hello"
                                + b"\x12\x00\x00\x00\x0812345678")
    evs = c.receive_data(
        derp.encode_frame(FrameType.RECV_PACKET, PEER + b"wg")
        + derp.encode_frame(FrameType.KEEP_ALIVE)
        + derp.encode_frame(FrameType.PING, b"abcdefgh")
        + derp.encode_frame(FrameType.PONG, b"12345678")
        + derp.encode_frame(FrameType.PEER_GONE, PEER + b"\x01")
        + derp.encode_frame(FrameType.PEER_GONE, PEER)  # old servers: no reason byte
        + derp.encode_frame(FrameType.HEALTH, b"duplicate client")
        + derp.encode_frame(FrameType.HEALTH, b"")
        + derp.encode_frame(FrameType.RESTARTING, (1500).to_bytes(4, "big") + (30000).to_bytes(4, "big"))
    )
    assert evs == [
        derp.RecvPacket(PEER, b"wg"), derp.KeepAlive(), derp.Ping(b"abcdefgh"), derp.Pong(b"12345678"),
        derp.PeerGone(PEER, derp.PeerGoneReason.NOT_HERE), derp.PeerGone(PEER, derp.PeerGoneReason.DISCONNECTED),
        derp.Health("duplicate client"), derp.Health(""), derp.Restarting(1.5, 30.0),
    ]
    assert c.data_to_send() == b"\x13\x00\x00\x00\x08abcdefgh"  # the Ping answered by the core


def test_short_unknown_and_mesh_frames_are_ignored() -> None:
    c = _logged_in()
    evs = c.receive_data(
        derp.encode_frame(FrameType.RECV_PACKET, b"short")
        + derp.encode_frame(FrameType.PING, b"1234")
        + derp.encode_frame(FrameType.RESTARTING, b"1234")
        + derp.encode_frame(0x7F, b"x" * 100)  # unknown: skipped
        + derp.encode_frame(FrameType.PEER_PRESENT, PEER)  # mesh only
        + derp.encode_frame(FrameType.KEEP_ALIVE))
    assert evs == [derp.KeepAlive()]
    assert c.data_to_send() == b""


def test_send_rules() -> None:
    c = derp.ClientProtocol(CPRIV)
    with pytest.raises(RuntimeError):
        c.send_packet(PEER, b"x")
    c = _logged_in()
    with pytest.raises(ValueError, match="too big"):
        c.send_packet(PEER, b"x" * (derp.MAX_PACKET_SIZE + 1))
    c.send_packet(PEER, b"x" * derp.MAX_PACKET_SIZE)  # exactly 64 KiB is allowed
    assert len(c.data_to_send()) == 5 + 32 + derp.MAX_PACKET_SIZE


def test_login_errors() -> None:
    c = derp.ClientProtocol(CPRIV)
    with pytest.raises(derp.DerpProtocolError, match="greeting"):
        c.receive_data(derp.encode_frame(FrameType.SERVER_KEY, b"HTTP/1.1" + SPUB))
    c = derp.ClientProtocol(CPRIV)
    with pytest.raises(derp.DerpProtocolError, match="unexpected frame"):
        c.receive_data(derp.encode_frame(FrameType.KEEP_ALIVE))
    with pytest.raises(derp.DerpProtocolError):  # broken for good
        c.receive_data(b"")
    # A greeting with extra trailing bytes is fine (Go allows future fields).
    c = derp.ClientProtocol(CPRIV)
    c.receive_data(derp.encode_frame(FrameType.SERVER_KEY, derp.MAGIC + SPUB + b"future"))
    assert c.server_key == SPUB and c.can_send and not c.logged_in
    # Before ServerInfo, other frames are handled as usual (Go does not insist on the order).
    assert c.receive_data(derp.encode_frame(FrameType.KEEP_ALIVE)) == [derp.KeepAlive()]
    assert not c.logged_in
    with pytest.raises(derp.DerpProtocolError, match="box"):  # a ServerInfo that does not open
        c.receive_data(derp.encode_frame(FrameType.SERVER_INFO, b"\x00" * 40))


def test_oversized_frames() -> None:
    r = derp.FrameReader()
    with pytest.raises(derp.DerpProtocolError, match="exceeds"):
        r.feed(b"\x05" + (derp.MAX_FRAME_PAYLOAD + 1).to_bytes(4, "big"))
    r = derp.FrameReader()
    with pytest.raises(derp.DerpProtocolError, match="large"):
        r.feed(b"\x7f" + (derp.MAX_SKIP_PAYLOAD + 1).to_bytes(4, "big"))
    # A big unknown frame streams past without being buffered.
    r = derp.FrameReader()
    big = 500_000
    assert r.feed(b"\x7f" + big.to_bytes(4, "big") + b"z" * 1000) == []
    for _ in range(big // 1000 - 1):
        assert r.feed(b"z" * 1000) == []
        assert len(r._buf) == 0
    assert r.feed(derp.encode_frame(FrameType.KEEP_ALIVE)) == [(FrameType.KEEP_ALIVE, b"")]
    assert r.skipped == 1


frames = st.one_of(
    st.tuples(st.sampled_from([int(t) for t in FrameType]), st.binary(max_size=300)),
    st.tuples(st.integers(0x16, 0xFF), st.binary(max_size=300)),  # unknown types
)


@settings(max_examples=200, deadline=None)
@given(st.lists(frames, max_size=12), st.data())
def test_rechunking_gives_the_same_frames(fs: list[tuple[int, bytes]], data: st.DataObject) -> None:
    wire = b"".join(derp.encode_frame(t, p) for t, p in fs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=20)))
    r = derp.FrameReader()
    got: list[tuple[int, bytes]] = []
    prev = 0
    for cut in [*cuts, len(wire)]:
        got += r.feed(wire[prev:cut])
        prev = cut
    known = {int(t) for t in FrameType}
    assert got == [(t, p) for t, p in fs if t in known]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=8), st.data())
def test_rechunked_login_and_packets(packets: list[bytes], data: st.DataObject) -> None:
    wire = (derp.build_server_key(SPUB) + derp.build_server_info(SPRIV, CPUB, NONCE)
            + b"".join(derp.encode_frame(FrameType.RECV_PACKET, PEER + p) for p in packets))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=30)))
    c = derp.ClientProtocol(CPRIV, nonce=lambda n: NONCE)
    events: list[derp.Event] = []
    prev = 0
    for cut in [*cuts, len(wire)]:
        events += c.receive_data(wire[prev:cut])
        prev = cut
    assert events == [derp.LoggedIn(SPUB, {"version": 2}), *(derp.RecvPacket(PEER, p) for p in packets)]
    assert c.data_to_send() == derp.build_client_info(CPRIV, SPUB, NONCE)


def test_server_info_with_token_bucket() -> None:
    info = {"version": 2, "TokenBucketBytesPerSecond": 1000, "TokenBucketBytesBurst": 2000}
    c = derp.ClientProtocol(CPRIV, nonce=lambda n: NONCE)
    c.receive_data(derp.build_server_key(SPUB))
    [ev] = c.receive_data(derp.build_server_info(SPRIV, CPUB, NONCE, info))
    assert isinstance(ev, derp.LoggedIn) and ev.info == json.loads(json.dumps(info))
