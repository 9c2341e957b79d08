"""The tailnet engine end to end, real parts only.

The devserver (DERP relay, coordinator, agent RPC); our :class:`Tailnet` on a real agent RPC
connection to it; a Coder client made of wireguard-go (its TUN link in a namespace where the
kernel pings and sends TSMP) + a UDP<->DERP bridge logged into the same relay with the
client's WireGuard key + a coordinator client on the devserver's client route publishing the
client's node. The engine learns the client only through coordination.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs
from websockets.asyncio.client import connect

from coder_agent.agentrpc.connection import RpcClient, rpc_url
from coder_agent.devserver import DevAgent, DevServer
from coder_agent.devserver import tailnet as dstailnet
from coder_agent.devserver.derp import relay
from coder_agent.rpc.proto import tailnet_pb2
from coder_agent.rpc.transport import YamuxConnection
from coder_agent.tailnet import disco, keys, packet
from coder_agent.tailnet.derpclient import DialOptions
from coder_agent.tailnet.derpmap import DerpMap
from coder_agent.tailnet.engine import PERSISTENT_KEEPALIVE, Flags, Tailnet

from ..conftest import apoll, t
from .derpbridge import CoordClient, DerpBridge, Kind
from .test_wireguard_interop import TSMP_CLIENT
from .wgpeer import WgPeer, require_wireguard_go

pytestmark = pytest.mark.timeout(240)

TCP_CLIENT = """
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.settimeout(float(sys.argv[2]))
try:
    s.connect((sys.argv[1], 22))
    print("connected")
except OSError as e:
    print(type(e).__name__)
