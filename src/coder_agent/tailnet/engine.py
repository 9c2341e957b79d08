"""The tailnet engine: keys, WireGuard, DERP, disco and coordination wired together in asyncio.

One :class:`Tailnet` per agent (coder-tailnet.md §1–§6). It owns:

* a node key (WireGuard static key = DERP identity) and a disco key, generated when the engine
  is built and again on reinit (never persisted), and the agent's two /128 addresses;
* a sans-I/O WireGuard :class:`~.wireguard.Device`, driven by one event-loop timer armed
  exactly at :meth:`Device.next_deadline` after every call into the device (an idle device
  arms nothing: no periodic wake-ups);
* a :class:`~.derpclient.DerpManager` whose home region is chosen from latency probes
  (``/derp/latency-check``, ``region_score``, ``avoid``, Go's 5 min report history and
  hysteresis, Go's fallback) when the engine starts, whenever the DERP map changes, periodically
  while the tunnel is in use, and at once when the home region is unreachable (see "Re-probing");
* a :class:`~.coordination.CoordinationController` for the life of the agent id: our node is
  published with ``preferred_derp`` = the home region, ``derp_latency``, the two addresses and
  no endpoints (DERP only; ``disable_direct_connections`` changes nothing because we never
  advertise endpoints).

Datagrams from DERP: a WireGuard message (byte 0 in 1..4, then three zero bytes) goes to the
device with the DERP source key; a disco message is answered (Ping → Pong over DERP through the
region it came from, only for disco keys learned from coordination; CallMeMaybe ignored);
anything else is dropped. Datagrams the device emits go to the peer's ``preferred_derp``
region (the home region while it is unknown).

IP packets decrypted by WireGuard (already allowed-IP checked): TSMP ping → pong and ICMPv6
echo → reply when addressed to one of our addresses (:func:`.packet.local_reply`); everything
else goes to :attr:`Tailnet.on_ip_packet` (part 2's TCP stack). Until a handler is plugged in,
such packets are dropped silently and counted (no RST: a TCP client then times out instead of
being refused; the TCP layer is what answers SYNs). :meth:`Tailnet.send_ip` sends a packet
out, routed by destination through the device.

Coordination: the session layer calls :meth:`Tailnet.run_on_rpc` once per agent RPC
connection; it runs the Coordinate stream and the DERP-map subscription until either ends and
returns why. Peer actions: NODE adds/updates a WireGuard peer (its key, allowed IPs; its home
region remembered), DISCONNECTED removes it, LOST keeps it until 15 min after its last
handshake (the device reports handshakes to the controller); a NODE for a lost peer makes it
found again. A peer that handshook has the 25 s persistent keepalive while it is not lost (Go
keeps alive only recently active peers). Between RPC connections the lost-peer timers are run
by the engine's own timer.

Wiring (the session layer): build one engine from :func:`manifest_inputs` of the first manifest
that has DERP regions; per agent RPC connection run :meth:`Tailnet.run_on_rpc` next to the other
routines (its return is a routine ending: redial); pass later manifests to :meth:`Tailnet.update`;
on shutdown :meth:`Tailnet.close` *before* closing the RPC connection, so ``disconnect{}`` goes out.

:meth:`Tailnet.update` takes a later manifest: the same agent id updates the DERP map and
flags in place; a new agent id (reinit) tears everything down (graceful coordination stop,
DERP closed) and comes up again with new keys and addresses (Go builds a new ``tailnet.Conn``).
:meth:`Tailnet.close` is the graceful stop: ``disconnect{}`` on a running Coordinate stream
(bounded wait), DERP closed, timers cancelled.

Seen from outside: :meth:`Tailnet.status` (home region and latency, DERP connection state,
peers with last handshake and bytes, never keys); Prometheus counters on the registry given
(``coder_agent_tailnet_packets_total`` / ``_bytes_total`` by direction, IP packets through the
tunnel, and ``coder_agent_tailnet_handshakes_total``). One log line per state change (up,
peer added/removed/lost, a peer's first handshake, handshake failures, down), never per packet;
keys never logged.

Re-probing (Go's periodic re-STUN, ``magicsock.updateEndpoints``/``shouldDoPeriodicReSTUNLocked``):
the session is active while we have a peer and an IP packet went through the tunnel either way
(decrypted and delivered, or sent with :meth:`Tailnet.send_ip` — what Go's TUN wrapper counts for
``IdleDuration``; WireGuard keepalives and handshakes do not count) within the last 45 s. After
each probe, while the session is active, one event-loop timer is armed a random 20–26 s ahead;
when it fires every usable region is probed again and the home chosen with the hysteresis
(:class:`~.derpmap.LatencyReports`). An idle session leaves no timer armed; the first packet
after it arms one again (Go restarts it from its next re-STUN trigger, such as a call-me-maybe
wanting fresh endpoints; an idle engine costs no wake-up either way). Before the first packet
the session is idle (Go counts idleness from the TUN device's creation, so it may probe for up
to 45 s after start). When the home connection is lost and its redial fails, the regions are probed at once
(Go: ``ReSTUN("derp-recv-error")``) and the best reachable one becomes home; the old home wins
back only by the same hysteresis. As Go's ``NetInfo.BasicallyEqual`` filter, a re-probe that
keeps the home updates :meth:`Tailnet.status`'s latencies but sends no node update; a new home
publishes ``preferred_derp`` and ``derp_latency`` together (the start and DERP map changes
always publish both).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final

from ..clock import Clock, SystemClock
from ..log import Collapse, get_logger
from ..tasks import reap
from . import disco, keys, packet
from .coordination import (
    LOST_TIMEOUT,
    CoordinationController,
    CoordinationEvent,
    RemovePeer,
    RpcConnection,
    UpsertPeer,
    run_coordination,
    run_derp_map_subscriber,
)
from .deadline import DeadlineTimer
from .derpclient import DerpManager, DialOptions
from .derpmap import DerpMap, ReprobePolicy, rewrite_default_relay
from .wireguard import Device, HandshakeComplete, HandshakeFailed, Result, Timers

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter

    from ..rpc.proto import agent_pb2, tailnet_pb2
    from ..rpc.transport import YamuxConnection

__all__ = ["PERSISTENT_KEEPALIVE", "Flags", "ManifestInputs", "RpcConnection", "Tailnet", "manifest_inputs"]

PERSISTENT_KEEPALIVE: Final = 25.0
DISCONNECT_TIMEOUT: Final = 5.0

IpPacketHandler = Callable[[bytes], None]


@dataclass(frozen=True)
class Flags:
    """The manifest's tailnet flags."""

    derp_force_websockets: bool = False
    disable_direct_connections: bool = False


