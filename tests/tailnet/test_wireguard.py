"""The sans-I/O WireGuard core: two Devices talking through a simulated network, property tests
for the replay window and for handshakes under loss/reordering/duplication, timers, cookies."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coder_agent.tailnet import packet
from coder_agent.tailnet.keys import NodeKey
from coder_agent.tailnet.wireguard import (
    REJECT_AFTER_MESSAGES,
    REPLAY_WINDOW,
    Device,
    HandshakeComplete,
    HandshakeFailed,
    ReplayWindow,
    Result,
    Timers,
    tai64n,
)

ADDR_A = ipaddress.IPv6Address("fd7a:115c:a1e0::a").packed
ADDR_B = ipaddress.IPv6Address("fd7a:115c:a1e0::b").packed


def pkt(src: bytes, dst: bytes, data: bytes) -> bytes:
    return packet.build(src, dst, packet.NH_UDP, data)


class Pair:
    """Two devices, A and B, each the other's only peer."""

    def __init__(self, timers: Timers | None = None) -> None:
        self.ka, self.kb = NodeKey.generate(), NodeKey.generate()
        self.a = Device(self.ka.private, timers)
        self.b = Device(self.kb.private, timers)
        self.a.add_peer(self.kb.public, ["fd7a:115c:a1e0::b/128"])
        self.b.add_peer(self.ka.public, ["fd7a:115c:a1e0::a/128"])

    def other(self, d: Device) -> Device:
        return self.b if d is self.a else self.a

    def pump(self, frm: Device, r: Result, now: float) -> dict[Device, Result]:
        """Deliver every datagram (and every answer, recursively); collect what arrives."""
        got: dict[Device, Result] = {self.a: Result(), self.b: Result()}
        queue = [(frm, d) for _, d in r.to_send]
        while queue:
            src, d = queue.pop(0)
            dst = self.other(src)
            rr = dst.receive(src.public_key, d, now)
            got[dst].packets_in += rr.packets_in
            got[dst].events += rr.events
            queue += [(dst, x) for _, x in rr.to_send]
        return got


def test_handshake_and_data_both_ways() -> None:
    p = Pair()
    r = p.a.send(pkt(ADDR_A, ADDR_B, b"hello"), 0.0)
    assert [len(d) for _, d in r.to_send] == [148] and r.to_send[0][0] == p.kb.public
    got = p.pump(p.a, r, 0.0)
    assert got[p.b].packets_in == [pkt(ADDR_A, ADDR_B, b"hello")]
    assert got[p.a].events == [HandshakeComplete(p.kb.public, True)]
    assert got[p.b].events == [HandshakeComplete(p.ka.public, False)]
    got = p.pump(p.b, p.b.send(pkt(ADDR_B, ADDR_A, b"world"), 1.0), 1.0)
    assert got[p.a].packets_in == [pkt(ADDR_B, ADDR_A, b"world")]
    sa = p.a.peers[p.kb.public].stats
    assert (sa.handshakes, sa.tx_packets, sa.rx_packets, sa.last_handshake) == (1, 1, 1, 0.0)
    assert sa.tx_bytes > 148 and sa.rx_bytes > 92


