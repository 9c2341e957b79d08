"""A Coder client peer made of the project's own tailnet cores, for the demo.

What ``coder ssh`` does before it opens anything: join the coordinator (the devserver's client
route) with a fresh node key and a /128 of its own, log into the DERP relay with that key, wait
for the agent's node and its ready-for-handshake, then reach the agent through WireGuard (this
peer initiates the handshake) and wait for a TSMP pong — the "agent is reachable" check of every
Coder client (coder-tailnet.md §5). Only the devserver's own relay and coordinator are used.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import time
import uuid
from dataclasses import dataclass

from ..rpc.proto import tailnet_pb2
from ..rpc.transport import bidi_stream
from ..tailnet import keys, packet
from ..tailnet.coordination import COORDINATE
from ..tailnet.derpclient import DerpManager, DialOptions
from ..tailnet.derpmap import DerpMap, rewrite_default_relay
from ..tailnet.wireguard import Device, HandshakeComplete, Result
from . import tailnet as dstailnet
from .app import DevServer

__all__ = ["Reach", "reach_agent"]

Kind = tailnet_pb2.CoordinateResponse.PeerUpdate


@dataclass(frozen=True)
class Reach:
    agent_address: str
    agent_home_region: int
    handshake_ms: float  # from the first initiation to the completed handshake
    tsmp_pong_ms: float  # TSMP ping → pong through WireGuard over DERP


async def reach_agent(ds: DevServer, agent_id: uuid.UUID, timeout: float = 20.0) -> Reach:
    """Raises TimeoutError when the agent cannot be reached in ``timeout`` seconds."""
    node_key, disco_key = keys.NodeKey.generate(), keys.DiscoKey.generate()
    me = ipaddress.IPv6Address(keys.TAILSCALE_SERVICE_PREFIX.network_address.packed[:6] + os.urandom(10))
    ts = dstailnet.server(ds)
    conn = await dstailnet.dial_client(ds.url, str(agent_id), ts.client_token)
    inbox: asyncio.Queue[tuple[bytes, bytes]] = asyncio.Queue()
    derp = DerpManager(node_key.private, DialOptions(), lambda _region, src, data: inbox.put_nowait((src, data)))
    derp.set_map(rewrite_default_relay(DerpMap.from_proto(ts.derp_map), ds.url))
    try:
        async with asyncio.timeout(timeout):
            derp.set_home(999)
            await derp.regions[999].connected.wait()
            coord = await bidi_stream(conn, COORDINATE)
            node = tailnet_pb2.Node(id=keys.node_id(uuid.uuid4()), key=node_key.wire, disco=disco_key.wire,
                                    preferred_derp=999, addresses=[f"{me}/128"], allowed_ips=[f"{me}/128"])
            for req in (tailnet_pb2.CoordinateRequest(add_tunnel=tailnet_pb2.CoordinateRequest.Tunnel(
                            id=agent_id.bytes)),
                        tailnet_pb2.CoordinateRequest(update_self=tailnet_pb2.CoordinateRequest.UpdateSelf(node=node))):
                await coord.send(req.SerializeToString())
            agent_node: tailnet_pb2.Node | None = None
            ready = False
            while agent_node is None or not ready:  # the agent programs us into WireGuard, then says so
                raw = await coord.recv()
                if raw is None:
                    raise ConnectionError("the coordinator hung up")
                for u in tailnet_pb2.CoordinateResponse.FromString(raw).peer_updates:
                    if u.id == agent_id.bytes and u.kind == Kind.NODE:
                        agent_node = u.node
                    ready = ready or (u.id == agent_id.bytes and u.kind == Kind.READY_FOR_HANDSHAKE)
            return await _ping(derp, inbox, node_key, me, agent_node)
    finally:
        await derp.close()
        with contextlib.suppress(Exception):
            await conn.close()


async def _ping(derp: DerpManager, inbox: asyncio.Queue[tuple[bytes, bytes]], node_key: keys.NodeKey,
                me: ipaddress.IPv6Address, agent_node: tailnet_pb2.Node) -> Reach:
    agent_key = keys.node_key_from_wire(agent_node.key)
    agent_ip = ipaddress.IPv6Address(agent_node.addresses[0].split("/")[0])
    dev = Device(node_key.private, wall_offset=time.time() - time.monotonic())
    dev.add_peer(agent_key, list(agent_node.allowed_ips))
    region = agent_node.preferred_derp or 999
    payload = b"p" + os.urandom(8)
    t0 = time.monotonic()
    handshake_ms = -1.0

    def out(r: Result) -> None:
        nonlocal handshake_ms
        for dst, datagram in r.to_send:
            derp.send(region, dst, datagram)
        if handshake_ms < 0 and any(isinstance(e, HandshakeComplete) for e in r.events):
            handshake_ms = (time.monotonic() - t0) * 1000

    out(dev.send(packet.build(me.packed, agent_ip.packed, packet.NH_TSMP, payload), time.monotonic()))
    while True:
        deadline = dev.next_deadline()
        wait = max(0.0, deadline - time.monotonic()) if deadline is not None else None
        try:
            src, data = await asyncio.wait_for(inbox.get(), wait)
        except TimeoutError:
            out(dev.tick(time.monotonic()))
            continue
        r = dev.receive(src, data, time.monotonic())
        out(r)
        for pkt in r.packets_in:
            hdr, body = packet.parse(pkt)
            if hdr.next_header == packet.NH_TSMP and body[:1] == b"o" and body[1:9] == payload[1:]:
                return Reach(str(agent_ip), agent_node.preferred_derp, handshake_ms,
                             (time.monotonic() - t0) * 1000)