@dataclass(frozen=True)
class ManifestInputs:
    """What the engine takes from a manifest."""

    agent_id: uuid.UUID
    derp_map: DerpMap
    flags: Flags


def manifest_inputs(m: agent_pb2.Manifest) -> ManifestInputs | None:
    """The engine's inputs from an RPC manifest, or None when it carries no DERP region (then
    there is no tailnet, as Go). ValueError if ``agent_id`` is not 16 bytes."""
    derp_map = DerpMap.from_proto(m.derp_map)
    if not derp_map.derp_region_ids():
        return None
    return ManifestInputs(uuid.UUID(bytes=m.agent_id), derp_map,
                          Flags(derp_force_websockets=m.derp_force_websockets,
                                disable_direct_connections=m.disable_direct_connections))


class _Controller(CoordinationController):
    """The coordination controller, also reporting a lost peer that comes back: its NODE update
    changes nothing WireGuard cares about, so the base controller emits no event, but the engine
    must know (status, persistent keepalive)."""

    def receive_response(self, resp: tailnet_pb2.CoordinateResponse, now: float) -> list[CoordinationEvent]:
        lost = [pid for pid, p in self.peers.items() if p.lost]
        events = super().receive_response(resp, now)
        upserted = {e.peer_id for e in events if isinstance(e, UpsertPeer)}
        back = [self.peers[pid].upsert() for pid in lost
                if pid in self.peers and not self.peers[pid].lost and pid not in upserted]
        return [*events, *back]


