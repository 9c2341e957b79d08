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


def test_cap_plans_a_notice_before_the_limit_and_stops() -> None:
    cap = CapAccountant(limit=1000, reserve=100)
    assert cap.plan([300, 300]).send == 2
    cap.acknowledged(600, notice=False)
    p = cap.plan([200, 200, 5])  # 600 + 200 fits in 900, the next 200 does not
    assert (p.send, p.notice) == (1, True)
    assert cap.notice_room() == 400
    cap.acknowledged(200 + 80, notice=True)
    assert cap.stopped == "cap"
    assert cap.accepted <= cap.limit
    assert cap.plan([1]).send == 0


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
