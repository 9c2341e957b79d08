# ruff: noqa: E501  (the captured /proc lines are kept verbatim)
"""The pure /proc/net/tcp{,6} parser, on lines captured from this machine (x86-64, little-endian)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from coder_agent.ports.procnet import (
    LISTEN,
    ListenTable,
    Socket,
    decode_address,
    is_loopback,
    parse_listeners,
    parse_sockets,
)

HEADER4 = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout "
           "inode                                                     \n")
HEADER6 = ("  sl  local_address                         remote_address                        st tx_queue "
           "rx_queue tr tm->when retrnsmt   uid  timeout inode\n")

# Captured with listeners on 127.0.0.1:38002, 0.0.0.0:38001, 127.1.2.3:38003 and one established
# connection to 38001 (both ends).
TCP = HEADER4 + """\
   1: 0100007F:9472 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 52491 1 00000000137d5269 100 0 0 10 0                     
   2: 00000000:9471 00000000:0000 0A 00000000:00000001 00:00000000 00000000     0        0 52490 2 00000000f4cb5ae6 100 0 0 10 0                     
   3: 0302017F:9473 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 52492 1 000000004d1ec24a 100 0 0 10 0                     
  23: 0100007F:9471 0100007F:C93C 01 00000000:00000000 00:00000000 00000000     0        0 0 1 00000000e860f11f 20 0 0 10 -1                         
  24: 0100007F:C93C 0100007F:9471 01 00000000:00000000 00:00000000 00000000     0        0 52496 2 0000000034451c54 20 0 0 10 -1                     
"""  # noqa: W291

# Captured with listeners on [::]:38006 dual-stack, [::]:38004 IPV6_V6ONLY, [::1]:38005 and
# [::ffff:127.0.0.1]:38007.
TCP6 = HEADER6 + """\
   0: 00000000000000000000000000000000:9476 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 52495 1 000000009f6a4ab0 100 0 0 10 0
   1: 00000000000000000000000000000000:9474 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 52493 1 0000000085bd2178 100 0 0 10 0
   2: 00000000000000000000000001000000:9475 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 52494 1 000000008d8c9024 100 0 0 10 0
   0: 0000000000000000FFFF00000100007F:9477 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 52760 1 000000009f6a4ab0 100 0 0 10 0