@dataclass
class _Peer:
    peer_id: uuid.UUID
    node_key: bytes
    disco_key: bytes | None
    allowed_ips: tuple[str, ...]
    preferred_derp: int
    lost: bool = False
    handshook: bool = False


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        from prometheus_client import Counter

        self.packets: Counter = Counter("coder_agent_tailnet_packets", "IP packets through the tailnet tunnel",
                                        ["direction"], registry=registry)
        self.bytes: Counter = Counter("coder_agent_tailnet_bytes", "IP bytes through the tailnet tunnel",
                                      ["direction"], registry=registry)
        self.handshakes: Counter = Counter("coder_agent_tailnet_handshakes",
                                           "Completed WireGuard handshakes", registry=registry)
        self.packets_in = self.packets.labels("in")
        self.packets_out = self.packets.labels("out")
        self.bytes_in = self.bytes.labels("in")
        self.bytes_out = self.bytes.labels("out")


def _is_wireguard(payload: bytes) -> bool:
    return len(payload) >= 4 and 1 <= payload[0] <= 4 and payload[1:4] == b"\0\0\0"


class Tailnet:
    """The agent's tailnet; see the module rules. Build it in the event loop, then
    :meth:`start` (or let the first :meth:`run_on_rpc` start it)."""

    def __init__(self, *, agent_id: uuid.UUID, derp_map: DerpMap, coder_url: str, dial: DialOptions,
                 flags: Flags | None = None, clock: Clock | None = None, registry: CollectorRegistry | None = None,
                 log: Any = None, timers: Timers | None = None, disconnect_timeout: float = DISCONNECT_TIMEOUT,
                 lost_timeout: float = LOST_TIMEOUT, reprobe: ReprobePolicy | None = None) -> None:
        """``derp_map`` as the manifest carries it (embedded-relay regions are rewritten to
        ``coder_url`` here, as are later maps); ``dial`` the TLS/header/proxy settings of every
        coderd request (``DialOptions.from_settings``); ``timers`` the WireGuard timers and
        ``reprobe`` the DERP re-probe cadence (Go's by default; shorten only in tests);
        ``lost_timeout`` overrides the controller's 15 min."""
        self.clock = clock or SystemClock()
        self.coder_url = coder_url
        self.flags = flags or Flags()
        self.log = log if log is not None else get_logger("tailnet")
        self.timers = timers
        self.disconnect_timeout = disconnect_timeout
        self.lost_timeout = lost_timeout
        self.reprobe = reprobe or ReprobePolicy()
        self._rand = random.Random()  # noqa: S311 - spreads probe times, not a secret
        self.on_ip_packet: IpPacketHandler | None = None
        """Where decrypted packets that are not our own TSMP/ICMPv6 go (part 2: TCP)."""
        self.dropped_no_handler = 0
        self._handler_errors = Collapse(self.log)
        self._base_dial = dial
        self._dial = self._dial_for(self.flags)
        self._raw_map = derp_map
        self._metrics = _Metrics(registry) if registry is not None else None
        self._stop = asyncio.Event()
        self._rpc_done = asyncio.Event()
        self._rpc_done.set()
        self._home_task: asyncio.Task[None] | None = None
        self._timer = DeadlineTimer(self._fire, self.clock.monotonic)  # the device's timers
        self._reprobe_timer = DeadlineTimer(self._reprobe_fire, self.clock.monotonic)
        self._probing: asyncio.Task[None] | None = None  # the home task until its probe is done
        self._publish_latency = False  # the next probe publishes derp_latency even if home stays
        self._lost_timer: asyncio.TimerHandle | None = None
        self._coordinating = False
        self._started = False
        self._closed = False
        self._build(agent_id)

    def _dial_for(self, flags: Flags) -> DialOptions:
        return replace(self._base_dial,
                       force_websockets=self._base_dial.force_websockets or flags.derp_force_websockets)

    # ---- construction per agent id ------------------------------------------------------------

    def _build(self, agent_id: uuid.UUID) -> None:
        self.agent_id = agent_id
        self._node = keys.NodeKey.generate()
        self._disco = keys.DiscoKey.generate()
        self.addresses = keys.addresses(agent_id)
        self._local = frozenset(a.packed for a in self.addresses)
        cidrs = [f"{a}/128" for a in self.addresses]
        self.device = Device(self._node.private, self.timers,
                             wall_offset=self.clock.now().timestamp() - self.clock.monotonic())
        self.controller: CoordinationController = _Controller(
            node_id=keys.node_id(agent_id), node_key=self._node.public, disco_key=self._disco.public,
            addresses=cidrs, lost_timeout=self.lost_timeout)
        self.derp = DerpManager(self._node.private, self._dial, self._on_derp, clock=self.clock,
                                report_max_age=self.reprobe.report_max_age,
                                on_home_unreachable=self._home_unreachable)
        self._last_activity: float | None = None  # clock.monotonic() of the last IP packet either way
        self.derp.set_map(rewrite_default_relay(self._raw_map, self.coder_url))
        self._peers: dict[uuid.UUID, _Peer] = {}
        self._by_key: dict[bytes, _Peer] = {}
        self._stop = asyncio.Event()
        self._down = False  # set when teardown starts: nothing more goes to DERP or the timer

    def start(self) -> None:
        """Connect to DERP (home region from latency probes). Idempotent."""
        if self._started or self._closed:
            return
        self._started = True
        self._rehome(publish_latency=True)
        self.log.info("tailnet starting", address=str(self.addresses[0]), coder_address=str(self.addresses[1]),
                      regions=self.derp.derp_map.derp_region_ids())

    def _rehome(self, *, publish_latency: bool = False) -> None:
        self._publish_latency = self._publish_latency or publish_latency
        if self._home_task is not None and not self._home_task.done():
            self._home_task.cancel()
        self._home_task = self._probing = asyncio.get_running_loop().create_task(self._choose_home())

    async def _choose_home(self) -> None:
        try:
            await self._choose_home_once()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug here must not pass silently, nor kill the engine
            self.log.error("choosing the DERP home region failed", error=str(e) or type(e).__name__)

    async def _choose_home_once(self) -> None:
        self._reprobe_timer.cancel()
        try:
            old = self.derp.home
            home = await self.derp.update_home()
        finally:
            if self._probing is asyncio.current_task():
                self._probing = None
        if self._publish_latency or home != old:
            self._publish_latency = False
            self.controller.set_derp_latency(self.derp.latencies)
        now = self.clock.monotonic()
        if self.reprobe.session_active(now, self._last_activity, bool(self._peers)):
            self._arm_reprobe(now)
        if not home:
            self.log.warning("tailnet has no DERP region to use; peers cannot reach the agent")
            return
        self.controller.set_preferred_derp(home)
        conn = self.derp.regions.get(home)
        if conn is None:
            return
        await conn.connected.wait()
        if conn.force_websockets and not self._dial.force_websockets:
            self.controller.set_derp_forced_websocket(home, "DERP upgrade refused; using WebSocket")

    # ---- the RPC connection ---------------------------------------------------------------------

    async def run_on_rpc(self, rpc: RpcConnection | YamuxConnection) -> str:
        """Coordinate and follow DERP maps on one agent RPC connection until either stream ends
        (returns why; the caller redials with the connection) or :meth:`close` (returns
        "stopped"). Call it once per connection, never twice at once."""
        if self._closed:
            return "stopped"
        self.start()
        self._coordinating = True
        self._rpc_done.clear()
        self._cancel_lost_timer()
        from ..rpc.transport import YamuxConnection

        conn = rpc if isinstance(rpc, YamuxConnection) else rpc.conn
        stop = self._stop
        coord = asyncio.ensure_future(run_coordination(conn, self.controller, self._on_coordination, stop=stop,
                                                       disconnect_timeout=self.disconnect_timeout,
                                                       clock=self.clock))
        maps = asyncio.ensure_future(run_derp_map_subscriber(conn, self._on_derp_map))
        try:
            done, _ = await asyncio.wait({coord, maps}, return_when=asyncio.FIRST_COMPLETED)
            if coord not in done:
                coord.cancel()  # the map stream ended: the connection is redialled as a whole
            maps.cancel()
            for fut in (coord, maps):
                with contextlib.suppress(asyncio.CancelledError):
                    await fut
            reason = coord.result() if not coord.cancelled() else f"DERP map stream ended: {maps.result()}"
            return reason
        finally:
            for fut in (coord, maps):
                fut.cancel()
            # Cancelled from outside: let both runners finish (peers marked lost, streams reset).
            await asyncio.gather(coord, maps, return_exceptions=True)
            self._coordinating = False
            self._rpc_done.set()
            self._arm_lost_timer()

    def _on_derp_map(self, m: tailnet_pb2.DERPMap) -> None:
        derp_map = DerpMap.from_proto(m)
        if derp_map == self._raw_map:
            return
        self._set_map(derp_map)

    def _set_map(self, derp_map: DerpMap) -> None:
        self._raw_map = derp_map
        self.derp.set_map(rewrite_default_relay(derp_map, self.coder_url))
        self.log.info("DERP map updated", regions=self.derp.derp_map.derp_region_ids())
        if self._started:
            self._rehome(publish_latency=True)

    # ---- coordination events ------------------------------------------------------------------

    def _on_coordination(self, events: list[CoordinationEvent]) -> None:
        for ev in events:
            if isinstance(ev, UpsertPeer):
                self._upsert(ev)
            elif isinstance(ev, RemovePeer):
                peer = self._peers.pop(ev.peer_id, None)
                if peer is not None:
                    self._by_key.pop(peer.node_key, None)
                    self.device.remove_peer(peer.node_key)
                    self.log.info("tailnet peer removed", peer=str(ev.peer_id), reason=ev.reason)
        # "lost" follows the controller: PeerLost sets it; a NODE for a lost peer clears it even
        # when nothing else changed (then the controller emits no UpsertPeer).
        for peer in self._peers.values():
            state = self.controller.peers.get(peer.peer_id)
            if state is not None and state.lost != peer.lost:
                peer.lost = state.lost
                keepalive = PERSISTENT_KEEPALIVE if peer.handshook and not peer.lost else None
                self.device.add_peer(peer.node_key, peer.allowed_ips, keepalive)
                if peer.lost:
                    self.log.info("tailnet peer lost by the coordinator; kept for now", peer=str(peer.peer_id))
                else:
                    self.log.info("tailnet peer back", peer=str(peer.peer_id))
        self._reschedule()

    def _upsert(self, ev: UpsertPeer) -> None:
        old = self._peers.get(ev.peer_id)
        if old is not None and old.node_key != ev.node_key:
            self._by_key.pop(old.node_key, None)
            self.device.remove_peer(old.node_key)
            old = None
        peer = _Peer(ev.peer_id, ev.node_key, ev.disco_key, ev.allowed_ips, ev.preferred_derp,
                     lost=old.lost if old is not None else False,
                     handshook=old.handshook if old is not None else False)
        self._peers[ev.peer_id] = peer
        self._by_key[ev.node_key] = peer
        keepalive = PERSISTENT_KEEPALIVE if peer.handshook and not peer.lost else None
        self.device.add_peer(ev.node_key, ev.allowed_ips, keepalive)
        if old is None:
            self.log.info("tailnet peer added", peer=str(ev.peer_id), derp_region=ev.preferred_derp)

    # ---- DERP → device ---------------------------------------------------------------------------

    def _on_derp(self, region_id: int, src: bytes, payload: bytes) -> None:
        if self._down:
            return
        if _is_wireguard(payload):
            self._apply(self.device.receive(src, payload, self.clock.monotonic()))
        elif disco.looks_like_disco(payload):
            known = {p.disco_key for p in self._peers.values() if p.disco_key is not None}
            reply = disco.answer(self._disco.private, self._disco.public, known, payload, region_id)
            if reply is not None:
                self.derp.send(region_id, src, reply)

    def send_ip(self, ip_packet: bytes) -> None:
        """Send an IP packet into the tunnel (routed by destination; dropped if no peer has it,
        or after :meth:`close`)."""
        if self._down:
            return
        if self._metrics is not None:
            self._metrics.packets_out.inc()
            self._metrics.bytes_out.inc(len(ip_packet))
        now = self.clock.monotonic()
        self._note_activity(now)
        self._apply(self.device.send(ip_packet, now))

    def _apply(self, r: Result) -> None:
        for key, datagram in r.to_send:
            peer = self._by_key.get(key)
            self.derp.send(peer.preferred_derp if peer is not None else 0, key, datagram)
        for ev in r.events:
            if isinstance(ev, HandshakeComplete):
                self._handshake(ev.peer)
            elif isinstance(ev, HandshakeFailed):
                peer = self._by_key.get(ev.peer)
                self.log.warning("tailnet handshake got no answer; queued packets dropped",
                                 peer=str(peer.peer_id) if peer is not None else None)
        if r.packets_in:
            self._note_activity(self.clock.monotonic())
        for p in r.packets_in:
            if self._metrics is not None:
                self._metrics.packets_in.inc()
                self._metrics.bytes_in.inc(len(p))
            reply = packet.local_reply(p, self._local)
            if reply is not None:
                self.send_ip(reply)
            elif self.on_ip_packet is not None:
                try:
                    self.on_ip_packet(p)
                except Exception as e:  # a handler bug must not cut the DERP connection it runs in
                    self.dropped_no_handler += 1
                    self._handler_errors.error("tailnet packet handler failed", type(e).__name__,
                                               error=str(e) or type(e).__name__)
            else:
                self.dropped_no_handler += 1
        self._reschedule()

    def _handshake(self, key: bytes) -> None:
        now = self.clock.monotonic()
        if self._metrics is not None:
            self._metrics.handshakes.inc()
        peer = self._by_key.get(key)
        if peer is None:
            return
        self.controller.note_handshake(peer.peer_id, now)
        if not peer.handshook:
            peer.handshook = True
            if not peer.lost:
                self.device.add_peer(peer.node_key, peer.allowed_ips, PERSISTENT_KEEPALIVE)
            self.log.info("tailnet peer handshake complete", peer=str(peer.peer_id))

    # ---- timers ------------------------------------------------------------------------------------

    @property
    def local_addresses(self) -> frozenset[bytes]:
        """The agent's two addresses, 16 raw bytes each (they change on reinit)."""
        return self._local

    @property
    def timer_deadline(self) -> float | None:
        """When the device timer fires next (``clock.monotonic()`` time), None when idle."""
        return self._timer.deadline

    def _reschedule(self) -> None:
        """Arm the one device timer at ``next_deadline()`` (nothing when idle)."""
        if not self._down:
            self._timer.arm(self.device.next_deadline())

    def _fire(self) -> None:
        if not self._down:
            self._apply(self.device.tick(self.clock.monotonic()))

    @property
    def reprobe_deadline(self) -> float | None:
        """When DERP latency is probed next (``clock.monotonic()`` time), None when nothing is armed."""
        return self._reprobe_timer.deadline

    @property
    def probing(self) -> bool:
        """Whether a DERP latency probe is running now."""
        return self._probing is not None

    def _note_activity(self, now: float) -> None:
        """An IP packet went through the tunnel: the session is active; re-arm the re-probe
        timer if an idle session had let it lapse."""
        self._last_activity = now
        if (self._reprobe_timer.deadline is None and self._probing is None and self._started and not self._down
                and self._peers):
            self._arm_reprobe(now)

    def _arm_reprobe(self, now: float) -> None:
        if not self._down:
            self._reprobe_timer.arm(self.reprobe.next_probe(now, self._rand.random()))

    def _reprobe_fire(self) -> None:
        if not self._down:
            self._rehome()

    def _home_unreachable(self, region_id: int) -> None:
        if self._down or not self._started:
            return
        self.log.warning("DERP home region unreachable; probing every region", region=region_id)
        self._rehome()

    def _arm_lost_timer(self) -> None:
        """Between RPC connections, run the lost-peer removals ourselves."""
        self._cancel_lost_timer()
        deadline = self.controller.next_deadline()
        if deadline is None or self._down:
            return
        delay = max(0.0, deadline - self.clock.monotonic())

        def fire() -> None:
            self._lost_timer = None
            if not self._coordinating:
                self._on_coordination(self.controller.tick(self.clock.monotonic()))
                self._arm_lost_timer()

        self._lost_timer = asyncio.get_running_loop().call_later(delay, fire)

    def _cancel_lost_timer(self) -> None:
        if self._lost_timer is not None:
            self._lost_timer.cancel()
            self._lost_timer = None

    # ---- later manifests, shutdown -------------------------------------------------------------------

    async def update(self, agent_id: uuid.UUID, derp_map: DerpMap, flags: Flags) -> None:
        """A later manifest. Same agent id: the DERP map and flags change in place
        (``derp_force_websockets`` turned on applies from each region's next dial; turned off,
        to regions dialled from now on, since WebSocket stays sticky per region). New agent id (reinit):
        everything is torn down and built again with new keys and addresses; the running
        :meth:`run_on_rpc` returns "stopped" and the caller runs it again on its connection."""
        if self._closed:
            return
        if agent_id != self.agent_id:
            self.log.info("tailnet restarting for a new agent id", agent_id=str(agent_id))
            started = self._started
            await self._teardown()
            self._raw_map = derp_map
            self.flags = flags
            self._dial = self._dial_for(flags)
            self._build(agent_id)
            self._started = False
            if started:
                self.start()
            return
        if flags != self.flags:
            self.flags = flags
            self._dial = self._dial_for(flags)
            force = self._dial.force_websockets
            self.derp.opts = self._dial
            for conn in self.derp.regions.values():
                conn.opts = self._dial
                conn.force_websockets = conn.force_websockets or force
        if derp_map != self._raw_map:
            self._set_map(derp_map)

    async def _teardown(self) -> None:
        self._stop.set()
        self._down = True
        # run_on_rpc sends disconnect{}, waits up to disconnect_timeout for the hang-up, returns.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._rpc_done.wait(), self.disconnect_timeout + 2.0)
        await reap(self._home_task)
        self._home_task = None
        self._probing = None
        self._timer.cancel()
        self._reprobe_timer.cancel()
        self._cancel_lost_timer()
        await self.derp.close()
        for peer in list(self._peers.values()):
            self.device.remove_peer(peer.node_key)
        self._peers.clear()
        self._by_key.clear()

    async def close(self) -> None:
        """Graceful stop: ``disconnect{}`` on a running Coordinate stream (waiting up to
        ``disconnect_timeout`` for coderd to hang up), DERP closed, timers cancelled."""
        if self._closed:
            return
        await self._teardown()
        self._closed = True
        self.log.info("tailnet stopped")

    # ---- outside view -------------------------------------------------------------------------------

    def _wall(self, monotonic: float | None) -> str | None:
        if monotonic is None:
            return None
        wall = monotonic + self.device.wall_offset
        return dt.datetime.fromtimestamp(wall, dt.UTC).isoformat()

    def status(self) -> dict[str, Any]:
        """Plain data for ``coder-agent status`` and ``/api/v0/status``; never keys."""
        derp = self.derp.status()
        home = derp["home"]
        home_conn = derp["regions"].get(home) if home else None
        peers = []
        for peer in sorted(self._peers.values(), key=lambda p: str(p.peer_id)):
            wg = self.device.peers.get(peer.node_key)
            stats = wg.stats if wg is not None else None
            peers.append({
                "id": str(peer.peer_id),
                "derp_region": peer.preferred_derp,
                "lost": peer.lost,
                "allowed_ips": list(peer.allowed_ips),
                "last_handshake": self._wall(stats.last_handshake) if stats else None,
                "handshakes": stats.handshakes if stats else 0,
                "rx_bytes": stats.rx_bytes if stats else 0,
                "tx_bytes": stats.tx_bytes if stats else 0,
                "rx_packets": stats.rx_packets if stats else 0,
                "tx_packets": stats.tx_packets if stats else 0,
            })
        latency = self.derp.latencies.get(home) if home else None
        return {
            "state": "stopped" if self._closed else ("running" if self._started else "idle"),
            "agent_id": str(self.agent_id),
            "addresses": [str(a) for a in self.addresses],
            "home_region": home,
            "home_latency_ms": round(latency * 1000, 3) if latency is not None else None,
            "derp_connection": home_conn["state"] if home_conn else "none",
            "derp_transport": home_conn["transport"] if home_conn else "",
            "derp_regions": [
                {k: v for k, v in r.items() if k in ("region_id", "state", "preferred", "transport", "url",
                                                      "last_error", "health", "connections")}
                for r in derp["regions"].values()],
            "derp_latency": {k: round(v * 1000, 3) for k, v in derp["latency"].items()},
            "coordinating": self._coordinating,
            "flags": {"derp_force_websockets": self.flags.derp_force_websockets,
                      "disable_direct_connections": self.flags.disable_direct_connections},
            "peers": peers,
            "dropped_packets": self.device.dropped + self.dropped_no_handler,
        }
