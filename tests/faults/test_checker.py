"""The received-vs-printed checker itself (pure)."""

from __future__ import annotations

from .checker import check, numbered

P = numbered("l", 10)


def test_clean() -> None:
    rep = check(P, P)
    assert rep.ok(max_replays=0) and rep.summary().startswith("printed 10, received 10, lost 0, duplicated 0")


def test_lost_and_unknown() -> None:
    rep = check(P, [*P[:4], *P[5:], "stray"])
    assert rep.lost == ["l5"] and rep.unknown == ["stray"] and not rep.ok(max_replays=9)


def test_out_of_order() -> None:
    rep = check(P, [*P[:3], P[4], P[3], *P[5:]])
    assert rep.out_of_order == ["l4"] and not rep.ok(max_replays=9)


def test_replay_of_the_batch_in_flight() -> None:
    rep = check(P, [*P[:6], *P[3:6], *P[6:]])  # l4..l6 stored, answer lost, sent again
    assert rep.replays == [(4, 6)] and rep.duplicates == 3 and not rep.late_replays
    assert rep.ok(max_replays=1) and not rep.ok(max_replays=0)
    assert not rep.ok(max_replays=1, max_batch=2)


def test_same_batch_replayed_twice_counts_twice() -> None:
    rep = check(P, [*P[:6], *P[3:6], *P[3:6], *P[6:]])
    assert rep.replays == [(4, 6), (4, 6)] and rep.ok(max_replays=2) and not rep.ok(max_replays=1)


def test_late_replay_needs_permission() -> None:
    rep = check(P, [*P[:8], *P[2:4], *P[8:]])  # a stalled request stored after newer batches
    assert rep.late_replays == [(3, 4)]
    assert not rep.ok(max_replays=1) and rep.ok(max_replays=1, late_ok=True)


def test_scattered_duplicates_are_many_replays() -> None:
    rep = check(P, [P[0], P[1], P[0], P[2], P[1], P[3], *P[4:]])
    assert len(rep.replays) == 2 and not rep.ok(max_replays=1)