"""


def test_ipv4_listeners_only_listen_state() -> None:
    assert parse_listeners(TCP, 4, byteorder="little") == [
        Socket(4, "127.0.0.1", 38002, LISTEN, 52491),
        Socket(4, "0.0.0.0", 38001, LISTEN, 52490),
        Socket(4, "127.1.2.3", 38003, LISTEN, 52492),
    ]


def test_parse_sockets_keeps_every_state() -> None:
    socks = parse_sockets(TCP, 4, byteorder="little")
    assert [(s.port, s.state) for s in socks] == [(38002, 10), (38001, 10), (38003, 10), (38001, 1), (51516, 1)]
    assert socks[3].inode == 0  # the kernel's half of a connection has no inode


def test_ipv6_listeners() -> None:
    assert parse_listeners(TCP6, 6, byteorder="little") == [
        Socket(6, "::", 38006, LISTEN, 52495),
        Socket(6, "::", 38004, LISTEN, 52493),
        Socket(6, "::1", 38005, LISTEN, 52494),
        Socket(6, "::ffff:127.0.0.1", 38007, LISTEN, 52760),
    ]


def test_decode_address_words_are_host_order() -> None:
    # 2001:db8::1 — each 32-bit word printed as a little-endian integer
    assert decode_address("B80D0120000000000000000001000000", byteorder="little") == "2001:db8::1"
    assert decode_address("20010DB8000000000000000000000001", byteorder="big") == "2001:db8::1"
    assert decode_address("0100007F", byteorder="little") == "127.0.0.1"
    assert decode_address("7F000001", byteorder="big") == "127.0.0.1"


def test_loopback() -> None:
    for a in ("127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"):
        assert is_loopback(a), a
    for a in ("0.0.0.0", "::", "10.0.0.1", "::ffff:10.0.0.1", "2001:db8::1", "garbage"):
        assert not is_loopback(a), a


def test_header_only_and_empty() -> None:
    assert parse_listeners(HEADER4, 4) == []
    assert parse_listeners("", 6) == []


def test_wrong_family_and_malformed_lines_are_skipped() -> None:
    # a tcp6 line fed as IPv4 (and vice versa) is not misread
    assert parse_listeners(TCP6, 4) == []
    assert parse_listeners(TCP, 6) == []
    bad = HEADER4 + "\n".join([
        "   1: 0100007F:ZZZZ 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1 1",
        "   2: 0100007G:9472 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1 1",
        "   3: 0100007F9472 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1 1",
        "   4: 0100007F:9472 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 x 1",
        "   5: 0100007F:9472 00000000:0000 0A",
        "   6: 0100007F:9472 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 -5 1",
        "   7: 0100007F:9472 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 77 1",
    ])
    assert parse_listeners(bad, 4, byteorder="little") == [Socket(4, "127.0.0.1", 38002, LISTEN, 77)]


_hex = st.text(alphabet="0123456789ABCDEFabcdefXZ:- ", max_size=40)
_line = st.builds(lambda parts: " ".join(parts), st.lists(_hex, max_size=14))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(_line, st.text(max_size=200)), max_size=20), st.sampled_from([4, 6]))
def test_garbage_never_crashes(lines: list[str], family: int) -> None:
    text = "\n".join(lines)
    for fn in (parse_listeners, parse_sockets):
        for s in fn(text, family):  # type: ignore[arg-type]
            assert 0 <= s.port <= 0xFFFF and s.inode >= 0


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=16, max_size=16), st.integers(0, 0xFFFF), st.sampled_from(["little", "big"]))
def test_ipv6_roundtrip(raw: bytes, port: int, order: str) -> None:
    import ipaddress

    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)) if order == "little" else raw
    line = f"   0: {words.hex().upper()}:{port:04X} {'0' * 32}:0000 0A 0:0 0:0 0 0 0 123 1 x"
    (s,) = parse_listeners(line, 6, byteorder=order)
    assert s._replace(address="") == Socket(6, "", port, LISTEN, 123)
    assert ipaddress.IPv6Address(s.address) == ipaddress.IPv6Address(raw)


_state = st.sampled_from(["0A", "01", "06", "08", "0A"])
_wf_line = st.builds(
    lambda sl, addr, port, state, uid, inode, fam: (
        fam, f"{sl:4d}: {addr}:{port:04X} {'0' * len(addr)}:0000 {state} 00000000:00000000 00:00000000 "
             f"00000000 {uid:5d} {0:8d} {inode} 1 0000000000000000 100 0 0 10 0"),
    st.integers(0, 99999),
    st.one_of(st.text("0123456789ABCDEF", min_size=8, max_size=8), st.text("0123456789ABCDEF", min_size=32,
                                                                          max_size=32)),
    st.integers(0, 0xFFFF), _state, st.integers(0, 70000), st.integers(0, 2**40), st.sampled_from([4, 6]),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_wf_line, max_size=12))
def test_fast_listener_parser_agrees_with_the_plain_one(lines: list[tuple[int, str]]) -> None:
    for family in (4, 6):
        text = "\n".join([HEADER4.rstrip("\n"), *(ln for _, ln in lines)])
        slow = [s for s in parse_sockets(text, family) if s.state == LISTEN]  # type: ignore[arg-type]
        assert parse_listeners(text, family) == slow  # type: ignore[arg-type]
        assert parse_listeners(text.encode(), family) == slow  # type: ignore[arg-type]


def test_listen_table_parses_only_new_lines() -> None:
    table = ListenTable(4, byteorder="little")
    assert table.update(TCP.encode()) == parse_listeners(TCP, 4, byteorder="little")
    assert table.parsed == 3
    assert table.update(TCP.encode()) == parse_listeners(TCP, 4, byteorder="little")
    assert table.parsed == 3  # nothing new
    lines = TCP.splitlines()
    changed = "\n".join([lines[0], lines[1].replace("00000000:00000000", "00000000:00000002", 1), lines[3]])
    assert [s.port for s in table.update(changed.encode())] == [38002, 38003]
    assert table.parsed == 4  # the line whose accept queue changed was parsed again
    assert table.update(b"") == []


@settings(max_examples=200, deadline=None)
@given(st.lists(_wf_line, max_size=12), st.lists(_wf_line, max_size=12))
def test_listen_table_agrees_with_parse_listeners(a: list[tuple[int, str]], b: list[tuple[int, str]]) -> None:
    table = ListenTable(6)
    for lines in (a, b, a):
        text = "\n".join(ln for _, ln in lines)
        assert table.update(text.encode()) == parse_listeners(text, 6)
