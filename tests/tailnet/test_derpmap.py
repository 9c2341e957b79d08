"""The DERP map: proto/JSON parsing, the embedded-relay rewrite, URLs, home region choice."""

from __future__ import annotations

import pytest

from coder_agent.rpc.proto import tailnet_pb2
from coder_agent.tailnet import derpmap
from coder_agent.tailnet.derpmap import DerpMap, DerpNode, DerpRegion


def _proto() -> tailnet_pb2.DERPMap:
    m = tailnet_pb2.DERPMap()
    m.home_params.region_score[2] = 0.5
    r = m.regions[999]
    r.region_id, r.embedded_relay, r.region_code, r.region_name = 999, True, "coder", "Coder Embedded Relay"
    n = r.nodes.add()
    n.name, n.region_id, n.host_name, n.derp_port, n.stun_port = "999b", 999, "old.example", 443, -1
    stun = r.nodes.add()
    stun.name, stun.region_id, stun.host_name, stun.stun_only, stun.stun_port = "999s", 999, "stun.example", True, 3478
    r2 = m.regions[2]
    r2.region_id, r2.region_code = 2, "eu"
    n2 = r2.nodes.add()
    n2.name, n2.region_id, n2.host_name, n2.ipv4, n2.derp_port = "2a", 2, "eu.example", "192.0.2.7", 8443
    r3 = m.regions[1000]
    r3.region_id = 1000
    n3 = r3.nodes.add()
    n3.stun_only, n3.host_name, n3.stun_port = True, "stun.l.google.com", 19302
    return m


def test_from_proto_and_json_agree() -> None:
    dm = DerpMap.from_proto(_proto())
    assert dm.region_score == {2: 0.5}
    assert dm.regions[999].embedded_relay and dm.regions[999].derp_node == DerpNode(
        name="999b", region_id=999, host_name="old.example", derp_port=443, stun_port=-1)
    assert dm.derp_region_ids() == [2, 999]  # 1000 is STUN-only
    js = {"HomeParams": {"RegionScore": {"2": 0.5}}, "Regions": {
        "999": {"RegionID": 999, "EmbeddedRelay": True, "RegionCode": "coder", "RegionName": "Coder Embedded Relay",
                "Nodes": [{"Name": "999b", "RegionID": 999, "HostName": "old.example", "DERPPort": 443,
                           "STUNPort": -1},
                          {"Name": "999s", "RegionID": 999, "HostName": "stun.example", "STUNOnly": True,
                           "STUNPort": 3478}]},
        "2": {"RegionID": 2, "RegionCode": "eu", "Nodes": [{"Name": "2a", "RegionID": 2, "HostName": "eu.example",
                                                           "IPv4": "192.0.2.7", "DERPPort": 8443}]},
        "1000": {"RegionID": 1000, "Nodes": [{"STUNOnly": True, "HostName": "stun.l.google.com",
                                              "STUNPort": 19302}]}}}
    assert DerpMap.from_json(js) == dm


def test_rewrite_default_relay() -> None:
    dm = DerpMap.from_proto(_proto())
    out = derpmap.rewrite_default_relay(dm, "http://coder.internal:3000/some/path")
    node = out.regions[999].nodes[0]
    assert (node.host_name, node.derp_port, node.force_http) == ("coder.internal", 3000, True)
    assert out.regions[999].nodes[1] == dm.regions[999].nodes[1]  # STUN-only untouched
    assert out.regions[2] == dm.regions[2]  # not embedded
    assert dm.regions[999].nodes[0].host_name == "old.example"  # the input is not modified
    https = derpmap.rewrite_default_relay(dm, "https://coder.example.com").regions[999].nodes[0]
    assert (https.host_name, https.derp_port, https.force_http) == ("coder.example.com", 443, False)


def test_urls_and_dial_targets() -> None:
    n = DerpNode(host_name="coder.example.com", derp_port=443)
    assert derpmap.node_url(n) == "https://coder.example.com/derp"
    assert derpmap.latency_check_url(n) == "https://coder.example.com/derp/latency-check"
    assert derpmap.node_url(DerpNode(host_name="h", derp_port=80, force_http=True)) == "http://h/derp"
    assert derpmap.node_url(DerpNode(host_name="h", derp_port=3000, force_http=True)) == "http://h:3000/derp"
    assert derpmap.node_url(DerpNode(host_name="h", ipv4="192.0.2.1", derp_port=8443)) == "https://192.0.2.1:8443/derp"
    assert derpmap.node_url(DerpNode(host_name="h")) == "https://h/derp"
    t = derpmap.dial_target(DerpNode(host_name="h", ipv4="192.0.2.1"))
    assert (t.host, t.port, t.tls, t.server_name) == ("192.0.2.1", 443, True, "h")
    t = derpmap.dial_target(DerpNode(host_name="h", force_http=True))
    assert (t.host, t.port, t.tls) == ("h", 80, False)


def _regions(*ids: int, avoid: tuple[int, ...] = (), stun_only: tuple[int, ...] = ()) -> dict[int, DerpRegion]:
    return {i: DerpRegion(i, avoid=i in avoid, nodes=(DerpNode(region_id=i, host_name=f"r{i}",
                                                               stun_only=i in stun_only),)) for i in ids}


