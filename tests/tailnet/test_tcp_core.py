"""Pure tests of the TCP core: two stacks over a simulated lossy link, flow control, RST rules, timers.

The client side is the same core's active open; the kernel test (test_tcp_kernel.py) checks the
passive side against Linux's TCP.
"""

from __future__ import annotations

import heapq
import itertools
import random
import struct
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from coder_agent.tailnet import tcp
from coder_agent.tailnet.tcp import ACK, FIN, RST, SYN, ConnKey, State, TcpConfig, TcpStack

SERVER = bytes.fromhex("fd7a115ca1e0000000000000000000" + "01")
CLIENT = bytes.fromhex("fd7a115ca1e0000000000000000000" + "02")


@dataclass
class Seg:
    src: bytes
    dst: bytes
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    window: int
    options: bytes
    payload: bytes


def parse(packet: bytes) -> Seg:
    parts = tcp.split_ipv6(packet)
    assert parts is not None
    src, dst, nh, body = parts
    assert nh == 6
    assert tcp._ipv6_checksum(src, dst, 6, body) == 0, "bad checksum on an outgoing segment"
    sport, dport, seq, ack, off, flags, win, _, _ = struct.unpack_from(">HHIIBBHHH", body)
    hl = (off >> 4) * 4
    return Seg(src, dst, sport, dport, seq, ack, flags, win, body[20:hl], body[hl:])


def pkt(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int, window: int = 65535,
        options: bytes = b"", payload: bytes = b"") -> bytes:
    seg = tcp.encode_segment(src, dst, sport, dport, seq, ack, flags, window, options, payload)
    return tcp.build_ipv6(src, dst, 6, seg)


def from_client(sport: int, seq: int, ack: int, flags: int, **kw: object) -> bytes:
    return pkt(CLIENT, SERVER, sport, 8080, seq, ack, flags, **kw)  # type: ignore[arg-type]


MSS_WS = struct.pack(">BBH", 2, 4, 1220) + bytes((1, 3, 3, 7))


# ---- the simulated link and two applications ------------------------------------------------


@dataclass
class Link:
    rng: random.Random
    loss: float = 0.0
    dup: float = 0.0
    jitter: float = 0.0
    delay: float = 0.01
    queue: list[tuple[float, int, str, bytes]] = field(default_factory=list)
    n: int = 0
    sent: int = 0

    def send(self, now: float, to: str, packets: list[bytes]) -> None:
        for p in packets:
            self.sent += 1
            if self.rng.random() < self.loss:
                continue
            for _ in range(2 if self.rng.random() < self.dup else 1):
                self.n += 1
                heapq.heappush(self.queue, (now + self.delay + self.rng.random() * self.jitter, self.n, to, p))