"""


async def dial_agent(ds: DevServer, agent: DevAgent) -> YamuxConnection:
    ws = await connect(rpc_url(ds.url, "2.8"), additional_headers={"Coder-Session-Token": agent.token},
                       compression=None, ping_interval=None, max_size=4 << 20)
    return YamuxConnection(ws, client=True)


def two_region_map(base: tailnet_pb2.DERPMap) -> tailnet_pb2.DERPMap:
    """``base`` (the devserver's embedded region 999) plus region 1000 at the same relay, scored
    so that 1000 wins the home choice."""
    m = tailnet_pb2.DERPMap()
    m.CopyFrom(base)
    node = m.regions[999].nodes[0]
    other = m.regions[1000]
    other.region_id, other.region_code, other.region_name = 1000, "other", "Other"
    other.nodes.add(name="1000a", region_id=1000, host_name=node.host_name, derp_port=node.derp_port,
                    stun_port=-1, force_http=node.force_http)
    m.home_params.region_score[999] = 100.0
    m.home_params.region_score[1000] = 0.01
    return m


def random_client_address() -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address(keys.TAILSCALE_SERVICE_PREFIX.network_address.packed[:6] + os.urandom(10))


@dataclass
class Rig:
    ds: DevServer
    agent_id: uuid.UUID
    engine: Tailnet
    run: asyncio.Future[str]
    wg: WgPeer
    bridge: DerpBridge
    client: CoordClient
    client_disco: keys.DiscoKey
    agent_node: tailnet_pb2.Node
    registry: CollectorRegistry
    conn: YamuxConnection

    async def ping(self, count: int = 3, wait: int = 5) -> bool:
        r = await self.wg.ans("ping", "-6", "-n", "-c", str(count), "-W", str(wait), str(self.engine.addresses[0]),
                              timeout=count * wait + 10)
        return r.returncode == 0


@contextlib.asynccontextmanager
async def make_rig(tmp: Path, *, refuse_raw: bool = False, flags: Flags | None = None,
                   lost_timeout: float = 15 * 60.0) -> AsyncIterator[Rig]:
    require_wireguard_go()
    agent_id = uuid.uuid4()
    async with DevServer(agents=[DevAgent(id=str(agent_id))]) as ds:
        relay(ds).refuse_raw = refuse_raw
        conn = await dial_agent(ds, ds.agent)
        registry = CollectorRegistry()
        engine = Tailnet(agent_id=agent_id, derp_map=DerpMap.from_proto(dstailnet.server(ds).derp_map),
                         coder_url=ds.url, dial=DialOptions(), flags=flags, registry=registry,
                         lost_timeout=lost_timeout)
        run = asyncio.ensure_future(engine.run_on_rpc(RpcClient(conn, "2.8", set())))
        client_addr = random_client_address()
        async with WgPeer(tmp, address=str(client_addr)) as wg:
            bridge = await DerpBridge(ds, wg.private_key, wg.listen_port).start()
            client_disco = keys.DiscoKey.generate()
            node = tailnet_pb2.Node(id=4242, key=b"np" + wg.public_key, disco=client_disco.wire, preferred_derp=999,
                                    addresses=[f"{client_addr}/128"], allowed_ips=[f"{client_addr}/128"])
            client = await CoordClient.join(ds, agent_id, node)
            try:
                # The agent's node reaches the client once the engine has a home region.
                agent_node = await apoll(lambda: client.latest_node(agent_id), timeout=20)
                bridge.agent_key = keys.node_key_from_wire(agent_node.key)
                wg.set_peer(bridge.agent_key, list(agent_node.allowed_ips), bridge.endpoint)
                yield Rig(ds, agent_id, engine, run, wg, bridge, client, client_disco, agent_node, registry,
                          conn)
            finally:
                await client.close()
                await bridge.close()
                await engine.close()
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(run, t(10))
                await conn.close()


def counter(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_client_reaches_agent_through_derp(short_tmp: Path) -> None:
    with capture_logs() as logs:
        secrets = await client_reaches_agent_through_derp(short_tmp)
    text = repr(logs)
    for secret in secrets:
        assert secret.hex() not in text
    events = [e["event"] for e in logs if e.get("component") == "tailnet"]
    assert events.count("tailnet peer added") == events.count("tailnet peer handshake complete") == 1
    assert events.count("tailnet peer removed") == 1


async def client_reaches_agent_through_derp(short_tmp: Path) -> list[bytes]:
    async with make_rig(short_tmp) as rig:
        engine, wg = rig.engine, rig.wg
        # The node as published through the coordinator.
        node = rig.agent_node
        assert node.preferred_derp == 999 and list(node.endpoints) == []
        assert set(node.derp_latency) == {"999-v4"}
        assert list(node.addresses) == [f"{a}/128" for a in dstailnet.agent_addresses(rig.agent_id)]
        # The engine learnt the client from coordination and acknowledged it.
        await apoll(lambda: rig.client.of_kind(Kind.READY_FOR_HANDSHAKE), timeout=10)

        # ICMPv6 echo from the kernel, through wireguard-go, the bridge, the relay.
        assert await rig.ping(), wg.log()
        assert wg.latest_handshake(bridge_key := rig.bridge.agent_key or b"") > 0
        assert bridge_key == engine.device.public_key
        # TSMP from a raw IPv6 socket: 'o' + the same 8 bytes + port 0, from the agent address.
        r = await wg.ans(sys.executable, "-c", TSMP_CLIENT, str(engine.addresses[0]), str(t(10)))
        assert r.returncode == 0, r.stderr
        sent, got, src = r.stdout.split()
        assert bytes.fromhex(got) == b"o" + bytes.fromhex(sent)[1:9] + b"\0\0"
        assert ipaddress.IPv6Address(src) == engine.addresses[0]

        # TCP is for the next layer: the SYN reaches on_ip_packet and is not answered here.
        syns: list[bytes] = []
        engine.on_ip_packet = syns.append
        r = await wg.ans(sys.executable, "-c", TCP_CLIENT, str(engine.addresses[0]), "2")
        assert r.stdout.strip() == "TimeoutError", r.stdout + r.stderr
        hdr, payload = packet.parse(syns[0])
        assert hdr.next_header == packet.NH_TCP and hdr.dst == engine.addresses[0].packed
        assert int.from_bytes(payload[2:4], "big") == 22 and payload[13] & 0x02  # SYN to port 22
        # A failing handler costs the packet, not the DERP connection it runs in.
        def broken(_p: bytes) -> None:
            raise RuntimeError("handler bug")

        engine.on_ip_packet = broken
        await wg.ans(sys.executable, "-c", TCP_CLIENT, str(engine.addresses[0]), "1")
        engine.on_ip_packet = None
        assert engine.dropped_no_handler >= 1
        assert await rig.ping(count=1)
        assert engine.derp.regions[999].connections == 1

        # A disco Ping over DERP from the client's disco key gets a Pong over DERP.
        agent_disco = keys.disco_from_wire(node.disco)
        tx = os.urandom(12)
        cd = rig.client_disco
        ping = disco.seal_message(cd.private, cd.public, agent_disco, disco.Ping(tx, wg.public_key))
        assert rig.bridge.send_derp(engine.device.public_key, ping)
        src_key, reply = await asyncio.wait_for(rig.bridge.disco.get(), t(10))
        assert src_key == engine.device.public_key
        opened = disco.open_message(cd.private, reply)
        assert opened is not None and opened[0] == agent_disco
        assert opened[1] == disco.Pong(tx, ipaddress.IPv4Address("127.3.3.40"), 999)
        # ...but not from a disco key coordination never told us about, and CallMeMaybe is ignored.
        stranger = keys.DiscoKey.generate()
        rig.bridge.send_derp(engine.device.public_key, disco.seal_message(
            stranger.private, stranger.public, agent_disco, disco.Ping(os.urandom(12))))
        rig.bridge.send_derp(engine.device.public_key, disco.seal_message(
            cd.private, cd.public, agent_disco, disco.CallMeMaybe(((ipaddress.IPv4Address("192.0.2.1"), 41641),))))
        # A barrier: one more Ping; DERP keeps order, so its Pong must be the only answer.
        tx2 = os.urandom(12)
        rig.bridge.send_derp(engine.device.public_key, disco.seal_message(cd.private, cd.public, agent_disco,
                                                                          disco.Ping(tx2)))
        _, reply = await asyncio.wait_for(rig.bridge.disco.get(), t(10))
        opened = disco.open_message(cd.private, reply)
        assert opened is not None and isinstance(opened[1], disco.Pong) and opened[1].tx_id == tx2
        assert rig.bridge.disco.empty()

        # Status: home region, DERP state, the peer's handshake and bytes; never a key.
        st = engine.status()
        assert st["home_region"] == 999 and st["derp_connection"] == "connected"
        assert st["derp_transport"] == "upgrade" and st["home_latency_ms"] is not None
        [peer] = st["peers"]
        assert peer["last_handshake"] is not None and peer["handshakes"] >= 1
        assert peer["rx_bytes"] > 0 and peer["tx_bytes"] > 0 and peer["derp_region"] == 999
        text = json.dumps(st)
        for secret in (engine.device.public_key, wg.public_key, agent_disco, cd.public):
            assert secret.hex() not in text and wg.public_key_b64 not in text
        # Counters on the registry we passed.
        assert counter(rig.registry, "coder_agent_tailnet_packets_total", direction="in") >= 4
        assert counter(rig.registry, "coder_agent_tailnet_packets_total", direction="out") >= 4
        assert counter(rig.registry, "coder_agent_tailnet_bytes_total", direction="in") > 0
        assert counter(rig.registry, "coder_agent_tailnet_handshakes_total") >= 1

        # The client leaves gracefully: DISCONNECTED removes the peer; its packets get no answer.
        await rig.client.disconnect()
        await apoll(lambda: not engine.status()["peers"], timeout=10)
        assert not engine.device.peers
        forwarded = rig.bridge.to_derp
        assert not await rig.ping(count=2, wait=2)
        assert rig.bridge.to_derp > forwarded, "wireguard-go sent nothing: the test proves nothing"
        assert engine.timer_deadline is None  # no peer left: the device timer is not armed
        return [engine.device.public_key, wg.public_key, agent_disco, cd.public]


async def test_websocket_derp_when_the_upgrade_is_refused(short_tmp: Path) -> None:
    async with make_rig(short_tmp, refuse_raw=True) as rig:
        assert await rig.ping(count=2), rig.wg.log()
        st = rig.engine.status()
        assert st["home_region"] == 999 and st["derp_transport"] == "websocket"
        assert st["peers"][0]["last_handshake"] is not None
        # coderd is told the region needed WebSocket.
        view = dstailnet.server(rig.ds).view
        await apoll(lambda: 999 in view.nodes[rig.agent_id].derp_forced_websocket, timeout=10)
        styles = {u["style"] for u in relay(rig.ds).upgrades}
        assert styles == {"derp", "websocket"}


async def test_forced_websockets_flag(short_tmp: Path) -> None:
    async with make_rig(short_tmp, flags=Flags(derp_force_websockets=True)) as rig:
        assert await rig.ping(count=1), rig.wg.log()
        assert rig.engine.status()["derp_transport"] == "websocket"
        assert rig.engine.status()["flags"]["derp_force_websockets"] is True


async def test_lost_coordination_keeps_the_peer_until_lost_timeout(short_tmp: Path) -> None:
    """The agent's RPC connection drops: every peer is lost but stays configured (traffic goes
    on over DERP) until ``lost_timeout`` after its last handshake, run by the engine's own timer
    while no coordination runs."""
    lost_timeout = t(8)
    async with make_rig(short_tmp, lost_timeout=lost_timeout) as rig:
        assert await rig.ping(count=1), rig.wg.log()
        await rig.conn.close()
        reason = await asyncio.wait_for(rig.run, t(10))
        assert "connection lost" in reason or "ended" in reason, reason
        [peer] = rig.engine.status()["peers"]
        assert peer["lost"] is True
        assert await rig.ping(count=1), "a lost peer must keep working"
        # A new RPC connection: the coordinator sends the client's node again; it is no longer lost.
        conn = await dial_agent(rig.ds, rig.ds.agent)
        run = asyncio.ensure_future(rig.engine.run_on_rpc(RpcClient(conn, "2.8", set())))
        await apoll(lambda: rig.engine.status()["peers"] and not rig.engine.status()["peers"][0]["lost"], timeout=10)
        assert rig.engine.device.peers[rig.wg.public_key].persistent_keepalive == PERSISTENT_KEEPALIVE
        await conn.close()
        await asyncio.wait_for(run, t(10))
        assert rig.engine.status()["peers"][0]["lost"] is True
        assert rig.engine.device.peers[rig.wg.public_key].persistent_keepalive is None
        await apoll(lambda: not rig.engine.status()["peers"], timeout=lost_timeout + 10)
        assert not rig.engine.device.peers
        assert not await rig.ping(count=1, wait=2)


async def test_packets_to_a_peer_go_through_its_home_region(short_tmp: Path) -> None:
    """Our home moves to region 1000; the client stays on 999: what we send it leaves through a
    second DERP connection to 999 (the peer's preferred_derp)."""
    async with make_rig(short_tmp) as rig:
        ts = dstailnet.server(rig.ds)
        ts.set_derp_map(two_region_map(ts.derp_map))
        view = ts.view
        await apoll(lambda: view.nodes[rig.agent_id].preferred_derp == 1000, timeout=20)
        await apoll(lambda: rig.engine.derp.regions[1000].state == "connected", timeout=10)
        sent_999, sent_1000 = rig.engine.derp.regions[999].sent, rig.engine.derp.regions[1000].sent
        assert await rig.ping(count=2), rig.wg.log()
        assert rig.engine.derp.regions[999].sent > sent_999
        assert rig.engine.derp.regions[1000].sent == sent_1000
        st = rig.engine.status()
        assert st["home_region"] == 1000
        assert {(r["region_id"], r["preferred"]) for r in st["derp_regions"]} == {(999, False), (1000, True)}


async def test_traffic_resumes_after_the_relay_restarts(short_tmp: Path) -> None:
    """The relay says Restarting and cuts everyone: the engine redials as told and the
    client's traffic (same WireGuard session) flows again."""
    async with make_rig(short_tmp) as rig:
        assert await rig.ping(count=1), rig.wg.log()
        handshakes = rig.engine.status()["peers"][0]["handshakes"]
        relay(rig.ds).restart(reconnect_in=0.2, try_for=10)
        await apoll(lambda: rig.engine.derp.regions[999].connections == 2
                    and rig.engine.derp.regions[999].state == "connected", timeout=20)
        await apoll(lambda: rig.bridge.mgr.regions[999].connections == 2
                    and rig.bridge.mgr.regions[999].state == "connected", timeout=20)
        assert await rig.ping(count=2), rig.wg.log()
        assert rig.engine.status()["peers"][0]["handshakes"] == handshakes  # the session survived
