"""The devserver's Tailnet service: coderd's coordinator and DERP-map stream, server side.

Served on the same yamux session as the Agent service (coderd registers both on one drpcmux),
and, for test peers, on ``GET /api/v2/workspaceagents/{id}/coordinate`` as coderd serves
clients (``coder ssh``, the CLI's tailnet): a websocket → yamux server → the Tailnet service,
the peer id a fresh UUID per connection, its auth ``ClientCoordinateeAuth{AgentID: id}``. The
devserver has no users, so that route takes the per-server :attr:`TailnetServer.client_token`
(``Coder-Session-Token``) instead of a user session; it is a test and demo door, nothing more.
A client then does what Coder's clients do: ``add_tunnel(agent id)`` and ``update_self``.

Rules kept from coderd (coder-tailnet.md §2, ``tailnet/coordinator.go``, ``tunnel.go``,
``peer.go``, ``service.go``):

* StreamDERPMaps: the current map at once, then again whenever it changes (compared by
  value); the default map is coderd's embedded relay: region 999 ``coder`` "Coder Embedded
  Relay", node ``999b`` at the devserver's host and port, ``force_http`` for http://,
  ``stun_port`` -1.
* Coordinate, per peer: ``update_self`` stores the node and sends NODE "node update" to every
  tunnel peer (only if it differs from what that peer was last sent); ``add_tunnel`` links
  src→dst and exchanges nodes ("add tunnel"); ``remove_tunnel`` → DISCONNECTED "remove
  tunnel"; ``disconnect`` → DISCONNECTED "graceful disconnect" to tunnel peers, then we hang
  up (dRPC Close); ``ready_for_handshake{id}`` → READY_FOR_HANDSHAKE (id = sender) to that
  peer if they share a tunnel, else an ``error`` response "you do not share a tunnel with
  "<id>"" (not fatal). A stream that ends any other way → LOST "lost" to tunnel peers.
  LOST/DISCONNECTED go only to peers that were sent a node of it. A second connection with
  the same id replaces the first.
* Auth: agents (``AgentCoordinateeAuth``) may not add tunnels and every address must be a
  /128 of the agent's TailscaleServicePrefix or CoderServicePrefix address (or the legacy
  one); clients may tunnel only to their agent, need /128 addresses and may not send
  ready_for_handshake. A refused request gets an ``error`` response (as pgcoord does), then
  the peer is dropped as lost and the stream closed.

:func:`server` gives the per-DevServer :class:`TailnetServer`; its :attr:`~TailnetServer.view`
is the inspection record tests assert on (what each peer published and asked, what was relayed).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import uuid
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web
from google.protobuf.message import DecodeError

from ..rpc import drpc
from ..rpc.proto import tailnet_pb2
from ..rpc.transport import ConnectionClosedError, Stream, StreamResetError, YamuxConnection

if TYPE_CHECKING:
    from .app import DevServer
    from .state import DevAgent

__all__ = [
    "COORDINATE",
    "STREAMING",
    "STREAM_DERP_MAPS",
    "Identity",
    "TailnetServer",
    "TailnetView",
    "agent_addresses",
    "default_derp_map",
    "dial_client",
    "install",
    "node_id",
    "server",
]

SERVICE: Final = "/coder.tailnet.v2.Tailnet/"
COORDINATE: Final = SERVICE + "Coordinate"
STREAM_DERP_MAPS: Final = SERVICE + "StreamDERPMaps"
STREAMING: Final = frozenset({COORDINATE, STREAM_DERP_MAPS})
CLIENT_PATH: Final = "/api/v2/workspaceagents/{agent}/coordinate"

_Kind = tailnet_pb2.CoordinateResponse.PeerUpdate
_TAILSCALE_PREFIX = bytes.fromhex("fd7a115ca1e0")
_CODER_PREFIX = bytes.fromhex("fd60627aa42b")
_LEGACY_AGENT_IP = ipaddress.IPv6Address("fd7a:115c:a1e0:49d6:b259:b7ac:b1b2:48f4")


# ---- identities written apart from the agent's own (so a shared bug cannot hide) ---------------


def agent_addresses(agent_id: uuid.UUID) -> tuple[ipaddress.IPv6Address, ipaddress.IPv6Address]:
    """``ServicePrefix.AddrFromUUID``: the UUID with its first 6 bytes replaced by each prefix."""
    raw = agent_id.bytes
    return (ipaddress.IPv6Address(_TAILSCALE_PREFIX + raw[6:]), ipaddress.IPv6Address(_CODER_PREFIX + raw[6:]))


def node_id(peer_id: uuid.UUID) -> int:
    """Go's ``NodeID``: the last 8 bytes as a signed big-endian int64, absolute value (-2^63 stays)."""
    value = int.from_bytes(peer_id.bytes[8:], "big", signed=True)
    return value if value == -(1 << 63) else abs(value)


