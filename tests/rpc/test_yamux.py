"""Pure tests of the yamux core: byte-exact frames, flow control, pings, GoAway, RST, errors."""

from __future__ import annotations

import random
import struct
from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coder_agent.rpc import drpc, yamux
from coder_agent.rpc.yamux import Flag, FrameType, Session

W = yamux.DEFAULT_WINDOW
GET_MANIFEST = "/coder.agent.v2.Agent/GetManifest"


def hdr(type_: int, flags: int, sid: int, length: int) -> bytes:
    return struct.pack(">BBHII", 0, type_, flags, sid, length)


def data_frame(sid: int, payload: bytes, flags: int = 0) -> bytes:
    return hdr(0, flags, sid, len(payload)) + payload


def frames(raw: bytes) -> list[tuple[int, int, int, int, bytes]]:
    """Split bytes a Session produced into (type, flags, stream, length, payload)."""
    out = []
    pos = 0
    while pos < len(raw):
        _, t, f, s, n = struct.unpack_from(">BBHII", raw, pos)
        pos += 12
        body = b""
        if t == 0:
            body = raw[pos : pos + n]
            pos += n
        out.append((t, f, s, n, body))
    return out


def rechunk(data: bytes, rng: random.Random, max_chunk: int) -> list[bytes]:
    out, i = [], 0
    while i < len(data):
        n = rng.randint(1, max_chunk)
        out.append(data[i : i + n])
        i += n
    return out


def feed(session: Session, chunks: list[bytes]) -> list[yamux.YamuxEvent]:
    events: list[yamux.YamuxEvent] = []
    for chunk in chunks:
        events += session.receive_data(chunk)
    return events


def coalesce(events: list[yamux.YamuxEvent]) -> tuple[dict[int, bytes], list[yamux.YamuxEvent]]:
    """Data per stream, and the other events in order: what chunking must not change."""
    data: dict[int, bytes] = defaultdict(bytes)
    other = []
    for ev in events:
        if isinstance(ev, yamux.StreamData):
            data[ev.stream_id] += ev.data
        else:
            other.append(ev)
    return dict(data), other


# ---- byte-exact vectors ------------------------------------------------------------------


def test_open_stream_sends_syn_window_update() -> None:
    client = Session(client=True)
    assert client.open_stream() == 1
    assert client.data_to_send() == bytes.fromhex("00 01 00 01 00 00 00 01 00 00 00 00")
    assert client.stream_state(1) is yamux.StreamState.SYN_SENT


def test_get_manifest_exchange_client_side_byte_exact() -> None:
    client = Session(client=True)
    sid = client.open_stream()
    call = drpc.UnaryCall(GET_MANIFEST, b"")
    client.send(sid, call.data_to_send())
    payload = bytes.fromhex(
        "03 01 01 21 2f 63 6f 64 65 72 2e 61 67 65 6e 74 2e 76 32 2e 41 67 65 6e 74 2f"
        " 47 65 74 4d 61 6e 69 66 65 73 74 05 01 02 00 0d 01 03 00"
    )
    assert client.data_to_send() == (
        bytes.fromhex("00 01 00 01 00 00 00 01 00 00 00 00")
        + bytes.fromhex("00 00 00 00 00 00 00 01 00 00 00 2d")
        + payload
    )

    manifest = bytes(range(40)) * 3
    reply = (
        bytes.fromhex("00 01 00 02 00 00 00 01 00 00 00 00")  # ACK
        + data_frame(1, b"\x05\x01\x01" + bytes((len(manifest),)) + manifest + b"\x0d\x01\x02\x00")
        + hdr(1, Flag.FIN, 1, 0)
    )
    events = feed(client, [reply[i : i + 1] for i in range(len(reply))])
    data, other = coalesce(events)
    assert other == [yamux.StreamAccepted(1), yamux.StreamEnded(1)]
    call.receive_data(data[1])
    assert call.result() == manifest
    client.consume(1, len(data[1]))
    client.close_stream(1)
    assert client.data_to_send() == hdr(1, Flag.FIN, 1, 0)
    assert client.stream_state(1) is None  # both FINs: forgotten


