"""Pure tests of the text rules: sanitising, splitting (any chunking, same lines), file format."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from coder_agent.logs.text import LineSplitter, format_entry, parse_entry, sanitize, sanitize_bytes, split_text


def split_all(data: bytes, cuts: list[int], max_line: int = 64) -> list[str]:
    sp = LineSplitter(max_line)
    out: list[str] = []
    prev = 0
    for c in sorted(set(cuts)):
        out += sp.feed(data[prev:c])
        prev = c
    out += sp.feed(data[prev:])
    return out + sp.close()


def test_crlf_lone_cr_and_partial_line() -> None:
    sp = LineSplitter()
    assert sp.feed(b"a\r\nb\nc\rd\n") == ["a", "b", "c\rd"]  # Go keeps a \r inside a line
    assert sp.feed(b"\n\npart") == ["", ""]
    assert sp.pending == 4
    assert sp.close() == ["part"]
    assert sp.close() == []


def test_partial_line_with_trailing_cr_is_stripped_at_close() -> None:
    sp = LineSplitter()
    assert sp.feed(b"progress 50%\r") == []
    assert sp.close() == ["progress 50%"]


def test_invalid_utf8_and_nul_become_one_mark_per_run() -> None:
    assert sanitize_bytes(b"ok\xff\xfe\xfdok") == "ok❌ok"
    assert sanitize_bytes(b"a\x00b") == "a❌b"
    assert sanitize_bytes(b"\xed\xa0\x80") == "❌"  # an encoded surrogate is invalid UTF-8
    assert sanitize_bytes("héllo ✓".encode()) == "héllo ✓"
    assert sanitize("x\x00y\ud800\udc00z") == "x❌y❌z"
    assert sanitize("plain") == "plain"


def test_long_lines_are_cut_at_the_bound_never_inside_a_character() -> None:
    sp = LineSplitter(max_line=10)
    line = ("é" * 12).encode()  # 24 bytes, two bytes per character
    out = sp.feed(line + b"\n")
    assert "".join(out) == "é" * 12
    assert all(len(p.encode()) <= 10 for p in out)
    assert "❌" not in "".join(out)
    # exactly max_line bytes followed by \r\n is one line
    assert LineSplitter(max_line=10).feed(b"0123456789\r\n") == ["0123456789"]


lines_st = st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=12)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(min_value=0, max_value=300), max_size=30))
def test_any_chunking_gives_the_same_lines(data: bytes, cuts: list[int]) -> None:
    assert split_all(data, cuts, 16) == split_all(data, [], 16)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(blacklist_characters="\n\r\x00",
                                               blacklist_categories=["Cs"]), max_size=40), max_size=10),
       st.lists(st.integers(min_value=0, max_value=500), max_size=20))
def test_valid_text_round_trips_in_pieces_no_longer_than_the_bound(lines: list[str], cuts: list[int]) -> None:
    data = "".join(f"{ln}\r\n" for ln in lines).encode()
    out = split_all(data, cuts, 12)
    assert "".join(out) == "".join(lines)
    assert all(len(p.encode()) <= 12 for p in out)
    assert all("\n" not in p and "\x00" not in p for p in out)


def test_split_text() -> None:
    assert split_text("a\r\nb\n") == ["a", "b"]
    assert split_text("one") == ["one"]
    assert split_text("a\n\nb") == ["a", "", "b"]


def test_file_format_round_trip_and_markers() -> None:
    line = format_entry("2026-01-01T00:00:00.000000Z", "warn", "hello world  x")
    assert line.endswith("\n")
    assert parse_entry(line[:-1]) == ("2026-01-01T00:00:00.000000Z", "warn", "hello world  x")
    assert parse_entry("2026-01-01T00:00:00.000000Z info ") == ("2026-01-01T00:00:00.000000Z", "info", "")
    assert parse_entry("# coder-agent restarted") is None
    assert parse_entry("garbage") is None
