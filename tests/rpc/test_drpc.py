"""Pure tests of the dRPC core: byte-exact vectors, re-chunking, ids, errors, unary calls."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coder_agent.rpc import drpc
from coder_agent.rpc.drpc import Kind, Packet

GET_MANIFEST = "/coder.agent.v2.Agent/GetManifest"
# shared/protocol/coder-agent-rpc.md §3.4: Invoke + Message + CloseSend, 45 bytes.
GET_MANIFEST_REQUEST = bytes.fromhex(
    "03 01 01 21 2f 63 6f 64 65 72 2e 61 67 65 6e 74 2e 76 32 2e 41 67 65 6e 74 2f"
    " 47 65 74 4d 61 6e 69 66 65 73 74 05 01 02 00 0d 01 03 00"
)


def rechunk(data: bytes, rng: random.Random, max_chunk: int = 17) -> list[bytes]:
    out, i = [], 0
    while i < len(data):
        n = rng.randint(1, max_chunk)
        out.append(data[i : i + n])
        i += n
    return out


def byte_by_byte(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


# ---- varints ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, "00"),
        (1, "01"),
        (127, "7f"),
        (128, "80 01"),
        (300, "ac 02"),
        (16384, "80 80 01"),
        ((1 << 64) - 1, "ff ff ff ff ff ff ff ff ff 01"),
    ],
)
def test_varint_vectors(value: int, encoded: str) -> None:
    raw = bytes.fromhex(encoded)
    assert drpc.encode_varint(value) == raw
    assert drpc.decode_varint(raw) == (value, len(raw))
    assert drpc.decode_varint(raw[:-1]) is None


def test_varint_longer_than_ten_bytes_is_a_protocol_error() -> None:
    with pytest.raises(drpc.DrpcProtocolError, match="too long"):
        drpc.decode_varint(b"\x80" * 10 + b"\x01")


def test_varint_past_64_bits_is_a_protocol_error() -> None:
    with pytest.raises(drpc.DrpcProtocolError):
        drpc.decode_varint(b"\xff" * 9 + b"\x02")


def test_varint_rejects_out_of_range_values() -> None:
    with pytest.raises(ValueError):
        drpc.encode_varint(-1)
    with pytest.raises(ValueError):
        drpc.encode_varint(1 << 64)


# ---- frames ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "control", "byte0"),
    [
        (Kind.INVOKE, False, 0x03),
        (Kind.MESSAGE, False, 0x05),
        (Kind.ERROR, False, 0x07),
        (Kind.CANCEL, True, 0x89),
        (Kind.CLOSE, False, 0x0B),
        (Kind.CLOSE_SEND, False, 0x0D),
        (Kind.INVOKE_METADATA, False, 0x0F),
    ],
)
def test_control_byte_per_kind(kind: Kind, control: bool, byte0: int) -> None:
    raw = drpc.encode_frame(drpc.Frame(kind, 1, 1, b"", done=True, control=control))
    assert raw == bytes((byte0, 1, 1, 0))
    frame, end = drpc.parse_frame(raw) or (None, 0)
    assert frame == drpc.Frame(kind, 1, 1, b"", done=True, control=control)
    assert end == 4


def test_not_done_frame_clears_bit0() -> None:
    assert drpc.encode_frame(drpc.Frame(Kind.MESSAGE, 1, 2, b"x", done=False))[:1] == b"\x04"


def test_get_manifest_request_vector() -> None:
    call = drpc.UnaryCall(GET_MANIFEST, b"")
    assert call.data_to_send() == GET_MANIFEST_REQUEST
    assert call.data_to_send() == b""


def test_request_in_pieces_is_the_same_message_as_a_request_whole() -> None:
    data = bytes(random.Random(3).randbytes(200 * 1024))
    whole = drpc.UnaryCall("/s/M", data)
    pieced = drpc.UnaryCall("/s/M", None)
    first = pieced.data_to_send()
    assert first == drpc.encode_packet(Packet(Kind.INVOKE, 1, 1, b"/s/M"))  # Invoke only, until pieces come
    cuts = [0, 10, 70_000, 70_001, 150_000, len(data)]
    for a, b in itertools.pairwise(cuts):
        pieced.send_request_piece(data[a:b], last=b == len(data))
    with pytest.raises(RuntimeError, match="complete"):
        pieced.send_request_piece(b"more", last=True)
    def packets(raw: bytes) -> list[Packet]:
        return drpc.PacketReader().receive_data(raw)
    rest = pieced.data_to_send()
    assert packets(first + rest) == packets(whole.data_to_send())
    assert [p.kind for p in packets(first + rest)] == [Kind.INVOKE, Kind.MESSAGE, Kind.CLOSE_SEND]


def test_frame_length_checked_before_buffering() -> None:
    header = b"\x05\x01\x01" + drpc.encode_varint(drpc.MAX_PACKET_SIZE + 1)
    with pytest.raises(drpc.DrpcProtocolError, match="exceeds"):
        drpc.parse_frame(header)


# ---- packets: splitting and reassembly --------------------------------------------------


def test_large_packet_splits_into_64k_frames_and_reassembles() -> None:
    data = bytes(random.Random(1).randbytes(150 * 1024))
    raw = drpc.encode_packet(Packet(Kind.MESSAGE, 1, 1, data))
    frames = []
    pos = 0
    while pos < len(raw):
        got = drpc.parse_frame(raw, pos)
        assert got is not None
        frame, pos = got
        frames.append(frame)
    assert [len(f.data) for f in frames] == [65536, 65536, 150 * 1024 - 131072]
    assert [f.done for f in frames] == [False, False, True]
    assert {(f.stream_id, f.message_id, f.kind) for f in frames} == {(1, 1, Kind.MESSAGE)}
    reader = drpc.PacketReader()
    got_packets = []
    for chunk in rechunk(raw, random.Random(2), max_chunk=5000):
        got_packets += reader.receive_data(chunk)
    assert got_packets == [Packet(Kind.MESSAGE, 1, 1, data)]


def test_empty_packet_is_one_done_frame() -> None:
    assert drpc.encode_packet(Packet(Kind.CLOSE_SEND, 1, 3)) == b"\x0d\x01\x03\x00"


def test_exactly_64k_is_one_frame() -> None:
    raw = drpc.encode_packet(Packet(Kind.MESSAGE, 1, 1, b"a" * 65536))
    assert raw[0] == 0x05
    assert len(raw) == 1 + 1 + 1 + 3 + 65536


def test_reader_byte_by_byte() -> None:
    reader = drpc.PacketReader()
    packets = []
    for b in byte_by_byte(GET_MANIFEST_REQUEST):
        packets += reader.receive_data(b)
    assert packets == [
        Packet(Kind.INVOKE, 1, 1, GET_MANIFEST.encode()),
        Packet(Kind.MESSAGE, 1, 2, b""),
        Packet(Kind.CLOSE_SEND, 1, 3, b""),
    ]


def test_packet_over_max_size_is_rejected() -> None:
    reader = drpc.PacketReader(max_packet_size=100)
    raw = drpc.encode_packet(Packet(Kind.MESSAGE, 1, 1, b"x" * 150), split_size=60)
    with pytest.raises(drpc.DrpcProtocolError, match="exceeds"):
        reader.receive_data(raw)


# ---- ids -------------------------------------------------------------------------------


def frame(
    kind: Kind, sid: int, mid: int, data: bytes = b"", done: bool = True, control: bool = False
) -> bytes:
    return drpc.encode_frame(drpc.Frame(kind, sid, mid, data, done=done, control=control))


def test_message_id_going_backwards_is_rejected() -> None:
    reader = drpc.PacketReader()
    assert len(reader.receive_data(frame(Kind.MESSAGE, 1, 2, b"a"))) == 1
    with pytest.raises(drpc.DrpcProtocolError, match="monotonicity"):
        reader.receive_data(frame(Kind.MESSAGE, 1, 1, b"b"))
    # A failed reader stays failed: the transport must be torn down.
    with pytest.raises(drpc.DrpcProtocolError):
        reader.receive_data(frame(Kind.MESSAGE, 1, 5, b"c"))


def test_reusing_a_finished_message_id_is_rejected() -> None:
    reader = drpc.PacketReader()
    reader.receive_data(frame(Kind.MESSAGE, 1, 1, b"a"))
    with pytest.raises(drpc.DrpcProtocolError, match="monotonicity"):
        reader.receive_data(frame(Kind.MESSAGE, 1, 1, b"a"))


def test_stream_zero_is_never_valid() -> None:
    with pytest.raises(drpc.DrpcProtocolError, match="monotonicity"):
        drpc.PacketReader().receive_data(frame(Kind.MESSAGE, 0, 5))


def test_higher_id_discards_a_half_built_packet() -> None:
    reader = drpc.PacketReader()
    raw = frame(Kind.MESSAGE, 1, 1, b"partial", done=False) + frame(Kind.MESSAGE, 1, 2, b"whole")
    assert reader.receive_data(raw) == [Packet(Kind.MESSAGE, 1, 2, b"whole")]


def test_kind_change_inside_a_packet_is_rejected() -> None:
    reader = drpc.PacketReader()
    with pytest.raises(drpc.DrpcProtocolError, match="kind change"):
        reader.receive_data(frame(Kind.MESSAGE, 1, 1, b"a", done=False) + frame(Kind.ERROR, 1, 1, b"b"))


def test_unknown_control_frames_are_ignored_and_cancel_surfaces() -> None:
    reader = drpc.PacketReader()
    raw = (
        bytes((0x80 | (0x21 << 1) | 1,))
        + b"\x01\x09\x02hi"  # control kind 33: unknown
        + frame(Kind.MESSAGE, 1, 1, b"m")
        + frame(Kind.CANCEL, 1, 2, control=True)
    )
    assert reader.receive_data(raw) == [
        Packet(Kind.MESSAGE, 1, 1, b"m"),
        Packet(Kind.CANCEL, 1, 2, b"", control=True),
    ]


def test_writer_numbers_every_packet() -> None:
    writer = drpc.PacketWriter()
    out = writer.packet(Kind.INVOKE, b"/a/b") + writer.packet(Kind.MESSAGE) + writer.packet(Kind.CLOSE_SEND)
    packets = drpc.PacketReader().receive_data(out)
    assert [(p.kind, p.message_id) for p in packets] == [(1, 1), (2, 2), (6, 3)]


@settings(max_examples=150, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=300), min_size=1, max_size=8),
    split=st.integers(min_value=1, max_value=64),
    seed=st.integers(min_value=0, max_value=2**32),
    max_chunk=st.integers(min_value=1, max_value=50),
)
def test_rechunking_property(payloads: list[bytes], split: int, seed: int, max_chunk: int) -> None:
    writer = drpc.PacketWriter(split_size=split)
    raw = b"".join(writer.packet(Kind.MESSAGE, p) for p in payloads)
    reader = drpc.PacketReader()
    got: list[Packet] = []
    for chunk in rechunk(raw, random.Random(seed), max_chunk):
        got += reader.receive_data(chunk)
    assert [p.data for p in got] == payloads
    assert [p.message_id for p in got] == list(range(1, len(payloads) + 1))
    assert reader.buffered == 0


# ---- errors ----------------------------------------------------------------------------


def test_error_encoding() -> None:
    assert drpc.encode_error(12, "Unimplemented") == bytes(7) + b"\x0cUnimplemented"
    assert drpc.decode_error(bytes(7) + b"\x0cUnimplemented") == (12, "Unimplemented")


def test_short_error_data_is_text() -> None:
    code, text = drpc.decode_error(b"boom")
    assert code == 0
    assert text.startswith("boom") and "invalid error data" in text


@pytest.mark.parametrize(
    ("code", "text", "cls"),
    [
        (12, "Unimplemented", drpc.RpcUnimplemented),
        (0, 'protocol error: unknown rpc: "/coder.agent.v2.Agent/X"', drpc.RpcUnimplemented),
        (0, "agent not found", drpc.RpcError),
    ],
)
def test_rpc_error_classification(code: int, text: str, cls: type[drpc.RpcError]) -> None:
    err = drpc.rpc_error(code, text)
    assert type(err) is cls
    assert (err.code, err.message) == (code, text)


# ---- client unary call -----------------------------------------------------------------


def test_unary_call_response_vector_byte_by_byte() -> None:
    manifest = b"\x0a\x10" + bytes(range(16))  # agent_id field, 16 bytes
    reply = b"\x05\x01\x01" + bytes((len(manifest),)) + manifest + b"\x0d\x01\x02\x00"
    call = drpc.UnaryCall(GET_MANIFEST, b"")
    for b in byte_by_byte(reply):
        assert not call.finished or call.result() == manifest
        call.receive_data(b)
    assert call.finished
    assert call.result() == manifest


def test_unary_call_finishes_at_the_message_without_closesend() -> None:
    call = drpc.UnaryCall(GET_MANIFEST, b"")
    call.receive_data(b"\x05\x01\x01\x02hi")
    assert call.finished and call.result() == b"hi"


def test_unary_call_big_response_across_frames() -> None:
    body = random.Random(3).randbytes(300_000)
    raw = drpc.encode_packet(Packet(Kind.MESSAGE, 1, 1, body)) + b"\x0d\x01\x02\x00"
    call = drpc.UnaryCall(GET_MANIFEST, b"")
    for chunk in rechunk(raw, random.Random(4), max_chunk=70_000):
        call.receive_data(chunk)
    assert call.result() == body


def test_unary_call_error_packet() -> None:
    call = drpc.UnaryCall("/coder.agent.v2.Agent/PushContextState", b"\x08\x01")
    text = b"Unimplemented"
    call.receive_data(b"\x07\x01\x01" + bytes((8 + len(text),)) + (12).to_bytes(8, "big") + text)
    assert call.finished
    with pytest.raises(drpc.RpcUnimplemented) as info:
        call.result()
    assert info.value.code == 12 and info.value.message == "Unimplemented"


def test_unary_call_plain_error() -> None:
    call = drpc.UnaryCall("/coder.agent.v2.Agent/UpdateStartup", b"")
    call.receive_data(drpc.encode_packet(Packet(Kind.ERROR, 1, 1, drpc.encode_error(0, "invalid version"))))
    with pytest.raises(drpc.RpcError) as info:
        call.result()
    assert not isinstance(info.value, drpc.RpcUnimplemented)
    assert info.value.message == "invalid version"


def test_unary_call_closesend_without_reply_fails() -> None:
    call = drpc.UnaryCall(GET_MANIFEST, b"")
    call.receive_data(b"\x0d\x01\x01\x00")
    assert call.finished
    with pytest.raises(drpc.DrpcProtocolError, match="without a reply"):
        call.result()


def test_unary_call_eof_before_reply_fails() -> None:
    call = drpc.UnaryCall(GET_MANIFEST, b"")
    with pytest.raises(RuntimeError):
        call.result()
    call.receive_eof()
    with pytest.raises(drpc.DrpcProtocolError, match="ended before"):
        call.result()


def test_unary_call_surfaces_framing_errors() -> None:
    call = drpc.UnaryCall(GET_MANIFEST, b"")
    with pytest.raises(drpc.DrpcProtocolError):
        call.receive_data(b"\x05\x00\x01\x00")  # stream 0
    with pytest.raises(drpc.DrpcProtocolError):
        call.result()


def test_unary_call_requires_full_method_path() -> None:
    with pytest.raises(ValueError):
        drpc.UnaryCall("GetManifest", b"")


# ---- server stream ---------------------------------------------------------------------


def test_server_stream_parses_the_get_manifest_request_byte_by_byte() -> None:
    server = drpc.ServerStream()
    events: list[drpc.ServerEvent] = []
    for b in byte_by_byte(GET_MANIFEST_REQUEST):
        events += server.receive_data(b)
    assert events == [
        drpc.InvokeReceived(GET_MANIFEST),
        drpc.RequestReceived(GET_MANIFEST, b""),
        drpc.CloseSendReceived(),
    ]
    server.reply(b"xyz")
    assert server.data_to_send() == bytes.fromhex("05 01 01 03 78 79 7a 0d 01 02 00")
    assert server.replied
    # The optional trailing Close(1,4) from a Go client is tolerated.
    assert server.receive_data(b"\x0b\x01\x04\x00") == [drpc.CloseReceived()]


def test_server_stream_error_reply_vector() -> None:
    server = drpc.ServerStream()
    server.receive_data(GET_MANIFEST_REQUEST)
    server.reply_error(12, "Unimplemented")
    assert server.data_to_send() == b"\x07\x01\x01\x15" + (12).to_bytes(8, "big") + b"Unimplemented"


def test_server_stream_splits_big_replies_and_client_reassembles() -> None:
    server = drpc.ServerStream()
    server.receive_data(GET_MANIFEST_REQUEST)
    body = random.Random(5).randbytes(200_000)
    server.reply(body)
    raw = server.data_to_send()
    assert raw[0] == 0x04  # first frame not done
    call = drpc.UnaryCall(GET_MANIFEST, b"")
    call.receive_data(raw)
    assert call.result() == body


def test_server_stream_reply_before_request_is_refused() -> None:
    server = drpc.ServerStream()
    with pytest.raises(RuntimeError):
        server.reply(b"")


def test_server_stream_message_before_invoke_is_a_protocol_error() -> None:
    with pytest.raises(drpc.DrpcProtocolError):
        drpc.ServerStream().receive_data(b"\x05\x01\x01\x00")


def test_server_stream_second_request_is_a_protocol_error() -> None:
    server = drpc.ServerStream()
    server.receive_data(GET_MANIFEST_REQUEST[:-4])  # Invoke + Message
    with pytest.raises(drpc.DrpcProtocolError):
        server.receive_data(b"\x05\x01\x03\x00")


def test_server_stream_rejects_backwards_ids() -> None:
    server = drpc.ServerStream()
    server.receive_data(GET_MANIFEST_REQUEST[:-8])  # Invoke only
    with pytest.raises(drpc.DrpcProtocolError, match="monotonicity"):
        server.receive_data(b"\x05\x01\x01\x00")


def test_server_stream_big_request_and_metadata() -> None:
    request = random.Random(6).randbytes(150_000)
    writer = drpc.PacketWriter()
    raw = (
        writer.packet(Kind.INVOKE_METADATA, b"\x08\x01")
        + writer.packet(Kind.INVOKE, b"/coder.agent.v2.Agent/BatchCreateLogs")
        + writer.packet(Kind.MESSAGE, request)
        + writer.packet(Kind.CLOSE_SEND)
    )
    server = drpc.ServerStream()
    events: list[drpc.ServerEvent] = []
    for chunk in rechunk(raw, random.Random(7), max_chunk=9000):
        events += server.receive_data(chunk)
    assert events == [
        drpc.InvokeReceived("/coder.agent.v2.Agent/BatchCreateLogs", b"\x08\x01"),
        drpc.RequestReceived("/coder.agent.v2.Agent/BatchCreateLogs", request),
        drpc.CloseSendReceived(),
    ]


def test_server_stream_rejects_overlong_varints() -> None:
    with pytest.raises(drpc.DrpcProtocolError, match="too long"):
        drpc.ServerStream().receive_data(b"\x03" + b"\x80" * 11)


# ---- streams (§3.6) ----------------------------------------------------------------------

STREAM_DERP_MAPS = "/coder.tailnet.v2.Tailnet/StreamDERPMaps"
COORDINATE = "/coder.tailnet.v2.Tailnet/Coordinate"
# Invoke(1,1) + empty request Message(1,2) + CloseSend(1,3), as Go's generated client sends them.
STREAM_DERP_MAPS_REQUEST = (
    b"\x03\x01\x01\x28" + STREAM_DERP_MAPS.encode() + bytes.fromhex("05 01 02 00 0d 01 03 00")
)


def test_stream_method_lengths_in_vectors() -> None:
    # The length bytes above are written out by hand; make sure they are the method lengths.
    assert len(STREAM_DERP_MAPS) == 0x28 and len(COORDINATE) == 0x24


def test_server_stream_request_vector() -> None:
    call = drpc.ClientStream.server_stream(STREAM_DERP_MAPS, b"")
    assert call.data_to_send() == STREAM_DERP_MAPS_REQUEST
    assert call.send_closed
    with pytest.raises(RuntimeError):
        call.send_message(b"late")


def test_server_stream_messages_until_close_send_byte_by_byte() -> None:
    reply = bytes.fromhex("05 01 01 02 0a 00  05 01 02 03 0a 01 7a  0d 01 03 00")
    call = drpc.ClientStream.server_stream(STREAM_DERP_MAPS, b"")
    events: list[drpc.StreamEvent] = []
    for b in byte_by_byte(reply):
        events += call.receive_data(b)
    assert events == [
        drpc.StreamMessage(b"\x0a\x00"),
        drpc.StreamMessage(b"\x0a\x01\x7a"),
        drpc.StreamEnded("close_send"),
    ]
    assert call.ended == drpc.StreamEnded("close_send")
    # Nothing after the end is delivered, not even a well-formed message.
    assert call.receive_data(b"\x05\x01\x04\x01x") == []
    assert call.receive_eof() == []


@pytest.mark.parametrize(
    ("raw", "how", "error_type"),
    [
        (b"\x07\x01\x02\x0c" + (0).to_bytes(8, "big") + b"boom", "error", drpc.RpcError),
        (b"\x07\x01\x02\x15" + (12).to_bytes(8, "big") + b"Unimplemented", "error", drpc.RpcUnimplemented),
        (b"\x0b\x01\x02\x00", "close", None),
        (b"\x89\x01\x02\x00", "close", None),  # Cancel (control bit)
    ],
)
def test_server_stream_ends_on_error_close_and_cancel(
    raw: bytes, how: str, error_type: type[drpc.RpcError] | None
) -> None:
    call = drpc.ClientStream.server_stream(STREAM_DERP_MAPS, b"")
    events = call.receive_data(b"\x05\x01\x01\x01m" + raw)
    assert events[0] == drpc.StreamMessage(b"m")
    end = events[1]
    assert isinstance(end, drpc.StreamEnded) and end.how == how
    if error_type is None:
        assert end.error is None
    else:
        assert type(end.error) is error_type


def test_server_stream_eof_without_close_send() -> None:
    call = drpc.ClientStream.server_stream(STREAM_DERP_MAPS, b"")
    call.receive_data(b"\x05\x01\x01\x00")
    [end] = call.receive_eof()
    assert isinstance(end, drpc.StreamEnded) and end.how == "eof"
    assert isinstance(end.error, drpc.DrpcProtocolError)


def test_client_stream_framing_error_ends_the_stream() -> None:
    call = drpc.ClientStream(COORDINATE)
    with pytest.raises(drpc.DrpcProtocolError):
        call.receive_data(b"\x05\x00\x01\x00")  # stream 0
    assert call.ended is not None and call.ended.how == "eof"


def test_bidi_stream_vector() -> None:
    call = drpc.ClientStream(COORDINATE)
    assert call.data_to_send() == b"\x03\x01\x01\x24" + COORDINATE.encode()
    call.send_message(b"\x0a\x00")  # CoordinateRequest{update_self{}}
    call.send_message(b"\x12\x00")  # CoordinateRequest{disconnect{}}
    assert call.data_to_send() == bytes.fromhex("05 01 02 02 0a 00  05 01 03 02 12 00")
    # Messages from the server interleave with ours; ids count per direction.
    assert call.receive_data(b"\x05\x01\x01\x00") == [drpc.StreamMessage(b"")]
    call.close_send()
    call.close_send()  # idempotent
    assert call.data_to_send() == b"\x0d\x01\x04\x00"
    assert call.receive_data(b"\x05\x01\x02\x01z") == [drpc.StreamMessage(b"z")]
    call.close()
    assert call.data_to_send() == b"\x0b\x01\x05\x00"
    assert call.ended == drpc.StreamEnded("close")
    call.close()
    assert call.data_to_send() == b""


def test_bidi_stream_refuses_sends_after_close_send() -> None:
    call = drpc.ClientStream(COORDINATE)
    call.close_send()
    with pytest.raises(RuntimeError):
        call.send_message(b"")


def test_bidi_stream_big_message_is_split() -> None:
    call = drpc.ClientStream(COORDINATE)
    call.data_to_send()
    body = random.Random(8).randbytes(100_000)
    call.send_message(body)
    raw = call.data_to_send()
    assert raw[0] == 0x04  # first frame not done
    assert drpc.PacketReader().receive_data(raw) == [Packet(Kind.MESSAGE, 1, 2, body)]


@settings(max_examples=150, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=200), max_size=8),
    split=st.integers(min_value=1, max_value=64),
    seed=st.integers(min_value=0, max_value=2**32),
    max_chunk=st.integers(min_value=1, max_value=40),
    ending=st.sampled_from(["close_send", "error", "close"]),
)
def test_server_stream_rechunking_property(
    payloads: list[bytes], split: int, seed: int, max_chunk: int, ending: str
) -> None:
    server = drpc.ServerStream(streaming={STREAM_DERP_MAPS}, split_size=split)
    server.receive_data(STREAM_DERP_MAPS_REQUEST)
    for p in payloads:
        server.send_message(p)
    if ending == "close_send":
        server.close_send()
    elif ending == "error":
        server.send_error(0, "bye")
    else:
        server.close()
    call = drpc.ClientStream.server_stream(STREAM_DERP_MAPS, b"")
    events: list[drpc.StreamEvent] = []
    for chunk in rechunk(server.data_to_send(), random.Random(seed), max_chunk):
        events += call.receive_data(chunk)
    assert [e.data for e in events if isinstance(e, drpc.StreamMessage)] == payloads
    assert isinstance(events[-1], drpc.StreamEnded) and events[-1].how == ending


@settings(max_examples=150, deadline=None)
@given(
    ups=st.lists(st.binary(max_size=200), max_size=6),
    downs=st.lists(st.binary(max_size=200), max_size=6),
    split=st.integers(min_value=1, max_value=64),
    seed=st.integers(min_value=0, max_value=2**32),
    max_chunk=st.integers(min_value=1, max_value=40),
)
def test_bidi_rechunking_property(
    ups: list[bytes], downs: list[bytes], split: int, seed: int, max_chunk: int
) -> None:
    rng = random.Random(seed)
    client = drpc.ClientStream(COORDINATE, split_size=split)
    server = drpc.ServerStream(streaming={COORDINATE}, split_size=split)
    for p in ups:
        client.send_message(p)
    client.close_send()
    server_events: list[drpc.ServerEvent] = []
    for chunk in rechunk(client.data_to_send(), rng, max_chunk):
        server_events += server.receive_data(chunk)
    assert server_events == [
        drpc.InvokeReceived(COORDINATE),
        *[drpc.MessageReceived(p) for p in ups],
        drpc.CloseSendReceived(),
    ]
    assert server.client_done
    for p in downs:
        server.send_message(p)
    server.close()
    client_events: list[drpc.StreamEvent] = []
    for chunk in rechunk(server.data_to_send(), rng, max_chunk):
        client_events += client.receive_data(chunk)
    assert client_events == [*[drpc.StreamMessage(p) for p in downs], drpc.StreamEnded("close")]


def test_server_streaming_events_and_reply_vectors_byte_by_byte() -> None:
    server = drpc.ServerStream(streaming={COORDINATE})
    raw = b"\x03\x01\x01\x24" + COORDINATE.encode() + bytes.fromhex("05 01 02 02 0a 00  05 01 03 00  0d 01 04 00")
    events: list[drpc.ServerEvent] = []
    for b in byte_by_byte(raw):
        events += server.receive_data(b)
    assert events == [
        drpc.InvokeReceived(COORDINATE),
        drpc.MessageReceived(b"\x0a\x00"),
        drpc.MessageReceived(b""),
        drpc.CloseSendReceived(),
    ]
    assert server.streaming and not server.replied
    server.send_message(b"\x0a\x00")
    server.send_message(b"")
    assert server.data_to_send() == bytes.fromhex("05 01 01 02 0a 00  05 01 02 00")
    server.close()
    assert server.data_to_send() == b"\x0b\x01\x03\x00"
    assert server.replied
    server.close()  # idempotent
    assert server.data_to_send() == b""
    with pytest.raises(RuntimeError):
        server.send_message(b"")


def test_server_streaming_close_send_and_error_vectors() -> None:
    server = drpc.ServerStream(streaming={STREAM_DERP_MAPS})
    server.receive_data(STREAM_DERP_MAPS_REQUEST)
    server.close_send()
    assert server.data_to_send() == b"\x0d\x01\x01\x00"
    with pytest.raises(RuntimeError):
        server.send_error(0, "late")
    server = drpc.ServerStream(streaming={STREAM_DERP_MAPS})
    server.receive_data(STREAM_DERP_MAPS_REQUEST)
    server.send_error(0, "no")
    assert server.data_to_send() == b"\x07\x01\x01\x0a" + bytes(8) + b"no"


def test_server_streaming_message_after_close_send_is_a_protocol_error() -> None:
    server = drpc.ServerStream(streaming={STREAM_DERP_MAPS})
    server.receive_data(STREAM_DERP_MAPS_REQUEST)
    with pytest.raises(drpc.DrpcProtocolError):
        server.receive_data(b"\x05\x01\x04\x00")


def test_server_client_close_ends_a_stream() -> None:
    server = drpc.ServerStream(streaming={COORDINATE})
    server.receive_data(b"\x03\x01\x01\x24" + COORDINATE.encode())
    assert server.receive_data(b"\x0b\x01\x02\x00") == [drpc.CloseReceived()]
    assert server.client_done and server.replied


def test_unary_methods_are_unchanged_when_streams_are_declared() -> None:
    server = drpc.ServerStream(streaming={COORDINATE})
    events = server.receive_data(GET_MANIFEST_REQUEST)
    assert events[1] == drpc.RequestReceived(GET_MANIFEST, b"")
    assert not server.streaming
    with pytest.raises(RuntimeError):
        server.send_message(b"")
    server.reply(b"ok")
    assert server.data_to_send() == bytes.fromhex("05 01 01 02 6f 6b 0d 01 02 00")
