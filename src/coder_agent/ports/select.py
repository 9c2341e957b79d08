"""Pure selection of the listening ports to report.

Rules (the Go agent's, plus what users asked for):

* Input: every TCP LISTEN socket seen, IPv4 and IPv6 alike (the Go agent long read only the
  IPv4 table and missed ``::``-only listeners), each with the name of its process or ``""``.
* Drop ports below :data:`MIN_PORT` (9: ports 1–4 are the Go agent's tailnet ports and 5–8
  are reserved; we keep the same floor so the dashboard looks the same), the daemon's own
  ports, and the configured ignore list.
* De-duplicate by port number: one entry per port, ``network`` is always ``"tcp"``. The
  process name is the first non-empty one among that port's sockets, IPv4 before IPv6, so the
  answer is stable. ``loopback_only`` is true when every socket on the port is bound to a
  loopback address (internal: the wire format has no field for it).
* The result is sorted by port.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from .procnet import is_loopback

__all__ = ["MIN_PORT", "Listener", "ListeningPort", "select_ports", "to_wire"]

MIN_PORT = 9


class Listener(NamedTuple):
    """One listening socket as a reader saw it."""

    family: int  # 4 or 6
    address: str
    port: int
    process_name: str = ""


@dataclass(frozen=True, slots=True)
class ListeningPort:
    port: int
    process_name: str = ""
    network: str = "tcp"
    loopback_only: bool = False

    def wire(self) -> dict[str, Any]:
        """The Go agent's ``codersdk.WorkspaceAgentListeningPort`` JSON."""
        return {"process_name": self.process_name, "network": self.network, "port": self.port}


def select_ports(listeners: Iterable[Listener], *, exclude: Iterable[int] = (),
                 min_port: int = MIN_PORT) -> list[ListeningPort]:
    """The ports to report, sorted by port (see the module rules)."""
    excluded = set(exclude)
    by_port: dict[int, list[Listener]] = {}
    for ln in listeners:
        if ln.port < min_port or ln.port > 65535 or ln.port in excluded:
            continue
        by_port.setdefault(ln.port, []).append(ln)
    out: list[ListeningPort] = []
    for port in sorted(by_port):
        group = sorted(by_port[port], key=lambda s: (s.family, s.address, s.process_name))
        name = next((s.process_name for s in group if s.process_name), "")
        loopback = all(is_loopback(s.address) for s in group)
        out.append(ListeningPort(port=port, process_name=name, loopback_only=loopback))
    return out


def to_wire(ports: Iterable[ListeningPort]) -> dict[str, Any]:
    """``{"ports": [...]}`` exactly as ``GET /api/v0/listening-ports`` answers."""
    return {"ports": [p.wire() for p in ports]}
