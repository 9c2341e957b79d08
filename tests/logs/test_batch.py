"""Pure tests of the shipping policy: batch due rules and the 1 MiB cap accountant."""

from __future__ import annotations

from coder_agent.logs.batch import MAX_LOGS_LENGTH, Batcher, CapAccountant


def test_batch_due_at_100_lines() -> None:
    b: Batcher[int] = Batcher()
    for i in range(99):
        assert b.room_for(10)
        b.add(i, 10, now=0.0)
    assert not b.due(0.0)
    b.add(99, 10, now=0.0)
    assert b.full and b.due(0.0) and not b.room_for(1)
    assert b.take() == list(range(100))
    assert b.size == 0 and not b.due(100.0)


def test_batch_due_after_250ms_or_on_flush() -> None:
    b: Batcher[str] = Batcher()
    b.add("x", 1, now=10.0)
    assert not b.due(10.2)
    assert b.due(10.0, flush=True)
    assert b.deadline() == 10.25
    assert b.due(10.25)


def test_batch_byte_limit_counts_overhead() -> None:
    b: Batcher[str] = Batcher(max_bytes=1000)
    b.add("a", 500, now=0)
    assert b.size == 521
    assert b.room_for(400)  # 521 + 421 = 942
    assert not b.room_for(480)  # 521 + 501 > 1000
    big: Batcher[str] = Batcher(max_bytes=100)
    assert big.room_for(10_000)  # an empty batch always takes one line


def test_cap_plans_a_notice_before_the_tail_reserve_and_stops_the_head() -> None:
    cap = CapAccountant(limit=2000, reserve=100, tail_reserve=1000)
    assert cap.budget == 900
    assert cap.plan([300, 300]).send == 2
    cap.acknowledged(600, notice=False)
    p = cap.plan([200, 200, 5])  # 600 + 200 fits in 900, the next 200 does not
    assert (p.send, p.notice) == (1, True)
    assert cap.notice_room() == 400  # the notice may use the notice reserve, never the tail's
    assert cap.tail_share(1, final=False) == 0  # no tails while the head goes on
    cap.acknowledged(200 + 80, notice=True)
    assert cap.stopped == "cap"
    assert cap.plan([1]).send == 0  # the head is over
    assert cap.limit - cap.accepted == 1120  # the tail reserve is intact


def test_tail_shares_keep_budget_for_later_sources_and_never_pass_the_limit() -> None:
    cap = CapAccountant(limit=100_000, reserve=1000, tail_reserve=64_000, accepted=36_000, stopped="cap")
    assert cap.tail_share(1, final=False) == 32_000  # half: later sources still get a tail
    assert cap.tail_share(4, final=False) == 16_000  # an equal part among those waiting
    assert cap.tail_share(1, final=True) == 64_000  # at shutdown: everything left
    assert cap.tail_share(2, final=True) == 32_000
    assert cap.plan_tail([30_000, 30_000, 5_000]) == 2  # what fits under the limit, in order
    cap.acknowledged(63_700, notice=False)
    assert cap.tail_share(1, final=True) == 0  # below MIN_TAIL_SHARE: not worth a tail
    assert cap.plan_tail([200, 200]) == 1
    refused = CapAccountant(stopped="413")
    assert refused.tail_share(1, final=True) == 0 and refused.plan_tail([1]) == 0  # the server's count rules


def test_cap_refusal_is_reported_once_and_persists() -> None:
    cap = CapAccountant()
    assert cap.limit == MAX_LOGS_LENGTH
    assert cap.refused("413") is True
    assert cap.refused("413") is False
    assert cap.plan([1]).send == 0
    again = CapAccountant()
    again.load(cap.dump())
    assert again.stopped == "413"
    again.load({"accepted": -5, "stopped": "bogus"})
    assert again.stopped == "413"


def test_packed_batch_gives_its_lines_back_and_a_snapshot_outlives_take() -> None:
    from coder_agent.logs.batch import PackedBatch

    b = PackedBatch(max_bytes=1000)
    b.add_line(b"2026-01-01T00:00:00Z info one", 3, 30, now=0.0)
    b.add_line(b"2026-01-01T00:00:00Z warn two\xff", 4, 61, now=0.1)
    assert b.entries == [30, 61] and list(b.sizes) == [3, 4] and b.size == 3 + 4 + 2 * b.overhead
    snap = b.lines(2)
    first = b.lines(1)
    b.add_line(b"2026-01-01T00:00:01Z info three", 5, 93, now=0.2)  # appended after the snapshot
    assert list(first) == [b"2026-01-01T00:00:00Z info one"]
    b.take()
    assert not b.entries and not b.blob and len(b.sizes) == 0
    assert list(snap) == [b"2026-01-01T00:00:00Z info one", b"2026-01-01T00:00:00Z warn two\xff"]
    assert list(snap) == list(snap) and len(snap) == 2  # iterable again (a transport may fall back and re-read)


def test_mmap_threshold_is_fixed_on_glibc_unless_the_operator_tuned_malloc() -> None:
    import platform

    from coder_agent.memtune import fix_mmap_threshold

    assert fix_mmap_threshold({"MALLOC_MMAP_THRESHOLD_": "65536"}) is False
    assert fix_mmap_threshold({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"}) is False
    assert fix_mmap_threshold({}) is (platform.libc_ver()[0] == "glibc")