def default_derp_map(url: str) -> tailnet_pb2.DERPMap:
    """coderd's default embedded relay (``cli/server.go``), pointing at ``url``."""
    parts = urlsplit(url)
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    region = tailnet_pb2.DERPMap.Region(
        region_id=999, embedded_relay=True, region_code="coder", region_name="Coder Embedded Relay",
        nodes=[tailnet_pb2.DERPMap.Region.Node(
            name="999b", region_id=999, host_name=parts.hostname or "", derp_port=port, stun_port=-1,
            force_http=not https)],
    )
    m = tailnet_pb2.DERPMap()
    m.regions[999].CopyFrom(region)
    return m


# ---- inspection -----------------------------------------------------------------------------------


@dataclass
class TailnetView:
    """What happened on the Tailnet service, for tests and the demo (plain data)."""

    nodes: dict[uuid.UUID, tailnet_pb2.Node] = field(default_factory=dict)  # latest per peer
    node_history: dict[uuid.UUID, list[tailnet_pb2.Node]] = field(default_factory=dict)
    requests: list[tuple[uuid.UUID, tailnet_pb2.CoordinateRequest]] = field(default_factory=list)
    responses: list[tuple[uuid.UUID, tailnet_pb2.CoordinateResponse]] = field(default_factory=list)
    relayed_rfh: list[tuple[uuid.UUID, uuid.UUID]] = field(default_factory=list)  # (acker, source)
    errors: list[tuple[uuid.UUID, str]] = field(default_factory=list)
    connected: dict[uuid.UUID, str] = field(default_factory=dict)  # peer id → "agent" | "client"
    disconnected: list[uuid.UUID] = field(default_factory=list)  # graceful
    lost: list[uuid.UUID] = field(default_factory=list)
    coordinate_streams: int = 0
    derp_map_streams: int = 0
    derp_maps_sent: int = 0

    def requests_of(self, peer: uuid.UUID, kind: str | None = None) -> list[tailnet_pb2.CoordinateRequest]:
        """``peer``'s requests; ``kind`` keeps those that set that field (e.g. "update_self")."""
        return [r for p, r in self.requests if p == peer and (kind is None or _has(r, kind))]

    def summary(self) -> dict[str, Any]:
        from google.protobuf.json_format import MessageToDict

        return {
            "connected": {str(k): v for k, v in self.connected.items()},
            "nodes": {str(k): MessageToDict(v) for k, v in self.nodes.items()},
            "relayed_ready_for_handshake": [[str(a), str(b)] for a, b in self.relayed_rfh],
            "errors": [[str(p), e] for p, e in self.errors],
            "disconnected": [str(p) for p in self.disconnected],
            "lost": [str(p) for p in self.lost],
            "coordinate_streams": self.coordinate_streams,
            "derp_map_streams": self.derp_map_streams,
            "derp_maps_sent": self.derp_maps_sent,
        }


def _has(req: tailnet_pb2.CoordinateRequest, kind: str) -> bool:
    if kind == "ready_for_handshake":
        return len(req.ready_for_handshake) > 0
    return req.HasField(kind)


# ---- the coordinator core ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """Who is on a Coordinate stream: coderd's ``StreamID`` (name, id, auth)."""

    peer_id: uuid.UUID
    kind: str  # "agent" | "client"
    agent_id: uuid.UUID  # for a client: the only agent it may tunnel to
    name: str = ""


@dataclass(eq=False)
class _Peer:
    who: Identity
    resps: asyncio.Queue[tailnet_pb2.CoordinateResponse | None] = field(default_factory=asyncio.Queue)
    node: tailnet_pb2.Node | None = None
    sent: dict[uuid.UUID, tailnet_pb2.Node] = field(default_factory=dict)
    closed: bool = False

    @property
    def id(self) -> uuid.UUID:
        return self.who.peer_id

    def enqueue(self, resp: tailnet_pb2.CoordinateResponse) -> None:
        if not self.closed:
            self.resps.put_nowait(resp)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.resps.put_nowait(None)


class _Unauthorized(Exception):
    pass


