"""The DERP map and the choices made from it: pure functions, no I/O, no clock.

Rules (coder-tailnet.md §4; coder/coder ``tailnet/derp.go``; coder/tailscale
``derphttp_client.go`` ``urlString``/``dialNode``, ``net/netcheck`` preferred-DERP choice,
``magicsock/derp.go`` ``pickDERPFallback``):

* The map comes from the ``coder.tailnet.v2.DERPMap`` protobuf (StreamDERPMaps, the RPC
  manifest) or from the REST manifest's tailcfg JSON; both become the same frozen
  :class:`DerpMap`.
* :func:`rewrite_default_relay` (Go ``RewriteDERPMapDefaultRelay``): in regions marked
  ``embedded_relay``, every non-STUN-only node gets ``host_name`` = the agent's coder URL host,
  ``derp_port`` = its port (default 443 for https, 80 for http) and ``force_http`` = (scheme is
  http). Nothing else changes (``ipv4`` stays).
* URL: ``https`` (``http`` if ``force_http``) ``://`` + (``ipv4`` or else ``host_name``) +
  ``:derp_port`` unless 0 or the scheme's default + ``/derp``. The TCP dial goes to ``ipv4``
  (else ``host_name``) on ``derp_port`` or 443 (80 with ``force_http``); TLS names
  ``host_name``. (Go sends ``host_name`` as SNI and checks the certificate against ``cert_name``
  when set; Python's ssl uses one name for both, so a set ``cert_name`` is used for both. coderd
  never sets it.) A region's node is its first non-STUN-only node.
* Home region (:func:`choose_home`, Go ``netcheck.addReportHistoryAndSetPreferredDERP``): latency
  × ``home_params.region_score`` (when > 0); regions marked ``avoid``, STUN-only regions, regions
  not in the map and regions that did not answer this probe are skipped. Among the rest the lowest
  *best recent* latency wins (each region's minimum over the reports of the last 5 min,
  :class:`LatencyReports`), but the previous choice is kept while it answered this probe and the
  winner's best recent latency is less than 10 ms below the previous home's current one, or more
  than two thirds of it (Go ``preferredDERPAbsoluteDiff`` and the ``/3*2`` rule). Nothing measured
  → :func:`fallback_region`: the current home if it is still a DERP region, else a pseudo-random
  DERP region drawn from a per-process seed (sticky).
* Re-probing (:class:`ReprobePolicy`, Go ``magicsock.updateEndpoints`` /
  ``shouldDoPeriodicReSTUNLocked``): after each probe the next one is due a uniformly random 20–26 s
  later, but only while the session is active — there is a peer and an IP packet went through the
  tunnel within the last 45 s (``sessionActiveTimeout``); otherwise nothing is scheduled until
  traffic resumes.
* ``derp_latency`` keys are ``"<regionID>-v4"``, values in seconds (coderd ``Atoi``s the part
  before ``-``: any other shape makes its agent API fail).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from ..rpc.proto import tailnet_pb2

__all__ = [
    "DerpMap",
    "DerpNode",
    "DerpRegion",
    "LatencyReports",
    "ReprobePolicy",
    "choose_home",
    "derp_latency",
    "dial_target",
    "fallback_region",
    "latency_check_url",
    "node_url",
    "rewrite_default_relay",
]

# netcheck: a new home must beat the current one by this much (and by a third) to replace it.
PREFERRED_ABSOLUTE_DIFF: Final = 0.010
# netcheck addReportHistoryAndSetPreferredDERP: reports kept for the "best recent" latency.
REPORT_MAX_AGE: Final = 300.0
# magicsock updateEndpoints: tstime.RandomDurationBetween(20*time.Second, 26*time.Second).
REPROBE_MIN: Final = 20.0
REPROBE_MAX: Final = 26.0
# magicsock sessionActiveTimeout: idle longer than this, no periodic re-STUN (netcheck).
SESSION_ACTIVE_TIMEOUT: Final = 45.0


@dataclass(frozen=True)
class DerpNode:
    name: str = ""
    region_id: int = 0
    host_name: str = ""
    cert_name: str = ""
    ipv4: str = ""
    ipv6: str = ""
    stun_port: int = 0
    stun_only: bool = False
    derp_port: int = 0
    insecure_for_tests: bool = False
    force_http: bool = False
    stun_test_ip: str = ""
    can_port_80: bool = False


@dataclass(frozen=True)
class DerpRegion:
    region_id: int
    embedded_relay: bool = False
    region_code: str = ""
    region_name: str = ""
    avoid: bool = False
    nodes: tuple[DerpNode, ...] = ()

    @property
    def derp_node(self) -> DerpNode | None:
        """The node a client dials: the first that is not STUN-only."""
        return next((n for n in self.nodes if not n.stun_only), None)

    @property
    def has_derp(self) -> bool:
        return self.derp_node is not None


@dataclass(frozen=True)
class DerpMap:
    regions: Mapping[int, DerpRegion] = field(default_factory=dict)
    region_score: Mapping[int, float] = field(default_factory=dict)

    def derp_region_ids(self) -> list[int]:
        """Sorted ids of regions with at least one non-STUN-only node (Go RegionIDsNoSTUNOnly)."""
        return sorted(rid for rid, r in self.regions.items() if r.has_derp)

    @classmethod
    def from_proto(cls, m: tailnet_pb2.DERPMap) -> DerpMap:
        regions: dict[int, DerpRegion] = {}
        for rid, r in m.regions.items():
            nodes = tuple(DerpNode(
                name=n.name, region_id=n.region_id, host_name=n.host_name, cert_name=n.cert_name, ipv4=n.ipv4,
                ipv6=n.ipv6, stun_port=n.stun_port, stun_only=n.stun_only, derp_port=n.derp_port,
                insecure_for_tests=n.insecure_for_tests, force_http=n.force_http, stun_test_ip=n.stun_test_ip,
                can_port_80=n.can_port_80) for n in r.nodes)
            regions[int(rid)] = DerpRegion(region_id=r.region_id or int(rid), embedded_relay=r.embedded_relay,
                                           region_code=r.region_code, region_name=r.region_name, avoid=r.avoid,
                                           nodes=nodes)
        score = {int(k): float(v) for k, v in m.home_params.region_score.items()}
        return cls(regions, score)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DerpMap:
        """From tailcfg JSON (the REST manifest's ``derpmap``). ValueError on a malformed map."""
        try:
            regions: dict[int, DerpRegion] = {}
            for rid, r in (data.get("Regions") or {}).items():
                nodes = tuple(DerpNode(
                    name=str(n.get("Name", "")), region_id=int(n.get("RegionID", 0)),
                    host_name=str(n.get("HostName", "")), cert_name=str(n.get("CertName", "")),
                    ipv4=str(n.get("IPv4", "")), ipv6=str(n.get("IPv6", "")), stun_port=int(n.get("STUNPort", 0)),
                    stun_only=bool(n.get("STUNOnly", False)), derp_port=int(n.get("DERPPort", 0)),
                    insecure_for_tests=bool(n.get("InsecureForTests", False)),
                    force_http=bool(n.get("ForceHTTP", False)), stun_test_ip=str(n.get("STUNTestIP", "")),
                    can_port_80=bool(n.get("CanPort80", False))) for n in (r.get("Nodes") or []))
                regions[int(rid)] = DerpRegion(
                    region_id=int(r.get("RegionID") or rid), embedded_relay=bool(r.get("EmbeddedRelay", False)),
                    region_code=str(r.get("RegionCode", "")), region_name=str(r.get("RegionName", "")),
                    avoid=bool(r.get("Avoid", False)), nodes=nodes)
            score = {int(k): float(v) for k, v in ((data.get("HomeParams") or {}).get("RegionScore") or {}).items()}
        except (AttributeError, TypeError, ValueError) as e:
            raise ValueError(f"malformed DERP map: {e}") from None
        return cls(regions, score)


def rewrite_default_relay(derp_map: DerpMap, access_url: str) -> DerpMap:
    """Point embedded-relay regions at ``access_url`` (the agent's coder URL), as Go does."""
    u = urlsplit(access_url)
    port = 443 if u.scheme == "https" else 80
    try:
        if u.port is not None:
            port = u.port
    except ValueError:
        pass  # Go logs and keeps the default port
    host = u.hostname or ""
    regions: dict[int, DerpRegion] = {}
    for rid, r in derp_map.regions.items():
        if r.embedded_relay:
            r = replace(r, nodes=tuple(
                n if n.stun_only else replace(n, host_name=host, derp_port=port, force_http=u.scheme == "http")
                for n in r.nodes))
        regions[rid] = r
    return DerpMap(regions, dict(derp_map.region_score))


def _url_host(node: DerpNode) -> tuple[str, str]:
    scheme = "http" if node.force_http else "https"
    host = node.ipv4 or node.host_name
    default = 80 if scheme == "http" else 443
    if node.derp_port and ":" not in host and node.derp_port != default:
        host = f"{host}:{node.derp_port}"
    return scheme, host


def node_url(node: DerpNode) -> str:
    """The node's DERP URL (``https://host[:port]/derp``)."""
    scheme, host = _url_host(node)
    return f"{scheme}://{host}/derp"


def latency_check_url(node: DerpNode) -> str:
    scheme, host = _url_host(node)
    return f"{scheme}://{host}/derp/latency-check"


@dataclass(frozen=True)
class DialTarget:
    host: str  # what the TCP connection goes to
    port: int
    tls: bool
    server_name: str  # TLS SNI and certificate name; the Host header's host
    insecure: bool  # node.insecure_for_tests


def dial_target(node: DerpNode) -> DialTarget:
    tls = not node.force_http
    port = node.derp_port or (443 if tls else 80)
    return DialTarget(host=node.ipv4 or node.host_name, port=port, tls=tls,
                      server_name=node.cert_name or node.host_name or node.ipv4,
                      insecure=node.insecure_for_tests)


def choose_home(derp_map: DerpMap, latencies: Mapping[int, float], current: int = 0,
                best_recent: Mapping[int, float] | None = None) -> int:
    """The home region from this probe's latencies (seconds), or 0 when none qualifies.

    ``current`` is the previous choice (kept unless the winner is clearly better);
    ``best_recent`` each region's lowest latency over recent probes (this one included; by
    default this probe alone), which ranks the candidates as Go does."""
    cur: dict[int, float] = {}
    recent: dict[int, float] = {}
    for rid, d in latencies.items():
        region = derp_map.regions.get(rid)
        if region is None or region.avoid or not region.has_derp:
            continue
        score = derp_map.region_score.get(rid, 0.0)
        scale = score if score > 0 else 1.0
        best = d if best_recent is None else min(d, best_recent.get(rid, d))
        cur[rid] = d * scale
        recent[rid] = best * scale
    if not cur:
        return 0
    best = min(recent, key=lambda rid: (recent[rid], rid))
    if current and current != best and current in cur:
        old, new = cur[current], recent[best]
        if old - new < PREFERRED_ABSOLUTE_DIFF or new > old / 3 * 2:
            return current
    return best


@dataclass
class LatencyReports:
    """Go netcheck's report history (``Client.prev``/``Client.last``): each probe is added with
    the time it finished (the caller's monotonic clock; nothing here reads a clock) and the
    home region is chosen from it with :func:`choose_home`."""

    max_age: float = REPORT_MAX_AGE
    reports: list[tuple[float, dict[int, float]]] = field(default_factory=list)
    preferred: int = 0
    """The previous report's choice (0: none), which the hysteresis keeps."""

    def add(self, derp_map: DerpMap, latencies: Mapping[int, float], now: float) -> int:
        """Record one probe; return the home region it chooses (0 when none answered)."""
        self.reports = [(at, r) for at, r in self.reports if now - at <= self.max_age]
        self.reports.append((now, dict(latencies)))
        best_recent: dict[int, float] = {}
        for _, report in self.reports:
            for rid, d in report.items():
                if rid not in best_recent or d < best_recent[rid]:
                    best_recent[rid] = d
        self.preferred = choose_home(derp_map, latencies, self.preferred, best_recent)
        return self.preferred


@dataclass(frozen=True)
class ReprobePolicy:
    """When the DERP latency is probed again (Go's periodic re-STUN); shorten only in tests."""

    interval_min: float = REPROBE_MIN
    interval_max: float = REPROBE_MAX
    active_timeout: float = SESSION_ACTIVE_TIMEOUT
    report_max_age: float = REPORT_MAX_AGE

    def session_active(self, now: float, last_activity: float | None, has_peers: bool) -> bool:
        """Go ``shouldDoPeriodicReSTUNLocked``: a peer, and a packet within ``active_timeout``."""
        return has_peers and last_activity is not None and now - last_activity <= self.active_timeout

    def next_probe(self, now: float, u: float) -> float:
        """When the next probe is due, for a uniform random ``u`` in [0, 1)."""
        return now + self.interval_min + u * (self.interval_max - self.interval_min)


def fallback_region(derp_map: DerpMap, current: int, seed: int) -> int:
    """Go ``pickDERPFallback``: stay on ``current`` if it is a DERP region, else a sticky
    pseudo-random one (same ``seed`` → same pick). 0 if the map has no DERP region."""
    ids = derp_map.derp_region_ids()
    if not ids:
        return 0
    if current in ids:
        return current
    return ids[random.Random(seed).randrange(len(ids))]  # noqa: S311 - a spread, not a secret


def derp_latency(latencies: Mapping[int, float]) -> dict[str, float]:
    """The Node's ``derp_latency`` map: ``{"<regionID>-v4": seconds}``."""
    return {f"{rid}-v4": float(d) for rid, d in sorted(latencies.items())}
