"""Test helpers for a Coder client made of wireguard-go: a UDP<->DERP bridge and a coordinator client.

``DerpBridge`` (coder-tailnet.md §10(b)): logs into the devserver's DERP relay with the
client's WireGuard key through the project's own :class:`DerpManager`, relays datagrams between
wireguard-go's UDP socket (a :class:`UdpLink`) and DERP SendPacket/RecvPacket to the agent's
node key. Disco datagrams from DERP are kept for the test instead (wireguard-go speaks no disco);
the test can send its own disco with :meth:`DerpBridge.send_derp`.

``CoordClient`` joins the devserver's client coordinate route as Coder's clients do:
``add_tunnel(agent)`` and ``update_self(node)``; it records the peer updates it gets.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import uuid

from coder_agent.devserver import DevServer
from coder_agent.devserver import tailnet as dstailnet
from coder_agent.retry import RetryPolicy
from coder_agent.rpc.proto import tailnet_pb2
from coder_agent.rpc.transport import BidiStream, YamuxConnection, bidi_stream
from coder_agent.tailnet import derpmap, disco
from coder_agent.tailnet.coordination import COORDINATE
from coder_agent.tailnet.derpclient import DerpManager, DialOptions

from ..conftest import t
from .wgpeer import UdpLink

FAST = RetryPolicy(initial=0.05, cap=0.5, jitter=0.1)
Kind = tailnet_pb2.CoordinateResponse.PeerUpdate


class DerpBridge:
    """wireguard-go's UDP socket <-> DERP, as the client's node key."""

    def __init__(self, ds: DevServer, private_key_b64: bytes | str, wg_port: int, region: int = 999) -> None:
        self.private = base64.b64decode(private_key_b64)
        self.region = region
        self.agent_key: bytes | None = None
        self.link = UdpLink(wg_port)
        self.disco: asyncio.Queue[tuple[bytes, bytes]] = asyncio.Queue()  # (src key, datagram)
        self.to_derp = 0  # datagrams from wireguard-go forwarded to the agent
        self.from_derp = 0  # WireGuard datagrams from the agent handed to wireguard-go
        m = derpmap.DerpMap.from_proto(dstailnet.server(ds).derp_map)
        self.mgr = DerpManager(self.private, DialOptions(), self._on_derp, policy=FAST)
        self.mgr.set_map(derpmap.rewrite_default_relay(m, ds.url))

    async def start(self) -> DerpBridge:
        await self.link.open()
        self.link.on_datagram = self._on_udp
        self.mgr.set_home(self.region)
        await asyncio.wait_for(self.mgr.regions[self.region].connected.wait(), t(10))
        return self

    @property
    def endpoint(self) -> str:
        return self.link.endpoint

    def _on_udp(self, datagram: bytes) -> None:
        if self.agent_key is not None:
            self.to_derp += 1
            self.mgr.send(self.region, self.agent_key, datagram)

    def _on_derp(self, region: int, src: bytes, payload: bytes) -> None:
        if disco.looks_like_disco(payload):
            self.disco.put_nowait((src, payload))
        elif src == self.agent_key:
            self.from_derp += 1
            self.link.send(payload)

    def send_derp(self, dst: bytes, payload: bytes) -> bool:
        return self.mgr.send(self.region, dst, payload)

    async def close(self) -> None:
        self.link.close()
        await self.mgr.close()


class CoordClient:
    """A Coder client on the devserver's coordinate route, tunnelled to one agent."""

    def __init__(self, conn: YamuxConnection, bidi: BidiStream) -> None:
        self.conn = conn
        self.bidi = bidi
        self.updates: list[tailnet_pb2.CoordinateResponse.PeerUpdate] = []
        self.errors: list[str] = []
        self.ended = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def join(cls, ds: DevServer, agent_id: uuid.UUID, node: tailnet_pb2.Node) -> CoordClient:
        ts = dstailnet.server(ds)
        conn = await dstailnet.dial_client(ds.url, str(agent_id), ts.client_token)
        bidi = await bidi_stream(conn, COORDINATE)
        await bidi.send(tailnet_pb2.CoordinateRequest(
            add_tunnel=tailnet_pb2.CoordinateRequest.Tunnel(id=agent_id.bytes)).SerializeToString())
        await bidi.send(tailnet_pb2.CoordinateRequest(
            update_self=tailnet_pb2.CoordinateRequest.UpdateSelf(node=node)).SerializeToString())
        return cls(conn, bidi)

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            while (raw := await self.bidi.recv()) is not None:
                resp = tailnet_pb2.CoordinateResponse.FromString(raw)
                self.updates.extend(resp.peer_updates)
                if resp.error:
                    self.errors.append(resp.error)
        self.ended.set()

    def latest_node(self, peer: uuid.UUID) -> tailnet_pb2.Node | None:
        nodes = [u.node for u in self.updates if u.kind == Kind.NODE and u.id == peer.bytes]
        return nodes[-1] if nodes else None

    def of_kind(self, kind: int) -> list[tailnet_pb2.CoordinateResponse.PeerUpdate]:
        return [u for u in self.updates if u.kind == kind]

    async def disconnect(self) -> None:
        await self.bidi.send(tailnet_pb2.CoordinateRequest(
            disconnect=tailnet_pb2.CoordinateRequest.Disconnect()).SerializeToString())
        await asyncio.wait_for(self.ended.wait(), t(10))

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(BaseException):
            await self._reader
        await self.conn.close()
