"""The pure filter: floor, exclusions, de-duplication, names, loopback flag, wire shape."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from coder_agent.ports.select import Listener, ListeningPort, select_ports, to_wire


def test_floor_exclusions_dedupe_sorted() -> None:
    got = select_ports([
        Listener(6, "::", 8080, "node"),
        Listener(4, "0.0.0.0", 8080, ""),
        Listener(4, "0.0.0.0", 8, "low"),
        Listener(4, "0.0.0.0", 0, "zero"),
        Listener(4, "0.0.0.0", 9, "nine"),
        Listener(4, "127.0.0.1", 2112, "coder-agent"),
        Listener(6, "::", 3000, "vite"),
        Listener(4, "0.0.0.0", 5432, "postgres"),
    ], exclude={2112, 5432})
    assert got == [
        ListeningPort(9, "nine"),
        ListeningPort(3000, "vite"),
        ListeningPort(8080, "node"),
    ]
    assert to_wire(got) == {"ports": [
        {"process_name": "nine", "network": "tcp", "port": 9},
        {"process_name": "vite", "network": "tcp", "port": 3000},
        {"process_name": "node", "network": "tcp", "port": 8080},
    ]}


def test_name_prefers_ipv4_then_first_non_empty() -> None:
    got = select_ports([Listener(6, "::", 5000, "six"), Listener(4, "0.0.0.0", 5000, "four")])
    assert got == [ListeningPort(5000, "four")]


def test_loopback_only_flag() -> None:
    got = {p.port: p.loopback_only for p in select_ports([
        Listener(4, "127.0.0.1", 1000), Listener(6, "::1", 1000),  # both loopback
        Listener(4, "127.0.0.1", 1001), Listener(6, "::", 1001),  # one public
        Listener(6, "::ffff:127.0.0.1", 1002),
        Listener(4, "10.0.0.5", 1003),
    ])}
    assert got == {1000: True, 1001: False, 1002: True, 1003: False}


@given(st.lists(st.builds(Listener, st.sampled_from([4, 6]), st.sampled_from(["0.0.0.0", "::", "127.0.0.1"]),
                          st.integers(0, 70000), st.text(max_size=5))),
       st.sets(st.integers(0, 70000), max_size=5))
def test_properties(listeners: list[Listener], exclude: set[int]) -> None:
    got = select_ports(listeners, exclude=exclude)
    ports = [p.port for p in got]
    assert ports == sorted(set(ports))
    assert all(9 <= p <= 65535 and p not in exclude for p in ports)
    assert set(ports) == {ln.port for ln in listeners if 9 <= ln.port <= 65535 and ln.port not in exclude}