def test_choose_home() -> None:
    dm = DerpMap(_regions(1, 2, 3, 4, avoid=(3,), stun_only=(4,)), {2: 0.1})
    # 2 is slower but scored down; 3 avoided; 4 STUN-only; 9 not in the map
    assert derpmap.choose_home(dm, {1: 0.05, 2: 0.2, 3: 0.001, 4: 0.001, 9: 0.0001}) == 2
    assert derpmap.choose_home(dm, {3: 0.001, 4: 0.001}) == 0
    dm = DerpMap(_regions(1, 2))
    # Stickiness: the current home stays unless the winner is >10 ms and a third better.
    assert derpmap.choose_home(dm, {1: 0.100, 2: 0.095}, current=1) == 1
    assert derpmap.choose_home(dm, {1: 0.100, 2: 0.080}, current=1) == 1
    assert derpmap.choose_home(dm, {1: 0.100, 2: 0.060}, current=1) == 2
    assert derpmap.choose_home(dm, {2: 0.100}, current=1) == 2  # the old home did not answer


def test_fallback_is_sticky_and_skips_stun_only() -> None:
    dm = DerpMap(_regions(1, 2, 3, stun_only=(3,)))
    picks = {derpmap.fallback_region(dm, 0, seed) for seed in range(50)}
    assert picks == {1, 2}
    assert derpmap.fallback_region(dm, 0, 7) == derpmap.fallback_region(dm, 0, 7)
    assert derpmap.fallback_region(dm, 2, 7) == 2
    assert derpmap.fallback_region(dm, 3, 7) in (1, 2)
    assert derpmap.fallback_region(DerpMap(_regions(3, stun_only=(3,))), 0, 1) == 0


def test_derp_latency_keys() -> None:
    assert derpmap.derp_latency({999: 0.0123, 2: 1}) == {"2-v4": 1.0, "999-v4": 0.0123}


# Go netcheck's TestAddReportHistoryAndSetPreferredDERP cases, in seconds: (after, report) steps,
# the choice after the last step, and how many reports are kept.
_HISTORY_CASES = [
    ("first_reading", [(0, {1: 2, 2: 3})], 1, 1),
    ("with_two", [(0, {1: 2, 2: 3}), (1, {1: 4, 2: 3})], 1, 2),  # t0's 2 s for region 1 still best
    ("old_home_gone", [(0, {1: 2, 2: 3}), (1, {1: 4, 2: 3}), (2, {2: 3})], 2, 3),
    ("old_home_back", [(0, {1: 2, 2: 3}), (1, {1: 4, 2: 3}), (2, {2: 3}), (3, {1: 4, 2: 3})], 1, 4),
    ("history_ages_out", [(0, {1: 1, 2: 2}), (1, {1: 1, 2: 2}), (600, {3: 3})], 3, 1),
    ("hysteresis_relative", [(0, {1: 4, 2: 5}), (1, {1: 4, 2: 3})], 1, 2),  # 3 is not below 4 * 2/3
    ("hysteresis_absolute", [(0, {1: 0.004, 2: 0.005}), (1, {1: 0.004, 2: 0.001})], 1, 2),  # < 10 ms apart
    ("clearly_better", [(0, {1: 4, 2: 5}), (1, {1: 4, 2: 1})], 2, 2),
]


@pytest.mark.parametrize(("name", "steps", "want", "kept"), _HISTORY_CASES, ids=[c[0] for c in _HISTORY_CASES])
def test_report_history_and_hysteresis(name: str, steps: list[tuple[float, dict[int, float]]],
                                       want: int, kept: int) -> None:
    dm = DerpMap(_regions(1, 2, 3))
    reports = derpmap.LatencyReports()
    got = [reports.add(dm, latencies, 1000.0 + after) for after, latencies in steps]
    assert got[-1] == want and reports.preferred == want
    assert len(reports.reports) == kept


def test_report_history_region_score() -> None:
    # Go's derp_home_params cases: one report, region 1 scored to 2/3 of its latency.
    dm = DerpMap(_regions(1, 2), {1: 2 / 3})
    assert derpmap.LatencyReports().add(dm, {1: 10, 2: 8}, 0.0) == 1  # 8 is not below 10 * 2/3
    assert derpmap.LatencyReports().add(dm, {1: 10, 2: 6}, 0.0) == 2


def test_a_slow_home_moves_only_once_its_fast_reports_age_out() -> None:
    """The home (1) turns slow: its best recent latency still ranks it first until its fast
    reports are over 5 min old; then region 2 is clearly better and takes over."""
    dm = DerpMap(_regions(1, 2))
    reports = derpmap.LatencyReports()
    assert reports.add(dm, {1: 0.010, 2: 0.030}, 0.0) == 1
    for now in range(25, 300, 25):
        assert reports.add(dm, {1: 0.200, 2: 0.030}, float(now)) == 1
    assert reports.add(dm, {1: 0.200, 2: 0.030}, 301.0) == 2
    # Slightly slower home, scaled the same way: kept (the winner must be 10 ms and a third better).
    reports = derpmap.LatencyReports(max_age=0.0)
    assert reports.add(dm, {1: 0.020, 2: 0.030}, 0.0) == 1
    assert reports.add(dm, {1: 0.035, 2: 0.030}, 1.0) == 1
    assert reports.add(dm, {1: 0.046, 2: 0.030}, 2.0) == 2


def test_reprobe_policy_is_gos_cadence() -> None:
    p = derpmap.ReprobePolicy()
    assert (p.interval_min, p.interval_max, p.active_timeout, p.report_max_age) == (20.0, 26.0, 45.0, 300.0)
    assert p.next_probe(100.0, 0.0) == 120.0 and p.next_probe(100.0, 0.5) == 123.0
    assert 125.9 < p.next_probe(100.0, 0.9999) < 126.0
    # Active: a peer and a packet within 45 s (Go: idleFor > sessionActiveTimeout → not).
    assert p.session_active(145.0, 100.0, True)
    assert not p.session_active(145.1, 100.0, True)
    assert not p.session_active(101.0, 100.0, False)  # no peer: not worth it
    assert not p.session_active(101.0, None, True)  # no packet yet