def test_get_manifest_exchange_server_side_byte_exact() -> None:
    server = Session(client=False)
    request = hdr(1, Flag.SYN, 1, 0) + data_frame(1, drpc.UnaryCall(GET_MANIFEST, b"").data_to_send())
    events = feed(server, [request[i : i + 1] for i in range(len(request))])
    data, other = coalesce(events)
    assert other == [yamux.StreamOpened(1)]
    assert server.data_to_send() == bytes.fromhex("00 01 00 02 00 00 00 01 00 00 00 00")
    stream = drpc.ServerStream()
    assert [type(e) for e in stream.receive_data(data[1])] == [
        drpc.InvokeReceived,
        drpc.RequestReceived,
        drpc.CloseSendReceived,
    ]
    stream.reply(b"m")
    server.send(1, stream.data_to_send())
    assert server.data_to_send() == data_frame(1, b"\x05\x01\x01\x01m\x0d\x01\x02\x00")


def test_stream_ids_by_role_never_reused() -> None:
    client, server = Session(client=True), Session(client=False)
    assert [client.open_stream() for _ in range(3)] == [1, 3, 5]
    assert [server.open_stream() for _ in range(3)] == [2, 4, 6]
    client.reset_stream(1)
    assert client.open_stream() == 7


def test_syn_on_first_data_frame_is_accepted() -> None:
    server = Session(client=False)
    events = server.receive_data(data_frame(3, b"hello", Flag.SYN))
    assert events == [yamux.StreamOpened(3), yamux.StreamData(3, b"hello")]


def test_syns_out_of_order_are_fine() -> None:
    server = Session(client=False)
    events = server.receive_data(hdr(1, Flag.SYN, 3, 0) + hdr(1, Flag.SYN, 1, 0))
    assert events == [yamux.StreamOpened(3), yamux.StreamOpened(1)]


# ---- flow control ----------------------------------------------------------------------


def test_send_never_exceeds_the_peer_window_and_resumes_on_credit() -> None:
    client = Session(client=True)
    sid = client.open_stream()
    client.data_to_send()
    client.send(sid, b"a" * (W + 1000))
    sent = frames(client.data_to_send())
    assert sum(f[3] for f in sent) == W
    assert client.send_window(sid) == 0
    assert client.send_queued(sid) == 1000
    client.send(sid, b"b" * 10)  # queued behind, keeps order
    assert client.data_to_send() == b""

    client.receive_data(hdr(1, Flag.ACK, sid, 0) + hdr(1, 0, sid, 600))
    assert frames(client.data_to_send()) == [(0, 0, sid, 600, b"a" * 600)]
    client.receive_data(hdr(1, 0, sid, 10_000))
    assert frames(client.data_to_send()) == [(0, 0, sid, 400, b"a" * 400), (0, 0, sid, 10, b"b" * 10)]
    assert client.send_window(sid) == 10_000 - 410
    assert client.send_queued(sid) == 0


def test_fin_waits_for_queued_data() -> None:
    client = Session(client=True)
    sid = client.open_stream()
    client.data_to_send()
    client.send(sid, b"x" * (W + 5))
    client.close_stream(sid)
    with pytest.raises(yamux.StreamError):
        client.send(sid, b"more")
    assert [f[1] for f in frames(client.data_to_send())] == [0]  # data only, no FIN yet
    client.receive_data(hdr(1, 0, sid, 5))
    assert frames(client.data_to_send()) == [(0, 0, sid, 5, b"x" * 5), (1, Flag.FIN, sid, 0, b"")]
    assert client.stream_state(sid) is yamux.StreamState.LOCAL_CLOSED


