"""The sans-I/O core: header, input stream, ring, lifetime (no event loop)."""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coder_agent.rpty.protocol import (
    ZERO_ID,
    HeaderReader,
    InitRequest,
    Input,
    InputParser,
    Lifetime,
    ProtocolError,
    RingBuffer,
    encode_init,
    encode_input,
    parse_init,
)

SID = "6f1c2a5e-8d1b-4c4e-9a59-2f6f0e7c1d11"


def test_init_names_are_case_insensitive_and_last_wins() -> None:
    body = json.dumps({"id": SID.upper(), "HEIGHT": 40, "width": 120, "command": "top", "container": "c1",
                       "containeruser": "root", "backendtype": "screen", "Width": 100, "Extra": 1}).encode()
    assert parse_init(body) == InitRequest(id=SID, height=40, width=100, command="top", container="c1",
                                           container_user="root", backend_type="screen")


def test_init_defaults_and_nulls() -> None:
    assert parse_init(b"{}") == InitRequest(id=ZERO_ID)
    assert parse_init(b'{"ID": null, "Height": null, "Command": null}') == InitRequest(id=ZERO_ID)
    assert parse_init(b'{"ID": "{' + SID.encode() + b'}"}').id == SID


@pytest.mark.parametrize("body", [b"", b"[]", b'"x"', b"{", b'{"Height": -1}', b'{"Width": 65536}',
                                  b'{"Height": 1.5}', b'{"Height": true}', b'{"Command": 3}', b'{"ID": "nope"}',
                                  b'{"ID": ""}', b'{"ID": 5}'])
def test_bad_init_is_a_protocol_error(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_init(body)


@given(st.integers(1, 40), st.binary(max_size=64))
def test_header_reader_any_chunking(step: int, trailing: bytes) -> None:
    init = InitRequest(id=SID, height=24, width=80, command="echo hi")
    wire = encode_init(init) + trailing
    hr = HeaderReader()
    got, rest = None, b""
    for i in range(0, len(wire), step):
        got = hr.feed(wire[i:i + step])
        if got is not None:
            rest = got[1] + wire[i + step:]
            break
    assert got is not None
    assert got[0] == init
    assert rest == trailing


def test_header_length_is_little_endian() -> None:
    body = b'{"Height": 7}'
    assert HeaderReader().feed(struct.pack("<H", len(body)) + body) == (InitRequest(height=7), b"")
    assert HeaderReader().feed(b"\x00") is None


messages = st.lists(st.builds(Input, data=st.text(max_size=20).map(str.encode),
                              height=st.integers(0, 0xFFFF), width=st.integers(0, 0xFFFF)), max_size=8)


@given(messages, st.data())
def test_input_parser_any_chunking(msgs: list[Input], data: st.DataObject) -> None:
    wire = b"".join(encode_input(m.data, m.height, m.width) + data.draw(st.sampled_from([b"", b"\n", b" \r\n\t"]))
                    for m in msgs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=10)))
    p, out, prev = InputParser(), [], 0
    for c in [*cuts, len(wire)]:
        out += p.feed(wire[prev:c])
        prev = c
    assert out == msgs


def test_input_utf8_split_inside_a_character_and_escapes() -> None:
    wire = '{"data":"é€😀\\u00e9\\"}{"}'.encode() + b'{"DATA":"x","Height":3,"WIDTH":4}'
    p, out = InputParser(), []
    for b in wire:
        out += p.feed(bytes([b]))
    assert out == [Input("é€😀é\"}{".encode()), Input(b"x", 3, 4)]
    assert out[1].resize == (3, 4)
    assert Input(b"", 3, 0).resize is None and Input(b"", 0, 4).resize is None


def test_input_lone_surrogate_becomes_replacement_char() -> None:
    assert InputParser().feed(b'{"data":"a\\ud800b"}') == [Input("a\ufffdb".encode())]


@pytest.mark.parametrize("wire", [b"[1]", b"5", b'"x"', b'{"data": 5}', b'{"height": -2}', b'{"data": "a",}',
                                  b'{"width": 70000}'])
def test_bad_input_is_a_protocol_error(wire: bytes) -> None:
    with pytest.raises(ProtocolError):
        InputParser().feed(wire)


def test_input_message_size_cap() -> None:
    p = InputParser(max_message=100)
    with pytest.raises(ProtocolError):
        p.feed(b'{"data":"' + b"a" * 200)


def test_feeding_a_big_message_bytewise_is_linear() -> None:
    p = InputParser()
    wire = encode_input("x" * 200_000)
    out = []
    for i in range(0, len(wire), 7):
        out += p.feed(wire[i:i + 7])
    assert out == [Input(b"x" * 200_000)]


@given(st.lists(st.binary(max_size=300), max_size=30), st.integers(1, 500))
def test_ring_keeps_the_last_bytes(chunks: list[bytes], size: int) -> None:
    r = RingBuffer(size)
    for c in chunks:
        r.write(c)
    assert r.bytes() == b"".join(chunks)[-size:]
    assert len(r) == min(size, sum(map(len, chunks)))


def test_ring_default_is_64k() -> None:
    r = RingBuffer()
    r.write(b"a" * 70_000 + b"end")
    assert len(r) == 64 * 1024 and r.bytes().endswith(b"end")


def test_lifetime_never_attached_closes_after_attach_timeout() -> None:
    lt = Lifetime(100.0, attach_timeout=30.0, idle_timeout=300.0)
    assert not lt.expired(129.9) and lt.expired(130.0)


def test_lifetime_idle_after_last_detach() -> None:
    lt = Lifetime(0.0, attach_timeout=30.0, idle_timeout=300.0)
    lt.attach()
    lt.attach()
    assert not lt.expired(10_000.0)
    lt.detach(10_000.0)
    assert lt.deadline is None and not lt.expired(20_000.0)
    lt.detach(20_000.0)
    assert not lt.expired(20_299.0) and lt.expired(20_300.0)
    lt.attach()
    assert not lt.expired(99_999.0)
    with pytest.raises(RuntimeError):
        Lifetime(0.0).detach(1.0)


@given(st.lists(st.binary(max_size=40), max_size=10))
def test_input_parser_garbage_only_raises_protocol_error(chunks: list[bytes]) -> None:
    p = InputParser(max_message=200)
    try:
        for c in chunks:
            for m in p.feed(c):
                assert isinstance(m, Input)
    except ProtocolError:
        pass


@given(st.binary(max_size=80))
def test_parse_init_garbage_only_raises_protocol_error(body: bytes) -> None:
    try:
        parse_init(body)
    except ProtocolError:
        pass
