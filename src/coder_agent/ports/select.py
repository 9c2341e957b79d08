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
from typing import Any, NamedTuple

from .procnet import is_loopback

__all__ = ["MIN_PORT", "Listener", "ListeningPort", "PortSelector", "select_ports", "to_wire"]

MIN_PORT = 9


class Listener(NamedTuple):
    """One listening socket as a reader saw it."""

    family: int  # 4 or 6
    address: str
    port: int
    process_name: str = ""


class ListeningPort(NamedTuple):
    port: int
    process_name: str = ""
    network: str = "tcp"
    loopback_only: bool = False

    def wire(self) -> dict[str, Any]:
        """The Go agent's ``codersdk.WorkspaceAgentListeningPort`` JSON."""
        return {"process_name": self.process_name, "network": self.network, "port": self.port}


def select_ports(listeners: Iterable[Listener], *, exclude: Iterable[int] = (),
                 min_port: int = MIN_PORT) -> list[ListeningPort]:
    """The ports to report, sorted by port (see the module rules). One pass: this runs every scan."""
    excluded = set(exclude)
    # port -> [best (family, address, name) with a non-empty name, or None; every socket loopback?]
    acc: dict[int, list[Any]] = {}
    for ln in listeners:
        family, address, port, name = ln
        if port < min_port or port > 65535 or port in excluded:
            continue
        key = (family, address, name) if name else None
        cur = acc.get(port)
        if cur is None:
            acc[port] = [key, is_loopback(address)]
            continue
        if key is not None and (cur[0] is None or key < cur[0]):
            cur[0] = key
        if cur[1]:
            cur[1] = is_loopback(address)
    return [ListeningPort(port, c[0][2] if c[0] is not None else "", "tcp", c[1])
            for port, c in sorted(acc.items())]


class PortSelector:
    """:func:`select_ports` remembering its last answer: a scan whose reader returned the very
    same listener list (the reader's way of saying "nothing changed") costs nothing here."""

    def __init__(self, min_port: int = MIN_PORT) -> None:
        self.min_port = min_port
        self._last: tuple[list[Listener], frozenset[int], list[ListeningPort]] | None = None

    def select(self, listeners: list[Listener], exclude: Iterable[int] = ()) -> list[ListeningPort]:
        excluded = frozenset(exclude)
        last = self._last
        if last is not None and last[0] is listeners and last[1] == excluded:
            return last[2]
        ports = select_ports(listeners, exclude=excluded, min_port=self.min_port)
        self._last = (listeners, excluded, ports)
        return ports


def to_wire(ports: Iterable[ListeningPort]) -> dict[str, Any]:
    """``{"ports": [...]}`` exactly as ``GET /api/v0/listening-ports`` answers."""
    return {"ports": [p.wire() for p in ports]}
