"""The SSE parser, without an event loop: a table of wire texts, then any chunking → same events."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coder_agent.reinit.sse import SSEError, SSEEvent, SSEParser


def parse(data: bytes) -> list[SSEEvent]:
    return SSEParser().feed(data)


E = SSEEvent
TABLE: list[tuple[str, bytes, list[SSEEvent]]] = [
    ("coderd ping: a type and no data is still an event", b"event: ping\n\n", [E("ping", "")]),
    ("coderd data event", b'event: data\ndata: {"a":1}\n\n', [E("data", '{"a":1}')]),
    ("no type means message", b"data: x\n\n", [E("message", "x")]),
    ("multi-line data joined with LF", b"data: a\ndata: b\ndata:\n\n", [E("message", "a\nb\n")]),
    ("one leading space dropped, not two", b"data:  two\n\n", [E("message", " two")]),
    ("no space after the colon", b"data:x\n\n", [E("message", "x")]),
    ("a field without a colon has an empty value", b"data\ndata\n\n", [E("message", "\n")]),
    ("colon inside the value kept", b"data: a:b: c\n\n", [E("message", "a:b: c")]),
    ("comments ignored, blank after comments dispatches nothing", b": hi\n\n: there\n", []),
    ("comment between fields", b"event: data\n: keepalive\ndata: 1\n\n", [E("data", "1")]),
    ("CRLF endings", b"event: data\r\ndata: 1\r\n\r\n", [E("data", "1")]),
    ("CR endings", b"event: data\rdata: 1\r\r", [E("data", "1")]),
    ("mixed endings", b"event: a\r\ndata: 1\rdata: 2\n\r\n", [E("a", "1\n2")]),
    ("BOM at the start skipped", b"\xef\xbb\xbfdata: 1\n\n", [E("message", "1")]),
    ("BOM later is data", b"data: \xef\xbb\xbf1\n\n", [E("message", "\ufeff1")]),
    ("unknown fields ignored", b"foo: bar\n\n", []),
    ("id kept on later events", b"id: 7\ndata: a\n\ndata: b\n\n", [E("message", "a", "7"), E("message", "b", "7")]),
    ("id with NUL ignored", b"id: 1\x002\ndata: a\n\n", [E("message", "a", None)]),
    ("id or retry alone dispatch nothing", b"id: 3\n\nretry: 100\n\n", []),
    ("type reset after dispatch", b"event: x\ndata: 1\n\ndata: 2\n\n", [E("x", "1"), E("message", "2")]),
    ("incomplete event at end not dispatched", b"event: data\ndata: 1\n", []),
    ("invalid UTF-8 replaced", b"data: \xff\n\n", [E("message", "\ufffd")]),
    ("two events in one chunk", b"event: ping\n\nevent: data\ndata: {}\n\n", [E("ping"), E("data", "{}")]),
    ("blank lines alone dispatch nothing", b"\n\n\r\n\r\r", []),
]


@pytest.mark.parametrize(("name", "wire", "events"), TABLE, ids=[r[0] for r in TABLE])
def test_table(name: str, wire: bytes, events: list[SSEEvent]) -> None:
    assert parse(wire) == events


def test_retry_field_sets_reconnection_time_only_if_digits() -> None:
    p = SSEParser()
    p.feed(b"retry: 1500\n\n")
    assert p.retry == 1500
    p.feed(b"retry: 15x\n\nretry: -1\n\n")
    assert p.retry == 1500


def test_crlf_split_across_chunks_is_one_line_end() -> None:
    p = SSEParser()
    assert p.feed(b"data: 1\r") == []
    # The LF belongs to the CR before it; were it a second line end, this would dispatch here.
    assert p.feed(b"\n") == []
    assert p.feed(b"\r") == [E("message", "1")]
    assert p.feed(b"\ndata: 2\n\n") == [E("message", "2")]


def test_bom_split_across_chunks() -> None:
    p = SSEParser()
    assert p.feed(b"\xef") == []
    assert p.feed(b"\xbb") == []
    assert p.feed(b"\xbfdata: 1\n\n") == [E("message", "1")]


def test_partial_bom_prefix_that_is_not_a_bom_is_kept() -> None:
    assert parse(b"\xefdata: 1\n\n") == []  # "\ufffddata" is an unknown field
    p = SSEParser()
    assert p.feed(b"\xef") == []
    assert p.feed(b"x\ndata: 2\n\n") == [E("message", "2")]


def test_line_length_is_bounded() -> None:
    p = SSEParser(max_line=16)
    assert p.feed(b"data: 0123456789\n\n") == [E("message", "0123456789")]
    with pytest.raises(SSEError):
        p.feed(b"data: " + b"x" * 11 + b"\n")
    p = SSEParser(max_line=16)
    with pytest.raises(SSEError):  # never-ending line across chunks
        for _ in range(5):
            p.feed(b"xxxxxx")


def test_close_reports_a_discarded_partial_event() -> None:
    p = SSEParser()
    p.feed(b"event: data\ndata: 1\n")
    assert p.close() is True
    p.feed(b"event: ping\n\n")
    assert p.close() is False


# Any chunking of the same bytes gives the same events -------------------------------------

_line = st.one_of(
    st.sampled_from([b"event: ping", b"event: data", b"data: {\"a\":1}", b"data", b"data:", b": comment",
                     b"id: 9", b"retry: 50", b"", b"", b"data: caf\xc3\xa9", b"x: y"]),
    st.binary(max_size=12).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
)
_stream = st.tuples(
    st.booleans(),
    st.lists(st.tuples(_line, st.sampled_from([b"\n", b"\r\n", b"\r"])), max_size=30),
).map(lambda t: (b"\xef\xbb\xbf" if t[0] else b"") + b"".join(a + b for a, b in t[1]))


@settings(max_examples=300, deadline=None)
@given(data=_stream, cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_any_chunking_gives_the_same_events(data: bytes, cuts: list[int]) -> None:
    whole = SSEParser()
    expected = whole.feed(data)
    p = SSEParser()
    got: list[SSEEvent] = []
    prev = 0
    for c in [*sorted({min(c, len(data)) for c in cuts}), len(data)]:
        got += p.feed(data[prev:c])
        prev = c
    assert got == expected
    assert p.last_id == whole.last_id and p.retry == whole.retry


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_below_the_line_limit(data: bytes) -> None:
    p = SSEParser()
    for i in range(0, len(data), 7):
        p.feed(data[i:i + 7])
    p.close()