def test_receive_credit_returned_after_half_window_consumed() -> None:
    server = Session(client=False)
    server.receive_data(hdr(1, Flag.SYN, 1, 0))
    server.data_to_send()
    server.receive_data(data_frame(1, b"z" * W))
    assert server.recv_window(1) == 0
    server.consume(1, W // 2 - 1)
    assert server.data_to_send() == b""  # below half: Go would not send either
    server.consume(1, 1)
    assert server.data_to_send() == hdr(1, 0, 1, W // 2)
    assert server.recv_window(1) == W // 2
    with pytest.raises(yamux.StreamError):
        server.consume(1, W // 2 + 1)  # more than was received


def test_exceeding_our_window_is_a_protocol_error_with_go_away() -> None:
    server = Session(client=False)
    server.receive_data(hdr(1, Flag.SYN, 1, 0))
    server.data_to_send()
    with pytest.raises(yamux.YamuxProtocolError, match="window exceeded"):
        # The header alone is enough: the body is never waited for.
        server.receive_data(hdr(0, 0, 1, W + 1))
    assert server.data_to_send() == hdr(3, 0, 0, 1)
    assert server.terminated
    with pytest.raises(yamux.SessionClosedError):
        server.receive_data(b"")
    with pytest.raises(yamux.SessionClosedError):
        server.open_stream()


def test_window_exhaustion_across_several_frames() -> None:
    server = Session(client=False)
    server.receive_data(hdr(1, Flag.SYN, 1, 0))
    server.receive_data(data_frame(1, b"a" * (W - 10)))
    server.receive_data(data_frame(1, b"b" * 10))
    with pytest.raises(yamux.YamuxProtocolError):
        server.receive_data(data_frame(1, b"c"))


# ---- in-memory round trip --------------------------------------------------------------


class Pair:
    """A client and a server Session wired back to back, with a dRPC call per stream."""

    def __init__(self, seed: int = 0, max_chunk: int = 100_000) -> None:
        self.client = Session(client=True)
        self.server = Session(client=False)
        self.rng = random.Random(seed)
        self.max_chunk = max_chunk
        self.client_events: list[yamux.YamuxEvent] = []
        self.server_events: list[yamux.YamuxEvent] = []
        self.wire_frames: list[tuple[int, int, int, int, bytes]] = []

    def pump(self) -> bool:
        moved = False
        for src, dst, sink in (
            (self.client, self.server, self.server_events),
            (self.server, self.client, self.client_events),
        ):
            out = src.data_to_send()
            if out:
                moved = True
                self.wire_frames += frames(out)
                for chunk in rechunk(out, self.rng, self.max_chunk):
                    sink += dst.receive_data(chunk)
        return moved


def test_one_mib_unary_call_round_trip_through_windows_and_frames() -> None:
    pair = Pair(seed=11, max_chunk=30_000)
    request = random.Random(1).randbytes(1_200_000)
    response = random.Random(2).randbytes(1_100_000)

    sid = pair.client.open_stream()
    call = drpc.UnaryCall("/coder.agent.v2.Agent/BatchCreateLogs", request)
    pair.client.send(sid, call.data_to_send())
    server_streams: dict[int, drpc.ServerStream] = {}

    for _ in range(1000):
        moved = pair.pump()
        # Server application: read everything delivered, reply when the request is in.
        for ev in pair.server_events:
            if isinstance(ev, yamux.StreamOpened):
                server_streams[ev.stream_id] = drpc.ServerStream()
            elif isinstance(ev, yamux.StreamData):
                pair.server.consume(ev.stream_id, len(ev.data))
                stream = server_streams[ev.stream_id]
                for sev in stream.receive_data(ev.data):
                    if isinstance(sev, drpc.RequestReceived):
                        assert sev.request == request
                        stream.reply(response)
                        pair.server.send(ev.stream_id, stream.data_to_send())
        pair.server_events.clear()
        for ev in pair.client_events:
            if isinstance(ev, yamux.StreamData):
                pair.client.consume(ev.stream_id, len(ev.data))
                call.receive_data(ev.data)
        pair.client_events.clear()
        if call.finished and not moved:
            break
    assert call.result() == response

    data_frames = [f for f in pair.wire_frames if f[0] == FrameType.DATA]
    updates = [f for f in pair.wire_frames if f[0] == FrameType.WINDOW_UPDATE and f[3] > 0]
    assert max(f[3] for f in data_frames) <= W
    # Both directions needed credit several times to move > 1 MiB through 256 KiB.
    assert len({f[2] for f in updates}) == 1 and len(updates) >= 2 * 4
    # Every credit is at least half a window, as Go sends it.
    assert all(f[3] >= W // 2 for f in updates)


def test_concurrent_streams_interleave_independently() -> None:
    pair = Pair(seed=3, max_chunk=7)
    ids = [pair.client.open_stream() for _ in range(4)]
    for i, sid in enumerate(ids):
        pair.client.send(sid, bytes([i]) * (1000 * (i + 1)))
        pair.client.close_stream(sid)
    while pair.pump():
        pass
    data, other = coalesce(pair.server_events)
    assert {sid: len(d) for sid, d in data.items()} == {1: 1000, 3: 2000, 5: 3000, 7: 4000}
    assert [e for e in other if isinstance(e, yamux.StreamOpened)] == [yamux.StreamOpened(s) for s in ids]
    assert [e for e in other if isinstance(e, yamux.StreamEnded)] == [yamux.StreamEnded(s) for s in ids]
    assert all(isinstance(e, yamux.StreamAccepted) for e in pair.client_events)


# ---- pings -----------------------------------------------------------------------------


def test_ping_is_answered_automatically() -> None:
    client = Session(client=True)
    sid = client.open_stream()
    client.data_to_send()
    client.send(sid, b"q" * (W + 1))  # blocked data must not delay the answer
    client.data_to_send()
    assert client.receive_data(hdr(2, Flag.SYN, 0, 77)) == [yamux.PingReceived(77)]
    assert client.data_to_send() == hdr(2, Flag.ACK, 0, 77)


def test_our_pings_are_matched_by_id() -> None:
    pair = Pair()
    first, second = pair.client.ping(), pair.client.ping()
    assert (first, second) == (0, 1)
    assert pair.client.data_to_send() == hdr(2, Flag.SYN, 0, 0) + hdr(2, Flag.SYN, 0, 1)
    # Only acks for pings we sent count; a repeat ack is ignored.
    assert pair.client.receive_data(
        hdr(2, Flag.ACK, 0, 1) + hdr(2, Flag.ACK, 0, 1) + hdr(2, Flag.ACK, 0, 9)
    ) == [yamux.PingAcked(1)]


def test_server_session_pings_client_session() -> None:
    pair = Pair()
    ping_id = pair.server.ping()
    pair.pump()
    pair.pump()
    assert pair.client_events == [yamux.PingReceived(ping_id)]
    assert pair.server_events == [yamux.PingAcked(ping_id)]


# ---- go away ---------------------------------------------------------------------------


def test_go_away_sent_refuses_new_inbound_streams() -> None:
    server = Session(client=False)
    server.receive_data(hdr(1, Flag.SYN, 1, 0))
    server.data_to_send()
    server.go_away()
    server.go_away(2)  # only the first is sent
    assert server.data_to_send() == hdr(3, 0, 0, 0)
    assert server.local_go_away == 0
    # A new stream after our GoAway is reset, its data dropped; the old one still works.
    events = server.receive_data(data_frame(3, b"late", Flag.SYN) + data_frame(1, b"ok"))
    assert events == [yamux.StreamData(1, b"ok")]
    assert server.data_to_send() == hdr(1, Flag.RST, 3, 0)
    with pytest.raises(yamux.SessionClosedError):
        server.open_stream()


def test_go_away_received() -> None:
    client = Session(client=True)
    sid = client.open_stream()
    assert client.receive_data(hdr(3, 0, 0, 2)) == [yamux.GoAwayReceived(2)]
    assert client.remote_go_away == yamux.GoAwayCode.INTERNAL_ERROR
    with pytest.raises(yamux.SessionClosedError):
        client.open_stream()
    client.send(sid, b"existing streams continue")


# ---- reset -----------------------------------------------------------------------------


def test_reset_drops_queue_and_later_frames() -> None:
    client = Session(client=True)
    sid = client.open_stream()
    client.data_to_send()
    client.send(sid, b"p" * (W + 100))
    client.data_to_send()
    # Body of a data frame split across reads, with our RST in between.
    raw = data_frame(sid, b"0123456789")
    assert client.receive_data(raw[:15]) == [yamux.StreamData(sid, b"012")]
    client.reset_stream(sid)
    assert client.data_to_send() == hdr(1, Flag.RST, sid, 0)
    assert client.receive_data(raw[15:]) == []
    assert client.receive_data(data_frame(sid, b"crossed") + hdr(1, 0, sid, 999)) == []
    assert client.data_to_send() == b""
    with pytest.raises(yamux.StreamError):
        client.send(sid, b"x")
    client.reset_stream(sid)  # idempotent
    client.consume(sid, 3)  # reading leftovers of a gone stream is harmless


def test_rst_from_peer() -> None:
    client = Session(client=True)
    sid = client.open_stream()
    client.data_to_send()
    client.send(sid, b"p" * (W + 100))
    client.data_to_send()
    assert client.receive_data(hdr(1, Flag.RST, sid, 0)) == [yamux.StreamReset(sid)]
    assert client.send_queued(sid) == 0
    assert client.receive_data(hdr(1, 0, sid, 1000)) == []
    assert client.data_to_send() == b""


def test_fin_on_data_frame_applies_after_payload() -> None:
    server = Session(client=False)
    raw = data_frame(1, b"last words", Flag.SYN | Flag.FIN)
    events = feed(server, [raw[:14], raw[14:]])
    assert coalesce(events) == ({1: b"last words"}, [yamux.StreamOpened(1), yamux.StreamEnded(1)])
    assert server.stream_state(1) is yamux.StreamState.REMOTE_CLOSED
    server.send(1, b"reply")  # half-closed by the peer: we may still talk
    server.close_stream(1)
    assert server.stream_state(1) is None


# ---- protocol errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("client", "raw", "match"),
    [
        (True, b"\x01" + hdr(1, 0, 1, 0)[1:], "version"),
        (True, hdr(4, 0, 0, 0), "frame type"),
        (True, hdr(1, Flag.SYN, 1, 0), "parity"),
        (False, hdr(1, Flag.SYN, 2, 0), "parity"),
        (False, hdr(1, Flag.SYN, 1, 0) + hdr(1, Flag.SYN, 1, 0), "duplicate"),
        (False, hdr(0, Flag.SYN, 0, 1) + b"x", "stream 0"),
        (False, hdr(1, Flag.SYN | Flag.FIN, 1, 0) + data_frame(1, b"x"), "after FIN"),
        (False, hdr(1, Flag.SYN | Flag.FIN, 1, 0) + hdr(1, Flag.FIN, 1, 0), "second FIN"),
    ],
)
def test_protocol_errors(client: bool, raw: bytes, match: str) -> None:
    session = Session(client=client)
    with pytest.raises(yamux.YamuxProtocolError, match=match):
        feed(session, [raw[i : i + 1] for i in range(len(raw))])
    assert session.data_to_send().endswith(hdr(3, 0, 0, 1))
    assert session.terminated is not None


def test_protocol_error_keeps_events_decoded_before_it() -> None:
    server = Session(client=False)
    with pytest.raises(yamux.YamuxProtocolError) as info:
        server.receive_data(data_frame(1, b"kept", Flag.SYN) + hdr(9, 0, 0, 0))
    assert info.value.events == [yamux.StreamOpened(1), yamux.StreamData(1, b"kept")]


def test_api_misuse() -> None:
    client = Session(client=True)
    with pytest.raises(yamux.StreamError):
        client.send(99, b"x")
    client.close_stream(99)  # unknown: no-op
    with pytest.raises(ValueError):
        yamux.encode_frame(FrameType.DATA, Flag.NONE, 1, 3, b"xy")


# ---- re-chunking property --------------------------------------------------------------


def _server_input(payloads: list[tuple[int, bytes]]) -> bytes:
    """A plausible client byte stream: SYNs, data, pings and FINs for streams 1, 3, 5."""
    raw = b"".join(hdr(1, Flag.SYN, sid, 0) for sid in (1, 3, 5))
    for i, (idx, payload) in enumerate(payloads):
        raw += data_frame((1, 3, 5)[idx], payload)
        if i % 3 == 0:
            raw += hdr(2, Flag.SYN, 0, i)
    return raw + hdr(1, Flag.FIN, 3, 0)


@settings(max_examples=150, deadline=None)
@given(
    payloads=st.lists(
        st.tuples(st.integers(min_value=0, max_value=2), st.binary(min_size=1, max_size=200)), max_size=12
    ),
    seed=st.integers(min_value=0, max_value=2**32),
    max_chunk=st.integers(min_value=1, max_value=64),
)
def test_rechunking_does_not_change_what_is_decoded(
    payloads: list[tuple[int, bytes]], seed: int, max_chunk: int
) -> None:
    raw = _server_input(payloads)
    whole = Session(client=False)
    expected = coalesce(whole.receive_data(raw))
    expected_out = whole.data_to_send()
    chunked = Session(client=False)
    got = coalesce(feed(chunked, rechunk(raw, random.Random(seed), max_chunk)))
    assert got == expected
    assert chunked.data_to_send() == expected_out
    want: dict[int, bytes] = defaultdict(bytes)
    for idx, payload in payloads:
        want[(1, 3, 5)[idx]] += payload
    assert got[0] == dict(want)
