"""The engine re-probes DERP latency like Go's netcheck, and only while the tunnel is in use.

Real parts: two devservers, each a DERP relay with ``/derp/latency-check`` (region 1 is the one
with the agent RPC and the coordinator, region 2 a second server); their latency checks are
slowed with the devserver's fault injection (a delay before the answer) and counted from its
request records. Our :class:`Tailnet` runs on a real agent RPC connection. The Coder client is
:class:`PyPeer`: the project's WireGuard device, DERP client and a coordinator client, pinging
the agent's address (ICMPv6 echo, answered by the engine) — the IP traffic that makes a session
active.

Go's cadence (20–26 s, 45 s idle timeout, 5 min history) is scaled down with the engine's
``reprobe`` policy rather than its ``clock``: the latency probe measures real time on that clock
and the DERP redial backoff sleeps on it, so a fake clock would measure every region at zero and
spin the redials. The pure rules are tested with Go's own numbers in test_derpmap.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from structlog.testing import capture_logs

from coder_agent.agentrpc.connection import RpcClient
from coder_agent.devserver import DevAgent, DevServer, Fault
from coder_agent.devserver import tailnet as dstailnet
from coder_agent.devserver.derp import relay
from coder_agent.rpc.proto import tailnet_pb2
from coder_agent.rpc.transport import YamuxConnection
from coder_agent.tailnet import keys, packet
from coder_agent.tailnet.deadline import DeadlineTimer
from coder_agent.tailnet.derpclient import DerpManager, DialOptions
from coder_agent.tailnet.derpmap import DerpMap, ReprobePolicy
from coder_agent.tailnet.engine import Tailnet
from coder_agent.tailnet.wireguard import Device, Result

from ..conftest import apoll, t
from .derpbridge import FAST, CoordClient
from .test_engine_e2e import dial_agent, random_client_address

pytestmark = pytest.mark.timeout(180)

# Go's 20-26 s / 45 s / 5 min, scaled down; no history, so each probe decides on its own.
POLICY = ReprobePolicy(interval_min=0.3, interval_max=0.5, active_timeout=2.0, report_max_age=0.0)
LATENCY_CHECK = r"^/derp/latency-check$"


def region_map(servers: dict[int, DevServer]) -> tailnet_pb2.DERPMap:
    m = tailnet_pb2.DERPMap()
    for rid, ds in servers.items():
        r = m.regions[rid]
        r.region_id, r.region_code, r.region_name = rid, f"r{rid}", f"Region {rid}"
        r.nodes.add(name=f"{rid}a", region_id=rid, host_name="127.0.0.1", derp_port=ds.port, stun_port=-1,
                    force_http=True)
    return m


def checks(ds: DevServer) -> int:
    """Latency-check requests the server has seen (a probe makes two: one opens the connection)."""
    return len(ds.requests_to("/derp/latency-check", "GET"))


def slow_checks(ds: DevServer, delay: float) -> None:
    """Answer every latency check ``delay`` s late (replacing any earlier delay)."""
    ds.clear_faults()
    if delay:
        ds.add_fault(Fault(path=LATENCY_CHECK, delay=delay))


def _is_echo_reply(p: bytes) -> bool:
    return len(p) > packet.HEADER_LEN and p[6] == packet.NH_ICMPV6 and p[packet.HEADER_LEN] == 129


class PyPeer:
    """A Coder client: WireGuard (our device), DERP (our client, homed on ``home``) and the
    devserver's client coordinate route. Sends to the agent through the agent's current home
    region, as the coordinator last described it."""

    def __init__(self, ds: DevServer, agent_id: uuid.UUID, derp_map: DerpMap, home: int) -> None:
        self.ds = ds
        self.agent_id = agent_id
        self.home = home
        self.key = keys.NodeKey.generate()
        self.address = random_client_address()
        self.agent_address = keys.addresses(agent_id)[0]
        self.device = Device(self.key.private)
        self.mgr = DerpManager(self.key.private, DialOptions(), self._on_derp, policy=FAST)
        self.mgr.set_map(derp_map)
        self.timer = DeadlineTimer(self._tick, time.monotonic)
        self.coord: CoordClient | None = None
        self.agent_key = b""
        self.replies = 0
        self._seq = 0
        self._traffic: asyncio.Task[None] | None = None

    async def start(self) -> PyPeer:
        self.mgr.set_home(self.home)
        await asyncio.wait_for(self.mgr.regions[self.home].connected.wait(), t(10))
        node = tailnet_pb2.Node(id=4343, key=self.key.wire, disco=keys.DiscoKey.generate().wire,
                                preferred_derp=self.home, addresses=[f"{self.address}/128"],
                                allowed_ips=[f"{self.address}/128"])
        self.coord = coord = await CoordClient.join(self.ds, self.agent_id, node)
        agent_node = await apoll(lambda: coord.latest_node(self.agent_id), timeout=20)
        self.agent_key = keys.node_key_from_wire(agent_node.key)
        self.device.add_peer(self.agent_key, list(agent_node.allowed_ips))
        return self

    def agent_region(self) -> int:
        node = self.coord.latest_node(self.agent_id) if self.coord is not None else None
        return node.preferred_derp if node is not None else 0

    def ping(self) -> None:
        self._seq += 1
        src, dst = self.address.packed, self.agent_address.packed
        body = struct.pack("!BBHHH", 128, 0, 0, 0x4242, self._seq & 0xFFFF) + os.urandom(16)
        csum = packet.ipv6_checksum(src, dst, packet.NH_ICMPV6, body)
        body = body[:2] + struct.pack("!H", csum) + body[4:]
        self._apply(self.device.send(packet.build(src, dst, packet.NH_ICMPV6, body), time.monotonic()))

    def _apply(self, r: Result) -> None:
        region = self.agent_region()
        for key, datagram in r.to_send:
            self.mgr.send(region, key, datagram)
        self.replies += sum(1 for p in r.packets_in if _is_echo_reply(p))
        self.timer.arm(self.device.next_deadline())

    def _tick(self) -> None:
        self._apply(self.device.tick(time.monotonic()))

    def _on_derp(self, region: int, src: bytes, payload: bytes) -> None:
        if src == self.agent_key and len(payload) >= 4 and 1 <= payload[0] <= 4 and payload[1:4] == b"\0\0\0":
            self._apply(self.device.receive(src, payload, time.monotonic()))

    async def _pinging(self, interval: float) -> None:
        while True:
            self.ping()
            await asyncio.sleep(interval)

    async def traffic(self, on: bool, interval: float = 0.1) -> None:
        """Ping the agent every ``interval`` s (on), or stop. Turning it on waits for a reply."""
        if on and self._traffic is None:
            replies = self.replies
            self._traffic = asyncio.ensure_future(self._pinging(interval))
            await apoll(lambda: self.replies > replies, timeout=20)
        elif not on and self._traffic is not None:
            self._traffic.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._traffic
            self._traffic = None

    async def close(self) -> None:
        await self.traffic(False)
        self.timer.cancel()
        if self.coord is not None:
            await self.coord.close()
        await self.mgr.close()


@dataclass
class Rig:
    a: DevServer  # region 1: agent RPC, coordinator, relay
    b: DevServer  # region 2: a second relay
    agent_id: uuid.UUID
    engine: Tailnet
    derp_map: DerpMap
    view: dstailnet.TailnetView
    conn: YamuxConnection

    def published_home(self) -> int:
        node = self.view.nodes.get(self.agent_id)
        return node.preferred_derp if node is not None else 0

    def checks(self) -> tuple[int, int]:
        return checks(self.a), checks(self.b)

    async def peer(self, home: int = 1) -> PyPeer:
        p = await PyPeer(self.a, self.agent_id, self.derp_map, home).start()
        await apoll(lambda: self.engine.status()["peers"], timeout=20)
        return p


@contextlib.asynccontextmanager
async def two_regions(delay_1: float = 0.0, delay_2: float = 0.0) -> AsyncIterator[Rig]:
    """The engine up and published, on regions 1 and 2 whose latency checks answer late by the
    given delays (set before its first probe)."""
    agent_id = uuid.uuid4()
    async with DevServer(agents=[DevAgent(id=str(agent_id))]) as a, DevServer() as b:
        slow_checks(a, delay_1)
        slow_checks(b, delay_2)
        m = region_map({1: a, 2: b})
        ts = dstailnet.server(a)
        ts.set_derp_map(m)  # StreamDERPMaps sends the same map: no map change, no extra probe
        derp_map = DerpMap.from_proto(m)
        engine = Tailnet(agent_id=agent_id, derp_map=derp_map, coder_url=a.url, dial=DialOptions(), reprobe=POLICY)
        conn = await dial_agent(a, a.agent)
        run = asyncio.ensure_future(engine.run_on_rpc(RpcClient(conn, "2.8", set())))
        try:
            await apoll(lambda: agent_id in ts.view.nodes, timeout=20)
            yield Rig(a, b, agent_id, engine, derp_map, ts.view, conn)
        finally:
            await engine.close()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(run, t(10))
            await conn.close()


async def test_under_traffic_a_clearly_faster_region_takes_over_home() -> None:
    """Region 1 answers in 0.5 s, region 2 in 0.8 s: home is 1. Under traffic the regions are
    probed again and again; region 2 turning slightly faster (0.4 s: not a third better) moves
    nothing and sends no node update; turning much faster (0.02 s) moves home, and the
    coordinator gets the new preferred_derp. (0.4 vs 0.5 s leaves 0.1 s of measuring noise
    either way: region 2 stays measured faster, and region 1 under 1.5 x region 2.)"""
    async with two_regions(delay_1=0.5, delay_2=0.8) as rig:
        assert rig.published_home() == 1 and rig.engine.status()["home_region"] == 1
        assert rig.engine.reprobe_deadline is None  # no peer, no traffic: nothing armed
        peer = await rig.peer(home=1)
        try:
            await peer.traffic(True)
            slow_checks(rig.b, 0.4)
            published = len(rig.view.node_history[rig.agent_id])
            _, seen = rig.checks()
            await apoll(lambda: checks(rig.b) >= seen + 8, timeout=30)  # four probes at least
            latency = rig.engine.derp.latencies
            assert latency[2] < latency[1], latency  # measured faster...
            assert rig.engine.status()["home_region"] == 1  # ...but not enough to move
            assert rig.published_home() == 1
            assert len(rig.view.node_history[rig.agent_id]) == published  # Go's BasicallyEqual

            slow_checks(rig.b, 0.02)
            await apoll(lambda: rig.published_home() == 2, timeout=30)
            assert rig.engine.status()["home_region"] == 2
            node = rig.view.nodes[rig.agent_id]
            assert set(node.derp_latency) == {"1-v4", "2-v4"}
            assert node.derp_latency["2-v4"] < node.derp_latency["1-v4"]
            # The client follows the agent to region 2 and the tunnel keeps working.
            replies = peer.replies
            await apoll(lambda: peer.replies > replies + 3, timeout=20)
        finally:
            await peer.close()


async def test_an_idle_tunnel_is_not_probed() -> None:
    """Probes run while packets flow; once the session has been idle past the active timeout no
    timer stays armed and no latency check reaches either relay over many intervals; the next
    packet arms the timer again."""
    async with two_regions() as rig:
        peer = await rig.peer(home=1)
        try:
            start = rig.checks()
            await peer.traffic(True)
            await apoll(lambda: rig.checks()[0] >= start[0] + 4, timeout=30)  # re-probing while in use
            assert rig.engine.reprobe_deadline is not None or rig.engine.probing

            await peer.traffic(False)
            await apoll(lambda: rig.engine.reprobe_deadline is None and not rig.engine.probing,
                        timeout=POLICY.active_timeout + POLICY.interval_max + 20)
            idle = rig.checks()
            # Ten of the scaled intervals (Go: ~4 min), looked at every 50 ms.
            window_end = time.monotonic() + 10 * POLICY.interval_max
            while time.monotonic() < window_end:
                assert rig.checks() == idle, "an idle tunnel was probed"
                assert rig.engine.reprobe_deadline is None and not rig.engine.probing
                await asyncio.sleep(0.05)

            await peer.traffic(True)
            assert rig.engine.reprobe_deadline is not None or rig.engine.probing
            await apoll(lambda: rig.checks()[0] > idle[0] and rig.checks()[1] > idle[1], timeout=20)
        finally:
            await peer.close()


async def test_losing_the_home_relay_moves_home_and_it_wins_back_only_clearly() -> None:
    """Home is region 2 (region 1 answers its latency checks 0.5 s late). Region 2's server goes
    away while the tunnel is idle: the redial fails, the regions are probed at once and home
    moves to region 1, published to the coordinator. Region 2 comes back slightly faster than
    region 1 (0.4 s): probed again and again under traffic, it does not win home back."""
    async with two_regions(delay_1=0.5) as rig:
        assert rig.published_home() == 2
        before = rig.checks()
        with capture_logs() as logs:
            await rig.b.go_down()  # not listening any more, every connection cut
            relay(rig.b).close_all()
            await apoll(lambda: rig.published_home() == 1, timeout=30)
        assert rig.engine.status()["home_region"] == 1
        events = [e["event"] for e in logs]
        assert events.count("DERP home region unreachable; probing every region") == 1, events
        assert rig.checks()[0] > before[0]  # the move came from a probe, not a guess

        slow_checks(rig.b, 0.4)
        await rig.b.come_up()
        peer = await rig.peer(home=1)
        try:
            await peer.traffic(True)
            seen = checks(rig.b)
            await apoll(lambda: checks(rig.b) >= seen + 8, timeout=30)
            assert 2 in rig.engine.derp.latencies  # region 2 answers again...
            assert rig.engine.status()["home_region"] == 1  # ...but is not a third better
            assert rig.published_home() == 1
        finally:
            await peer.close()
