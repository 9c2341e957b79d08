"""Pure readers of Linux ``/proc/net/tcp`` and ``/proc/net/tcp6`` text.

Rules:

* Input is the file's text; output is :class:`Socket` tuples. No I/O here.
* Each data line is ``sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...``. ``local``
  is ``ADDR:PORT`` in hex: ``PORT`` is the port number (already in host order), ``ADDR`` is the
  raw ``in_addr`` / ``in6_addr`` printed as 32-bit words in the *kernel's* byte order, so on a
  little-endian host every 4-byte word is reversed. :func:`decode_address` undoes that.
* Only state ``0A`` (``TCP_LISTEN``) matters for listening ports; :func:`parse_listeners` checks
  the state before decoding anything, so the cost of a table full of established connections
  is one ``split`` per line.
* Garbage never raises: the header, short lines, bad hex and out-of-range values are skipped.
"""

from __future__ import annotations

import ipaddress
import sys
from typing import Literal, NamedTuple

__all__ = ["LISTEN", "Socket", "decode_address", "is_loopback", "parse_listeners", "parse_sockets"]

LISTEN = 0x0A

Family = Literal[4, 6]


class Socket(NamedTuple):
    family: Family
    address: str  # textual IP ("0.0.0.0", "::", "::ffff:127.0.0.1")
    port: int
    state: int
    inode: int


def decode_address(hexaddr: str, *, byteorder: str = sys.byteorder) -> str:
    """The textual IP of a /proc/net address field (8 hex digits for IPv4, 32 for IPv6).

    Raises ValueError on anything else.
    """
    raw = bytes.fromhex(hexaddr)
    if len(raw) not in (4, 16):
        raise ValueError(f"address must be 4 or 16 bytes, got {len(raw)}")
    if byteorder == "little":
        # the kernel prints each 32-bit word of the address as a host-order integer
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw))
    ip = ipaddress.IPv6Address(raw)
    if ip.ipv4_mapped is not None:
        return f"::ffff:{ip.ipv4_mapped}"  # the usual spelling (Python < 3.13 prints ::ffff:7f00:1)
    return str(ip)


def is_loopback(address: str) -> bool:
    """127.0.0.0/8, ::1 and IPv4-mapped loopback (``::ffff:127.0.0.1``)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def _parse_line(fields: list[str], family: Family, byteorder: str) -> Socket | None:
    local = fields[1]
    addr, sep, port_hex = local.rpartition(":")
    if not sep or len(addr) != (8 if family == 4 else 32) or len(port_hex) != 4:
        return None
    try:
        state = int(fields[3], 16)
        port = int(port_hex, 16)
        inode = int(fields[9])
        address = decode_address(addr, byteorder=byteorder)
    except ValueError:
        return None
    if inode < 0:
        return None
    return Socket(family, address, port, state, inode)


def parse_sockets(text: str, family: Family, *, byteorder: str = sys.byteorder) -> list[Socket]:
    """Every well-formed socket line in ``text`` (any state)."""
    out: list[Socket] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 10 or not fields[0].endswith(":"):
            continue
        sock = _parse_line(fields, family, byteorder)
        if sock is not None:
            out.append(sock)
    return out


def parse_listeners(text: str, family: Family, *, byteorder: str = sys.byteorder) -> list[Socket]:
    """The sockets in state LISTEN in ``text``.

    The state column is checked on the raw split before any decoding: most lines of a busy
    table are connections, and this is the hot loop of every scan.
    """
    out: list[Socket] = []
    for line in text.splitlines():
        fields = line.split(None, 10)
        if len(fields) < 10 or fields[3] != "0A" or not fields[0].endswith(":"):
            continue
        sock = _parse_line(fields, family, byteorder)
        if sock is not None:
            out.append(sock)
    return out
