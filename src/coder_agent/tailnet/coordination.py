"""Coordination with coderd's tailnet coordinator: a sans-I/O controller and its asyncio runners.

The controller is Go's ``BasicCoordinationController{SendAcks: true}`` (``tailnet/controllers.go``)
with the node bookkeeping of ``tailnet/node.go`` and the peer lifecycle of ``configmaps.go``
(coder-tailnet.md §2). Rules:

* Our node: ``id`` = NodeID, ``as_of`` = when the request is built, ``key`` = ``np`` + the
  32-byte WireGuard public key, ``disco`` = ``discokey:`` + 64 hex digits, ``preferred_derp``,
  ``derp_latency`` keyed ``"<regionID>-v4"`` in seconds, ``addresses`` and ``allowed_ips`` the
  same CIDRs (the agent's two /128s), ``endpoints`` empty (reachable through DERP only).
* UpdateSelf only when the node changed (value-compared, changes coalesced until the next
  :meth:`CoordinationController.requests_to_send`), and once at the start of every stream
  (Go re-sends it when the callback is set); **never while preferred_derp is 0** (peers cannot
  reach a node without a home region). Never AddTunnel: coordinators refuse it from agents.
* After each response, one request whose ``ready_for_handshake`` lists the ids of all its
  NODE updates (none: no request). The coordinator relays it to the source as
  READY_FOR_HANDSHAKE; without it every client waits 5 s before its first handshake.
* NODE → :class:`UpsertPeer` when the peer is new or its WireGuard-relevant fields changed
  (ignored when its preferred_derp is 0 or its key is malformed, as Go does); it also clears
  "lost". DISCONNECTED → :class:`RemovePeer`. LOST → the peer stays (:class:`PeerLost`) and is
  removed :data:`LOST_TIMEOUT` after its last handshake (the WireGuard layer reports
  handshakes with :meth:`~CoordinationController.note_handshake`); a lost peer that never
  handshook is removed at once. Updates for unknown peers are ignored.
* Stream loss (however it ended, graceful stop included): every peer is lost.
* Graceful stop: ``disconnect{}`` is the last request; no UpdateSelf or acknowledgement
  follows it. The coordinator answers by hanging up.
* A response's ``error`` is reported (:class:`CoordinatorError`), never fatal: coordinators
  use it for warnings such as "you do not share a tunnel with …".

The controller has no clock: callers pass ``now`` (monotonic seconds, for the lost timers)
and the wall-clock time for ``as_of``. Keys and addresses are plain bytes and strings.

:func:`run_coordination` pumps one Coordinate stream on the agent RPC connection until it
ends (returning, so the caller redials) or until ``stop`` (graceful disconnect, then up to
``disconnect_timeout`` s for the server to hang up). :func:`run_derp_map_subscriber` hands
every map of StreamDERPMaps to a callback. Both take the daemon's ``RpcClient`` (or a bare
``YamuxConnection``). Wiring, one controller for the life of the tailnet::

    controller = CoordinationController(node_id=..., node_key=..., disco_key=..., addresses=[...])
    # the DERP layer: controller.set_preferred_derp(region); controller.set_derp_latency({region: s})
    # the WireGuard layer: controller.note_handshake(peer_id, monotonic_time)
    # per RPC connection, next to the other routines (each returns why its stream ended):
    await run_coordination(rpc, controller, wireguard_apply_events, stop=stopping)
    await run_derp_map_subscriber(rpc, derp_set_map)

The lost-peer timers run while :func:`run_coordination` runs; between connections they are
due at the next run's first :meth:`~CoordinationController.tick` (or the owner ticks them).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol

from google.protobuf import timestamp_pb2
from google.protobuf.message import DecodeError

from ..clock import Clock, SystemClock
from ..log import get_logger
from ..rpc.proto import tailnet_pb2

if TYPE_CHECKING:
    from ..rpc.transport import YamuxConnection


class RpcConnection(Protocol):
    """The agent RPC connection as the session layer holds it (``agentrpc.RpcClient`` fits; the
    tailnet does not import the session layer)."""

    @property
    def conn(self) -> YamuxConnection: ...

__all__ = [
    "COORDINATE",
    "LOST_TIMEOUT",
    "STREAM_DERP_MAPS",
    "CoordinationController",
    "CoordinationEvent",
    "CoordinatorError",
    "PeerLost",
    "PeerState",
    "RemovePeer",
    "RpcConnection",
    "UpsertPeer",
    "run_coordination",
    "run_derp_map_subscriber",
]

COORDINATE: Final = "/coder.tailnet.v2.Tailnet/Coordinate"
STREAM_DERP_MAPS: Final = "/coder.tailnet.v2.Tailnet/StreamDERPMaps"
LOST_TIMEOUT: Final = 15 * 60.0  # Go's lostTimeout
_KEY_PREFIX: Final = b"np"
_DISCO_PREFIX: Final = "discokey:"

_Kind = tailnet_pb2.CoordinateResponse.PeerUpdate


# ---- events for the WireGuard layer ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UpsertPeer:
    """Add or reconfigure a WireGuard peer."""

    peer_id: uuid.UUID
    node_key: bytes  # 32 raw bytes: the peer's WireGuard (and DERP) public key
    disco_key: bytes | None  # 32 raw bytes, None if the peer sent none or a malformed one
    allowed_ips: tuple[str, ...]
    addresses: tuple[str, ...]
    preferred_derp: int  # the peer's home DERP region: send to it there


@dataclass(frozen=True, slots=True)
class RemovePeer:
    """Remove a WireGuard peer. ``reason``: "disconnected" (by the coordinator) or "lost"."""

    peer_id: uuid.UUID
    node_key: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class PeerLost:
    """The coordinator lost the peer (or we lost the coordinator); it stays configured for now."""

    peer_id: uuid.UUID
    remove_at: float  # monotonic time of removal unless a handshake comes first


@dataclass(frozen=True, slots=True)
class CoordinatorError:
    """A response carried ``error``: a warning from the coordinator, not fatal."""

    text: str


CoordinationEvent = UpsertPeer | RemovePeer | PeerLost | CoordinatorError


@dataclass
class PeerState:
    """What the controller knows of one peer (read-only for callers)."""

    peer_id: uuid.UUID
    node_key: bytes
    disco_key: bytes | None
    allowed_ips: tuple[str, ...]
    addresses: tuple[str, ...]
    preferred_derp: int
    lost: bool = False
    last_handshake: float | None = None  # monotonic

    def upsert(self) -> UpsertPeer:
        return UpsertPeer(self.peer_id, self.node_key, self.disco_key, self.allowed_ips, self.addresses,
                          self.preferred_derp)


@dataclass
class _LocalNode:
    node_id: int
    node_key: bytes
    disco_key: bytes
    addresses: tuple[str, ...]
    preferred_derp: int = 0
    derp_latency: dict[int, float] = field(default_factory=dict)
    derp_forced_websocket: dict[int, str] = field(default_factory=dict)


def _check_key(name: str, key: bytes) -> bytes:
    if len(key) != 32:
        raise ValueError(f"{name} must be 32 raw bytes, got {len(key)}")
    return bytes(key)


class CoordinationController:
    """The agent's side of the Coordinate protocol, without I/O (see the module rules).

    Feed: ``set_*`` for local node changes, :meth:`stream_started` when a Coordinate stream
    opens, :meth:`receive_response` for each response, :meth:`stream_lost` when it ends,
    :meth:`note_handshake` from the WireGuard layer, :meth:`tick` at :meth:`next_deadline`,
    :meth:`stop` for a graceful end. Take: :meth:`requests_to_send` (whenever
    :attr:`wants_to_send`; ``wakeup`` is called when that becomes true) and the events the
    feeding methods return.
    """

    def __init__(
        self,
        *,
        node_id: int,
        node_key: bytes,
        disco_key: bytes,
        addresses: Sequence[str],
        lost_timeout: float = LOST_TIMEOUT,
    ) -> None:
        self._node = _LocalNode(node_id, _check_key("node_key", node_key), _check_key("disco_key", disco_key),
                                tuple(addresses))
        self.lost_timeout = lost_timeout
        self._dirty = True
        self._queue: list[tailnet_pb2.CoordinateRequest] = []
        self._stopping = False
        self._disconnect_queued = False
        self._disconnect_sent = False
        self._peers: dict[uuid.UUID, PeerState] = {}
        self.wakeup: Callable[[], None] | None = None
        """Called (synchronously) whenever :attr:`wants_to_send` may have become true."""

    # ---- local node ------------------------------------------------------------------------

    @property
    def preferred_derp(self) -> int:
        return self._node.preferred_derp

    def set_preferred_derp(self, region: int) -> None:
        if region != self._node.preferred_derp:
            self._node.preferred_derp = region
            self._changed()

    def set_derp_latency(self, latency: Mapping[int, float]) -> None:
        """Latency per DERP region id, in seconds (published as ``"<id>-v4"``)."""
        new = {int(k): float(v) for k, v in latency.items()}
        if new != self._node.derp_latency:
            self._node.derp_latency = new
            self._changed()

    def set_derp_forced_websocket(self, region: int, reason: str) -> None:
        """A region whose DERP connection had to use WebSocket (debug information for coderd)."""
        if self._node.derp_forced_websocket.get(region) != reason:
            self._node.derp_forced_websocket[region] = reason
            self._changed()

    def set_addresses(self, addresses: Sequence[str]) -> None:
        new = tuple(addresses)
        if sorted(new) != sorted(self._node.addresses):
            self._node.addresses = new
            self._changed()

    def set_keys(self, node_key: bytes, disco_key: bytes) -> None:
        node_key, disco_key = _check_key("node_key", node_key), _check_key("disco_key", disco_key)
        if (node_key, disco_key) != (self._node.node_key, self._node.disco_key):
            self._node.node_key, self._node.disco_key = node_key, disco_key
            self._changed()

    def node(self, as_of: dt.datetime) -> tailnet_pb2.Node:
        """Our node as it would be published now."""
        n = self._node
        ts = timestamp_pb2.Timestamp()
        ts.FromDatetime(as_of)
        return tailnet_pb2.Node(
            id=n.node_id,
            as_of=ts,
            key=_KEY_PREFIX + n.node_key,
            disco=_DISCO_PREFIX + n.disco_key.hex(),
            preferred_derp=n.preferred_derp,
            derp_latency={f"{region}-v4": seconds for region, seconds in n.derp_latency.items()},
            derp_forced_websocket=dict(n.derp_forced_websocket),
            addresses=list(n.addresses),
            allowed_ips=list(n.addresses),
            endpoints=[],
        )

    def _changed(self) -> None:
        self._dirty = True
        self._wake()

    def _wake(self) -> None:
        if self.wakeup is not None and self.wants_to_send:
            self.wakeup()

    # ---- the stream ------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def wants_to_send(self) -> bool:
        if self._disconnect_sent:
            return False
        return bool(self._queue) or self._disconnect_queued or (
            self._dirty and not self._stopping and self._node.preferred_derp != 0)

    def stream_started(self) -> None:
        """A new Coordinate stream is open: our node goes out again (if it can)."""
        self._queue.clear()
        self._dirty = True
        self._disconnect_sent = False
        if self._stopping:
            self._disconnect_queued = True
        self._wake()

    def requests_to_send(self, now: dt.datetime) -> list[tailnet_pb2.CoordinateRequest]:
        """Return and forget what should be sent now, in order; ``now`` stamps ``as_of``."""
        if self._disconnect_sent:
            return []
        out = list(self._queue)
        self._queue.clear()
        if self._dirty and not self._stopping and self._node.preferred_derp != 0:
            self._dirty = False
            out.append(tailnet_pb2.CoordinateRequest(
                update_self=tailnet_pb2.CoordinateRequest.UpdateSelf(node=self.node(now))))
        if self._disconnect_queued:
            self._disconnect_queued = False
            self._disconnect_sent = True
            out.append(tailnet_pb2.CoordinateRequest(disconnect=tailnet_pb2.CoordinateRequest.Disconnect()))
        return out

    def stop(self) -> None:
        """Graceful stop: queue ``disconnect{}``; nothing is sent after it."""
        if self._stopping:
            return
        self._stopping = True
        self._disconnect_queued = True
        self._wake()

    def receive_response(self, resp: tailnet_pb2.CoordinateResponse, now: float) -> list[CoordinationEvent]:
        """Apply one response; queue its ready_for_handshake acknowledgement."""
        events: list[CoordinationEvent] = []
        acks: list[bytes] = []
        for update in resp.peer_updates:
            if update.kind == _Kind.NODE:
                acks.append(update.id)
            try:
                peer_id = uuid.UUID(bytes=update.id)
            except ValueError:
                continue  # Go logs "received update with bad id" and skips it
            if update.kind == _Kind.NODE:
                events += self._on_node(peer_id, update.node)
            elif update.kind == _Kind.DISCONNECTED:
                peer = self._peers.pop(peer_id, None)
                if peer is not None:
                    events.append(RemovePeer(peer_id, peer.node_key, "disconnected"))
            elif update.kind == _Kind.LOST:
                peer = self._peers.get(peer_id)
                if peer is not None:
                    events += self._lose(peer, now)
            # READY_FOR_HANDSHAKE is for tunnel sources; agents never open tunnels.
        if resp.error:
            events.append(CoordinatorError(resp.error))
        if acks and not self._stopping:
            self._queue.append(tailnet_pb2.CoordinateRequest(
                ready_for_handshake=[tailnet_pb2.CoordinateRequest.ReadyForHandshake(id=i) for i in acks]))
            self._wake()
        return events

    def stream_lost(self, now: float) -> list[CoordinationEvent]:
        """The stream ended: every peer is lost (Go's ``SetAllPeersLost``)."""
        self._queue.clear()
        events: list[CoordinationEvent] = []
        for peer in list(self._peers.values()):
            if not peer.lost:
                events += self._lose(peer, now)
        return events

    # ---- peers -----------------------------------------------------------------------------

    @property
    def peers(self) -> Mapping[uuid.UUID, PeerState]:
        return self._peers

    def note_handshake(self, peer_id: uuid.UUID, at: float) -> None:
        """The WireGuard layer completed a handshake with ``peer_id`` at monotonic ``at``."""
        peer = self._peers.get(peer_id)
        if peer is not None and (peer.last_handshake is None or at > peer.last_handshake):
            peer.last_handshake = at

    def next_deadline(self) -> float | None:
        """The monotonic time :meth:`tick` has something to do, None if never."""
        deadlines = [self._remove_at(p) for p in self._peers.values() if p.lost]
        return min(deadlines) if deadlines else None

    def tick(self, now: float) -> list[CoordinationEvent]:
        """Remove lost peers whose last handshake is :attr:`lost_timeout` old."""
        events: list[CoordinationEvent] = []
        for peer in list(self._peers.values()):
            if peer.lost and now >= self._remove_at(peer):
                del self._peers[peer.peer_id]
                events.append(RemovePeer(peer.peer_id, peer.node_key, "lost"))
        return events

    def _remove_at(self, peer: PeerState) -> float:
        if peer.last_handshake is None:
            return -math.inf
        return peer.last_handshake + self.lost_timeout

    def _lose(self, peer: PeerState, now: float) -> list[CoordinationEvent]:
        peer.lost = True
        remove_at = self._remove_at(peer)
        if now >= remove_at:
            del self._peers[peer.peer_id]
            return [RemovePeer(peer.peer_id, peer.node_key, "lost")]
        return [PeerLost(peer.peer_id, remove_at)]

    def _on_node(self, peer_id: uuid.UUID, node: tailnet_pb2.Node) -> list[CoordinationEvent]:
        if node.preferred_derp == 0:
            return []  # unreachable without a home region (Go: "no preferred DERP, peer update")
        if len(node.key) != 34 or not node.key.startswith(_KEY_PREFIX):
            return []  # Go: "failed to convert proto node" and skips it
        disco: bytes | None = None
        if node.disco.startswith(_DISCO_PREFIX):
            with contextlib.suppress(ValueError):
                raw = bytes.fromhex(node.disco[len(_DISCO_PREFIX):])
                disco = raw if len(raw) == 32 else None
        fresh = PeerState(peer_id, node.key[2:], disco, tuple(node.allowed_ips), tuple(node.addresses),
                          node.preferred_derp)
        old = self._peers.get(peer_id)
        if old is None:
            self._peers[peer_id] = fresh
            return [fresh.upsert()]
        old.lost = False
        if old.upsert() == fresh.upsert():
            return []
        fresh.last_handshake = old.last_handshake
        self._peers[peer_id] = fresh
        return [fresh.upsert()]


# ---- asyncio runners --------------------------------------------------------------------------


def _conn_of(rpc: RpcConnection | YamuxConnection) -> YamuxConnection:
    """The yamux connection behind an :class:`RpcConnection` (or the connection itself)."""
    from ..rpc.transport import YamuxConnection

    if isinstance(rpc, YamuxConnection):
        return rpc
    return rpc.conn


EventSink = Callable[[list[CoordinationEvent]], None]


async def run_coordination(
    rpc: RpcConnection | YamuxConnection,
    controller: CoordinationController,
    on_events: EventSink,
    *,
    stop: asyncio.Event | None = None,
    disconnect_timeout: float = 5.0,
    clock: Clock | None = None,
) -> str:
    """Run one Coordinate stream on the agent RPC connection ``rpc`` until it ends.

    Sends what the controller queues, applies every response (events go to ``on_events``),
    drives the lost-peer timers. Returns a short reason: "stopped" after ``stop`` was set
    (``disconnect{}`` sent, then up to ``disconnect_timeout`` s for the server to hang up),
    else why the stream ended (the caller redials with the RPC connection). Either way every
    peer is marked lost first. Cancellation resets the stream and marks peers lost too.
    Raises nothing for stream or transport failures: those are the "stream ended" reasons.
    """
    from ..rpc import drpc
    from ..rpc.transport import ConnectionClosedError, StreamResetError, bidi_stream

    clk = clock or SystemClock()
    log = get_logger("tailnet.coordination")
    stop = stop or asyncio.Event()
    wake = asyncio.Event()
    controller.wakeup = wake.set
    reason = "stopped"
    bidi = None
    try:
        bidi = await bidi_stream(_conn_of(rpc), COORDINATE)
        controller.stream_started()
        log.info("coordinating with coderd")
        receiving = asyncio.ensure_future(bidi.recv())
        stopping = asyncio.ensure_future(stop.wait())
        waking = asyncio.ensure_future(wake.wait())
        stop_deadline: float | None = None
        try:
            while True:
                if receiving.done():
                    data = receiving.result()  # raises the stream's error
                    if data is None:
                        if stop_deadline is None:
                            how = bidi.ended.how if bidi.ended is not None else "eof"
                            reason = f"coordinator ended the stream ({how})"
                        break
                    resp = tailnet_pb2.CoordinateResponse()
                    try:
                        resp.ParseFromString(data)
                    except DecodeError as e:
                        reason = f"undecodable CoordinateResponse: {e}"
                        break
                    events = controller.receive_response(resp, clk.monotonic())
                    for ev in events:
                        if isinstance(ev, CoordinatorError):
                            log.warning("coordinator reported an error", error=ev.text)
                    if events:
                        on_events(events)
                    receiving = asyncio.ensure_future(bidi.recv())
                if stop.is_set() and not controller.stopping:
                    controller.stop()
                if controller.stopping and stop_deadline is None:
                    stop_deadline = clk.monotonic() + disconnect_timeout
                wake.clear()
                for req in controller.requests_to_send(clk.now()):
                    await bidi.send(req.SerializeToString())
                events = controller.tick(clk.monotonic())
                if events:
                    on_events(events)
                if controller.wants_to_send:
                    continue
                deadlines = [d for d in (controller.next_deadline(), stop_deadline) if d is not None]
                timeout = max(0.0, min(deadlines) - clk.monotonic()) if deadlines else None
                waiters = {receiving, waking} | ({stopping} if stop_deadline is None else set())
                await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if waking.done():
                    waking = asyncio.ensure_future(wake.wait())
                if stop_deadline is not None and clk.monotonic() >= stop_deadline and not receiving.done():
                    reason = "stopped (the coordinator did not hang up)"
                    break
        finally:
            for fut in (receiving, stopping, waking):
                fut.cancel()
            with contextlib.suppress(BaseException):
                await receiving
    except (ConnectionClosedError, StreamResetError) as e:
        reason = f"connection lost: {e}"
    except drpc.DrpcError as e:  # RpcError from the server, or broken framing
        reason = f"stream failed: {e}"
    except TimeoutError:
        reason = "could not open the Coordinate stream"
    except BaseException:
        if bidi is not None:
            bidi.reset()
        controller.wakeup = None
        with contextlib.suppress(Exception):
            on_events(controller.stream_lost(clk.monotonic()))
        raise
    if bidi is not None:
        await bidi.close()
    controller.wakeup = None
    events = controller.stream_lost(clk.monotonic())
    if events:
        on_events(events)
    log.info("coordination ended", reason=reason)
    return reason


DerpMapSink = Callable[[tailnet_pb2.DERPMap], Awaitable[None] | None]


async def run_derp_map_subscriber(rpc: RpcConnection | YamuxConnection, on_map: DerpMapSink) -> str:
    """StreamDERPMaps on ``rpc``: call ``on_map`` with every map until the stream ends.

    ``on_map`` may be a plain function or a coroutine function. Returns why the stream
    ended (the caller redials with the RPC connection); transport and stream failures are
    reasons, not exceptions. An undecodable map is skipped with a warning.
    """
    from ..rpc import drpc
    from ..rpc.transport import ConnectionClosedError, StreamResetError, server_stream

    log = get_logger("tailnet.derpmap")
    request = tailnet_pb2.StreamDERPMapsRequest().SerializeToString()
    try:
        async for raw in server_stream(_conn_of(rpc), STREAM_DERP_MAPS, request):
            derp_map = tailnet_pb2.DERPMap()
            try:
                derp_map.ParseFromString(raw)
            except DecodeError as e:
                log.warning("undecodable DERP map skipped", error=str(e))
                continue
            result = on_map(derp_map)
            if result is not None:
                await result
    except (ConnectionClosedError, StreamResetError) as e:
        return f"connection lost: {e}"
    except drpc.DrpcError as e:
        return f"stream failed: {e}"
    except TimeoutError:
        return "could not open the StreamDERPMaps stream"
    return "coordinator ended the stream"