class _Coordinator:
    """coderd's in-memory coordinator core (``tailnet/coordinator.go`` ``core``), synchronous."""

    def __init__(self, view: TailnetView) -> None:
        self.view = view
        self.peers: dict[uuid.UUID, _Peer] = {}
        self.tunnels: set[tuple[uuid.UUID, uuid.UUID]] = set()  # (src, dst)

    def join(self, who: Identity) -> _Peer:
        old = self.peers.get(who.peer_id)
        if old is not None:
            old.close()  # "overwritten by new connection"
        peer = _Peer(who)
        self.peers[who.peer_id] = peer
        self.view.connected[who.peer_id] = who.kind
        self._batch(peer, [self.peers.get(o) for o in self._tunnel_peers(peer.id)], "init")
        return peer

    def handle(self, peer: _Peer, req: tailnet_pb2.CoordinateRequest) -> None:
        if self.peers.get(peer.id) is not peer:
            return  # already removed (ErrAlreadyRemoved)
        problem = _authorize(peer.who, req)
        if problem is not None:
            raise _Unauthorized(problem)
        if req.HasField("update_self"):
            node = tailnet_pb2.Node()
            node.CopyFrom(req.update_self.node)
            peer.node = node
            self.view.nodes[peer.id] = node
            self.view.node_history.setdefault(peer.id, []).append(node)
            self._update_tunnel_peers(peer.id, node, _Kind.NODE, "node update")
        if req.HasField("add_tunnel"):
            self._add_tunnel(peer, _uuid(req.add_tunnel.id, "add tunnel"))
        if req.HasField("remove_tunnel"):
            self._remove_tunnel(peer, _uuid(req.remove_tunnel.id, "remove tunnel"))
        if req.HasField("disconnect"):
            self.view.disconnected.append(peer.id)
            self.remove(peer.id, _Kind.DISCONNECTED, "graceful disconnect")
        for rfh in req.ready_for_handshake:
            dst = _uuid(rfh.id, "ready for handshake")
            if not self._tunnel_exists(peer.id, dst):
                peer.enqueue(tailnet_pb2.CoordinateResponse(error=f'you do not share a tunnel with "{dst}"'))
                continue
            other = self.peers.get(dst)
            if other is not None:
                self.view.relayed_rfh.append((peer.id, dst))
                other.enqueue(tailnet_pb2.CoordinateResponse(peer_updates=[
                    tailnet_pb2.CoordinateResponse.PeerUpdate(id=peer.id.bytes, kind=_Kind.READY_FOR_HANDSHAKE)]))

    def lost(self, peer: _Peer) -> None:
        if self.peers.get(peer.id) is peer:
            self.view.lost.append(peer.id)
            self.remove(peer.id, _Kind.LOST, "lost")

    def remove(self, peer_id: uuid.UUID, kind: int, reason: str) -> None:
        peer = self.peers.pop(peer_id, None)
        if peer is None:
            return
        self.view.connected.pop(peer_id, None)
        self._update_tunnel_peers(peer_id, None, kind, reason)
        self.tunnels = {t for t in self.tunnels if t[0] != peer_id}
        peer.close()

    # ---- internals -----------------------------------------------------------------------------

    def _tunnel_peers(self, peer_id: uuid.UUID) -> set[uuid.UUID]:
        return {d for s, d in self.tunnels if s == peer_id} | {s for s, d in self.tunnels if d == peer_id}

    def _tunnel_exists(self, a: uuid.UUID, b: uuid.UUID) -> bool:
        return (a, b) in self.tunnels or (b, a) in self.tunnels

    def _add_tunnel(self, src: _Peer, dst_id: uuid.UUID) -> None:
        self.tunnels.add((src.id, dst_id))
        dst = self.peers.get(dst_id)
        if dst is None:
            return
        if dst.node is not None:
            self._update(src, dst_id, dst.node, _Kind.NODE, "add tunnel")
        if src.node is not None:
            self._update(dst, src.id, src.node, _Kind.NODE, "add tunnel")

    def _remove_tunnel(self, src: _Peer, dst_id: uuid.UUID) -> None:
        self._update(src, dst_id, None, _Kind.DISCONNECTED, "remove tunnel")
        dst = self.peers.get(dst_id)
        if dst is not None:
            self._update(dst, src.id, None, _Kind.DISCONNECTED, "remove tunnel")
        self.tunnels.discard((src.id, dst_id))

    def _update_tunnel_peers(self, peer_id: uuid.UUID, node: tailnet_pb2.Node | None, kind: int,
                             reason: str) -> None:
        for other_id in self._tunnel_peers(peer_id):
            other = self.peers.get(other_id)
            if other is not None:
                self._update(other, peer_id, node, kind, reason)

    def _mapping(self, to: _Peer, peer_id: uuid.UUID, node: tailnet_pb2.Node | None, kind: int,
                 reason: str) -> tailnet_pb2.CoordinateResponse.PeerUpdate | None:
        """``storeMappingLocked``: what ``to`` must be told, None if nothing."""
        before = to.sent.get(peer_id)
        if kind in (_Kind.LOST, _Kind.DISCONNECTED):
            if before is None:
                return None
            del to.sent[peer_id]
        elif kind == _Kind.NODE:
            assert node is not None
            if before is not None and before == node:
                return None
            to.sent[peer_id] = node
        update = tailnet_pb2.CoordinateResponse.PeerUpdate(id=peer_id.bytes, kind=kind, reason=reason)  # type: ignore[arg-type]
        if node is not None:
            update.node.CopyFrom(node)
        return update

    def _update(self, to: _Peer, peer_id: uuid.UUID, node: tailnet_pb2.Node | None, kind: int, reason: str) -> None:
        update = self._mapping(to, peer_id, node, kind, reason)
        if update is not None:
            to.enqueue(tailnet_pb2.CoordinateResponse(peer_updates=[update]))

    def _batch(self, to: _Peer, others: Iterable[_Peer | None], reason: str) -> None:
        updates = []
        for other in others:
            if other is not None and other.node is not None:
                update = self._mapping(to, other.id, other.node, _Kind.NODE, reason)
                if update is not None:
                    updates.append(update)
        if updates:
            to.enqueue(tailnet_pb2.CoordinateResponse(peer_updates=updates))


