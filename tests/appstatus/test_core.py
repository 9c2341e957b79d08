"""The app-status queue and validation, pure: no event loop, time from a FakeClock."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from coder_agent.appstatus.core import AppStatus, AppStatusQueue, Invalid, Ticket, validate
from coder_agent.clock import FakeClock

W = "2026-01-01T00:00:00+00:00"


class Harness:
    """A queue, a fake clock and a fake wire that records what was sent."""

    def __init__(self, debounce: float = 0.25, **kw: int) -> None:
        self.clock = FakeClock()
        self.q = AppStatusQueue(debounce=debounce, **kw)
        self.sent: list[tuple[str, str, str]] = []
        self._ids = (f"id{i}" for i in itertools.count(1))

    def post(self, state: str, message: str = "", slug: str = "app", uri: str = "") -> Ticket:
        return self.q.submit(AppStatus(slug, state, message, uri), now=self.clock.monotonic(), wall=W,
                             new_id=next(self._ids))

    def outcome(self, entry_id: str) -> dict[str, Any]:
        out = self.q.outcome(entry_id)
        assert out is not None, entry_id
        return out

    def pump(self) -> list[tuple[str, str, str]]:
        """Deliver everything due now; return what went out."""
        out = []
        while (e := self.q.next_due(self.clock.monotonic())) is not None:
            s = self.q.begin(e.id)
            self.q.delivered(e.id, W)
            out.append((s.app_slug, s.state, s.message))
        self.sent += out
        return out


def test_identical_burst_is_sent_once() -> None:
    h = Harness()
    tickets = [h.post("working", "thinking") for _ in range(20)]
    assert [t.duplicate for t in tickets] == [False] + [True] * 19
    assert {t.id for t in tickets} == {"id1"}
    h.clock.advance(0.25)
    assert h.pump() == [("app", "working", "thinking")]
    # ...and once delivered, the same status again is still a duplicate: Coder already has it.
    t = h.post("working", "thinking")
    assert t.duplicate and t.delivery == "delivered"
    h.clock.advance(10)
    assert h.pump() == []


def test_nothing_goes_out_before_the_debounce_window() -> None:
    h = Harness()
    h.post("working", "a")
    h.clock.advance(0.2)
    assert h.pump() == []
    assert h.q.next_wakeup() == pytest.approx(h.clock.monotonic() + 0.05)
    h.clock.advance(0.05)
    assert h.pump() == [("app", "working", "a")]


def test_burst_of_the_same_state_coalesces_latest_wins() -> None:
    h = Harness()
    for i in range(10):
        h.post("working", f"step {i}")
        h.clock.advance(0.02)
    h.clock.advance(0.1)
    assert h.pump() == [("app", "working", "step 9")]


def test_window_is_fixed_so_a_steady_stream_still_flows() -> None:
    h = Harness()
    for i in range(10):  # one update every 100 ms for a second
        h.post("working", f"step {i}")
        h.pump()
        h.clock.advance(0.1)
    h.clock.advance(0.25)
    h.pump()
    assert 3 <= len(h.sent) <= 5
    assert h.sent[-1] == ("app", "working", "step 9")


def test_every_transition_is_delivered_in_order() -> None:
    h = Harness()
    h.post("working", "a")
    h.post("idle", "b")
    h.post("working", "a")
    h.clock.advance(1)
    assert h.pump() == [("app", "working", "a"), ("app", "idle", "b"), ("app", "working", "a")]


def test_coalescing_only_merges_the_tail_of_the_same_state() -> None:
    h = Harness()
    h.post("working", "1")
    h.post("idle", "2")
    h.post("idle", "3")  # merges into idle "2"
    h.post("working", "4")
    h.post("working", "5")  # merges into working "4", never into working "1"
    h.clock.advance(1)
    assert h.pump() == [("app", "working", "1"), ("app", "idle", "3"), ("app", "working", "5")]


def test_burst_that_returns_to_the_delivered_status_sends_nothing() -> None:
    h = Harness()
    h.post("working", "a")
    h.clock.advance(1)
    h.pump()
    first = h.post("working", "b")
    back = h.post("working", "a")
    assert back.duplicate and back.delivery == "delivered" and back.id == "id1"
    assert h.outcome(first.id)["delivery"] == "delivered"
    h.clock.advance(1)
    assert h.pump() == []


def test_an_entry_on_the_wire_is_frozen() -> None:
    h = Harness()
    h.post("working", "a")
    h.clock.advance(1)
    e = h.q.next_due(h.clock.monotonic())
    assert e is not None
    h.q.begin(e.id)
    assert h.post("working", "a").id == e.id  # identical to what is on the wire
    t = h.post("working", "b")  # arrives while "a" is being sent
    assert not t.coalesced and t.id != e.id
    h.q.delivered(e.id, W)
    h.clock.advance(1)
    assert h.pump() == [("app", "working", "b")]


def test_transient_failure_keeps_the_entry_first_and_takes_newer_same_state_updates() -> None:
    h = Harness()
    h.post("working", "a")
    h.clock.advance(1)
    e = h.q.next_due(h.clock.monotonic())
    assert e is not None
    h.q.begin(e.id)
    h.q.retry(e.id, "503 Service Unavailable")
    assert h.outcome(e.id)["error"] == "503 Service Unavailable"
    assert h.post("working", "b").coalesced  # coderd is down: latest wins
    h.post("idle", "c")
    assert h.pump() == [("app", "working", "b")]  # the idle one waits for its own window
    h.clock.advance(1)
    assert h.pump() == [("app", "idle", "c")]


def test_final_failure_is_reported_and_the_next_status_proceeds() -> None:
    h = Harness()
    t1 = h.post("working", "a")
    h.post("idle", "b")
    h.clock.advance(1)
    e = h.q.next_due(h.clock.monotonic())
    assert e is not None and e.id == t1.id
    h.q.begin(e.id)
    h.q.failed(e.id, "400 Failed to get workspace app.", W)
    out = h.q.outcome(e.id)
    assert out is not None and out["delivery"] == "failed" and "400" in out["error"]
    assert h.pump() == [("app", "idle", "b")]
    # A refused status posted again is tried again (it was never delivered).
    h.post("working", "a")
    h.clock.advance(1)
    assert h.pump() == [("app", "working", "a")]


def test_burst_back_to_the_status_on_the_wire_merges_into_it() -> None:
    h = Harness()
    h.post("working", "a")
    h.clock.advance(1)
    e = h.q.next_due(h.clock.monotonic())
    assert e is not None
    h.q.begin(e.id)
    b = h.post("working", "b")
    back = h.post("working", "a")  # "b" is replaced by "a", which is what is already on the wire
    assert back.duplicate and back.id == e.id
    h.q.delivered(e.id, W)
    assert h.outcome(b.id)["delivery"] == "delivered"
    h.clock.advance(1)
    assert h.pump() == []


def test_slugs_are_independent_and_served_oldest_first() -> None:
    h = Harness()
    h.post("working", "x", slug="b")
    h.post("working", "y", slug="a")
    h.post("working", "x", slug="a")  # coalesces within slug a only
    h.clock.advance(1)
    assert h.pump() == [("b", "working", "x"), ("a", "working", "x")]
    snap = {s["app_slug"]: s for s in h.q.snapshot()}
    assert snap["a"]["delivery"] == snap["b"]["delivery"] == "delivered"


def test_snapshot_shows_the_newest_status_and_its_delivery_state() -> None:
    h = Harness()
    h.post("working", "a")
    h.clock.advance(1)
    h.pump()
    h.post("idle", "b")
    (s,) = h.q.snapshot()
    assert (s["state"], s["delivery"], s["waiting"]) == ("idle", "pending", 1)
    assert s["last_delivered"]["state"] == "working"


def test_persisted_document_survives_a_restart_without_resending() -> None:
    h = Harness()
    h.post("working", "a")
    h.clock.advance(1)
    h.pump()
    t = h.post("idle", "b")
    h.post("working", "c")
    h.clock.advance(1)
    e = h.q.next_due(h.clock.monotonic())
    assert e is not None and e.id == t.id
    h.q.begin(e.id)  # on the wire when the process dies
    doc = json.loads(json.dumps(h.q.to_doc()))

    h2 = Harness()
    h2.q.load(doc, h2.clock.monotonic())
    assert h2.q.pending_count() == 2
    assert h2.pump() == [("app", "idle", "b"), ("app", "working", "c")]  # due at once after a restart
    assert h2.post("working", "c").duplicate
    assert h2.outcome(t.id)["delivery"] == "delivered"
    # new ids never collide with old sequence numbers
    h2.post("idle", "d")
    assert max(e.seq for q in h2.q._slugs.values() for e in q.pending) > 3


@pytest.mark.parametrize("doc", [{"version": 99}, "junk", {"version": 1, "slugs": {"a": {"pending": [{}]}}}])
def test_bad_document_is_refused_and_leaves_the_queue_alone(doc: object) -> None:
    h = Harness()
    h.post("working", "a")
    with pytest.raises(ValueError):
        h.q.load(doc, 0.0)
    assert h.q.pending_count() == 1


def test_pending_is_bounded_per_slug() -> None:
    h = Harness(max_pending=3)
    ids = [h.post(s).id for s in ("working", "idle", "working", "idle", "working")]
    assert h.q.pending_count() == 3
    assert h.outcome(ids[0])["delivery"] == "dropped"
    h.clock.advance(1)
    assert [s for _, s, _ in h.pump()] == ["working", "idle", "working"]


def test_flush_makes_waiting_entries_due_at_once() -> None:
    h = Harness()
    h.post("working", "a")
    assert h.pump() == []
    h.q.flush = True
    assert h.pump() == [("app", "working", "a")]


# validation ---------------------------------------------------------------------------------


def _body(**kw: object) -> dict[str, object]:
    return {"app_slug": "code", "state": "working", "message": "", **kw}


def test_message_limit_is_160_bytes_not_characters() -> None:
    assert isinstance(validate(_body(message="x" * 160)), AppStatus)
    bad = validate(_body(message="x" * 161))
    assert isinstance(bad, Invalid) and bad.field == "message" and bad.message == "Message is too long."
    euro = "€" * 54  # 54 characters, 162 bytes
    assert len(euro) < 160
    bad = validate(_body(message=euro))
    assert isinstance(bad, Invalid) and bad.field == "message" and "162 bytes" in bad.detail
    assert isinstance(validate(_body(message="€" * 53 + "x")), AppStatus)  # 160 bytes exactly


@pytest.mark.parametrize("state", ["", "busy", "Working", None, 3])
def test_unknown_state_is_refused(state: object) -> None:
    bad = validate(_body(state=state))
    assert isinstance(bad, Invalid) and bad.field == "state"


def test_slug_rules() -> None:
    bad = validate(_body(app_slug=""))
    assert isinstance(bad, Invalid) and bad.field == "app_slug"
    assert isinstance(validate(_body(app_slug="anything")), AppStatus)  # manifest unknown: coderd decides
    bad = validate(_body(app_slug="nope"), ["code", "aider"])
    assert isinstance(bad, Invalid) and bad.field == "app_slug" and "aider, code" in bad.detail
    assert isinstance(validate(_body(), ["code"]), AppStatus)
    assert isinstance(validate(_body(), []), Invalid)


def test_body_shape() -> None:
    assert isinstance(validate([1]), Invalid)
    bad = validate(_body(uri=5))
    assert isinstance(bad, Invalid) and bad.field == "uri"
    for bad_text in ("a\x00b", "\ud800"):
        bad = validate(_body(message=bad_text))
        assert isinstance(bad, Invalid) and bad.field == "message"
    ok = validate({**_body(uri="https://x"), "icon": "", "needs_user_attention": True})
    assert ok == AppStatus("code", "working", "", "https://x")
