"""The real daemon joins the tailnet by itself when the manifest carries a DERP map.

Real parts: the daemon as a subprocess, the devserver (agent RPC, coordinator, DERP relay), and a
Coder client made of wireguard-go + a UDP<->DERP bridge + a coordinator client (derpbridge.py).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from coder_agent.devserver import DevAgent, DevServer
from coder_agent.devserver import tailnet as dstailnet
from coder_agent.devserver.derp import relay
from coder_agent.rpc.proto import tailnet_pb2
from coder_agent.tailnet import keys

from ..conftest import apoll, t
from .derpbridge import CoordClient, DerpBridge
from .test_wireguard_interop import TSMP_CLIENT
from .wgpeer import WgPeer, require_wireguard_go

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
async def tailnet_devserver() -> AsyncIterator[DevServer]:
    async with DevServer(agents=[DevAgent(id=str(uuid.uuid4()))], tailnet=True) as ds:
        yield ds


def _tailnet_status(d: Any) -> dict[str, Any]:
    st: dict[str, Any] = d.api("GET", "/api/v0/status").json()["tailnet"]
    return st


async def test_daemon_joins_the_tailnet_and_answers_through_it(  # type: ignore[no-untyped-def]
        tailnet_devserver: DevServer, daemon_env, spawn_daemon, short_tmp: Path) -> None:
    require_wireguard_go()
    ds = tailnet_devserver
    agent_id = uuid.UUID(ds.agent.id)
    view = dstailnet.server(ds).view
    d = spawn_daemon(daemon_env(ds.url, ds.agent.token))
    d.wait_ready()

    # The node as Go's agent publishes it: home region, latency key, the two /128s, no endpoints.
    node: tailnet_pb2.Node = await apoll(lambda: view.nodes.get(agent_id), timeout=t(30))
    assert node.preferred_derp == 999 and list(node.endpoints) == []
    assert set(node.derp_latency) == {"999-v4"}
    assert node.id == keys.node_id(agent_id)
    assert sorted(node.addresses) == sorted(f"{a}/128" for a in keys.addresses(agent_id))
    assert all(r.update_self.node.preferred_derp != 0 for r in view.requests_of(agent_id, "update_self"))
    # the home region is chosen before its DERP connection is up: wait for both (a loaded machine)
    await apoll(lambda: (s := _tailnet_status(d))["home_region"] == 999 and s["derp_connection"] == "connected"
                and s["coordinating"], timeout=t(20))

    client_addr = ipaddress.IPv6Address(keys.TAILSCALE_SERVICE_PREFIX.network_address.packed[:6] + os.urandom(10))
    async with WgPeer(short_tmp, address=str(client_addr)) as wg:
        bridge = await DerpBridge(ds, wg.private_key, wg.listen_port).start()
        cnode = tailnet_pb2.Node(id=77, key=b"np" + wg.public_key, disco=keys.DiscoKey.generate().wire,
                                 preferred_derp=999, addresses=[f"{client_addr}/128"],
                                 allowed_ips=[f"{client_addr}/128"])
        client = await CoordClient.join(ds, agent_id, cnode)
        try:
            agent_node = await apoll(lambda: client.latest_node(agent_id), timeout=t(20))
            bridge.agent_key = keys.node_key_from_wire(agent_node.key)
            wg.set_peer(bridge.agent_key, list(agent_node.allowed_ips), bridge.endpoint)
            agent_ip = str(keys.addresses(agent_id)[0])
            r = await wg.ans("ping", "-6", "-n", "-c", "3", "-W", "5", agent_ip, timeout=40)
            assert r.returncode == 0, wg.log()
            r = await wg.ans(sys.executable, "-c", TSMP_CLIENT, agent_ip, str(t(10)))
            assert r.returncode == 0, r.stderr
            sent, got, _src = r.stdout.split()
            assert bytes.fromhex(got) == b"o" + bytes.fromhex(sent)[1:9] + b"\0\0"
            peers = await apoll(lambda: [p for p in _tailnet_status(d)["peers"] if p["last_handshake"]],
                                timeout=t(10))
            assert peers[0]["rx_bytes"] > 0 and peers[0]["tx_bytes"] > 0
            assert wg.public_key.hex() not in d.stderr()
        finally:
            await client.close()
            await bridge.close()

    # A graceful stop says goodbye to the coordinator: peers see DISCONNECTED, not LOST.
    d.signal(signal.SIGTERM)
    assert await asyncio.to_thread(d.wait) == 0  # the devserver runs in this loop: never block it
    assert agent_id in view.disconnected
    assert view.requests_of(agent_id, "disconnect")


async def test_tailnet_enable_false_makes_no_coordinate_call_and_no_derp_login(  # type: ignore[no-untyped-def]
        tailnet_devserver: DevServer, daemon_env, spawn_daemon) -> None:
    ds = tailnet_devserver
    view = dstailnet.server(ds).view
    d = spawn_daemon(daemon_env(ds.url, ds.agent.token, CODER_AGENT_TAILNET_ENABLE="false"))
    d.wait_ready()
    # The session got its manifest (with a DERP map) and went on without a tunnel.
    await apoll(lambda: ds.agent.lifecycle and ds.agent.lifecycle[-1]["state"] == "ready", timeout=t(30))
    st = await apoll(lambda: (s := _tailnet_status(d))["state"] == "off" and s, timeout=t(10))
    assert "tailnet_enable" in st["reason"]
    assert view.coordinate_streams == 0 and view.derp_map_streams == 0
    assert relay(ds).summary()["clients"] == []
    d.signal(signal.SIGTERM)
    assert await asyncio.to_thread(d.wait) == 0  # the devserver runs in this loop: never block it
