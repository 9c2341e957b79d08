"""Pure tests of the tail rules: bulk counting equals line-by-line counting, the window keeps the
last lines that fit, the planner's bulk shortcut never changes the result."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from coder_agent.logs.tail import TailCount, TailPlanner, TailWindow, count_block, suffix_bytes, tail_notice_text
from coder_agent.logs.text import LEVELS, format_entry, parse_entry

TS = "2026-01-01T00:00:00.000000Z"


def out_bytes(raw: bytes) -> int | None:
    p = parse_entry(raw.decode("utf-8", "replace"))
    return None if p is None else len(p[2].encode("utf-8"))


lines_st = st.lists(st.one_of(
    st.tuples(st.sampled_from(LEVELS), st.text(alphabet=st.characters(blacklist_characters="\n\r\x00",
                                                                       blacklist_categories=["Cs"]), max_size=30)),
    st.just(("#", "coder-agent restarted"))), max_size=60)


def render(lines: list[tuple[str, str]]) -> bytes:
    return "".join(f"# {o}\n" if lv == "#" else format_entry(TS, lv, o) for lv, o in lines).encode("utf-8")


def slow_count(data: bytes) -> TailCount:
    c = TailCount()
    for raw in data.split(b"\n")[:-1]:
        n = out_bytes(raw)
        if n is not None:
            c.lines += 1
            c.bytes += n
    return c


@settings(max_examples=300, deadline=None)
@given(lines_st)
def test_bulk_count_equals_parsing_every_line(lines: list[tuple[str, str]]) -> None:
    data = render(lines)
    assert count_block(data) == slow_count(data)


def test_count_block_by_hand() -> None:
    data = render([("info", "abc"), ("error", "é"), ("#", "marker"), ("debug", ""), ("warn", " error x")])
    assert count_block(data) == TailCount(4, 3 + 2 + 0 + 8)
    assert count_block(b"") == TailCount()


def test_window_keeps_the_last_lines_that_fit() -> None:
    w = TailWindow(budget=10)
    for i, n in enumerate([5, 3, 4, 2]):  # costs 6, 4, 5, 3
        w.add(i * 100, n)
    assert [p for p, _ in w.lines] == [200, 300]  # 5 + 3 = 8 <= 10; adding 4 more would be 12
    assert w.dropped == TailCount(2, 8)
    assert w.start(999) == 200
    huge = TailWindow(budget=10)
    huge.add(0, 50)  # a line larger than the budget: nothing kept, counted as dropped
    assert huge.start(77) == 77 and huge.dropped == TailCount(1, 50)


def plan(data: bytes, budget: int, block: int, max_line: int = 40) -> TailPlanner:
    p = TailPlanner(len(data), budget, max_line, out_bytes)
    pos = 0
    while pos < len(data):  # blocks of whole lines, as read_region gives them
        cut = data.rfind(b"\n", pos, pos + block) + 1
        if cut <= pos:
            cut = data.index(b"\n", pos) + 1
        p.feed(pos, data[pos:cut])
        pos = cut
    return p


@settings(max_examples=200, deadline=None)
@given(lines_st, st.integers(min_value=1, max_value=120), st.integers(min_value=40, max_value=400))
def test_planner_bulk_shortcut_gives_the_same_tail(lines: list[tuple[str, str]], budget: int, block: int) -> None:
    data = render(lines)
    fast = plan(data, budget, block)
    slow = plan(data, budget, len(data) + 1, max_line=10**9)  # one block, every line parsed
    assert (fast.start, fast.skipped, fast.kept) == (slow.start, slow.skipped, slow.kept)
    # the tail is exactly the last entries that fit, and skipped + tail = everything
    tail = slow_count(data[fast.start:])
    assert tail.bytes + tail.lines <= budget
    total = slow_count(data)
    assert (fast.skipped.lines + tail.lines, fast.skipped.bytes + tail.bytes) == (total.lines, total.bytes)


def test_planner_counts_a_big_region_in_bulk() -> None:
    data = render([("info", f"line {i:06d}") for i in range(20_000)])
    p = plan(data, budget=1000, block=64 * 1024)
    assert p.bulk_until == len(data) - suffix_bytes(1000, 40) > 0
    assert p.kept == 1000 // len("line 000000 ")  # 12 bytes of cost per line
    assert p.skipped == TailCount(20_000 - p.kept, (20_000 - p.kept) * 11)
    assert data[p.start:].startswith(f"{TS} info line {20_000 - p.kept:06d}".encode())


def test_notice_wording() -> None:
    assert tail_notice_text(TailCount(7, 1234), "/x/s.log") == (
        "… 1234 bytes (7 lines) not sent to Coder; the complete log is in /x/s.log …")