@dataclass
class Endpoint:
    """An application on one stack: sends ``outgoing`` then closes; reads (consumes) with a policy."""

    stack: TcpStack
    outgoing: bytes
    consume_every: float = 0.0  # 0: consume at once; else consume everything held every N seconds
    close_after_peer: bool = False  # close only after the peer's FIN (CLOSE-WAIT, LAST-ACK)
    key: ConnKey | None = None
    sent: int = 0
    received: bytearray = field(default_factory=bytearray)
    held: int = 0
    next_consume: float = 0.0
    connected: bool = False
    peer_closed: bool = False
    closed: bool = False
    reset: str | None = None
    writable_events: int = 0
    max_sndbuf: int = 0
    max_held: int = 0

    def pump(self, now: float) -> None:
        if self.key is None or not self.connected or self.closed or self.reset:
            return
        while self.sent < len(self.outgoing) and self.stack.state(self.key) in (State.ESTABLISHED, State.CLOSE_WAIT):
            n = self.stack.send(self.key, self.outgoing[self.sent : self.sent + 50_000], now)
            self.sent += n
            if n == 0:
                break
        if self.key in self.stack:
            self.max_sndbuf = max(self.max_sndbuf, self.stack.buffered(self.key)[0])
        if (self.sent == len(self.outgoing) and self.stack.state(self.key) in (State.ESTABLISHED, State.CLOSE_WAIT)
                and (self.peer_closed or not self.close_after_peer)):
            self.stack.close(self.key, now)

    def handle(self, events: list[tcp.TcpEvent], now: float) -> None:
        for ev in events:
            if isinstance(ev, tcp.ConnectionRequested):
                assert self.key is None
                self.key = ev.key
                self.stack.accept(ev.key, now)
            elif isinstance(ev, tcp.Connected):
                self.connected = True
            elif isinstance(ev, tcp.DataReceived):
                assert not self.peer_closed
                self.received += ev.data
                self.held += len(ev.data)
                self.max_held = max(self.max_held, self.held)
            elif isinstance(ev, tcp.PeerClosed):
                self.peer_closed = True
            elif isinstance(ev, tcp.Writable):
                self.writable_events += 1
            elif isinstance(ev, tcp.ConnectionClosed):
                assert self.peer_closed
                self.closed = True
            elif isinstance(ev, tcp.ConnectionReset):
                self.reset = ev.reason
        self.consume(now)
        self.pump(now)

    def consume(self, now: float) -> None:
        if self.key is None or not self.held:
            return
        if self.consume_every == 0 or now >= self.next_consume:
            self.stack.consume(self.key, self.held, now)
            self.held = 0
            self.next_consume = now + self.consume_every

    def deadline(self) -> float | None:
        return self.next_consume if self.held and self.consume_every else None


def simulate(link: Link, server: Endpoint, client: Endpoint, *, limit: float = 36_000.0,
             max_steps: int = 200_000) -> float:
    """Run until nothing is left to do; return the simulated time when both applications saw the end."""
    now = 0.0
    client.key = client.stack.connect(CLIENT, 40000, SERVER, 8080, now)
    done_at: float | None = None
    for _ in range(max_steps):
        link.send(now, "server", client.stack.packets_to_send())
        link.send(now, "client", server.stack.packets_to_send())
        if done_at is None and (server.closed or server.reset) and (client.closed or client.reset):
            done_at = now
        times = [t for t in (link.queue[0][0] if link.queue else None, server.stack.next_deadline(),
                             client.stack.next_deadline(), server.deadline(), client.deadline()) if t is not None]
        if not times:
            break
        now = max(now, min(times))
        assert now < limit, "simulation did not finish"
        while link.queue and link.queue[0][0] <= now:
            _, _, to, p = heapq.heappop(link.queue)
            ep = server if to == "server" else client
            ep.handle(ep.stack.receive_packet(p, now), now)
        for ep in (server, client):
            ep.handle(ep.stack.handle_timers(now), now)
    else:
        raise AssertionError("too many steps")
    assert done_at is not None
    return done_at


# ---- property: byte-exact delivery and termination under loss, duplication, reordering --------


