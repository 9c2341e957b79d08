"""Coordination over the real agent RPC (websocket → yamux → dRPC streams) against the
devserver's coordinator, with a test client peer on the devserver's client route."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import connect

from coder_agent.agentrpc.connection import RpcClient, rpc_url
from coder_agent.devserver import DevAgent, DevServer
from coder_agent.devserver import tailnet as dstailnet
from coder_agent.rpc.proto import tailnet_pb2
from coder_agent.rpc.transport import YamuxConnection
from coder_agent.tailnet.coordination import (
    CoordinationController,
    CoordinationEvent,
    CoordinatorError,
    PeerLost,
    RemovePeer,
    UpsertPeer,
    run_coordination,
    run_derp_map_subscriber,
)

from ..conftest import apoll, t
from .derpbridge import CoordClient

Kind = tailnet_pb2.CoordinateResponse.PeerUpdate
AGENT_ID = uuid.UUID("1a2b3c4d-5e6f-4a0b-9c8d-7e6f5a4b3c2d")
NODE_KEY = bytes(range(1, 33))
DISCO_KEY = bytes(range(33, 65))
CLIENT_KEY = bytes([0xC1]) * 32
CLIENT_ADDR = "fd7a:115c:a1e0:77::1/128"


@pytest.fixture
async def ds() -> AsyncIterator[DevServer]:
    async with DevServer(agents=[DevAgent(id=str(AGENT_ID))]) as server:
        yield server


async def dial_agent(ds: DevServer) -> YamuxConnection:
    ws = await connect(rpc_url(ds.url, "2.8"), additional_headers={"Coder-Session-Token": ds.agent.token},
                       compression=None, ping_interval=None, max_size=4 << 20)
    return YamuxConnection(ws, client=True)


def agent_addresses() -> list[str]:
    return [f"{a}/128" for a in dstailnet.agent_addresses(AGENT_ID)]


def new_controller(addresses: list[str] | None = None) -> CoordinationController:
    return CoordinationController(node_id=dstailnet.node_id(AGENT_ID), node_key=NODE_KEY, disco_key=DISCO_KEY,
                                  addresses=addresses if addresses is not None else agent_addresses())


async def join_client(ds: DevServer) -> CoordClient:
    """A Coder client peer (what ``coder ssh`` does): add_tunnel(agent) and update_self."""
    node = tailnet_pb2.Node(id=99, key=b"np" + CLIENT_KEY, disco="discokey:" + "ee" * 32, preferred_derp=999,
                            addresses=[CLIENT_ADDR], allowed_ips=[CLIENT_ADDR])
    return await CoordClient.join(ds, AGENT_ID, node)


class Agent:
    """run_coordination in a task, with the events it hands to the WireGuard layer."""

    def __init__(self, rpc: YamuxConnection | RpcClient, controller: CoordinationController) -> None:
        self.controller = controller
        self.events: list[CoordinationEvent] = []
        self.stop = asyncio.Event()
        self.task = asyncio.ensure_future(run_coordination(rpc, controller, self.events.extend, stop=self.stop,
                                                           disconnect_timeout=t(5)))

    async def finish(self) -> str:
        return await asyncio.wait_for(self.task, t(15))


async def test_node_as_published_and_ready_for_handshake_relayed(ds: DevServer) -> None:
    view = dstailnet.server(ds).view
    conn = await dial_agent(ds)
    controller = new_controller()
    controller.set_derp_latency({999: 0.0123})
    agent = Agent(RpcClient(conn, "2.8", set()), controller)  # the daemon's RPC connection object works as is
    await apoll(lambda: view.connected.get(AGENT_ID) == "agent", timeout=10)
    client = await join_client(ds)
    try:
        # The agent gets the client's node and acknowledges it; the coordinator relays that.
        await apoll(lambda: client.of_kind(Kind.READY_FOR_HANDSHAKE), timeout=10)
        [rfh] = client.of_kind(Kind.READY_FOR_HANDSHAKE)
        assert rfh.id == AGENT_ID.bytes
        client_id = next(p for p, kind in view.connected.items() if kind == "client")
        [ack] = view.requests_of(AGENT_ID, "ready_for_handshake")
        assert [r.id for r in ack.ready_for_handshake] == [client_id.bytes]
        assert (AGENT_ID, client_id) in view.relayed_rfh
        # The acknowledgement came after everything the agent sent before it, so: no
        # UpdateSelf while preferred_derp is 0.
        assert view.requests_of(AGENT_ID, "update_self") == []
        assert client.of_kind(Kind.NODE) == []
        [upsert] = [e for e in agent.events if isinstance(e, UpsertPeer)]
        assert upsert == UpsertPeer(client_id, CLIENT_KEY, bytes([0xEE]) * 32, (CLIENT_ADDR,), (CLIENT_ADDR,), 999)

        before = time.time()
        controller.set_preferred_derp(999)
        await apoll(lambda: client.of_kind(Kind.NODE), timeout=10)
        [update] = client.of_kind(Kind.NODE)
        assert update.id == AGENT_ID.bytes and update.reason == "node update"
        node = view.nodes[AGENT_ID]
        assert update.node == node
        assert node.id == dstailnet.node_id(AGENT_ID)
        assert node.key == b"np" + NODE_KEY
        assert node.disco == "discokey:" + DISCO_KEY.hex()
        assert node.preferred_derp == 999
        assert dict(node.derp_latency) == {"999-v4": 0.0123}
        assert list(node.addresses) == list(node.allowed_ips) == agent_addresses()
        assert list(node.endpoints) == []
        assert before - 1 <= node.as_of.ToSeconds() <= time.time() + 1
        # One UpdateSelf per change, none when nothing changed.
        controller.set_preferred_derp(999)
        controller.set_derp_latency({999: 0.02})
        await apoll(lambda: len(view.requests_of(AGENT_ID, "update_self")) == 2, timeout=10)
        assert dict(view.nodes[AGENT_ID].derp_latency) == {"999-v4": 0.02}
    finally:
        agent.stop.set()
        await agent.finish()
        await client.close()
        await conn.close()


async def test_disconnect_on_stop(ds: DevServer) -> None:
    view = dstailnet.server(ds).view
    conn = await dial_agent(ds)
    controller = new_controller()
    controller.set_preferred_derp(999)
    agent = Agent(conn, controller)
    client = await join_client(ds)
    await apoll(lambda: client.of_kind(Kind.NODE) and client.of_kind(Kind.READY_FOR_HANDSHAKE), timeout=10)
    client_id = next(p for p, kind in view.connected.items() if kind == "client")
    controller.note_handshake(client_id, time.monotonic())
    agent.stop.set()
    assert await agent.finish() == "stopped"
    # The last request was disconnect{}; the coordinator told the client and hung up on the agent.
    assert view.requests_of(AGENT_ID)[-1].HasField("disconnect")
    assert view.disconnected == [AGENT_ID] and AGENT_ID not in view.connected
    await apoll(lambda: client.of_kind(Kind.DISCONNECTED), timeout=10)
    [gone] = client.of_kind(Kind.DISCONNECTED)
    assert (gone.id, gone.reason) == (AGENT_ID.bytes, "graceful disconnect")
    assert view.lost == []
    # Coordination over: the client's peer is lost on our side (kept, it handshook recently).
    assert isinstance(agent.events[-1], PeerLost) and agent.events[-1].peer_id == client_id
    assert not conn.closed.done()  # the RPC connection itself stays up
    await client.close()
    await conn.close()


async def test_stream_loss_is_lost_for_peers_and_returns(ds: DevServer) -> None:
    view = dstailnet.server(ds).view
    conn = await dial_agent(ds)
    controller = new_controller()
    controller.set_preferred_derp(999)
    agent = Agent(conn, controller)
    client = await join_client(ds)
    await apoll(lambda: client.of_kind(Kind.NODE) and client.of_kind(Kind.READY_FOR_HANDSHAKE), timeout=10)
    client_id = next(p for p, kind in view.connected.items() if kind == "client")
    controller.note_handshake(client_id, time.monotonic())
    await conn.close()  # the agent's RPC connection drops without a disconnect
    reason = await agent.finish()
    assert reason.startswith("connection lost")
    await apoll(lambda: client.of_kind(Kind.LOST), timeout=10)
    [lost] = client.of_kind(Kind.LOST)
    assert (lost.id, lost.reason) == (AGENT_ID.bytes, "lost")
    assert view.lost == [AGENT_ID] and view.disconnected == []
    assert controller.peers[client_id].lost
    assert any(isinstance(e, PeerLost) and e.peer_id == client_id for e in agent.events)
    # Redialing with a fresh RPC connection republishes the node at once.
    conn2 = await dial_agent(ds)
    agent2 = Agent(conn2, controller)
    await apoll(lambda: len(view.requests_of(AGENT_ID, "update_self")) == 2, timeout=10)
    # The client's tunnel survived: the coordinator sends its node again ("init"), the peer is
    # no longer lost, and the new stream acknowledges it.
    await apoll(lambda: not controller.peers[client_id].lost, timeout=10)
    await apoll(lambda: len(client.of_kind(Kind.READY_FOR_HANDSHAKE)) == 2, timeout=10)
    assert [r.reason for _, resp in view.responses for r in resp.peer_updates
            if r.id == client_id.bytes][-1] == "init"
    agent2.stop.set()
    assert await agent2.finish() == "stopped"
    await client.close()
    await conn2.close()


async def test_client_disconnect_removes_the_peer(ds: DevServer) -> None:
    view = dstailnet.server(ds).view
    conn = await dial_agent(ds)
    agent = Agent(conn, new_controller())
    client = await join_client(ds)
    await apoll(lambda: client.of_kind(Kind.READY_FOR_HANDSHAKE), timeout=10)
    client_id = next(p for p, kind in view.connected.items() if kind == "client")
    await client.disconnect()
    await apoll(lambda: any(isinstance(e, RemovePeer) for e in agent.events), timeout=10)
    removes = [e for e in agent.events if isinstance(e, RemovePeer)]
    assert removes == [RemovePeer(client_id, CLIENT_KEY, "disconnected")]
    assert client_id not in agent.controller.peers
    agent.stop.set()
    assert await agent.finish() == "stopped"
    await client.close()
    await conn.close()


async def test_foreign_address_is_refused_with_an_error(ds: DevServer) -> None:
    view = dstailnet.server(ds).view
    conn = await dial_agent(ds)
    controller = new_controller(addresses=["fd7a:115c:a1e0::1/128"])
    controller.set_preferred_derp(999)
    agent = Agent(conn, controller)
    reason = await agent.finish()
    assert reason == "coordinator ended the stream (close)"
    [(peer, error)] = view.errors
    assert peer == AGENT_ID and "invalid node address, got fd7a:115c:a1e0::1" in error
    assert [e for e in agent.events if isinstance(e, CoordinatorError)] == [CoordinatorError(error)]
    assert AGENT_ID not in view.nodes and view.lost == [AGENT_ID]
    await conn.close()


async def test_stream_derp_maps_delivers_the_map_and_its_changes(ds: DevServer) -> None:
    ts = dstailnet.server(ds)
    conn = await dial_agent(ds)
    maps: list[tailnet_pb2.DERPMap] = []
    got = asyncio.Event()

    async def on_map(m: tailnet_pb2.DERPMap) -> None:
        maps.append(m)
        got.set()

    task = asyncio.ensure_future(run_derp_map_subscriber(conn, on_map))
    await asyncio.wait_for(got.wait(), t(10))
    region = maps[0].regions[999]
    assert (region.region_id, region.region_code, region.region_name) == (999, "coder", "Coder Embedded Relay")
    assert region.embedded_relay
    [node] = region.nodes
    assert (node.name, node.region_id, node.stun_port, node.host_name) == ("999b", 999, -1, "127.0.0.1")
    assert node.derp_port == int(ds.url.rsplit(":", 1)[1]) and node.force_http
    got.clear()
    changed = tailnet_pb2.DERPMap()
    changed.CopyFrom(maps[0])
    changed.regions[999].avoid = True
    ts.set_derp_map(changed)
    await asyncio.wait_for(got.wait(), t(10))
    assert maps[1] == changed and len(maps) == 2
    assert ts.view.derp_maps_sent == 2
    await conn.close()
    assert (await asyncio.wait_for(task, t(10))).startswith("connection lost")
    assert ds.agent.extra["rpc"].calls_named("StreamDERPMaps")


def test_node_id_and_addresses_vectors() -> None:
    # NodeID: the last 8 bytes as a signed int64, absolute value; -2^63 stays as it is.
    assert dstailnet.node_id(uuid.UUID("00000000-0000-0000-0000-000000000007")) == 7
    assert dstailnet.node_id(uuid.UUID("00000000-0000-0000-ffff-ffffffffffff")) == 1
    assert dstailnet.node_id(uuid.UUID("00000000-0000-0000-8000-000000000000")) == -(1 << 63)
    a, b = dstailnet.agent_addresses(AGENT_ID)
    assert str(a) == "fd7a:115c:a1e0:4a0b:9c8d:7e6f:5a4b:3c2d"
    assert str(b) == "fd60:627a:a42b:4a0b:9c8d:7e6f:5a4b:3c2d"


async def test_lost_client_is_removed_after_the_lost_timeout(ds: DevServer) -> None:
    view = dstailnet.server(ds).view
    conn = await dial_agent(ds)
    controller = CoordinationController(node_id=dstailnet.node_id(AGENT_ID), node_key=NODE_KEY, disco_key=DISCO_KEY,
                                        addresses=agent_addresses(), lost_timeout=t(0.5))
    controller.set_preferred_derp(999)
    agent = Agent(conn, controller)
    client = await join_client(ds)
    await apoll(lambda: client.of_kind(Kind.READY_FOR_HANDSHAKE), timeout=10)
    client_id = next(p for p, kind in view.connected.items() if kind == "client")
    controller.note_handshake(client_id, time.monotonic())
    await client.close()  # the client's connection drops: LOST, not DISCONNECTED
    await apoll(lambda: any(isinstance(e, PeerLost) for e in agent.events), timeout=10)
    assert client_id in controller.peers and controller.peers[client_id].lost
    # The runner drives the lost timer: the peer goes once its last handshake is lost_timeout old.
    await apoll(lambda: any(isinstance(e, RemovePeer) for e in agent.events), timeout=10)
    assert [e for e in agent.events if isinstance(e, RemovePeer)] == [RemovePeer(client_id, CLIENT_KEY, "lost")]
    assert client_id not in controller.peers
    agent.stop.set()
    assert await agent.finish() == "stopped"
    await conn.close()


async def test_client_route_refuses_strangers_and_state_is_inspectable(ds: DevServer) -> None:
    import httpx

    ts = dstailnet.server(ds)
    async with httpx.AsyncClient(base_url=ds.url) as http:
        path = f"/api/v2/workspaceagents/{AGENT_ID}/coordinate"
        assert (await http.get(path)).status_code == 401
        assert (await http.get(path, headers={"Coder-Session-Token": ds.agent.token})).status_code == 401
        other = f"/api/v2/workspaceagents/{uuid.uuid4()}/coordinate"
        assert (await http.get(other, headers={"Coder-Session-Token": ts.client_token})).status_code == 404
        conn = await dial_agent(ds)
        controller = new_controller()
        controller.set_preferred_derp(999)
        agent = Agent(conn, controller)
        await apoll(lambda: AGENT_ID in ts.view.nodes, timeout=10)
        summary = (await http.get("/devserver/tailnet")).json()
        assert summary["connected"] == {str(AGENT_ID): "agent"}
        assert summary["nodes"][str(AGENT_ID)]["preferredDerp"] == 999
        agent.stop.set()
        assert await agent.finish() == "stopped"
        await conn.close()


async def test_client_abandoning_its_stream_is_lost_for_the_agent(ds: DevServer) -> None:
    view = dstailnet.server(ds).view
    conn = await dial_agent(ds)
    controller = new_controller()
    controller.set_preferred_derp(999)
    agent = Agent(conn, controller)
    client = await join_client(ds)
    await apoll(lambda: client.of_kind(Kind.READY_FOR_HANDSHAKE), timeout=10)
    client_id = next(p for p, kind in view.connected.items() if kind == "client")
    await client.bidi.close()  # dRPC Close + FIN, the connection itself stays up
    await apoll(lambda: client_id in view.lost, timeout=10)
    # Never handshook: Go drops such a lost peer at once.
    await apoll(lambda: RemovePeer(client_id, CLIENT_KEY, "lost") in agent.events, timeout=10)
    assert view.connected == {AGENT_ID: "agent"}
    agent.stop.set()
    assert await agent.finish() == "stopped"
    await client.close()
    await conn.close()


async def test_the_runner_sleeps_while_idle(ds: DevServer) -> None:
    view = dstailnet.server(ds).view
    conn = await dial_agent(ds)
    controller = new_controller()
    calls: list[int] = []
    original = controller.requests_to_send

    def counting(now: object) -> list[tailnet_pb2.CoordinateRequest]:
        calls.append(1)
        return original(now)  # type: ignore[arg-type]

    controller.requests_to_send = counting  # type: ignore[method-assign]
    agent = Agent(conn, controller)
    controller.set_preferred_derp(999)
    await apoll(lambda: AGENT_ID in view.nodes, timeout=10)
    controller.set_derp_latency({999: 0.1})  # wakes the running runner
    await apoll(lambda: len(view.requests_of(AGENT_ID, "update_self")) == 2, timeout=10)
    settled = len(calls)
    await asyncio.sleep(0.3)  # a measurement window, not a wait for a condition
    assert len(calls) - settled < 5, "the runner loops while there is nothing to do"
    agent.stop.set()
    assert await agent.finish() == "stopped"
    await conn.close()


async def test_a_coderd_without_the_tailnet_service(ds: DevServer) -> None:
    from coder_agent.devserver.rpc import control

    control(ds).unknown.update({"Coordinate"})
    control(ds).unimplemented.update({"StreamDERPMaps"})
    conn = await dial_agent(ds)
    reason = await asyncio.wait_for(run_coordination(conn, new_controller(), lambda _: None), t(10))
    assert reason.startswith("stream failed") and "unknown rpc" in reason
    maps: list[tailnet_pb2.DERPMap] = []
    reason = await asyncio.wait_for(run_derp_map_subscriber(conn, maps.append), t(10))
    assert reason.startswith("stream failed") and "Unimplemented" in reason and maps == []
    assert not conn.closed.done()
    await conn.close()