def test_padding_and_keepalive_sizes() -> None:
    p = Pair()
    p.pump(p.a, p.a.send(pkt(ADDR_A, ADDR_B, b"x"), 0.0), 0.0)
    for n in (0, 1, 15, 16, 17, 1240):
        r = p.a.send(pkt(ADDR_A, ADDR_B, bytes(n)), 0.1)
        (_, d), = r.to_send
        inner = 40 + n
        assert len(d) == 16 + min((inner + 15) // 16 * 16, 1280) + 16
        assert d[:4] == b"\x04\0\0\0"
    # Keepalive: an empty transport message (header + tag).
    p.a._keepalive(p.a.peers[p.kb.public], 0.2, r := Result())
    assert [len(d) for _, d in r.to_send] == [32]


def test_duplicate_transport_is_dropped_once_authenticated() -> None:
    p = Pair()
    p.pump(p.a, p.a.send(pkt(ADDR_A, ADDR_B, b"x"), 0.0), 0.0)
    (_, d), = p.a.send(pkt(ADDR_A, ADDR_B, b"once"), 0.1).to_send
    assert p.b.receive(p.ka.public, d, 0.1).packets_in
    dropped = p.b.dropped
    assert not p.b.receive(p.ka.public, d, 0.1).packets_in
    forged = d[:-1] + bytes([d[-1] ^ 1])
    assert not p.b.receive(p.ka.public, forged, 0.1).packets_in
    assert p.b.dropped == dropped + 2


def test_allowed_ips_in_and_routing_out() -> None:
    p = Pair()
    p.pump(p.a, p.a.send(pkt(ADDR_A, ADDR_B, b"x"), 0.0), 0.0)
    # Routing out: no peer for that destination -> nothing sent, counted.
    other = ipaddress.IPv6Address("fd7a:115c:a1e0::c").packed
    assert not p.a.send(pkt(ADDR_A, other, b"?"), 0.1).to_send
    # In: B only accepts A's /128 as source; A's device routes ::c to B if told so, but B drops it.
    p.a.add_peer(p.kb.public, ["fd7a:115c:a1e0::b/128", "fd7a:115c:a1e0::c/128"])
    got = p.pump(p.a, p.a.send(pkt(other, ADDR_B, b"spoof"), 0.2), 0.2)
    assert not got[p.b].packets_in
    # Longest prefix wins across peers: a /48 for a third peer does not steal B's /128.
    third = NodeKey.generate()
    p.a.add_peer(third.public, ["fd7a:115c:a1e0::/48"])
    r = p.a.send(pkt(ADDR_A, ADDR_B, b"b"), 0.3)
    assert r.to_send[0][0] == p.kb.public
    r = p.a.send(pkt(ADDR_A, ipaddress.IPv6Address("fd7a:115c:a1e0::d").packed, b"3"), 0.3)
    assert r.to_send[0][0] == third.public and len(r.to_send[0][1]) == 148


def test_unknown_and_removed_peers_get_nothing() -> None:
    p = Pair()
    stranger = Device(NodeKey.generate().private)
    stranger.add_peer(p.kb.public, ["::/0"])
    r = stranger.send(pkt(ADDR_A, ADDR_B, b"x"), 0.0)
    assert not p.b.receive(stranger.public_key, r.to_send[0][1], 0.0).to_send
    p.pump(p.a, p.a.send(pkt(ADDR_A, ADDR_B, b"x"), 0.0), 0.0)
    p.b.remove_peer(p.ka.public)
    assert not p.b._indices and p.b.next_deadline() is None
    r = p.a.send(pkt(ADDR_A, ADDR_B, b"gone"), 1.0)
    got = p.pump(p.a, r, 1.0)
    assert not got[p.b].packets_in


def test_replayed_and_flooded_initiations_are_dropped() -> None:
    p = Pair()
    r = p.a.initiate(p.kb.public, 0.0)
    init = r.to_send[0][1]
    assert len(p.b.receive(p.ka.public, init, 0.0).to_send) == 1
    assert not p.b.receive(p.ka.public, init, 10.0).to_send  # same timestamp: replay
    # A newer initiation within 20 ms of the last one consumed: flood, dropped.
    p.a.peers[p.kb.public].last_sent_handshake = None
    init2 = p.a.initiate(p.kb.public, 0.001).to_send[0][1]
    p.b.peers[p.ka.public].last_initiation = 10.0
    assert not p.b.receive(p.ka.public, init2, 10.01).to_send
    assert len(p.b.receive(p.ka.public, init2, 10.05).to_send) == 1
    # mac1 is checked before anything else.
    bad = init[:116] + bytes(16) + init[132:]
    assert not p.b.receive(p.ka.public, bad, 20.0).to_send


def test_tai64n() -> None:
    assert tai64n(0.0) == bytes.fromhex("400000000000000a 00000000")
    stamp = tai64n(1_700_000_000.5)
    assert stamp[:8] == (0x400000000000000A + 1_700_000_000).to_bytes(8, "big")
    assert int.from_bytes(stamp[8:], "big") % (1 << 24) == 0  # whitened like wireguard-go


def test_cookie_reply_under_load_then_mac2_accepted() -> None:
    p = Pair()
    p.b.force_under_load = True
    init = p.a.initiate(p.kb.public, 0.0).to_send[0][1]
    assert init[-16:] == bytes(16)
    r = p.b.receive(p.ka.public, init, 0.0)
    (dst, cookie_reply), = r.to_send
    assert dst == p.ka.public and len(cookie_reply) == 64 and cookie_reply[:4] == b"\x03\0\0\0"
    assert cookie_reply[4:8] == init[4:8]
    assert not p.b.peers[p.ka.public].next  # no session made
    p.a.receive(p.kb.public, cookie_reply, 0.0)
    # The retransmission carries mac2 and is answered.
    r = p.a.tick(5.4)
    init2 = r.to_send[0][1]
    assert init2[-16:] != bytes(16)
    got = p.pump(p.a, r, 5.4)
    assert got[p.a].events == [HandshakeComplete(p.kb.public, True)]
    # A cookie reply for someone else's mac1 does not open.
    assert p.a.receive(p.kb.public, cookie_reply, 6.0).to_send == []


def test_load_threshold_triggers_cookies() -> None:
    p = Pair(Timers(under_load_handshakes=2))
    answers = []
    for i in range(4):
        p.a.peers[p.kb.public].last_sent_handshake = None
        init = p.a.initiate(p.kb.public, i * 0.1).to_send[0][1]
        answers.append(p.b.receive(p.ka.public, init, i * 0.1).to_send[0][1][0])
    assert answers == [2, 2, 3, 3]


def test_retransmit_then_give_up() -> None:
    t = Timers(rekey_timeout=5.0, rekey_attempt_time=90.0, rekey_timeout_jitter=0.0)
    p = Pair(t)
    r = p.a.send(pkt(ADDR_A, ADDR_B, b"lost"), 0.0)
    assert len(r.to_send) == 1
    assert p.a.next_deadline() == 5.0
    sent, now, failed = 1, 0.0, []
    while (deadline := p.a.next_deadline()) is not None and deadline < 1000:
        now = deadline
        r = p.a.tick(now)
        sent += sum(d[0] == 1 for _, d in r.to_send)
        failed += r.events
        if failed:
            break
    # wireguard-go: the first try, then retries while attempts <= MaxTimerHandshakes (90/5 = 18).
    assert sent == 1 + 19
    assert failed == [HandshakeFailed(p.kb.public)] and now == pytest.approx(100.0)
    assert not p.a.peers[p.kb.public].queue
    # Key material (the pending handshake) is erased 3 * RejectAfterTime later; then idle.
    assert p.a.next_deadline() == pytest.approx(100.0 + 540)
    p.a.tick(100.0 + 540)
    assert p.a.next_deadline() is None and not p.a._indices


def test_idle_device_has_no_deadline_and_established_one_settles() -> None:
    p = Pair(Timers(rekey_timeout_jitter=0.0))
    assert p.a.next_deadline() is None
    p.pump(p.a, p.a.send(pkt(ADDR_A, ADDR_B, b"x"), 0.0), 0.0)
    # B got data and sent nothing back: it owes a keepalive after KeepaliveTimeout.
    assert p.b.next_deadline() == 10.0
    r = p.b.tick(10.0)
    assert [len(d) for _, d in r.to_send] == [32]
    p.pump(p.b, r, 10.0)
    # A sent data and heard only a keepalive: that counts as an answer, no new handshake.
    now = 10.0
    while (deadline := p.a.next_deadline()) is not None and deadline < 10_000:
        now = deadline
        assert not [d for _, d in p.a.tick(now).to_send if d[0] == 1]
    assert p.a.next_deadline() is None and p.b.tick(now).to_send == []


def test_new_handshake_when_data_goes_unanswered() -> None:
    p = Pair(Timers(rekey_timeout_jitter=0.0))
    p.pump(p.a, p.a.send(pkt(ADDR_A, ADDR_B, b"x"), 0.0), 0.0)
    p.a.send(pkt(ADDR_A, ADDR_B, b"into the void"), 1.0)  # never delivered, never answered
    r = Result()
    for now in (10.0, 14.9, 15.0):
        r = p.a.tick(now)
        if r.to_send:
            break
    # KeepaliveTimeout + RekeyTimeout after the first data nobody answered ("x" at 0.0).
    assert now == 15.0 and r.to_send[0][1][0] == 1


def test_rekey_after_time_by_initiator_and_reject_after_time() -> None:
    t = Timers(rekey_after_time=6.0, reject_after_time=12.0, rekey_timeout_jitter=0.0)
    p = Pair(t)
    p.pump(p.a, p.a.send(pkt(ADDR_A, ADDR_B, b"x"), 0.0), 0.0)
    # B (responder) never rekeys on age; A (initiator) does once the session is 6 s old.
    assert not [d for _, d in p.b.send(pkt(ADDR_B, ADDR_A, b"b"), 6.5).to_send if d[0] == 1]
    assert [d[0] for _, d in p.a.send(pkt(ADDR_A, ADDR_B, b"a"), 5.9).to_send] == [4]
    r = p.a.send(pkt(ADDR_A, ADDR_B, b"a"), 6.5)
    assert [d[0] for _, d in r.to_send] == [4, 1]
    got = p.pump(p.a, r, 6.5)
    assert got[p.b].packets_in == [pkt(ADDR_A, ADDR_B, b"a")]
    assert p.a.peers[p.kb.public].stats.handshakes == 2
    # The old session's packets still decrypt via "previous" until RejectAfterTime.
    old = p.a.peers[p.kb.public].previous
    assert old is not None
    # A session older than RejectAfterTime is not used for sending: a new handshake instead.
    p2 = Pair(t)
    p2.pump(p2.a, p2.a.send(pkt(ADDR_A, ADDR_B, b"x"), 0.0), 0.0)
    r = p2.b.send(pkt(ADDR_B, ADDR_A, b"late"), 12.0)
    assert [d[0] for _, d in r.to_send] == [1]


def test_old_session_counter_rejected() -> None:
    w = ReplayWindow()
    assert not w.accept(REJECT_AFTER_MESSAGES)
    assert w.accept(REJECT_AFTER_MESSAGES - 1)


def test_persistent_keepalive() -> None:
    p = Pair(Timers(rekey_timeout_jitter=0.0))
    p.a.add_peer(p.kb.public, ["fd7a:115c:a1e0::b/128"], persistent_keepalive=25)
    p.pump(p.a, p.a.send(pkt(ADDR_A, ADDR_B, b"x"), 0.0), 0.0)
    assert 25.0 in p.a.peers[p.kb.public].deadlines()
    p.pump(p.b, p.b.tick(10.0), 10.0)  # B's keepalive: the last packet A saw, at 10
    assert 35.0 in p.a.peers[p.kb.public].deadlines()
    r = p.a.tick(35.0)
    assert [len(d) for _, d in r.to_send] == [32]
    p.a.add_peer(p.kb.public, ["fd7a:115c:a1e0::b/128"], persistent_keepalive=None)
    assert p.a.peers[p.kb.public].t_persistent is None


# -- properties -------------------------------------------------------------------------------


@given(st.lists(st.integers(min_value=0, max_value=20_000), max_size=300))
def test_replay_window_matches_a_model(counters: list[int]) -> None:
    w = ReplayWindow()
    seen: set[int] = set()
    top = -1
    for c in counters:
        want = c not in seen and (c > top or top - c < REPLAY_WINDOW)
        assert w.accept(c) == want, (c, top)
        if want:
            seen.add(c)
            top = max(top, c)


@given(st.lists(st.sampled_from(["deliver", "dup", "swap", "drop", "tick", "send_a", "send_b"]), max_size=60),
       st.randoms(use_true_random=False))
@settings(max_examples=60, deadline=None)
def test_handshake_and_data_under_loss_reordering_duplication(ops: list[str], rnd: object) -> None:
    import random

    assert isinstance(rnd, random.Random)
    p = Pair()
    wire: list[tuple[Device, bytes]] = []  # (sender, datagram) in flight
    now = 0.0
    sent: dict[Device, set[bytes]] = {p.a: set(), p.b: set()}
    delivered: dict[Device, list[bytes]] = {p.a: [], p.b: []}
    n = 0

    def apply(dev: Device, r: Result) -> None:
        wire.extend((dev, d) for _, d in r.to_send)

    def deliver(i: int) -> None:
        src, d = wire.pop(i)
        dst = p.other(src)
        r = dst.receive(src.public_key, d, now)
        delivered[dst] += r.packets_in
        apply(dst, r)

    for op in ops:
        now += 0.3
        if op in ("send_a", "send_b"):
            n += 1
            dev = p.a if op == "send_a" else p.b
            data = pkt(ADDR_A if dev is p.a else ADDR_B, ADDR_B if dev is p.a else ADDR_A, n.to_bytes(4, "big"))
            sent[dev].add(data)
            apply(dev, dev.send(data, now))
        elif op == "deliver" and wire:
            deliver(rnd.randrange(len(wire)))
        elif op == "dup" and wire:
            wire.append(wire[rnd.randrange(len(wire))])
        elif op == "swap" and len(wire) > 1:
            i, j = rnd.randrange(len(wire)), rnd.randrange(len(wire))
            wire[i], wire[j] = wire[j], wire[i]
        elif op == "drop" and wire:
            wire.pop(rnd.randrange(len(wire)))
        elif op == "tick":
            now += 5.5
            apply(p.a, p.a.tick(now))
            apply(p.b, p.b.tick(now))
        # Safety at every step: nothing delivered twice, nothing that was not sent.
        for dev in (p.a, p.b):
            assert len(delivered[dev]) == len(set(delivered[dev]))
            assert set(delivered[dev]) <= sent[p.other(dev)]
    # Then a clean network: each datagram delivered at once, in order; timers run when due (one
    # device at a time, as real clocks do). WireGuard does not retransmit data (a packet sent on a
    # session the peer just replaced is lost), so A sends a fresh "final" each round, as an
    # application would, until one arrives.
    finals: set[bytes] = set()
    for k in range(40):
        if finals & set(delivered[p.b]):
            break
        if not p.a.peers[p.kb.public].queue:
            finals.add(final := pkt(ADDR_A, ADDR_B, b"final%d" % k))
            sent[p.a].add(final)
            apply(p.a, p.a.send(final, now))
        while wire:
            deliver(0)
        if finals & set(delivered[p.b]):
            break
        dev = min((p.a, p.b), key=lambda d: d.next_deadline() or float("inf"))
        deadline = dev.next_deadline()
        assert deadline is not None, f"stuck with no timer pending: {ops}"
        now = max(now, deadline)
        apply(dev, dev.tick(now))
    assert finals & set(delivered[p.b]), ops
    assert set(delivered[p.b]) <= sent[p.a]
    assert len(delivered[p.b]) == len(set(delivered[p.b]))


def test_transport_header_layout() -> None:
    p = Pair()
    p.pump(p.a, p.a.send(pkt(ADDR_A, ADDR_B, b"x"), 0.0), 0.0)
    (_, d), = p.a.send(pkt(ADDR_A, ADDR_B, b"y"), 0.1).to_send
    kind, receiver, counter = struct.unpack_from("<IIQ", d)
    assert kind == 4 and counter == 1  # counter 0 carried "x"
    assert receiver == p.b.peers[p.ka.public].current.local_index  # type: ignore[union-attr]


def test_replay_window_edges_and_big_jumps() -> None:
    w = ReplayWindow()
    assert w.accept(0) and not w.accept(0)
    top = 1 << 63
    assert w.accept(top)  # a jump far beyond the window costs no more than a small one
    assert not w.accept(top - REPLAY_WINDOW)  # just outside
    assert w.accept(top - REPLAY_WINDOW + 1) and not w.accept(top - REPLAY_WINDOW + 1)
    assert w.accept(top - 1) and w.accept(top + 1) and not w.accept(top)


def test_timer_defaults_are_the_reference_values() -> None:
    t = Timers()
    assert (t.rekey_after_time, t.reject_after_time, t.rekey_timeout, t.keepalive_timeout, t.rekey_attempt_time) == (
        120.0, 180.0, 5.0, 10.0, 90.0)
    assert t.max_handshake_attempts == 18 and t.handshake_initiation_rate == 0.02
