"""A Coder client peer made of the project's own tailnet cores, for the demo.

What ``coder ssh`` does before it opens anything: join the coordinator (the devserver's client
route) with a fresh node key and a /128 of its own, log into the DERP relay with that key, wait
for the agent's node and its ready-for-handshake, then reach the agent through WireGuard (this
peer initiates the handshake) and wait for a TSMP pong — the "agent is reachable" check of every
Coder client (coder-tailnet.md §5). Only the devserver's own relay and coordinator are used.

:func:`join` gives a :class:`ClientPeer` that stays up until :meth:`ClientPeer.close`:

* the coordinator stream stays open (closing it would tell the agent to forget us); later NODE
  updates of the agent re-program its WireGuard peer, and a DISCONNECTED/LOST one is remembered
  (:attr:`ClientPeer.agent_gone`) — a client does not chase a reinit;
* one WireGuard :class:`~coder_agent.tailnet.wireguard.Device` with the agent as its only peer,
  driven by one event-loop timer at its next deadline; datagrams go to the agent's DERP region;
* decrypted packets: a TSMP pong answers :meth:`ClientPeer.ping`; TCP goes to a
  :class:`~coder_agent.tailnet.tunnel.TunnelTcp` of its own (active opens only, every SYN to us
  refused), so :meth:`ClientPeer.open` gives a stream to any agent port through the tunnel.

:func:`reach_agent` is the one-shot form: join, one ping, close.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

from ..rpc.proto import tailnet_pb2
from ..rpc.transport import BidiStream, YamuxConnection, bidi_stream
from ..tailnet import keys, packet
from ..tailnet.coordination import COORDINATE
from ..tailnet.deadline import DeadlineTimer
from ..tailnet.derpclient import DerpManager, DialOptions
from ..tailnet.derpmap import DerpMap, rewrite_default_relay
from ..tailnet.tunnel import TunnelConn, TunnelTcp
from ..tailnet.wireguard import Device, HandshakeComplete, Result
from ..tasks import reap
from . import tailnet as dstailnet
from .app import DevServer

__all__ = ["ClientPeer", "Reach", "join", "reach_agent"]

Kind = tailnet_pb2.CoordinateResponse.PeerUpdate


@dataclass(frozen=True)
class Reach:
    agent_address: str
    agent_home_region: int
    handshake_ms: float  # from the first initiation to the completed handshake
    tsmp_pong_ms: float  # TSMP ping → pong through WireGuard over DERP


class ClientPeer:
    """A client joined to one agent through the devserver; see the module rules."""

    def __init__(self, node_key: keys.NodeKey, me: ipaddress.IPv6Address) -> None:
        self.node_key = node_key
        self.me = me
        self._loop = asyncio.get_running_loop()
        self.device = Device(node_key.private, wall_offset=time.time() - time.monotonic())
        self.derp = DerpManager(node_key.private, DialOptions(), self._on_derp)
        self.tcp = TunnelTcp(self._send_ip, lambda: (me.packed,), forward_hosts=())
        self._timer = DeadlineTimer(self._tick, time.monotonic)
        self._pongs: dict[bytes, asyncio.Future[float]] = {}
        self._conn: YamuxConnection | None = None
        self._coord_task: asyncio.Task[None] | None = None
        self._agent_key: bytes | None = None
        self.agent_address = ""
        self.agent_home_region = 0
        self.agent_gone = ""
        self.handshake_ms = -1.0
        self._t0 = 0.0
        self._closed = False

    # ---- packets ------------------------------------------------------------------------------

    def _on_derp(self, _region: int, src: bytes, data: bytes) -> None:
        if not self._closed:
            self._apply(self.device.receive(src, data, time.monotonic()))

    def _send_ip(self, pkt: bytes) -> None:
        if not self._closed:
            if not self._t0:
                self._t0 = time.monotonic()  # the first packet starts the handshake
            self._apply(self.device.send(pkt, time.monotonic()))

    def _tick(self) -> None:
        if not self._closed:
            self._apply(self.device.tick(time.monotonic()))

    def _apply(self, r: Result) -> None:
        for dst, datagram in r.to_send:
            self.derp.send(self.agent_home_region or 999, dst, datagram)
        if self.handshake_ms < 0 and any(isinstance(e, HandshakeComplete) for e in r.events):
            self.handshake_ms = (time.monotonic() - self._t0) * 1000
        for pkt in r.packets_in:
            hdr, body = packet.parse(pkt)
            if hdr.next_header == packet.NH_TCP:
                self.tcp.receive(pkt)
            elif hdr.next_header == packet.NH_TSMP and body[:1] == b"o":
                fut = self._pongs.pop(body[1:9], None)
                if fut is not None and not fut.done():
                    fut.set_result(time.monotonic())
        if not self._closed:
            self._timer.arm(self.device.next_deadline())

    # ---- coordination -------------------------------------------------------------------------

    def _agent_node(self, node: tailnet_pb2.Node) -> None:
        key = keys.node_key_from_wire(node.key)
        if self._agent_key is not None and self._agent_key != key:
            self.device.remove_peer(self._agent_key)
        self._agent_key = key
        self.device.add_peer(key, list(node.allowed_ips))
        self.agent_address = node.addresses[0].split("/")[0]
        self.agent_home_region = node.preferred_derp or 999

    async def _follow(self, coord: BidiStream, agent_id: uuid.UUID) -> None:
        """The coordinator's later updates for the life of the peer."""
        try:
            while (raw := await coord.recv()) is not None:
                for u in tailnet_pb2.CoordinateResponse.FromString(raw).peer_updates:
                    if u.id != agent_id.bytes:
                        continue
                    if u.kind == Kind.NODE:
                        self._agent_node(u.node)
                        self.agent_gone = ""
                    elif u.kind in (Kind.DISCONNECTED, Kind.LOST):
                        self.agent_gone = u.reason or "gone"
        except Exception as e:  # the connection broke: nothing to follow any more
            self.agent_gone = self.agent_gone or f"coordination ended ({type(e).__name__})"
        self.agent_gone = self.agent_gone or "the coordinator hung up"

    # ---- what a client does ------------------------------------------------------------------

    async def ping(self, timeout: float = 10.0) -> float:
        """A TSMP ping to the agent; the round trip in ms (TimeoutError without an answer)."""
        payload = os.urandom(8)
        fut: asyncio.Future[float] = self._loop.create_future()
        self._pongs[payload] = fut
        t0 = time.monotonic()
        try:
            self._send_ip(packet.build(self.me.packed, ipaddress.IPv6Address(self.agent_address).packed,
                                       packet.NH_TSMP, b"p" + payload))
            async with asyncio.timeout(timeout):
                return (await fut - t0) * 1000
        finally:
            self._pongs.pop(payload, None)

    async def open(self, port: int, timeout: float = 15.0) -> TunnelConn:
        """A TCP connection to the agent's ``port`` through the tunnel (ConnectionRefusedError
        when the agent resets it, TimeoutError when nothing answers)."""
        return await self.tcp.connect(self.me.packed, ipaddress.IPv6Address(self.agent_address).packed, port,
                                      timeout=timeout)

    async def close(self) -> None:
        """Every connection reset, the coordinator told (by hanging up), DERP closed."""
        if self._closed:
            return
        await self.tcp.close()
        self._closed = True
        self._timer.cancel()
        await reap(self._coord_task)
        await self.derp.close()
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()

    async def __aenter__(self) -> ClientPeer:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


