"""The tailnet engine's life on the devserver's agent RPC: publish, graceful close, reinit.
(Traffic through a real WireGuard peer is in test_engine_e2e.py.)"""

from __future__ import annotations

import asyncio
import uuid

from structlog.testing import capture_logs

from coder_agent.agentrpc.connection import RpcClient
from coder_agent.devserver import DevAgent, DevServer
from coder_agent.devserver import tailnet as dstailnet
from coder_agent.devserver.derp import relay
from coder_agent.tailnet import keys
from coder_agent.tailnet.derpclient import DialOptions
from coder_agent.tailnet.derpmap import DerpMap
from coder_agent.tailnet.engine import Flags, Tailnet

from ..conftest import apoll, t
from .test_engine_e2e import dial_agent, two_region_map


def cidrs(agent_id: uuid.UUID) -> list[str]:
    return [f"{a}/128" for a in dstailnet.agent_addresses(agent_id)]


async def test_publish_close_and_reinit() -> None:
    with capture_logs() as logs:
        await publish_close_and_reinit()
    events = [e["event"] for e in logs if e.get("component") == "tailnet"]
    assert events.count("tailnet starting") == 2 and events.count("tailnet stopped") == 1
    assert "tailnet restarting for a new agent id" in events
    assert len(events) < 12, events  # state changes only


async def publish_close_and_reinit() -> None:
    a, b = DevAgent(), DevAgent()
    async with DevServer(agents=[a, b]) as ds:
        view = dstailnet.server(ds).view
        derp_relay = relay(ds)
        a_id, b_id = uuid.UUID(a.id), uuid.UUID(b.id)
        derp_map = DerpMap.from_proto(dstailnet.server(ds).derp_map)
        engine = Tailnet(agent_id=a_id, derp_map=derp_map, coder_url=ds.url, dial=DialOptions())
        conn_a = await dial_agent(ds, a)
        run = asyncio.ensure_future(engine.run_on_rpc(RpcClient(conn_a, "2.8", set())))
        try:
            # Home region from the latency probe, then the node is published.
            await apoll(lambda: a_id in view.nodes, timeout=20)
            node = view.nodes[a_id]
            assert node.preferred_derp == 999 and list(node.addresses) == cidrs(a_id)
            assert node.key == b"np" + engine.device.public_key
            assert node.id == dstailnet.node_id(a_id)
            assert [r.preferred_derp for r in view.node_history[a_id]].count(0) == 0
            key_a = engine.device.public_key
            await derp_relay.wait_for(lambda: key_a in derp_relay.clients, t(10))
            assert engine.status()["state"] == "running" and engine.status()["coordinating"]
            assert engine.timer_deadline is None  # no peer, no traffic: nothing wakes the loop

            # A later manifest with the same id and new flags: in place, same keys.
            await engine.update(a_id, derp_map, Flags(disable_direct_connections=True))
            assert engine.device.public_key == key_a and not run.done()
            assert engine.status()["flags"]["disable_direct_connections"] is True

            # Reinit: a new agent id tears down (disconnect{} then hang-up) and comes back new.
            await engine.update(b_id, derp_map, Flags())
            assert await asyncio.wait_for(run, t(10)) == "stopped"
            assert view.requests_of(a_id)[-1].HasField("disconnect")
            assert a_id in view.disconnected
            assert engine.addresses == keys.addresses(b_id)
            key_b = engine.device.public_key
            assert key_b != key_a
            await derp_relay.wait_for(lambda: key_a not in derp_relay.clients, t(10))
            conn_b = await dial_agent(ds, b)
            run = asyncio.ensure_future(engine.run_on_rpc(RpcClient(conn_b, "2.8", set())))
            await apoll(lambda: b_id in view.nodes, timeout=20)
            assert list(view.nodes[b_id].addresses) == cidrs(b_id)
            assert view.nodes[b_id].key == b"np" + key_b

            # Graceful close: disconnect{}, the server hangs up, DERP logs out.
            await engine.close()
            assert await asyncio.wait_for(run, t(10)) == "stopped"
            assert view.requests_of(b_id)[-1].HasField("disconnect")
            await derp_relay.wait_for(lambda: key_b not in derp_relay.clients, t(10))
            assert engine.status()["state"] == "stopped"
            await conn_b.close()
        finally:
            await engine.close()
            run.cancel()
            await conn_a.close()


async def test_derp_map_update_rehomes_and_republishes() -> None:
    """A new map on StreamDERPMaps is applied in place: probed again, the home follows
    ``region_score``, and the node is published again with the new home and latencies."""
    agent = DevAgent()
    async with DevServer(agents=[agent]) as ds:
        ts = dstailnet.server(ds)
        view = ts.view
        agent_id = uuid.UUID(agent.id)
        engine = Tailnet(agent_id=agent_id, derp_map=DerpMap.from_proto(ts.derp_map), coder_url=ds.url,
                         dial=DialOptions())
        conn = await dial_agent(ds, agent)
        run = asyncio.ensure_future(engine.run_on_rpc(RpcClient(conn, "2.8", set())))
        try:
            await apoll(lambda: agent_id in view.nodes, timeout=20)
            assert view.nodes[agent_id].preferred_derp == 999
            # A second region (a plain, non-embedded one at the same relay) scored far better.
            m = two_region_map(ts.derp_map)
            ts.set_derp_map(m)
            await apoll(lambda: view.nodes[agent_id].preferred_derp == 1000, timeout=20)
            assert set(view.nodes[agent_id].derp_latency) == {"999-v4", "1000-v4"}
            assert engine.status()["home_region"] == 1000
            assert sorted(engine.derp.derp_map.regions) == [999, 1000]
        finally:
            await engine.close()
            await asyncio.wait_for(run, t(10))
            await conn.close()


def test_manifest_inputs() -> None:
    from coder_agent.rpc.proto import agent_pb2
    from coder_agent.tailnet.engine import manifest_inputs

    agent_id = uuid.uuid4()
    m = agent_pb2.Manifest(agent_id=agent_id.bytes, derp_force_websockets=True)
    assert manifest_inputs(m) is None  # no DERP map: no tailnet
    m.derp_map.CopyFrom(dstailnet.default_derp_map("http://127.0.0.1:3000"))
    got = manifest_inputs(m)
    assert got is not None and got.agent_id == agent_id
    assert got.flags == Flags(derp_force_websockets=True, disable_direct_connections=False)
    assert got.derp_map.derp_region_ids() == [999]