# MSS edges and sizes many windows long (hypothesis' integers favour tiny values)
SIZES = [0, 1, 1219, 1220, 1221, 9_999, 65_536, 150_000, 400_000]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    up=st.sampled_from(SIZES),
    down=st.sampled_from(SIZES),
    loss=st.sampled_from([0.0, 0.01, 0.05, 0.15]),  # at 30% both ways, 15 lost retransmissions in a row happen
    dup=st.sampled_from([0.0, 0.02, 0.1]),
    jitter=st.sampled_from([0.0, 0.005, 0.03]),
    slow_reader=st.booleans(),
    server_closes_last=st.booleans(),
)
def test_transfer_both_ways_is_byte_exact(seed: int, up: int, down: int, loss: float, dup: float, jitter: float,
                                          slow_reader: bool, server_closes_last: bool) -> None:
    rng = random.Random(seed)
    # TIME-WAIT outlasts every retransmission of the peer's FIN (15 x 60 s): a lossy link must not turn
    # the last ACK's loss into a RST here (a real TIME-WAIT is shorter and accepts that rare outcome)
    cfg = TcpConfig(recv_buffer=32 * 1024, send_buffer=24 * 1024, time_wait=1000.0)
    up_data = rng.randbytes(up)
    down_data = rng.randbytes(down)
    server = Endpoint(TcpStack(cfg, rng=random.Random(seed ^ 1)), down_data,
                      consume_every=0.05 if slow_reader else 0.0, close_after_peer=server_closes_last)
    client = Endpoint(TcpStack(cfg, rng=random.Random(seed ^ 2)), up_data)
    link = Link(random.Random(seed ^ 3), loss=loss, dup=dup, jitter=jitter)
    simulate(link, server, client)
    event(f"bytes={up + down >= 100_000} loss={loss}")
    assert server.reset is None and client.reset is None, (server.reset, client.reset)
    assert bytes(server.received) == up_data
    assert bytes(client.received) == down_data
    assert server.closed and client.closed
    # nothing lingers: TIME-WAIT ended, no timer left (the simulation stops only when none is armed)
    assert len(server.stack) == 0 and len(client.stack) == 0
    assert server.stack.next_deadline() is None and client.stack.next_deadline() is None
    # bounded buffers
    assert server.max_sndbuf <= cfg.send_buffer and client.max_sndbuf <= cfg.send_buffer
    assert server.max_held <= cfg.recv_buffer + 128 and client.max_held <= cfg.recv_buffer + 128