async def join(ds: DevServer, agent_id: uuid.UUID, timeout: float = 20.0) -> ClientPeer:
    """Join the agent's tailnet and handshake with it (the first TSMP ping goes out, its pong is
    not waited for); TimeoutError when that takes more than ``timeout`` seconds."""
    node_key, disco_key = keys.NodeKey.generate(), keys.DiscoKey.generate()
    me = ipaddress.IPv6Address(keys.TAILSCALE_SERVICE_PREFIX.network_address.packed[:6] + os.urandom(10))
    ts = dstailnet.server(ds)
    peer = ClientPeer(node_key, me)
    try:
        async with asyncio.timeout(timeout):
            peer._conn = conn = await dstailnet.dial_client(ds.url, str(agent_id), ts.client_token)
            peer.derp.set_map(rewrite_default_relay(DerpMap.from_proto(ts.derp_map), ds.url))
            peer.derp.set_home(999)
            await peer.derp.regions[999].connected.wait()
            coord = await bidi_stream(conn, COORDINATE)
            node = tailnet_pb2.Node(id=keys.node_id(uuid.uuid4()), key=node_key.wire, disco=disco_key.wire,
                                    preferred_derp=999, addresses=[f"{me}/128"], allowed_ips=[f"{me}/128"])
            for req in (tailnet_pb2.CoordinateRequest(add_tunnel=tailnet_pb2.CoordinateRequest.Tunnel(
                            id=agent_id.bytes)),
                        tailnet_pb2.CoordinateRequest(update_self=tailnet_pb2.CoordinateRequest.UpdateSelf(node=node))):
                await coord.send(req.SerializeToString())
            have_node = ready = False
            while not have_node or not ready:  # the agent programs us into WireGuard, then says so
                raw = await coord.recv()
                if raw is None:
                    raise ConnectionError("the coordinator hung up")
                for u in tailnet_pb2.CoordinateResponse.FromString(raw).peer_updates:
                    if u.id == agent_id.bytes and u.kind == Kind.NODE:
                        peer._agent_node(u.node)
                        have_node = True
                    ready = ready or (u.id == agent_id.bytes and u.kind == Kind.READY_FOR_HANDSHAKE)
            peer._coord_task = asyncio.create_task(peer._follow(coord, agent_id))
    except BaseException:
        await peer.close()
        raise
    return peer


async def reach_agent(ds: DevServer, agent_id: uuid.UUID, timeout: float = 20.0) -> Reach:
    """Join, one TSMP ping, close. Raises TimeoutError when the agent cannot be reached in
    ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        peer = await join(ds, agent_id, timeout)
        async with peer:
            pong_ms = await peer.ping(timeout)
            return Reach(peer.agent_address, peer.agent_home_region, peer.handshake_ms, pong_ms)