def _uuid(raw: bytes, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(bytes=raw)
    except ValueError:
        raise _Unauthorized(f"{what}: unable to convert bytes to UUID: invalid UUID (got {len(raw)} bytes)") from None


def _authorize(who: Identity, req: tailnet_pb2.CoordinateRequest) -> str | None:
    """``AgentCoordinateeAuth`` / ``ClientCoordinateeAuth``: the refusal text, None if allowed."""
    if req.HasField("add_tunnel"):
        if who.kind == "agent":
            return "agents cannot open tunnels"
        try:
            dst = uuid.UUID(bytes=req.add_tunnel.id)
        except ValueError:
            return "parse add tunnel id: invalid UUID"
        if dst != who.agent_id:
            return f"invalid agent id, expected {who.agent_id}, got {dst}"
    if req.HasField("update_self"):
        allowed = set(agent_addresses(who.agent_id)) | {_LEGACY_AGENT_IP}
        for text in req.update_self.node.addresses:
            try:
                net = ipaddress.ip_network(text, strict=False)
            except ValueError:
                return f"parse node address: netip.ParsePrefix({text!r}): invalid prefix"
            if net.prefixlen != net.max_prefixlen or net.version != 6:
                return f"invalid address bits, expected 128, got {net.prefixlen}"
            if who.kind == "agent" and net.network_address not in allowed:
                return f"invalid node address, got {net.network_address}"
    if who.kind == "client" and len(req.ready_for_handshake) > 0:
        return "clients may not send ready_for_handshake"
    return None


# ---- serving the streams --------------------------------------------------------------------------


class TailnetServer:
    """The Tailnet service of one DevServer: coordinator, DERP map, inspection view."""

    def __init__(self, ds: DevServer) -> None:
        self.ds = ds
        self.view = TailnetView()
        self.coordinator = _Coordinator(self.view)
        self.client_token = str(uuid.uuid4())
        self._derp_map: tailnet_pb2.DERPMap | None = None
        self._map_changed = asyncio.Event()

    @property
    def derp_map(self) -> tailnet_pb2.DERPMap:
        """The map StreamDERPMaps sends (the default embedded relay until :meth:`set_derp_map`)."""
        if self._derp_map is None:
            return default_derp_map(self.ds.url)
        return self._derp_map

    def set_derp_map(self, derp_map: tailnet_pb2.DERPMap) -> None:
        """Replace the map; every StreamDERPMaps subscriber gets it if it differs."""
        self._derp_map = derp_map
        self._map_changed.set()
        self._map_changed = asyncio.Event()

    async def serve_call(self, stream: Stream, ss: drpc.ServerStream, pending: list[drpc.ServerEvent],
                         who: Identity) -> None:
        """Serve one Tailnet streaming call whose Invoke ``ss`` has parsed; ``pending`` are the
        events that came with it. Returns when the stream is over (both directions)."""
        events = _events(stream, ss, pending)
        try:
            if ss.method == COORDINATE:
                await self._coordinate(stream, ss, events, who)
            else:
                await self._stream_derp_maps(stream, ss, events)
        except drpc.DrpcProtocolError:
            stream.reset()
        except (ConnectionClosedError, StreamResetError):
            pass
        finally:
            await events.aclose()
            with contextlib.suppress(Exception):
                await self.ds.notify()

    async def _stream_derp_maps(self, stream: Stream, ss: drpc.ServerStream,
                                events: AsyncIterator[drpc.ServerEvent]) -> None:
        async for ev in events:  # the (empty) request
            if isinstance(ev, drpc.MessageReceived):
                break
            if isinstance(ev, drpc.CloseReceived | drpc.CloseSendReceived):
                return  # no request: nothing to answer
        else:
            return
        self.view.derp_map_streams += 1
        ended = asyncio.ensure_future(_drain(events))
        last: bytes | None = None
        try:
            while not ended.done():
                changed = self._map_changed
                raw = self.derp_map.SerializeToString(deterministic=True)
                if raw != last:
                    ss.send_message(raw)
                    stream.write(ss.data_to_send())
                    last = raw
                    self.view.derp_maps_sent += 1
                    await self.ds.notify()
                waiter = asyncio.ensure_future(changed.wait())
                try:
                    await asyncio.wait({ended, waiter}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
        finally:
            ended.cancel()
            with contextlib.suppress(BaseException):
                await ended
        if not ss.replied:
            ss.close_send()
            stream.write(ss.data_to_send())
        await stream.close()

    async def _coordinate(self, stream: Stream, ss: drpc.ServerStream, events: AsyncIterator[drpc.ServerEvent],
                          who: Identity) -> None:
        self.view.coordinate_streams += 1
        peer = self.coordinator.join(who)
        pump = asyncio.ensure_future(self._pump(stream, ss, peer))
        await self.ds.notify()
        try:
            async for ev in events:
                if isinstance(ev, drpc.CloseSendReceived | drpc.CloseReceived):
                    break
                if not isinstance(ev, drpc.MessageReceived):
                    continue
                req = tailnet_pb2.CoordinateRequest()
                try:
                    req.ParseFromString(ev.data)
                    self.view.requests.append((who.peer_id, req))
                    self.coordinator.handle(peer, req)
                except (DecodeError, _Unauthorized) as e:
                    text = f"authorize request: {e}" if isinstance(e, _Unauthorized) else f"decode request: {e}"
                    self.view.errors.append((who.peer_id, text))
                    peer.enqueue(tailnet_pb2.CoordinateResponse(error=text))
                    self.coordinator.lost(peer)
                    break
                finally:
                    await self.ds.notify()
        finally:
            self.coordinator.lost(peer)  # a no-op after a graceful disconnect or a replacement
            with contextlib.suppress(BaseException):
                await pump
            await self.ds.notify()

    async def _pump(self, stream: Stream, ss: drpc.ServerStream, peer: _Peer) -> None:
        with contextlib.suppress(ConnectionClosedError, StreamResetError):
            while True:
                resp = await peer.resps.get()
                if resp is None or ss.replied:  # hung up on, or the client abandoned the stream
                    break
                self.view.responses.append((peer.id, resp))
                ss.send_message(resp.SerializeToString())
                stream.write(ss.data_to_send())
                await self.ds.notify()
            # The coordinator hung up on this peer: dRPC Close, as coderd's loopResp does.
            ss.close()
            stream.write(ss.data_to_send())
            await stream.close()


async def _events(stream: Stream, ss: drpc.ServerStream, pending: list[drpc.ServerEvent]
                  ) -> AsyncGenerator[drpc.ServerEvent, None]:
    for ev in pending:
        yield ev
    while True:
        data = await stream.read()
        if not data:
            return
        for ev in ss.receive_data(data):
            yield ev


async def _drain(events: AsyncIterator[drpc.ServerEvent]) -> None:
    """Consume a server stream's events until the client abandons it (Close or EOF); its
    CloseSend right after the request is normal."""
    with contextlib.suppress(ConnectionClosedError, StreamResetError, drpc.DrpcProtocolError):
        async for ev in events:
            if isinstance(ev, drpc.CloseReceived):
                return


_SERVERS: weakref.WeakKeyDictionary[DevServer, TailnetServer] = weakref.WeakKeyDictionary()


def server(ds: DevServer) -> TailnetServer:
    """The Tailnet service of ``ds`` (created on first use)."""
    ts = _SERVERS.get(ds)
    if ts is None:
        ts = TailnetServer(ds)
        _SERVERS[ds] = ts
    return ts


def agent_identity(agent: DevAgent) -> Identity:
    aid = uuid.UUID(agent.id)
    return Identity(aid, "agent", aid, agent.name)


# ---- the client route --------------------------------------------------------------------------------


class _WsPipe:
    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws

    async def send(self, message: bytes, /) -> None:
        await self.ws.send_bytes(message)

    async def close(self) -> None:
        await self.ws.close()

    def __aiter__(self) -> AsyncIterator[str | bytes]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[str | bytes]:
        async for msg in self.ws:
            if msg.type == WSMsgType.BINARY:
                yield bytes(msg.data)
            elif msg.type == WSMsgType.TEXT:
                yield str(msg.data)
            else:
                return


async def _serve_client_stream(ts: TailnetServer, stream: Stream, who: Identity) -> None:
    ss = drpc.ServerStream(streaming=STREAMING)
    try:
        while True:
            data = await stream.read()
            if not data:
                return
            events = ss.receive_data(data)
            for i, ev in enumerate(events):
                if isinstance(ev, drpc.InvokeReceived):
                    if ss.streaming:
                        await ts.serve_call(stream, ss, events[i + 1:], who)
                        return
                elif isinstance(ev, drpc.RequestReceived):
                    # The CLI's unary Tailnet calls (PostTelemetry, RefreshResumeToken) are not needed here.
                    ss.reply_error(drpc.UNIMPLEMENTED, "Unimplemented")
                    stream.write(ss.data_to_send())
                    await stream.close()
                    return
    except drpc.DrpcProtocolError:
        stream.reset()
    except (ConnectionClosedError, StreamResetError):
        pass


def install(app: web.Application, ds: DevServer) -> None:
    """The client route (the agent's own Tailnet calls arrive through :mod:`.rpc`)."""
    from .app import coder_error
    from .rpc import _version_error

    async def coordinate(request: web.Request) -> web.StreamResponse:
        ts = server(ds)
        token = request.headers.get("Coder-Session-Token") or request.cookies.get("coder_session_token")
        if token != ts.client_token:
            return coder_error(401, "You must be logged in to access this resource.",
                               "devserver: use TailnetServer.client_token")
        agent = next((a for a in ds.state.agents if a.id == request.match_info["agent"]), None)
        if agent is None:
            return coder_error(404, "Resource not found or you do not have access to this resource")
        problem = _version_error(request.query.get("version"), 99)
        if problem is not None:
            return coder_error(400, "Unknown or unsupported API version",
                               validations=[{"field": "version", "detail": problem}])
        ws = web.WebSocketResponse(max_msg_size=4 << 20, compress=False)
        await ws.prepare(request)
        who = Identity(uuid.uuid4(), "client", uuid.UUID(agent.id), "devserver test client")
        conn = YamuxConnection(_WsPipe(ws), client=False)
        tasks: set[asyncio.Task[None]] = set()
        try:
            while True:
                try:
                    stream = await conn.accept_stream()
                except ConnectionClosedError:
                    break
                task = asyncio.ensure_future(_serve_client_stream(ts, stream, who))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        finally:
            for task in list(tasks):
                task.cancel()
            for task in list(tasks):
                with contextlib.suppress(BaseException):
                    await task
            await conn.close()
        return ws

    async def view(request: web.Request) -> web.Response:
        return web.json_response(server(ds).view.summary())

    app.router.add_get(CLIENT_PATH, coordinate)
    app.router.add_get("/devserver/tailnet", view)


async def dial_client(url: str, agent_id: str, token: str, version: str = "2.0") -> YamuxConnection:
    """A test peer's RPC connection to ``url``'s client route (then ``bidi_stream(conn, COORDINATE)``)."""
    from websockets.asyncio.client import connect

    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}[parts.scheme]
    ws_url = f"{scheme}://{parts.netloc}{CLIENT_PATH.format(agent=agent_id)}?version={version}"
    ws = await connect(ws_url, additional_headers={"Coder-Session-Token": token}, compression=None,
                       max_size=4 << 20, ping_interval=None)
    return YamuxConnection(ws, client=True)