def test_clean_link_is_fast_and_lean() -> None:
    """No loss: 1 MB goes in a few hundred simulated ms at 10 ms one-way delay, one ACK per batch at most."""
    rng = random.Random(7)
    data = rng.randbytes(1_000_000)
    server = Endpoint(TcpStack(rng=random.Random(1)), b"")
    client = Endpoint(TcpStack(rng=random.Random(2)), data)
    link = Link(random.Random(3))
    done = simulate(link, server, client)
    assert bytes(server.received) == data
    assert done < 1.0, done
    segments = -(-len(data) // 1220)
    assert link.sent < 2.2 * segments, (link.sent, segments)


# ---- flow control and backpressure --------------------------------------------------------


def test_slow_reader_closes_the_window_and_the_sender_stops_then_resumes() -> None:
    cfg = TcpConfig(recv_buffer=16 * 1024, send_buffer=8 * 1024)
    server = Endpoint(TcpStack(cfg, rng=random.Random(1)), b"", consume_every=1.0, next_consume=float("inf"))
    data = random.Random(5).randbytes(200_000)
    client = Endpoint(TcpStack(cfg, rng=random.Random(2)), data)
    link = Link(random.Random(3))
    now = 0.0
    client.key = client.stack.connect(CLIENT, 40000, SERVER, 8080, now)
    probes_seen: list[float] = []
    for _ in range(100_000):
        cp = client.stack.packets_to_send()
        for p in cp:
            s = parse(p)
            if s.seq == (client.stack._conns[client.key].snd_una - 1) & 0xFFFFFFFF and not s.payload:
                probes_seen.append(now)
        link.send(now, "server", cp)
        link.send(now, "client", server.stack.packets_to_send())
        times = [t for t in (link.queue[0][0] if link.queue else None, server.stack.next_deadline(),
                             client.stack.next_deadline()) if t is not None]
        now = min(times)
        if now > 30:
            break
        while link.queue and link.queue[0][0] <= now:
            _, _, to, p = heapq.heappop(link.queue)
            ep = server if to == "server" else client
            ep.handle(ep.stack.receive_packet(p, now), now)
        for ep in (server, client):
            ep.handle(ep.stack.handle_timers(now), now)
    # the reader held at most its buffer; the writer's buffer stayed bounded and refused the rest
    assert server.held <= cfg.recv_buffer + 128
    assert len(server.received) == server.held
    assert client.sent < len(data)
    assert client.max_sndbuf <= cfg.send_buffer
    # zero-window probes, with growing gaps (RTO backoff), not a busy loop
    assert len(probes_seen) >= 4
    gaps = [b - a for a, b in itertools.pairwise(probes_seen)]
    assert gaps[-1] > gaps[0]
    assert len(probes_seen) < 20
    # the reader starts reading: the transfer resumes and completes
    server.consume_every = 0.0
    server.consume(now)
    while not server.closed or not client.closed:
        link.send(now, "server", client.stack.packets_to_send())
        link.send(now, "client", server.stack.packets_to_send())
        times = [t for t in (link.queue[0][0] if link.queue else None, server.stack.next_deadline(),
                             client.stack.next_deadline()) if t is not None]
        now = min(times)
        assert now < 600
        while link.queue and link.queue[0][0] <= now:
            _, _, to, p = heapq.heappop(link.queue)
            ep = server if to == "server" else client
            ep.handle(ep.stack.receive_packet(p, now), now)
        for ep in (server, client):
            ep.handle(ep.stack.handle_timers(now), now)
    assert bytes(server.received) == data
    assert client.writable_events > 0


def test_send_accepts_only_what_fits() -> None:
    cfg = TcpConfig(send_buffer=10_000)
    st_ = TcpStack(cfg, rng=random.Random(1))
    key = st_.connect(CLIENT, 1234, SERVER, 80, 0.0)
    assert st_.send(key, b"x" * 6000, 0.0) == 6000
    assert st_.send(key, b"y" * 6000, 0.0) == 4000
    assert st_.send(key, b"z", 0.0) == 0
    assert st_.send_space(key) == 0


# ---- handshake, refusal and RST rules (hand-crafted segments) ---------------------------------


def syn_to(stack: TcpStack, sport: int = 5555, isn: int = 1000, options: bytes = MSS_WS) -> ConnKey:
    events = stack.receive_packet(from_client(sport, isn, 0, SYN, options=options), 0.0)
    assert len(events) == 1 and isinstance(events[0], tcp.ConnectionRequested)
    assert stack.packets_to_send() == []  # nothing goes back before the caller decides
    return events[0].key


def test_syn_ack_announces_mss_1220_and_window_scale() -> None:
    stack = TcpStack(rng=random.Random(1))
    key = syn_to(stack)
    assert key == ConnKey(SERVER, 8080, CLIENT, 5555)
    stack.accept(key, 0.0)
    [synack] = [parse(p) for p in stack.packets_to_send()]
    assert synack.flags == SYN | ACK and synack.ack == 1001
    assert synack.options[:4] == struct.pack(">BBH", 2, 4, 1220)
    assert synack.options[4:] == bytes((1, 3, 3, 3))  # 256 KiB buffer → shift 3
    events = stack.receive_packet(from_client(5555, 1001, synack.seq + 1, ACK, window=1000), 0.01)
    assert events == [tcp.Connected(key)]
    assert stack.state(key) is State.ESTABLISHED
    # the peer's window is scaled by its shift (7): 1000 << 7 lets 128000 bytes go at once... up to cwnd
    stack.send(key, b"a" * 20000, 0.02)
    sent = [parse(p) for p in stack.packets_to_send()]
    assert all(len(s.payload) <= 1220 for s in sent) and len(sent) == 10  # initial cwnd = 10 segments


def test_no_window_scale_when_the_peer_does_not_offer_it() -> None:
    stack = TcpStack(rng=random.Random(1))
    key = syn_to(stack, options=struct.pack(">BBH", 2, 4, 536))
    stack.accept(key, 0.0)
    [synack] = [parse(p) for p in stack.packets_to_send()]
    assert synack.options == struct.pack(">BBH", 2, 4, 1220)
    stack.receive_packet(from_client(5555, 1001, synack.seq + 1, ACK, window=65535), 0.01)
    stack.send(key, b"a" * 5000, 0.02)
    assert max(len(parse(p).payload) for p in stack.packets_to_send()) == 536


def test_refused_syn_gets_rst_ack() -> None:
    stack = TcpStack(rng=random.Random(1))
    key = syn_to(stack, isn=0xFFFFFFFF)
    stack.refuse(key)
    [rst] = [parse(p) for p in stack.packets_to_send()]
    assert rst.flags == RST | ACK and rst.ack == 0 and rst.seq == 0  # ack wraps around 2^32
    assert len(stack) == 0 and stack.next_deadline() is None


def test_duplicate_syn_while_undecided_is_dropped_and_an_undecided_one_times_out() -> None:
    stack = TcpStack(TcpConfig(decision_timeout=2.0), rng=random.Random(1))
    key = syn_to(stack)
    assert stack.receive_packet(from_client(5555, 1000, 0, SYN, options=MSS_WS), 1.0) == []
    assert stack.packets_to_send() == []
    assert stack.next_deadline() == 2.0
    assert stack.handle_timers(2.0) == [tcp.ConnectionReset(key, "timeout")]
    [rst] = [parse(p) for p in stack.packets_to_send()]
    assert rst.flags & RST


def test_segments_to_unknown_connections_get_rst() -> None:
    stack = TcpStack(rng=random.Random(1))
    assert stack.receive_packet(from_client(1, 500, 777, ACK), 0.0) == []
    [r] = [parse(p) for p in stack.packets_to_send()]
    assert r.flags == RST and r.seq == 777
    stack.receive_packet(from_client(1, 500, 0, 0, payload=b"abc"), 0.0)
    [r] = [parse(p) for p in stack.packets_to_send()]
    assert r.flags == RST | ACK and r.seq == 0 and r.ack == 503
    stack.receive_packet(from_client(1, 500, 0, FIN), 0.0)
    [r] = [parse(p) for p in stack.packets_to_send()]
    assert r.ack == 501
    stack.receive_packet(from_client(1, 500, 0, RST), 0.0)
    assert stack.packets_to_send() == []  # never answer a RST


def test_bad_checksum_is_dropped() -> None:
    p = bytearray(from_client(5555, 1000, 0, SYN, options=MSS_WS))
    p[-1] ^= 0x40
    stack = TcpStack(rng=random.Random(1))
    assert stack.receive_packet(bytes(p), 0.0) == []
    assert stack.packets_to_send() == [] and len(stack) == 0


def established(stack: TcpStack, sport: int = 5555) -> tuple[ConnKey, int]:
    """A connection through the handshake; returns the key and the server's next seq."""
    key = syn_to(stack, sport)
    stack.accept(key, 0.0)
    [synack] = [parse(p) for p in stack.packets_to_send()]
    assert stack.receive_packet(from_client(sport, 1001, synack.seq + 1, ACK), 0.01) == [tcp.Connected(key)]
    return key, synack.seq + 1


def test_unacceptable_ack_in_syn_received_gets_rst() -> None:
    stack = TcpStack(rng=random.Random(1))
    key = syn_to(stack)
    stack.accept(key, 0.0)
    [synack] = [parse(p) for p in stack.packets_to_send()]
    stack.receive_packet(from_client(5555, 1001, synack.seq + 5, ACK), 0.01)
    [r] = [parse(p) for p in stack.packets_to_send()]
    assert r.flags == RST and r.seq == synack.seq + 5
    assert stack.state(key) is State.SYN_RECEIVED


def test_rst_exact_resets_in_window_challenges_outside_ignored() -> None:
    stack = TcpStack(rng=random.Random(1))
    key, _ = established(stack)
    assert stack.receive_packet(from_client(5555, 1001 + 100, 0, RST), 0.1) == []
    [c] = [parse(p) for p in stack.packets_to_send()]
    assert c.flags == ACK and c.ack == 1001  # challenge ACK
    assert stack.receive_packet(from_client(5555, 1001 + 10_000_000, 0, RST), 0.1) == []
    assert stack.packets_to_send() == []
    assert stack.receive_packet(from_client(5555, 1001, 0, RST), 0.1) == [tcp.ConnectionReset(key, "reset by peer")]
    assert len(stack) == 0


def test_syn_on_established_gets_challenge_ack() -> None:
    stack = TcpStack(rng=random.Random(1))
    key, _ = established(stack)
    stack.receive_packet(from_client(5555, 1001, 0, SYN, options=MSS_WS), 0.1)
    [c] = [parse(p) for p in stack.packets_to_send()]
    assert c.flags == ACK and c.ack == 1001
    assert stack.state(key) is State.ESTABLISHED


def test_ack_of_unsent_data_is_answered_and_dropped() -> None:
    stack = TcpStack(rng=random.Random(1))
    _, nxt = established(stack)
    events = stack.receive_packet(from_client(5555, 1001, nxt + 50, ACK, payload=b"zz"), 0.1)
    assert events == []
    [c] = [parse(p) for p in stack.packets_to_send()]
    assert c.flags == ACK and c.ack == 1001


def test_out_of_order_is_buffered_then_delivered_in_order() -> None:
    stack = TcpStack(rng=random.Random(1))
    _, nxt = established(stack)
    assert stack.receive_packet(from_client(5555, 1004, nxt, ACK, payload=b"def"), 0.1) == []
    [dup] = [parse(p) for p in stack.packets_to_send()]
    assert dup.ack == 1001  # immediate duplicate ACK
    events = stack.receive_packet(from_client(5555, 1001, nxt, ACK, payload=b"abc"), 0.2)
    assert b"".join(e.data for e in events if isinstance(e, tcp.DataReceived)) == b"abcdef"
    [a] = [parse(p) for p in stack.packets_to_send()]
    assert a.ack == 1007


def test_retransmission_backs_off_and_gives_up_with_reset() -> None:
    cfg = TcpConfig(max_retries=4)
    stack = TcpStack(cfg, rng=random.Random(1))
    key, _ = established(stack)
    stack.send(key, b"hello", 0.1)
    first = parse(stack.packets_to_send()[0])
    times = []
    events: list[tcp.TcpEvent] = []
    while not events:
        at = stack.next_deadline()
        assert at is not None
        events = stack.handle_timers(at)
        times.append(at)
        for p in stack.packets_to_send():
            s = parse(p)
            if not s.flags & RST:
                assert (s.seq, s.payload) == (first.seq, b"hello")
    assert events == [tcp.ConnectionReset(key, "timeout")]
    gaps = [b - a for a, b in zip([0.1, *times], times, strict=False)]
    assert gaps[0] == pytest.approx(0.2)  # the handshake's 10 ms RTT sample → RTO clamped to rto_min
    assert all(b > a * 1.9 for a, b in itertools.pairwise(gaps))
    assert len(stack) == 0 and stack.next_deadline() is None


def test_idle_connection_has_no_timer_and_keepalive_probes_then_resets() -> None:
    stack = TcpStack(TcpConfig(keepalive_interval=10.0, keepalive_count=3), rng=random.Random(1))
    key = syn_to(stack)
    stack.accept(key, 0.0, keepalive_idle=100.0)
    [synack] = [parse(p) for p in stack.packets_to_send()]
    stack.receive_packet(from_client(5555, 1001, synack.seq + 1, ACK), 0.01)
    assert stack.next_deadline() == pytest.approx(100.01)
    # a segment from the peer pushes the idle timer forward (checked lazily when it fires)
    stack.receive_packet(from_client(5555, 1001, synack.seq + 1, ACK, payload=b"x"), 50.0)
    stack.packets_to_send()
    assert stack.handle_timers(100.01) == []
    assert stack.packets_to_send() == []
    assert stack.next_deadline() == pytest.approx(150.0)
    stack.handle_timers(150.0)
    [probe] = [parse(p) for p in stack.packets_to_send()]
    assert probe.seq == synack.seq and probe.payload == b""  # SND.UNA - 1
    # answered: the connection lives on
    stack.receive_packet(from_client(5555, 1002, synack.seq + 1, ACK), 150.1)
    assert stack.handle_timers(160.0) == []
    assert stack.packets_to_send() == []
    # unanswered: three probes, then reset
    events: list[tcp.TcpEvent] = []
    t = 250.1
    for _ in range(4):
        events += stack.handle_timers(t)
        stack.packets_to_send()
        t += 10.0
    assert events == [tcp.ConnectionReset(key, "keepalive timeout")]

    plain = TcpStack(rng=random.Random(1))
    established(plain)
    assert plain.next_deadline() is None  # no keepalive: an idle connection arms nothing


def test_time_wait_is_bounded_in_time_and_count() -> None:
    stack = TcpStack(TcpConfig(time_wait=5.0, max_time_wait=2), rng=random.Random(1))
    for sport in (1, 2, 3):
        key, nxt = established(stack, sport)
        stack.close(key, 1.0)
        [fin] = [parse(p) for p in stack.packets_to_send()]
        assert fin.flags & FIN
        events = stack.receive_packet(from_client(sport, 1001, nxt + 1, ACK | FIN), 1.1)
        assert events == [tcp.PeerClosed(key), tcp.ConnectionClosed(key)]
        assert stack.state(key) is State.TIME_WAIT
        stack.packets_to_send()
    assert len(stack) == 2  # the oldest was dropped
    assert stack.next_deadline() == pytest.approx(6.1)
    stack.handle_timers(6.1)
    assert len(stack) == 0 and stack.next_deadline() is None


def test_half_close_peer_fin_first_then_we_send_and_close() -> None:
    stack = TcpStack(rng=random.Random(1))
    key, nxt = established(stack)
    events = stack.receive_packet(from_client(5555, 1001, nxt, ACK | FIN, payload=b"req"), 0.1)
    assert events == [tcp.DataReceived(key, b"req"), tcp.PeerClosed(key)]
    assert stack.state(key) is State.CLOSE_WAIT
    stack.packets_to_send()
    stack.send(key, b"response", 0.2)
    stack.close(key, 0.2)
    segs = [parse(p) for p in stack.packets_to_send()]
    assert b"".join(s.payload for s in segs) == b"response"
    assert segs[-1].flags & FIN and all(s.ack == 1005 for s in segs)
    assert stack.state(key) is State.LAST_ACK
    assert stack.receive_packet(from_client(5555, 1005, nxt + 9, ACK), 0.3) == [tcp.ConnectionClosed(key)]
    assert len(stack) == 0


def test_state_table_has_no_way_back_to_the_handshake() -> None:
    handshake = {State.REQUESTED, State.SYN_SENT, State.SYN_RECEIVED}
    for state, moves in tcp._TRANSITIONS.items():
        for nxt in moves.values():
            assert nxt not in handshake or state is State.REQUESTED


def test_data_queued_before_the_handshake_completes_goes_out_once_it_does() -> None:
    stack = TcpStack(rng=random.Random(1))
    key = syn_to(stack)
    stack.accept(key, 0.0)
    [synack] = [parse(p) for p in stack.packets_to_send()]
    assert stack.send(key, b"SSH-2.0-banner\r\n", 0.001) == 16
    assert stack.packets_to_send() == []
    assert stack.receive_packet(from_client(5555, 1001, synack.seq + 1, ACK), 0.01) == [tcp.Connected(key)]
    [d] = [parse(p) for p in stack.packets_to_send()]
    assert d.payload == b"SSH-2.0-banner\r\n" and d.seq == synack.seq + 1


def test_memory_per_idle_connection_is_small() -> None:
    import tracemalloc

    stack = TcpStack(rng=random.Random(1))
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for sport in range(1000, 2000):
        established(stack, sport)
    per_conn = (tracemalloc.get_traced_memory()[0] - before) / 1000
    tracemalloc.stop()
    assert len(stack) == 1000 and stack.next_deadline() is None  # idle: no timer at all
    assert per_conn < 2048, per_conn
